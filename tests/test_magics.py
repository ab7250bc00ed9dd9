"""The cell magics in a real IPython InteractiveShell."""

from __future__ import annotations

import pathlib

import pytest
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell

import ipycache_ext
from ipycache_ext import CacheStore
from ipycache_ext._format import unnumbered

from .conftest import FakeClock, run

COUNTED = """%%cache_data --ignore runs {flags}
runs.append(1)
result = [n] * 3
"""


def counted(ip: InteractiveShell, flags: str = "") -> int:
    """Run the counting cell; return how many times its body has run so far."""
    ip.user_ns.setdefault("runs", [])
    ip.user_ns.setdefault("n", 1)
    run(ip, COUNTED.format(flags=flags))
    return len(ip.user_ns["runs"])


def test_a_cell_runs_once_for_the_same_inputs(shell: InteractiveShell) -> None:
    assert counted(shell) == 1
    assert counted(shell) == 1
    assert shell.user_ns["result"] == [1, 1, 1]


def test_a_cell_runs_again_when_an_input_value_changes(shell: InteractiveShell) -> None:
    counted(shell)
    shell.user_ns["n"] = 2
    assert counted(shell) == 2
    assert shell.user_ns["result"] == [2, 2, 2]
    shell.user_ns["n"] = 1  # back to a value seen before: a hit with that value's result
    assert counted(shell) == 2
    assert shell.user_ns["result"] == [1, 1, 1]


def test_changing_an_input_in_place_changes_the_key(shell: InteractiveShell) -> None:
    shell.user_ns["n"] = {"a": [1, 2]}
    counted(shell)
    shell.user_ns["n"]["a"].append(3)
    assert counted(shell) == 2


def test_comments_and_whitespace_do_not_change_the_key(shell: InteractiveShell) -> None:
    shell.user_ns["runs"] = []
    run(shell, "%%cache_data --ignore runs\nruns.append(1)\ny = 2")
    run(shell, "%%cache_data --ignore runs\n# a comment\nruns.append(1)   \n\ny = 2  # why")
    assert len(shell.user_ns["runs"]) == 1


def test_a_code_change_reruns_and_says_why(
    shell: InteractiveShell, capsys: pytest.CaptureFixture[str]
) -> None:
    shell.user_ns["runs"] = []
    run(shell, "%%cache_data --ignore runs\nruns.append(1)\ny = 2")
    run(shell, "%%cache_data --ignore runs\nruns.append(1)\ny = 3")
    assert len(shell.user_ns["runs"]) == 2
    assert shell.user_ns["y"] == 3
    assert "recomputing: cell code changed" in capsys.readouterr().out


def test_an_input_change_is_explained_by_name(
    shell: InteractiveShell, capsys: pytest.CaptureFixture[str]
) -> None:
    counted(shell)
    shell.user_ns["n"] = 5
    counted(shell)
    assert "recomputing: `n` changed" in capsys.readouterr().out
    run(shell, "%cache_info --explain")
    out = capsys.readouterr().out
    assert "`n` changed" in out and "first run" in out


def test_a_helper_function_change_reruns_the_cell(
    shell: InteractiveShell, capsys: pytest.CaptureFixture[str]
) -> None:
    run(shell, "def helper(x):\n    return x + 1")
    shell.user_ns["runs"] = []
    cell = "%%cache_data --ignore runs\nruns.append(1)\nout = helper(1)"
    run(shell, cell)
    run(shell, cell)
    assert len(shell.user_ns["runs"]) == 1
    run(shell, "def helper(x):\n    return x + 2")
    run(shell, cell)
    assert len(shell.user_ns["runs"]) == 2
    assert shell.user_ns["out"] == 3
    assert "`helper` changed" in capsys.readouterr().out


def test_a_global_read_by_a_helper_is_part_of_the_key(shell: InteractiveShell) -> None:
    run(shell, "scale = 2\ndef helper(x):\n    return x * scale")
    shell.user_ns["runs"] = []
    cell = "%%cache_data --ignore runs\nruns.append(1)\nout = helper(5)"
    run(shell, cell)
    run(shell, "scale = 3")
    run(shell, cell)
    assert shell.user_ns["out"] == 15
    assert len(shell.user_ns["runs"]) == 2


def test_mutating_a_hit_does_not_leak_into_the_next_hit(shell: InteractiveShell) -> None:
    counted(shell)
    shell.user_ns["result"].append("mutated")
    counted(shell)  # a hit
    assert shell.user_ns["result"] == [1, 1, 1]
    shell.user_ns["result"].append("again")
    counted(shell)
    assert shell.user_ns["result"] == [1, 1, 1]
    assert len(shell.user_ns["runs"]) == 1


