"""`%cache_info`'s table and the words it shares with the panel (one vocabulary), on a fake clock."""

from __future__ import annotations

import types

from ipycache_ext import CacheStore
from ipycache_ext._format import cell_label, plural, shown_names, size_text
from ipycache_ext._panel import CachePanel
from ipycache_ext._report import COLUMNS, EMPTY, module_test, render_info, summary_line

from .conftest import FakeClock


def put(store: CacheStore, key: str, *, kind: str = "data", size: int | None = 100, **kw: object) -> None:
    store.get_or_create(
        key,
        lambda: (key, size),
        kind=kind,  # type: ignore[arg-type]
        label=str(kw.get("label", f"[1] {key} = 1")),
        names=kw.get("names", (key,)),  # type: ignore[arg-type]
        ttl=kw.get("ttl"),  # type: ignore[arg-type]
    )


def test_singular_and_plural() -> None:
    assert plural(1, "entry", "entries") == "1 entry"
    assert plural(0, "entry", "entries") == "0 entries"
    assert plural(2, "hit") == "2 hits"
    assert plural(1, "miss", "misses") == "1 miss"


def test_an_empty_cache_says_so(store: CacheStore) -> None:
    text = render_info(store)
    assert text.splitlines() == [summary_line(store.stats()), EMPTY]
    assert text.startswith("0 entries · memory 0 B of 64.0 MiB · 0 hits / 0 misses")


def test_the_table_and_the_panel_use_the_same_words(store: CacheStore, clock: FakeClock) -> None:
    put(store, "a", ttl=61, names=("df", "np"))
    clock.advance(1)
    put(store, "b", kind="resource", size=None, names=("conn",))
    put(store, "a", ttl=61)  # a hit
    namespace = {"np": types.ModuleType("numpy"), "df": object()}
    text = render_info(store, is_module=module_test(namespace))
    lines = text.splitlines()
    assert lines[0] == "2 entries · memory 100 B of 64.0 MiB · 1 hit / 2 misses · 0ms saved"
    assert lines[1].split() == ["key", "entry", "kind", "names", "size", "age", "TTL", "left", "hits"]
    assert "[1] a = 1" in lines[3] and " df " in lines[3] and "np" not in lines[3]  # no imported modules
    assert "1m 00s" in lines[3]
    assert "shared" in lines[4] and "no expiry" in lines[4] and "resource" in lines[4]

    panel = CachePanel(store, auto_refresh=False)
    try:
        assert panel.header.value == lines[0]
        assert list(COLUMNS.values())[5] == "TTL left"
        assert panel.rows["b"].texts["size"] == "shared"
    finally:
        panel.close()


def test_the_first_rows_only_and_how_to_see_all(store: CacheStore, clock: FakeClock) -> None:
    for i in range(60):
        clock.advance(1)
        put(store, f"e{i:02d}")
    text = render_info(store, limit=50)
    assert len(text.splitlines()) == 3 + 50 + 1
    assert text.splitlines()[-1] == "showing 50 of 60 entries · %cache_info --all lists every one"
    assert len(render_info(store, limit=None).splitlines()) == 3 + 60


def test_explain_says_why_where_and_who(store: CacheStore) -> None:
    put(store, "a")
    text = render_info(store, explain=True)
    header = text.splitlines()[1]
    assert "why it was computed" in header and "where" in header and "computed by" in header
    assert "first run" in text and "memory" in text


def test_labels_name_the_cell_by_its_first_meaningful_line() -> None:
    cell = "# load the data\nimport pandas as pd\nfrom math import pi\n%time\n\ndf = pd.read_csv(path)\ndf"
    assert cell_label(cell, 12) == "[12] df = pd.read_csv(path)"
    assert cell_label("import sqlite3\nimport os") == "import sqlite3"
    assert cell_label("") == "(empty cell)"
    assert cell_label("x = '" + "y" * 100 + "'").endswith("…")
    assert len(cell_label("x = '" + "y" * 100 + "'")) == 60


def test_names_and_sizes() -> None:
    assert shown_names(("np", "df"), lambda n: n == "np") == ("df",)
    assert shown_names(("np",), lambda n: True) == ("np",)  # a cell of imports still says what it binds
    assert size_text("resource", None) == "shared"
    assert size_text("data", None) == "?"
    assert size_text("data", 2048) == "2.0 KiB"


def test_a_label_without_its_execution_number() -> None:
    from ipycache_ext._format import unnumbered

    assert unnumbered("[12] df = load()") == "df = load()"
    assert unnumbered("df = load()") == "df = load()"
    assert unnumbered("[x] not a number") == "[x] not a number"
    assert unnumbered("fetch(city='Paris')") == "fetch(city='Paris')"


def test_the_summary_says_what_live_results_still_hold_after_their_entry_left(store: CacheStore) -> None:
    import numpy as np

    from ipycache_ext._engine import Request, engine_for
    from ipycache_ext._report import summary_line

    engine = engine_for(store)
    request = Request(kind="data", origin="o", label="big", code="c", group="g")
    plan = engine.plan(request)
    engine.fetch(request, plan, lambda: np.ones(4 << 20, dtype=np.uint8))  # 4 MiB: a mapped buffer
    kept = engine.fetch(request, plan, lambda: None).value  # a hit, kept alive
    assert "held by live results" not in summary_line(store.stats())
    store.clear()
    assert "(+4.0 MiB held by live results)" in summary_line(store.stats())
    del kept
    import gc

    gc.collect()
    assert "held by live results" not in summary_line(store.stats())


def test_the_hit_line_says_who_computed_a_team_entry_and_where_it_lives() -> None:
    from ipycache_ext._report import hit_line
    from ipycache_ext._status_text import ME

    def entry(**fields: object) -> types.SimpleNamespace:
        base = {"created": 0.0, "compute_seconds": 3.9, "hits": 1, "persisted": True, "shared": False}
        return types.SimpleNamespace(**{**base, **fields})

    team = hit_line(entry(shared=True, computed_by="alice@host"))  # type: ignore[arg-type]
    assert " by alice@host in 3.9s" in team and team.endswith("(hit 1×, team)")
    own = hit_line(entry(computed_by=ME))  # type: ignore[arg-type]
    assert " by " not in own and own.endswith("(hit 1×, on disk)")
