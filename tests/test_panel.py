"""The cache panel driven in Python, without a kernel (ipywidgets falls back to a dummy comm).

The store runs on the fake clock, so the TTL countdown moves only when a test advances it
and calls ``refresh()``; the few tests of the ticker thread wait on a condition with a
deadline instead of sleeping a fixed time.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from IPython.core.interactiveshell import InteractiveShell

import ipycache_ext
from ipycache_ext import CacheStore
from ipycache_ext._panel import CachePanel

from .conftest import FakeClock


def put(
    store: CacheStore,
    key: str,
    *,
    size: int | None = 100,
    kind: str = "data",
    ttl: float | None = None,
    label: str | None = None,
    names: tuple[str, ...] = ("x",),
) -> None:
    store.get_or_create(
        key,
        lambda: (key, size),
        kind=kind,  # type: ignore[arg-type]
        label=label or f"cell {key}",
        names=names,
        ttl=ttl,
    )


def eventually(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    """Wait for a condition made true by another thread; fail with a clear message at the deadline."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"not true within {timeout}s: {condition}")
        time.sleep(0.01)


def all_widgets(root: Any) -> list[Any]:
    """Every widget reachable from ``root``: children, layouts and styles."""
    found: list[Any] = []
    todo = [root]
    while todo:
        widget = todo.pop()
        if widget is None or any(widget is seen for seen in found):
            continue
        found.append(widget)
        todo += list(getattr(widget, "children", ()))
        todo += [getattr(widget, "layout", None), getattr(widget, "style", None)]
    return found


@pytest.fixture
def panel(store: CacheStore) -> Iterator[CachePanel]:
    made = CachePanel(store, auto_refresh=False)
    yield made
    made.close()


# ----------------------------------------------------------------- rows and countdown
def test_an_empty_store_shows_the_empty_note(panel: CachePanel) -> None:
    assert panel.rows == {}
    assert panel.header.value.startswith("0 entries")
    assert panel.clear_button.disabled


def test_rows_appear_with_label_kind_names_size_age_ttl_and_hits(
    store: CacheStore, panel: CachePanel, clock: FakeClock
) -> None:
    put(store, "a", size=2048, ttl=60, label="df = load()", names=("df", "n"))
    put(store, "b", size=None, kind="resource", label="connect", names=("db",))
    panel.refresh()

    assert list(panel.rows) == ["a", "b"]
    assert panel.rows["a"].texts == {
        "label": "df = load()",
        "kind": "data",
        "names": "df, n",
        "size": "2.0 KiB",
        "age": "0ms",
        "ttl": "1m 00s",
        "hits": "0",
    }
    assert panel.rows["b"].ttl == "no expiry"
    assert panel.rows["b"].texts["kind"] == "resource"
    assert panel.rows["b"].texts["size"] == "shared"  # a resource is kept as is, not measured

    clock.advance(20)
    put(store, "a")  # a hit
    panel.refresh()
    assert panel.rows["a"].texts["hits"] == "1"
    assert panel.rows["a"].texts["age"] == "20s"
    assert panel.header.value.startswith("2 entries · memory 2.0 KiB of 64.0 MiB · 1 hit / 2 misses")


def test_ttl_counts_down_and_the_row_vanishes_at_expiry(
    store: CacheStore, panel: CachePanel, clock: FakeClock
) -> None:
    put(store, "a", ttl=90)
    panel.refresh()
    seen = [panel.rows["a"].ttl]
    for _ in range(3):
        clock.advance(1)
        panel.refresh()
        seen.append(panel.rows["a"].ttl)
    assert seen == ["1m 30s", "1m 29s", "1m 28s", "1m 27s"]

    clock.advance(80)
    panel.refresh()
    assert panel.rows["a"].ttl == "7.0s"
    clock.advance(7)
    panel.refresh()
    assert panel.rows == {}
    assert len(store.entries()) == 0