def test_mutating_the_first_run_result_does_not_change_the_cache(shell: InteractiveShell) -> None:
    counted(shell)
    shell.user_ns["result"].clear()
    counted(shell)
    assert shell.user_ns["result"] == [1, 1, 1]


def test_hits_replay_output_and_the_last_value(
    shell: InteractiveShell, capsys: pytest.CaptureFixture[str]
) -> None:
    cell = "%%cache_data\nprint('working hard')\nx = 21\nx * 2"
    assert run(shell, cell) == 42
    first = capsys.readouterr().out
    assert "working hard" in first
    assert run(shell, cell) == 42
    second = capsys.readouterr().out
    assert "working hard" in second
    assert "[ipycache_ext] cache hit" in second
    assert shell.user_ns["Out"][max(shell.user_ns["Out"])] == 42


def test_quiet_hides_the_hit_line(shell: InteractiveShell, capsys: pytest.CaptureFixture[str]) -> None:
    assert counted(shell, "--quiet") == 1
    assert counted(shell, "--quiet") == 1  # a hit
    assert "cache hit" not in capsys.readouterr().out
    assert counted(shell) == 1  # the same entry, without --quiet: the line is there
    assert "cache hit" in capsys.readouterr().out


def test_rich_displays_are_recorded_and_replayed(shell: InteractiveShell, store: CacheStore) -> None:
    from IPython.core.displaypub import CapturingDisplayPublisher

    original = shell.display_pub
    shell.display_pub = CapturingDisplayPublisher()
    try:
        cell = "%%cache_data\nfrom IPython.display import display, HTML\ndisplay(HTML('<b>hi</b>'))\nv = 1"
        run(shell, cell)
        run(shell, cell)
        shown = [o for o in shell.display_pub.outputs if "text/html" in o["data"]]
        assert [o["data"]["text/html"] for o in shown] == ["<b>hi</b>", "<b>hi</b>"]
        assert store.stats().hits == 1  # the second display was replayed, not shown again by a run
    finally:
        shell.display_pub = original


def test_explicit_names_limit_what_is_cached(shell: InteractiveShell) -> None:
    shell.user_ns["runs"] = []
    cell = "%%cache_data --ignore runs keep\nruns.append(1)\nkeep = 1\ntemp = 2"
    run(shell, cell)
    del shell.user_ns["temp"]
    run(shell, cell)
    assert shell.user_ns["keep"] == 1
    assert "temp" not in shell.user_ns
    assert len(shell.user_ns["runs"]) == 1


def test_an_input_changed_in_place_by_the_cell_is_restored_on_a_hit(
    shell: InteractiveShell, store: CacheStore
) -> None:
    pd = pytest.importorskip("pandas")
    shell.user_ns["df"] = pd.DataFrame({"a": [1, 2, 3]})
    run(shell, "%%cache_data\ndf['b'] = df['a'] * 2")
    assert list(shell.user_ns["df"].columns) == ["a", "b"]
    shell.user_ns["df"] = pd.DataFrame({"a": [1, 2, 3]})  # same input again
    run(shell, "%%cache_data\ndf['b'] = df['a'] * 2")
    assert store.stats().hits == 1
    assert list(shell.user_ns["df"]["b"]) == [2, 4, 6]


def test_resource_hits_bind_the_identical_object(shell: InteractiveShell) -> None:
    cell = "%%cache_resource\nimport sqlite3\nconn = sqlite3.connect(':memory:', check_same_thread=False)"
    run(shell, cell)
    first = shell.user_ns["conn"]
    del shell.user_ns["conn"]
    run(shell, cell)
    assert shell.user_ns["conn"] is first


def test_validate_recomputes_a_broken_resource(shell: InteractiveShell, store: CacheStore) -> None:
    shell.user_ns["made"] = []
    cell = (
        "%%cache_resource --ignore made --validate 'handle[\"ok\"]'\n"
        "handle = {'ok': True}\nmade.append(handle)"
    )
    run(shell, cell)
    shell.user_ns["handle"]["ok"] = False  # the resource went bad
    run(shell, cell)
    assert len(shell.user_ns["made"]) == 2
    assert shell.user_ns["handle"]["ok"] is True
    assert len(store.entries()) == 1
    run(shell, cell)  # valid again: a hit
    assert len(shell.user_ns["made"]) == 2


