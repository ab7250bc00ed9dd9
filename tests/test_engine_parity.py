"""Both front ends give the same outcome for the same input: one table, run through a cell and a function.

Each row sets an input up, reads it from a cached cell (``%%cache_data``) and from a cached
function (``@cache_data``, reading the same name as a global), then changes it the way a
user would. Both must hit while it is unchanged, miss after the change, and fail (or not)
alike.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from IPython.core.interactiveshell import InteractiveShell

import ipycache_ext
from ipycache_ext import CacheStore

from .conftest import run


@dataclass(frozen=True)
class Case:
    setup: str  # run before: binds X
    use: str  # an expression reading X
    change: str  # changes what X is (rebinding, in place, editing a file...)


_CONNECT = "sqlite3.connect(':memory:', check_same_thread=False)"
CASES = {
    "plain value": Case("X = 3", "X + 1", "X = 4"),
    "nested data": Case("X = {'a': [1, 2], 'b': (3,)}", "len(X['a'])", "X['a'].append(3)"),
    "frame": Case(
        "import pandas as pd\nX = pd.DataFrame({'a': [1, 2]})", "int(X['a'].sum())", "X.loc[0, 'a'] = 9"
    ),
    "cell resource": Case(
        f"%%cache_resource\nimport sqlite3\nX = {_CONNECT}",
        "X.execute('select 1').fetchone()[0]",
        f"%%cache_resource\nimport sqlite3\nX = {_CONNECT[:-1]}, timeout=1)",
    ),
    "function resource": Case(
        "import sqlite3\nfrom ipycache_ext import cache_resource\n"
        f"@cache_resource\ndef connect(name):\n    return {_CONNECT}\n"
        "X = connect('a')",
        "X.execute('select 1').fetchone()[0]",
        "X = connect('b')",
    ),
    "unhashable handle": Case("import threading\nX = threading.Lock()", "X.locked()", "X = threading.Lock()"),
    "notebook function": Case("def X(v):\n    return v + 1", "X(1)", "def X(v):\n    return v + 2"),
    "local-module function": Case("import parity_mod\nX = parity_mod.f", "X()", "__edit_module__"),
}


@pytest.fixture
def module_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    (tmp_path / "parity_mod.py").write_text("def f():\n    return 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "parity_mod", raising=False)
    yield tmp_path
    sys.modules.pop("parity_mod", None)


@pytest.fixture
def decorators_on(store: CacheStore, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ipycache_ext.cache_data, "store", store)
    monkeypatch.setattr(ipycache_ext.cache_resource, "store", store)


def _apply_change(shell: InteractiveShell, case: Case, folder: Path) -> None:
    if case.change != "__edit_module__":
        run(shell, case.change)
        return
    (folder / "parity_mod.py").write_text("def f():\n    return 2  # edited\n")
    run(shell, "import importlib, parity_mod\nimportlib.reload(parity_mod)\nX = parity_mod.f")


def _outcomes(shell: InteractiveShell, store: CacheStore, case: Case, folder: Path, via: str) -> list[str]:
    """hit/miss (or the error's type) of: first run, second run, run after the change."""
    run(shell, case.setup)
    if via == "cell":
        step = f"%%cache_data\nresult = {case.use}"
    else:
        run(shell, f"from ipycache_ext import cache_data\n@cache_data\ndef g():\n    return {case.use}")
        step = "result = g()"
    seen: list[str] = []
    for when in ("first", "again", "changed"):
        if when == "changed":
            _apply_change(shell, case, folder)
        before = store.stats().hits
        outcome = shell.run_cell(step, store_history=True)
        error = outcome.error_in_exec or outcome.error_before_exec
        if error is not None:
            seen.append(type(error).__name__)
        else:
            seen.append("hit" if store.stats().hits > before else "miss")
    return seen


@pytest.mark.parametrize("name", list(CASES))
def test_a_cell_and_a_function_have_the_same_outcome(
    name: str, shell: InteractiveShell, store: CacheStore, module_dir: Path, decorators_on: None
) -> None:
    case = CASES[name]
    through_cell = _outcomes(shell, store, case, module_dir, "cell")
    store.clear()
    shell.reset(new_session=False)
    sys.modules.pop("parity_mod", None)
    (module_dir / "parity_mod.py").write_text("def f():\n    return 1\n")
    importlib.invalidate_caches()
    through_function = _outcomes(shell, store, case, module_dir, "function")
    assert through_cell == ["miss", "hit", "miss"], through_cell
    assert through_function == through_cell


def test_an_unhashable_argument_is_an_error_naming_the_function_and_both_ways_out(
    shell: InteractiveShell, decorators_on: None
) -> None:
    run(
        shell,
        "import threading\nfrom ipycache_ext import cache_data\n@cache_data\ndef locked(lock):\n    return 1",
    )
    outcome = shell.run_cell("locked(threading.Lock())")
    error = outcome.error_in_exec
    assert isinstance(error, ipycache_ext.UnhashableInputError)
    message = str(error)
    assert "locked()" in message and "`lock`" in message
    assert "`_lock`" in message and "hash_funcs={_thread.lock: lambda value: ...}" in message


def test_a_resource_survives_unloading_and_loading_the_extension(
    shell: InteractiveShell, store: CacheStore
) -> None:
    run(shell, "%%cache_resource\nimport threading\nconn = threading.Lock()")
    run(shell, "%%cache_data\nq = conn.locked()")
    ipycache_ext.unload_ipython_extension(shell)
    ipycache_ext.load_ipython_extension(shell, store=store)
    before = store.stats().hits
    run(shell, "%%cache_data\nq = conn.locked()")
    assert store.stats().hits == before + 1  # still keyed as the same resource, not a new identity


def test_a_query_through_a_cached_connection_recomputes_when_the_database_changes(
    shell: InteractiveShell, store: CacheStore, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import sqlite3

    database = tmp_path / "shop.db"
    with sqlite3.connect(database) as setup:
        setup.execute("create table sales (v)")
        setup.execute("insert into sales values (1)")
    setup.close()
    connect = f"sqlite3.connect({str(database)!r}, check_same_thread=False)"
    run(shell, f"%%cache_resource\nimport sqlite3\nconn = {connect}")
    cell = "%%cache_data\ntotal = conn.execute('select sum(v) from sales').fetchone()[0]"
    run(shell, cell)
    run(shell, cell)
    assert store.stats().hits == 1 and shell.user_ns["total"] == 1
    with sqlite3.connect(database) as change:  # another process writes to the database
        change.execute("insert into sales values (5)")
    change.close()
    capsys.readouterr()
    run(shell, cell)
    assert "shop.db` changed" in capsys.readouterr().out
    assert shell.user_ns["total"] == 6


def test_persisting_an_entry_keyed_by_identity_warns_once_naming_the_input(
    shell: InteractiveShell, tmp_path: Path
) -> None:
    run(shell, f"%config CacheMagics.cache_dir = {str(tmp_path / 'cache')!r}")
    run(shell, "import threading\nlock = threading.Lock()")
    cell = "%%cache_data --persist\nwith lock:\n    v = 1"
    with pytest.warns(
        RuntimeWarning, match=r"`lock` can't be hashed and is keyed by its identity.*--ignore NAME"
    ) as caught:
        run(shell, cell)
    assert not any("hash_funcs" in str(w.message) for w in caught)  # cells have no such option
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        run(shell, "lock = threading.Lock()")
        run(shell, cell)  # another miss of the same cell: not said again


def test_sharing_with_a_team_store_that_cannot_be_opened_says_that_not_none_is_configured(
    shell: InteractiveShell, store: CacheStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("IPYCACHE_EXT_TEAM_STORE", "http://user:pw@example.invalid/")
    run(shell, f"%config CacheMagics.cache_dir = {str(tmp_path / 'cache')!r}")
    with pytest.warns(RuntimeWarning) as caught:
        run(shell, "%%cache_data --share\nshared = 1")
    messages = [str(w.message) for w in caught]
    assert any(m.startswith("the team cache is off") and "http://***@example.invalid/" in m for m in messages)
    assert any(m.startswith("the team store could not be opened") for m in messages)
    assert not any("no team store is configured" in m or "pw@" in m for m in messages)
    (entry,) = store.entries()
    assert entry.persisted and not entry.shared


def test_sharing_without_a_team_store_says_so_once_and_keeps_the_entry_on_disk(
    shell: InteractiveShell, store: CacheStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("IPYCACHE_EXT_TEAM_STORE", raising=False)
    run(shell, f"%config CacheMagics.cache_dir = {str(tmp_path / 'cache')!r}")
    with pytest.warns(RuntimeWarning, match="no team store is configured.*disk only"):
        run(shell, "%%cache_data --share\nshared = 1")
    (entry,) = store.entries()
    assert entry.persisted and not entry.shared