def test_rows_are_kept_and_unchanged_text_is_not_sent_again(
    store: CacheStore, panel: CachePanel, clock: FakeClock
) -> None:
    """Hundreds of rows stay cheap: a tick reuses row widgets and assigns only changed text."""
    put(store, "a", ttl=3600.5)
    put(store, "b")
    clock.advance(100)
    panel.refresh()
    row = panel.rows["a"]
    changed: list[str] = []
    for name, cell in row.cells.items():
        cell.observe(lambda change, name=name: changed.append(name), names="value")

    clock.advance(0.2)  # age "1m 40s" and TTL "58m 20s" both stay as they are
    panel.refresh()
    assert panel.rows["a"] is row
    assert changed == []
    clock.advance(1)
    panel.refresh()
    assert sorted(changed) == ["age", "ttl"]


def test_a_row_of_a_removed_entry_is_closed(store: CacheStore, panel: CachePanel) -> None:
    put(store, "a")
    panel.refresh()
    row = panel.rows["a"]
    store.delete("a")
    panel.refresh()
    assert "a" not in panel.rows
    assert all(
        widget.comm is None
        for widget in [row.box, row.grid, row.expand_button, row.delete_button, *row.cells.values()]
    )


# ----------------------------------------------------------------- buttons
def test_the_delete_button_drops_that_entry_from_the_store(store: CacheStore, panel: CachePanel) -> None:
    put(store, "a")
    put(store, "b")
    panel.refresh()
    panel.rows["a"].delete_button.click()
    assert [e.key for e in store.entries()] == ["b"]
    assert list(panel.rows) == ["b"]  # at once, not at the next tick


def test_clear_all_drops_every_entry(store: CacheStore, panel: CachePanel) -> None:
    put(store, "a")
    put(store, "b", kind="resource")
    panel.refresh()
    assert not panel.clear_button.disabled
    panel.clear_button.click()
    assert store.entries() == []
    assert panel.rows == {}
    assert panel.clear_button.disabled


def test_clear_all_under_a_kind_filter_drops_only_what_is_shown(store: CacheStore, panel: CachePanel) -> None:
    put(store, "a")
    put(store, "b", kind="resource")
    panel.kind_filter.value = "resource"
    assert panel.clear_button.description == "Clear all resources"
    panel.clear_button.click()
    assert [e.key for e in store.entries()] == ["a"]


# ----------------------------------------------------------------- filter, sort, pages
def test_the_kind_filter_shows_one_kind(store: CacheStore, panel: CachePanel) -> None:
    put(store, "a")
    put(store, "b", kind="resource")
    put(store, "c")
    panel.kind_filter.value = "data"
    assert list(panel.rows) == ["a", "c"]
    assert "1 entry hidden by the filter" in panel.header.value
    panel.kind_filter.value = "resource"
    assert list(panel.rows) == ["b"]
    panel.kind_filter.value = "all"
    assert list(panel.rows) == ["a", "b", "c"]


@pytest.mark.parametrize(
    ("sort", "expected"),
    [("age", ["old", "mid", "new"]), ("size", ["mid", "new", "old"]), ("hits", ["new", "old", "mid"])],
)
def test_sorting(
    store: CacheStore, panel: CachePanel, clock: FakeClock, sort: str, expected: list[str]
) -> None:
    put(store, "old", size=10)
    clock.advance(1)
    put(store, "mid", size=3000)
    clock.advance(1)
    put(store, "new", size=200)
    for key, hits in (("new", 3), ("old", 1)):
        for _ in range(hits):
            put(store, key)
    panel.sort_by.value = sort
    panel.refresh()  # "age" is the default: setting it again is no change
    assert list(panel.rows) == expected


def test_sorting_by_ttl_puts_the_next_to_expire_first(store: CacheStore, panel: CachePanel) -> None:
    put(store, "never")
    put(store, "late", ttl=500)
    put(store, "soon", ttl=5)
    panel.sort_by.value = "ttl"
    assert list(panel.rows) == ["soon", "late", "never"]