def test_ttl_expires_entries(
    shell: InteractiveShell, clock: FakeClock, capsys: pytest.CaptureFixture[str]
) -> None:
    assert counted(shell, "--ttl 10m") == 1
    clock.advance(599)
    assert counted(shell, "--ttl 10m") == 1
    clock.advance(2)
    assert counted(shell, "--ttl 10m") == 2
    assert "recomputing: expired (TTL)" in capsys.readouterr().out


@pytest.mark.parametrize("bad", ["0", "-5", "abc", "nan", "inf", "10x"])
def test_a_bad_ttl_is_a_usage_error_naming_the_value(shell: InteractiveShell, bad: str) -> None:
    result = shell.run_cell(f"%%cache_data --ttl {bad}\nq = 1")
    assert isinstance(result.error_in_exec, UsageError)
    assert bad in str(result.error_in_exec)
    assert "q" not in shell.user_ns


def test_max_entries_keeps_the_most_recent(shell: InteractiveShell, store: CacheStore) -> None:
    for n in (1, 2, 3):
        shell.user_ns["n"] = n
        counted(shell, "--max-entries 2")
    assert len(store.entries()) == 2
    shell.user_ns["n"] = 1  # evicted: least recently used
    assert counted(shell, "--max-entries 2") == 4
    shell.user_ns["n"] = 3
    assert counted(shell, "--max-entries 2") == 4


def test_the_memory_budget_evicts_least_recently_used(shell: InteractiveShell, store: CacheStore) -> None:
    cell = "%%cache_data\nblob = bytes(400_000) + bytes([k])"
    keys: list[str] = []
    for k in range(3):
        shell.user_ns["k"] = k
        before = {e.key for e in store.entries()}
        run(shell, cell)
        (new,) = {e.key for e in store.entries()} - before
        keys.append(new)
    sizes = [e.size or 0 for e in store.entries()]
    store.memory_budget = sum(sizes) - 1  # one has to go: the oldest
    assert {e.key for e in store.entries()} == {keys[1], keys[2]} and store.stats().evictions == 1
    shell.user_ns["k"] = 0
    run(shell, cell)  # computed again (a miss), which pushes out the least recently used: k=1
    assert store.stats().misses == 4
    assert {e.key for e in store.entries()} == {keys[2], keys[0]} and store.stats().evictions == 2


def test_budget_is_settable_through_config(shell: InteractiveShell, store: CacheStore) -> None:
    run(shell, "%config CacheMagics.memory_budget = 12345")
    assert store.memory_budget == 12345


def test_refresh_recomputes_and_replaces(shell: InteractiveShell, store: CacheStore) -> None:
    counted(shell)
    assert counted(shell, "--refresh") == 2
    assert len(store.entries()) == 1
    assert counted(shell) == 2


def test_a_failing_cell_caches_nothing_and_shows_the_users_traceback(
    shell: InteractiveShell, store: CacheStore, capsys: pytest.CaptureFixture[str]
) -> None:
    run(shell, "def helper(v):\n    return 1 / v")
    result = shell.run_cell("%%cache_data\npartial = 'set before the error'\nboom = helper(0)")
    assert isinstance(result.error_in_exec, ZeroDivisionError)
    assert store.entries() == []
    assert shell.user_ns["partial"] == "set before the error"  # as after a normal run
    out = capsys.readouterr().out
    assert "boom = helper(0)" in out and "return 1 / v" in out
    assert "_store.py" not in out and "exec(" not in out


def test_the_run_after_a_failed_one_says_the_last_run_did_not_finish(
    shell: InteractiveShell, capsys: pytest.CaptureFixture[str]
) -> None:
    shell.user_ns["fail"] = True
    cell = "%%cache_data --ignore fail\nif fail:\n    raise ValueError('no')\nr = 1"
    assert isinstance(shell.run_cell(cell).error_in_exec, ValueError)
    shell.user_ns["fail"] = False
    capsys.readouterr()
    run(shell, cell)
    assert "recomputing: the last run did not finish" in capsys.readouterr().out
    run(shell, "%cache_clear")
    run(shell, cell)
    assert "recomputing: the cache was cleared" in capsys.readouterr().out  # a success forgot it


def test_failure_line_numbers_match_the_cell(shell: InteractiveShell) -> None:
    result = shell.run_cell("%%cache_data\nx = 1\nraise ValueError('line 3 of the cell')")
    error = result.error_in_exec
    assert isinstance(error, ValueError)
    tb = error.__traceback__
    assert tb is not None
    while tb.tb_next is not None:
        tb = tb.tb_next
    assert tb.tb_lineno == 3


def test_an_unhashable_input_is_keyed_by_its_identity(
    shell: InteractiveShell, store: CacheStore, capsys: pytest.CaptureFixture[str]
) -> None:
    run(shell, "import threading\nlock = threading.Lock()")
    cell = "%%cache_data\nwith lock:\n    v = 1"
    run(shell, cell)
    run(shell, cell)  # the same lock object: a hit
    assert store.stats().hits == 1
    (entry,) = store.entries()
    assert "`lock` keyed by identity" in (entry.miss_reason or "")
    run(shell, "lock = threading.Lock()")  # another object with the same (unhashable) state
    capsys.readouterr()
    run(shell, cell)
    assert "recomputing: `lock` changed" in capsys.readouterr().out
    assert store.stats().hits == 1


def test_a_cell_that_changes_what_it_reads_on_every_run_says_so_once(shell: InteractiveShell) -> None:
    run(shell, "calls = []")
    cell = "%%cache_data\ncalls.append(1)\nn = len(calls)"
    run(shell, cell)
    with pytest.warns(RuntimeWarning, match=r"changes `calls`.*on every run.*--ignore calls"):
        run(shell, cell)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        run(shell, cell)  # said once only
    assert shell.user_ns["n"] == 3


def test_an_unpicklable_result_says_to_use_cache_resource(shell: InteractiveShell, store: CacheStore) -> None:
    result = shell.run_cell("%%cache_data\nimport threading\nlk = threading.Lock()\nok = 1")
    assert isinstance(result.error_in_exec, UsageError)
    assert "%%cache_resource" in str(result.error_in_exec) and "`lk`" in str(result.error_in_exec)
    assert shell.user_ns["ok"] == 1  # the cell's variables stay set
    assert store.entries() == []


def test_cache_clear_of_a_cached_functions_name_points_to_its_clear(shell: InteractiveShell) -> None:
    run(shell, "import ipycache_ext\n@ipycache_ext.cache_data\ndef fetch(n):\n    return n")
    result = shell.run_cell("%cache_clear fetch")
    assert isinstance(result.error_in_exec, UsageError)
    assert "fetch is a cached function: fetch.clear() clears its entries" in str(result.error_in_exec)


def test_cache_clear_by_kind_key_and_label(shell: InteractiveShell, store: CacheStore) -> None:
    run(shell, "%%cache_data\na = 1")
    run(shell, "%%cache_data\nb = 2")
    run(shell, "%%cache_resource\nc = object()")
    run(shell, "%cache_clear --resource")
    assert {e.kind for e in store.entries()} == {"data"}
    run(shell, "%cache_clear b = 2")
    assert [unnumbered(e.label) for e in store.entries()] == ["a = 1"]
    assert store.entries()[0].label.startswith("[")  # the cell's execution number, as In[n] shows
    run(shell, f"%cache_clear {store.entries()[0].key[:8]}")
    assert store.entries() == []
    result = shell.run_cell("%cache_clear nothing-like-this")
    assert isinstance(result.error_in_exec, UsageError)
    run(shell, "%%cache_data\na = 1")
    run(shell, "%cache_clear")
    assert store.entries() == []


def test_cache_info_lists_entries(shell: InteractiveShell, capsys: pytest.CaptureFixture[str]) -> None:
    counted(shell, "--ttl 1h")
    capsys.readouterr()
    run(shell, "%cache_info")
    out = capsys.readouterr().out
    assert "runs.append(1)" in out and "data" in out and "result" in out and "1h 00m" in out


def test_names_that_are_not_identifiers_are_usage_errors(shell: InteractiveShell) -> None:
    for line in ("%%cache_data class", "%%cache_data 1x", "%%cache_data --ignore for"):
        result = shell.run_cell(f"{line}\nq = 1")
        assert isinstance(result.error_in_exec, UsageError), line


@pytest.mark.parametrize(
    "flags",
    [
        "--ignore log bar",
        "--ignore=log bar",
        "--depends-on prices.csv bar",
        "--ttl 1h --ignore log bar",
        "--ign log bar",
        "--depends prices.csv bar",
    ],
)
def test_a_second_value_after_a_one_value_option_is_refused_before_anything_runs(
    shell: InteractiveShell, flags: str
) -> None:
    """``--ignore log bar`` would ignore ``log`` and cache only ``bar``, an input: refused,
    naming the slip and both ways out; nothing runs."""
    shell.run_cell("log, bar, runs = 1, 2, []")
    result = shell.run_cell(f"%%cache_data {flags}\nruns.append(1)\nx = log + bar")
    assert isinstance(result.error_in_exec, UsageError)
    message = str(result.error_in_exec)
    assert "bar is taken as a result NAME" in message and "takes one value" in message
    flag = "--depends-on" if "--dep" in flags else "--ignore"
    assert f"{flag} bar" in message and "goes before the options" in message
    assert shell.user_ns["runs"] == [] and "x" not in shell.user_ns