def test_hundreds_of_entries_show_one_page_at_a_time(store: CacheStore) -> None:
    for i in range(300):
        put(store, f"e{i:03d}", size=i)
    panel = CachePanel(store, auto_refresh=False, page_size=50)
    try:
        assert len(panel.rows) == 50
        assert "showing 50 of 300" in panel.header.value
        assert panel.more_button.layout.display is None  # visible
        panel.more_button.click()
        assert len(panel.rows) == 100
        panel.sort_by.value = "size"  # a new view starts again at one page
        assert list(panel.rows)[:2] == ["e299", "e298"]
        assert len(panel.rows) == 50
        store.clear()
        panel.refresh()
        assert panel.more_button.layout.display == "none"
    finally:
        panel.close()


# ----------------------------------------------------------------- widget contract
def test_stable_css_classes(store: CacheStore, panel: CachePanel) -> None:
    put(store, "a", ttl=10)
    panel.refresh()
    row = panel.rows["a"]
    assert "ipycache-panel" in panel._dom_classes
    assert "ipycache-entry" in row.box._dom_classes
    assert "ipycache-ttl" in row.cells["ttl"]._dom_classes
    assert "ipycache-delete" in row.delete_button._dom_classes
    assert "ipycache-clear-all" in panel.clear_button._dom_classes
    assert row.box in panel._list.children


def test_the_panel_renders_as_a_widget_view(panel: CachePanel) -> None:
    bundle = panel._repr_mimebundle_()
    view = bundle["application/vnd.jupyter.widget-view+json"]
    assert view["model_id"] == panel.model_id


def test_the_default_store_is_the_kernel_wide_one() -> None:
    made = ipycache_ext.CachePanel(auto_refresh=False)
    try:
        assert isinstance(made, CachePanel)
        assert made.store is ipycache_ext.get_store()
    finally:
        made.close()


def test_bad_arguments_say_what_is_wrong(store: CacheStore) -> None:
    with pytest.raises(ValueError, match="page_size"):
        CachePanel(store, auto_refresh=False, page_size=0)
    with pytest.raises(ValueError, match="auto_refresh"):
        CachePanel(store, auto_refresh=-1)


# ----------------------------------------------------------------- the ticker thread
def test_the_ticker_counts_down_by_itself(store: CacheStore, clock: FakeClock) -> None:
    put(store, "a", ttl=100)
    panel = CachePanel(store, auto_refresh=0.02)
    try:
        assert panel.rows["a"].ttl == "1m 40s"
        clock.advance(5)
        eventually(lambda: panel.rows["a"].ttl == "1m 35s")
        clock.advance(95)  # due: the ticker's purge removes it
        eventually(lambda: panel.rows == {})
        assert store.entries() == []
    finally:
        panel.close()


def test_events_from_another_thread_update_the_panel_without_waiting_for_a_tick(
    store: CacheStore,
) -> None:
    panel = CachePanel(store, auto_refresh=60.0)  # the period alone would never refresh in time
    try:

        def fill() -> None:
            for i in range(20):
                put(store, f"t{i}")

        worker = threading.Thread(target=fill)
        worker.start()
        worker.join()
        eventually(lambda: len(panel.rows) == 20)
        store.delete("t3")
        eventually(lambda: "t3" not in panel.rows)
    finally:
        panel.close()


def test_close_stops_the_ticker_unsubscribes_and_closes_every_widget(
    store: CacheStore, clock: FakeClock
) -> None:
    put(store, "a", ttl=100)
    panel = CachePanel(store, auto_refresh=0.02)
    ticker = panel.ticker
    assert ticker is not None
    assert ticker.is_alive()
    made = all_widgets(panel)
    assert len(made) > 10

    panel.close()
    assert not ticker.is_alive()
    assert ticker not in threading.enumerate()
    assert panel.closed
    assert [w for w in made if w.comm is not None] == []
    # unsubscribed and inert: store changes and refresh() no longer touch it
    put(store, "b")
    clock.advance(1)
    panel.refresh()
    assert panel.rows == {}
    panel.close()  # twice is harmless