@pytest.mark.parametrize(
    ("line", "body"),
    [
        ("--ignore log x", "x = log + 1"),
        ("--depends-on prices.csv rows", "rows.append(log)"),
        ("--ignore log rows", "rows[0] = log"),
        ("--ignore log x", "exec('x = 2')"),
    ],
)
def test_a_name_after_a_one_value_option_that_the_cell_changes_is_a_result(
    shell: InteractiveShell, store: CacheStore, line: str, body: str
) -> None:
    """Assigned, changed in place (an item, a method) or bound where the analysis can't see:
    the NAME is the cell's result, served by the hit."""
    import warnings

    name = line.rsplit(maxsplit=1)[-1]
    for _ in range(2):
        shell.run_cell("log, rows = 1, [0]")
        shell.user_ns.pop("x", None)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # exec: "may read any variable"
            result = shell.run_cell(f"%%cache_data {line}\n{body}\ny = 2")
        assert result.error_in_exec is None, result.error_in_exec
    assert store.stats().hits == 1
    assert shell.user_ns[name] == {"x": 2, "rows": [0, 1] if "append" in body else [1]}[name]


def test_loading_twice_is_harmless_and_unload_removes_the_magics() -> None:
    ip = InteractiveShell.instance()
    store = CacheStore()
    try:
        ipycache_ext.load_ipython_extension(ip, store=store)
        ipycache_ext.load_ipython_extension(ip, store=store)
        assert "cache_data" in ip.magics_manager.magics["cell"]
        ipycache_ext.unload_ipython_extension(ip)
        assert "cache_data" not in ip.magics_manager.magics["cell"]
        assert "cache_info" not in ip.magics_manager.magics["line"]
    finally:
        ipycache_ext.unload_ipython_extension(ip)


def test_load_ext_uses_the_kernel_wide_store() -> None:
    ip = InteractiveShell.instance()
    try:
        ip.run_line_magic("load_ext", "ipycache_ext")
        run(ip, "%%cache_data\nkernel_wide = 41 + 1")
        assert any(unnumbered(e.label) == "kernel_wide = 41 + 1" for e in ipycache_ext.get_store().entries())
    finally:
        ip.run_line_magic("unload_ext", "ipycache_ext")
        ipycache_ext.get_store().clear()
        ip.reset(new_session=False)


def test_ipython_syntax_inside_the_cell(shell: InteractiveShell) -> None:
    shell.user_ns["runs"] = []
    cell = "%%cache_data --ignore runs\n%time z = 5\nruns.append(1)"
    run(shell, cell)
    run(shell, cell)
    assert shell.user_ns["z"] == 5
    assert len(shell.user_ns["runs"]) == 1


def test_a_name_deleted_by_the_cell_is_deleted_on_a_hit(shell: InteractiveShell, store: CacheStore) -> None:
    shell.user_ns["scratch"] = 1
    cell = "%%cache_data\ntotal = scratch + 1\ndel scratch"
    run(shell, cell)
    shell.user_ns["scratch"] = 1
    run(shell, cell)
    assert store.stats().hits == 1
    assert "scratch" not in shell.user_ns
    assert shell.user_ns["total"] == 2


def test_a_name_bound_then_deleted_is_gone_after_a_hit_even_if_it_was_absent_when_computed(
    shell: InteractiveShell, store: CacheStore
) -> None:
    shell.user_ns.pop("tmp", None)
    cell = "%%cache_data\ntmp = 5\nres = tmp * 2\ndel tmp"
    run(shell, cell)
    shell.user_ns["tmp"] = 1  # another cell binds it
    run(shell, cell)
    assert store.stats().hits == 1
    assert "tmp" not in shell.user_ns and shell.user_ns["res"] == 10  # as a real run leaves it


def test_a_name_bound_on_one_path_only_is_left_alone_by_a_hit_of_the_other(
    shell: InteractiveShell, store: CacheStore
) -> None:
    shell.user_ns.update(flag=False)
    shell.user_ns.pop("maybe", None)
    cell = "%%cache_data\nif flag:\n    maybe = 1\nres = 2"
    run(shell, cell)
    shell.user_ns["maybe"] = "mine"
    run(shell, cell)
    assert store.stats().hits == 1 and shell.user_ns["maybe"] == "mine"  # a real run keeps it too


@pytest.mark.parametrize("ending", ["v;", "v;  # done", "v ;\n\n"])
def test_a_trailing_semicolon_silences_the_value_on_a_miss_and_a_hit(
    shell: InteractiveShell, store: CacheStore, ending: str
) -> None:
    cell = "%%cache_data\nv = 4\n" + ending
    assert run(shell, cell) is None and store.stats().misses == 1
    assert run(shell, cell) is None and store.stats().hits == 1
    assert shell.user_ns["v"] == 4
    assert run(shell, "%%cache_data\nv = 4\nv") == 4  # without it, the value is shown


def test_a_cell_reading_a_cached_resource_is_keyed_by_that_resource(shell: InteractiveShell) -> None:
    resource = "%%cache_resource\nimport sqlite3\nconn = sqlite3.connect(':memory:', check_same_thread=False)"
    run(shell, resource)
    shell.user_ns["runs"] = []
    query = "%%cache_data --ignore runs\nruns.append(1)\nrows = conn.execute('select 1 + 1').fetchall()"
    run(shell, query)  # conn can't be hashed by content; it is keyed as "the resource of that cell"
    run(shell, query)
    assert shell.user_ns["rows"] == [(2,)]
    assert len(shell.user_ns["runs"]) == 1
    run(shell, "%cache_clear --resource")
    run(shell, resource)  # the same resource cell again: same identity, so restarts keep query hits
    run(shell, query)
    assert len(shell.user_ns["runs"]) == 1
    other = resource.replace("':memory:'", "'file::memory:?cache=shared'")
    run(shell, other)  # another database: cells reading it compute again
    run(shell, query)
    assert len(shell.user_ns["runs"]) == 2


def _fresh_kernel(ip: InteractiveShell, clock: FakeClock, cache_dir: str) -> CacheStore:
    """Unload, and load again on an empty store: what a kernel restart leaves."""
    ipycache_ext.unload_ipython_extension(ip)
    store = CacheStore(timer=clock)
    ipycache_ext.load_ipython_extension(ip, store=store)
    run(ip, f"%config CacheMagics.cache_dir = {cache_dir!r}")
    return store


def test_persisted_cells_are_hits_after_a_restart(
    shell: InteractiveShell, clock: FakeClock, tmp_path: object, capsys: pytest.CaptureFixture[str]
) -> None:
    cache_dir = str(tmp_path)
    store = _fresh_kernel(shell, clock, cache_dir)
    shell.user_ns.update(runs=[], n=3)
    cell = (
        "%%cache_data --persist --ttl 1h --ignore runs\n"
        "runs.append(1)\nprint('slow work')\nsquares = [i * i for i in range(n)]\nlen(squares)"
    )
    assert run(shell, cell) == 3
    assert store.entries()[0].persisted
    store = _fresh_kernel(shell, clock, cache_dir)
    capsys.readouterr()
    assert run(shell, cell) == 3  # the last value comes back too
    out = capsys.readouterr().out
    assert "on disk" in out and "slow work" in out
    assert shell.user_ns["squares"] == [0, 1, 4] and shell.user_ns["runs"] == [1]
    run(shell, "%cache_info")
    assert "data · disk" in capsys.readouterr().out
    clock.advance(3601)  # the TTL holds across the restart
    store = _fresh_kernel(shell, clock, cache_dir)
    run(shell, cell)
    assert shell.user_ns["runs"] == [1, 1]
    run(shell, "%cache_clear")
    store = _fresh_kernel(shell, clock, cache_dir)
    run(shell, cell)
    assert shell.user_ns["runs"] == [1, 1, 1]  # %cache_clear emptied the disk as well


def test_resources_cannot_be_persisted(shell: InteractiveShell) -> None:
    result = shell.run_cell("%%cache_resource --persist\nthing = object()")
    assert isinstance(result.error_in_exec, UsageError)
    assert "%%cache_data --persist" in str(result.error_in_exec)
    assert "thing" not in shell.user_ns