def test_the_page_closing_the_comm_stops_the_panel_too(store: CacheStore) -> None:
    panel = CachePanel(store, auto_refresh=0.02)
    ticker = panel.ticker
    assert ticker is not None
    panel.comm.handle_close({"content": {"data": {}}})  # what a comm_close from the page does
    assert panel.closed
    assert not ticker.is_alive()


def test_the_panel_pauses_while_no_view_shows_it(store: CacheStore) -> None:
    """Pages don't close a widget whose cell re-runs; they do report its views going away."""
    panel = CachePanel(store, auto_refresh=0.02)
    try:
        first = panel.ticker
        assert first is not None
        panel._view_count = 1  # the page shows it
        assert panel.ticker is first
        panel._view_count = 0  # its output was cleared, or its cell ran again
        assert panel.ticker is None
        assert not first.is_alive()
        put(store, "a")  # not seen while paused ...
        panel._view_count = 1  # ... and caught up with when shown again
        assert list(panel.rows) == ["a"]
        again = panel.ticker
        assert again is not None
        assert again.is_alive()
    finally:
        panel.close()
    assert not again.is_alive()


def test_a_panel_without_auto_refresh_starts_no_thread(store: CacheStore) -> None:
    def panel_threads() -> set[threading.Thread]:  # only ours: other tests' threads come and go
        return {t for t in threading.enumerate() if t.name.startswith("ipycache_ext-panel")}

    before = panel_threads()
    panel = CachePanel(store, auto_refresh=False)
    try:
        assert panel.ticker is None
        assert panel_threads() == before
    finally:
        panel.close()


# ----------------------------------------------------------------- %cache_panel in a terminal
def test_cache_panel_in_a_terminal_prints_the_info_table(
    shell: InteractiveShell, store: CacheStore, capsys: pytest.CaptureFixture[str]
) -> None:
    """The ``shell`` fixture is a plain InteractiveShell: no kernel, so no widgets."""
    put(store, "a", ttl=60, label="x = 1")
    result = shell.run_line_magic("cache_panel", "")
    assert result is None
    out = capsys.readouterr().out
    assert "1 entry ·" in out
    assert "x = 1" in out
    assert "1m 00s" in out


def test_persisted_entries_and_disk_use_are_shown(store: CacheStore, tmp_path: Any, clock: Any) -> None:
    from ipycache_ext._persist import DiskCache, StorePersistence
    from ipycache_ext._serialize import serialize

    store.persistence = StorePersistence(DiskCache.in_directory(tmp_path, timer=clock))
    value = serialize(list(range(100)))
    store.get_or_create("k1", lambda: (value, value.nbytes), kind="data", label="kept", persist=True)
    panel = CachePanel(store, auto_refresh=False)
    try:
        panel.refresh()
        assert panel.rows["k1"].texts["kind"] == "data · disk"
        assert "· disk " in panel.header.value and "of 10.0 GiB" in panel.header.value
    finally:
        panel.close()


# ----------------------------------------------------------------- the redesign (issue 16)
def test_header_and_rows_share_one_grid_template(store: CacheStore, panel: CachePanel) -> None:
    from ipycache_ext._panel_rows import GRID_COLUMNS

    put(store, "a", label="x" * 200)
    panel.refresh()
    row = panel.rows["a"]
    assert panel._columns.layout is row.grid.layout  # the very same layout: the same columns
    assert row.grid.layout.grid_template_columns == GRID_COLUMNS
    assert len(panel._columns.children) == len(row.grid.children) == 9
    assert "ipycache-grid" in panel._columns._dom_classes and "ipycache-grid" in row.grid._dom_classes
    # a long label is cut by the page with an ellipsis, the whole of it in the tooltip
    assert "text-overflow:ellipsis" in row.cells["label"].value
    assert f"title='{'x' * 200}'" in row.cells["label"].value


def test_a_row_expands_to_why_where_inputs_and_key(store: CacheStore, panel: CachePanel) -> None:
    store.get_or_create(
        "k1",
        lambda: ("v", 10),
        kind="data",
        label="[3] y = f(n)",
        names=("y",),
        inputs={"n": "0123456789abcdef0123"},
        miss_reason=lambda: "`n` changed",
    )
    panel.refresh()
    row = panel.rows["k1"]
    assert row.details is None and row.box.children == (row.grid,)
    row.expand_button.click()
    assert row.details is not None
    assert row.box.children == (row.grid, row.details)
    details = row.details.value
    assert "<code>n</code> changed" in details  # the miss reason, backticks as code
    assert "memory" in details and "this kernel" in details
    assert "0123456789abcdef" in details and "k1" in details
    row.expand_button.click()
    assert row.box.children == (row.grid,)


def test_imported_modules_are_not_listed_as_names(
    shell: InteractiveShell, store: CacheStore, panel: CachePanel
) -> None:
    shell.run_cell("import math\ndf = 1")
    put(store, "a", names=("math", "df"))
    panel.refresh()
    assert panel.rows["a"].texts["names"] == "df"


def test_empty_and_filtered_states_say_which_it_is(store: CacheStore, panel: CachePanel) -> None:
    assert panel._empty.value.startswith("The cache is empty")
    put(store, "a")
    put(store, "b")
    panel.kind_filter.value = "resource"
    assert panel.rows == {}
    assert panel._empty.value == "No resource entries: 2 entries hidden by the kind filter."
    assert panel.header.value.endswith("· 2 entries hidden by the filter")


def test_the_chart_draws_data_entries_against_the_budget(store: CacheStore, panel: CachePanel) -> None:
    put(store, "big", size=16 * 1024 * 1024, label="big one")
    put(store, "small", size=1024)
    put(store, "conn", kind="resource", size=None)
    panel.refresh()
    chart = panel.chart.value
    assert chart.count("ipycache-chart-segment") == 2  # resources are not in the budget
    assert "width:25.00%" in chart  # 16 MiB of 64 MiB
    assert "title='big one: 16.0 MiB'" in chart
    assert "memory 16.0 MiB of 64.0 MiB (25%)" in chart


def test_the_text_filter_finds_entries_by_label_or_name(store: CacheStore, panel: CachePanel) -> None:
    put(store, "a", label="[3] df = load(path)", names=("df",))
    put(store, "b", label="[4] conn = connect()", names=("conn",))
    put(store, "c", label="fetch(city='Paris')", names=())
    panel.search.value = "CONN"
    assert list(panel.rows) == ["b"]
    assert panel.header.value.endswith("· 2 entries hidden by the filter")
    panel.search.value = "[3]"
    assert list(panel.rows) == ["a"]
    panel.search.value = "paris"
    assert list(panel.rows) == ["c"]
    assert panel.clear_button.description == "Clear 1 match"
    panel.search.value = "nothing like it"
    assert panel.rows == {}
    assert panel._empty.value == "No entries match “nothing like it”: 3 entries hidden by the filter."
    panel.search.value = ""
    assert list(panel.rows) == ["a", "b", "c"]


def test_clear_under_the_text_filter_drops_only_the_matches(store: CacheStore, panel: CachePanel) -> None:
    put(store, "a", label="keep me")
    put(store, "b", label="drop me")
    put(store, "c", label="drop me too")
    panel.search.value = "drop"
    assert panel.clear_button.description == "Clear 2 matches"
    panel.clear_button.click()
    assert [e.key for e in store.entries()] == ["a"]
    assert panel.rows == {}
    panel.search.value = ""
    assert list(panel.rows) == ["a"]