def test_the_cache_directory_comes_from_the_environment(
    shell: InteractiveShell, store: CacheStore, tmp_path: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pathlib import Path

    monkeypatch.setenv("IPYCACHE_EXT_CACHE_DIR", str(tmp_path))
    run(shell, "%%cache_data --persist\nvalue = 42")
    assert len(list(Path(str(tmp_path)).glob("*.entry"))) == 1
    assert (Path(str(tmp_path)) / "secret.key").stat().st_mode & 0o777 == 0o600


def test_an_unwritable_cache_directory_costs_one_warning_and_nothing_else(
    shell: InteractiveShell, store: CacheStore
) -> None:
    shell.user_ns["runs"] = []
    run(shell, "%config CacheMagics.cache_dir = '/proc/self/ipycache_ext'")  # read-only, even for root
    cell = "%%cache_data --persist --ignore runs\nruns.append(1)\nvalue = 42"
    with pytest.warns(RuntimeWarning, match="persistence is off"):
        run(shell, cell)
    assert shell.user_ns["value"] == 42  # delivered
    run(shell, cell)  # and cached in memory
    assert shell.user_ns["runs"] == [1]
    assert not store.entries()[0].persisted


def test_an_output_rebound_to_the_value_it_had_is_restored_on_a_hit(
    shell: InteractiveShell, store: CacheStore
) -> None:
    shell.user_ns["k"] = 5
    cell = "%%cache_data\nk = 5\nm = k + 1"
    run(shell, cell)
    shell.user_ns["k"] = 7
    run(shell, cell)  # a hit: a real run would set k back to 5
    assert store.stats().hits == 1
    assert shell.user_ns["k"] == 5 and shell.user_ns["m"] == 6


def test_names_in_magic_and_shell_lines_are_inputs_and_outputs(shell: InteractiveShell) -> None:
    shell.user_ns.update(n=1, runs=[])
    cell = "%%cache_data --ignore runs\nruns.append(1)\n%time y = n * 2\nlisting = !echo {n}"
    run(shell, cell)
    assert shell.user_ns["y"] == 2
    shell.user_ns["n"] = 50
    run(shell, cell)  # n is read by %time and by the shell line: a miss
    assert shell.user_ns["y"] == 100 and list(shell.user_ns["listing"]) == ["50"]
    assert shell.user_ns["runs"] == [1, 1]
    del shell.user_ns["y"]
    run(shell, cell)  # a hit binds y, which %time assigned
    assert shell.user_ns["y"] == 100 and shell.user_ns["runs"] == [1, 1]


def test_a_cached_value_that_no_longer_loads_is_dropped_and_recomputed(
    shell: InteractiveShell, store: CacheStore, tmp_path: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    import importlib
    import sys
    from pathlib import Path

    folder = Path(str(tmp_path))
    (folder / "moving_lib.py").write_text("class Thing:\n    pass\n")
    monkeypatch.syspath_prepend(str(folder))
    monkeypatch.delitem(sys.modules, "moving_lib", raising=False)
    shell.user_ns["moving_lib"] = importlib.import_module("moving_lib")
    shell.user_ns["runs"] = []
    # moving_lib is left out of the key (as an installed package that moves a class would not
    # change it before the upgrade is imported), so the stored pickle is what notices
    cell = "%%cache_data --ignore runs --ignore moving_lib\nruns.append(1)\nthing = moving_lib.Thing()"
    run(shell, cell)
    del sys.modules["moving_lib"].Thing  # an upgrade moved the class: the stored pickle can't load
    with pytest.warns(RuntimeWarning, match="could not be loaded .*dropped and computed again"):
        result = shell.run_cell(cell)  # the cell itself now fails too (moving_lib.Thing is gone) ...
    assert isinstance(result.error_in_exec, AttributeError)
    assert "_serialize.py" not in "".join(map(str, result.error_in_exec.args))
    assert shell.user_ns["runs"] == [1, 1]  # ... but it was run, not served a broken entry
    assert store.entries() == []


def test_decorators_persist_where_the_magics_are_configured_and_clear_empties_the_disk(
    shell: InteractiveShell, clock: FakeClock, tmp_path: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pathlib import Path

    from ipycache_ext import cache_data

    folder = Path(str(tmp_path)) / "configured"
    store = _fresh_kernel(shell, clock, str(folder))
    run(shell, "%config CacheMagics.disk_budget = 50_000_000")
    monkeypatch.setattr(cache_data, "store", store)

    @cache_data(persist="disk")
    def double(x: int) -> int:
        return 2 * x

    assert double(21) == 42
    assert len(list(folder.glob("*.entry"))) == 1  # the configured directory, not the default
    assert store.stats().disk_budget == 50_000_000
    store = _fresh_kernel(shell, clock, str(folder))  # a restart: nothing open yet
    run(shell, "%cache_clear")
    assert list(folder.glob("*.entry")) == []


def test_the_magic_line_is_not_dollar_expanded(shell: InteractiveShell) -> None:
    """IPython's $variable expansion is quadratic in the line's length (3.9 s for 20k characters)
    and a cache option never needs it: `$x` stays text, so it is refused as a name."""
    run(shell, "x = 'y'")
    result = shell.run_cell("%%cache_data $x\ny = 1")
    assert isinstance(result.error_in_exec, UsageError)
    assert "'$x' is not a variable name" in str(result.error_in_exec)
    long_line = "--ignore " + "q" * 20_000  # 20k characters
    run(shell, f"%%cache_data {long_line}\nz = 2")
    assert shell.user_ns["z"] == 2


def test_a_cell_label_is_its_number_and_first_meaningful_line(
    shell: InteractiveShell, store: CacheStore
) -> None:
    run(shell, "%%cache_data\n# load the data\nimport math\nfrom os import path\nroot = math.sqrt(16)")
    (entry,) = store.entries()
    number, _, rest = entry.label.partition("] ")
    assert number.lstrip("[").isdigit() and rest == "root = math.sqrt(16)"
    run(shell, "%%cache_data\nimport math")  # nothing but an import: that is the label
    assert sorted(unnumbered(e.label) for e in store.entries()) == ["import math", "root = math.sqrt(16)"]
    run(shell, "%cache_clear root = math.sqrt(16)")  # a label matches without its number
    assert [unnumbered(e.label) for e in store.entries()] == ["import math"]


def test_cache_info_shows_the_first_rows_and_says_how_to_see_all(
    shell: InteractiveShell, capsys: pytest.CaptureFixture[str]
) -> None:
    for i in range(60):
        run(shell, f"%%cache_data\nv{i} = {i}")
    capsys.readouterr()
    run(shell, "%cache_info")
    shown = capsys.readouterr().out
    assert "v0 = 0" in shown and "v59 = 59" not in shown and "%cache_info --all" in shown
    run(shell, "%cache_info --all")
    assert "v59 = 59" in capsys.readouterr().out


def test_a_notebook_cannot_redirect_the_team_store_or_add_a_trusted_signer(
    shell: InteractiveShell, capfd: pytest.CaptureFixture[str]
) -> None:
    for setting in ("team_store = 'redis://127.0.0.1:1/0'", "team_trusted_keys = ['ed25519:AAAA']"):
        shell.run_cell(f"%config CacheMagics.{setting}")  # %config prints what its target raised
        said = capfd.readouterr()
        assert "can't be changed from a notebook" in said.out + said.err, setting
        assert "ipython_config.py" in said.out + said.err
    magics = shell.magics_manager.registry["CacheMagics"]
    assert magics.team_store is None and magics.team_trusted_keys is None


def test_the_team_store_set_in_the_configuration_is_used(store: CacheStore, tmp_path: pathlib.Path) -> None:
    from traitlets.config import Config

    from ipycache_ext import _persist

    ip = InteractiveShell.instance()
    config = Config()
    config.CacheMagics.team_store = f"file://{tmp_path / 'team'}"
    config.CacheMagics.team_namespace = "analytics"
    ip.config.update(config)
    try:
        ipycache_ext.load_ipython_extension(ip, store=store)
        _directory, _budget, team = _persist._settings[store]
        assert team is not None and team.url.endswith("/team") and team.namespace == "analytics"
    finally:
        ipycache_ext.unload_ipython_extension(ip)
        ip.config.pop("CacheMagics", None)


def test_a_cache_warning_points_at_the_users_cell_not_at_our_code(
    shell: InteractiveShell, store: CacheStore
) -> None:
    import warnings

    from ipycache_ext import CacheWarning

    store.memory_budget = 1024
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run(shell, "%%cache_data\nimport numpy as np\nbig = np.ones(100_000)")
    (warning,) = [w for w in caught if issubclass(w.category, CacheWarning)]
    assert "larger than the whole memory budget" in str(warning.message)
    assert "ipycache_ext" not in warning.filename and "IPython" not in warning.filename
    assert warning.filename.startswith("<ipython-input-")  # the cell's own code


def test_reading_ipythons_output_history_warns_that_it_is_not_part_of_the_key(
    shell: InteractiveShell, store: CacheStore
) -> None:
    run(shell, "10")
    with pytest.warns(RuntimeWarning, match=r"reads `_`, IPython's output or input history.*value = _"):
        run(shell, "%%cache_data\ny = _ * 2")
    assert shell.user_ns["y"] == 20
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        run(shell, "%%cache_data\nz = 3")  # a cell that reads no history says nothing
