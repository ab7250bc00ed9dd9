"""Dynamic dependencies end to end, through the public front ends only: the cell magics in a
real IPython shell and the ``cache_data`` decorator."""

from __future__ import annotations

import os
import pathlib
import sys
from collections.abc import Iterator

import numpy as np
import pandas as pd
import pytest
from IPython.core.interactiveshell import InteractiveShell

import ipycache_ext
from ipycache_ext import CacheStore, cache_data

from .conftest import FakeClock, run


@pytest.fixture
def here(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> pathlib.Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def rngs() -> Iterator[None]:
    import random

    np_state, py_state = np.random.get_state(), random.getstate()
    yield
    np.random.set_state(np_state)
    random.setstate(py_state)


def write_csv(path: pathlib.Path, values: list[int]) -> None:
    before = path.stat().st_mtime_ns if path.exists() else 0
    pd.DataFrame({"v": values}).to_csv(path, index=False)
    if path.stat().st_mtime_ns == before:  # a coarse clock: make the edit visible to stat
        os.utime(path, ns=(before + 1_000_000, before + 1_000_000))


LOAD_CSV = '%%cache_data --ignore runs\nruns.append(1)\ndf = pd.read_csv("data.csv")\ntotal = int(df.v.sum())'


def test_a_changed_csv_recomputes_the_cell_and_says_why(
    shell: InteractiveShell, here: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_csv(here / "data.csv", [1, 2])
    shell.user_ns.update(pd=pd, runs=[])
    run(shell, LOAD_CSV)
    run(shell, LOAD_CSV)
    assert shell.user_ns["runs"] == [1] and shell.user_ns["total"] == 3
    capsys.readouterr()
    write_csv(here / "data.csv", [1, 2, 3])
    run(shell, LOAD_CSV)
    assert shell.user_ns["total"] == 6 and shell.user_ns["runs"] == [1, 1]
    assert "recomputing: `data.csv` changed" in capsys.readouterr().out
    run(shell, LOAD_CSV)
    assert shell.user_ns["runs"] == [1, 1]  # and hits again


def test_a_touch_that_keeps_the_content_still_hits(shell: InteractiveShell, here: pathlib.Path) -> None:
    write_csv(here / "data.csv", [1, 2])
    shell.user_ns.update(pd=pd, runs=[])
    run(shell, LOAD_CSV)
    stat = (here / "data.csv").stat()
    os.utime(here / "data.csv", ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    run(shell, LOAD_CSV)
    assert shell.user_ns["runs"] == [1]


def test_read_parquet_of_a_path_variable(shell: InteractiveShell, here: pathlib.Path) -> None:
    """The README's headline example: the file behind `path` is part of what the cell depends on."""
    pd.DataFrame({"v": [1, 2]}).to_parquet(here / "sales.parquet")
    shell.user_ns.update(pd=pd, path="sales.parquet")
    cell = "%%cache_data\nsales = pd.read_parquet(path)\ntotal = int(sales.v.sum())"
    run(shell, cell)
    pd.DataFrame({"v": [10, 20]}).to_parquet(here / "sales.parquet")
    run(shell, cell)
    assert shell.user_ns["total"] == 30


def test_a_folder_that_gains_a_file(shell: InteractiveShell, here: pathlib.Path) -> None:
    (here / "parts").mkdir()
    write_csv(here / "parts" / "a.csv", [1])
    shell.user_ns.update(pd=pd)
    cell = (
        "%%cache_data\nimport glob\n"
        "total = sum(int(pd.read_csv(p).v.sum()) for p in sorted(glob.glob('parts/*.csv')))"
    )
    run(shell, cell)
    write_csv(here / "parts" / "b.csv", [5])
    run(shell, cell)
    assert shell.user_ns["total"] == 6


def test_cd_into_another_folder_with_the_same_relative_path(
    shell: InteractiveShell, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for folder, values in (("a", [1]), ("b", [2])):
        (tmp_path / folder).mkdir()
        write_csv(tmp_path / folder / "data.csv", values)
    monkeypatch.chdir(tmp_path / "a")
    shell.user_ns.update(pd=pd, runs=[])
    run(shell, LOAD_CSV)
    run(shell, f"%cd {tmp_path / 'b'}")
    run(shell, LOAD_CSV)
    assert shell.user_ns["total"] == 2 and shell.user_ns["runs"] == [1, 1]


def test_an_environment_variable_read_by_the_cell(
    shell: InteractiveShell, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("IPYCACHE_E2E_REGION", "eu")
    cell = "%%cache_data\nimport os\nregion = os.environ.get('IPYCACHE_E2E_REGION')"
    run(shell, cell)
    monkeypatch.setenv("IPYCACHE_E2E_REGION", "us")
    run(shell, cell)
    assert shell.user_ns["region"] == "us"


@pytest.mark.usefixtures("rngs")
def test_global_random_state_is_an_input_and_a_hit_leaves_it_as_a_run_would(shell: InteractiveShell) -> None:
    shell.user_ns.update(np=np, runs=[])
    cell = "%%cache_data --ignore runs\nruns.append(1)\nx = np.random.rand()"
    run(shell, "np.random.seed(0)")
    run(shell, cell)
    run(shell, "after_run = np.random.rand()")
    x, after_run = shell.user_ns["x"], shell.user_ns["after_run"]
    run(shell, "np.random.seed(0)")
    run(shell, cell)  # the same state as before the run: a hit
    assert shell.user_ns["runs"] == [1] and shell.user_ns["x"] == x
    run(shell, "after_hit = np.random.rand()")
    assert shell.user_ns["after_hit"] == after_run  # the hit left the state where the run did
    run(shell, cell)  # the state moved on: a real run would draw another number
    assert shell.user_ns["runs"] == [1, 1] and shell.user_ns["x"] != x


@pytest.mark.usefixtures("rngs")
def test_a_seed_inside_the_cell_hits_whatever_the_state_before(shell: InteractiveShell) -> None:
    shell.user_ns.update(runs=[])
    cell = "%%cache_data --ignore runs\nimport random\nruns.append(1)\nrandom.seed(4)\nx = random.random()"
    run(shell, cell)
    run(shell, "import random; random.random(); random.random()")
    run(shell, cell)
    assert shell.user_ns["runs"] == [1]


def test_depends_on_a_file_read_by_a_subprocess(shell: InteractiveShell, here: pathlib.Path) -> None:
    (here / "input.txt").write_text("one")
    cell = (
        "%%cache_data --depends-on input.txt\n"
        "import subprocess\nout = subprocess.check_output(['cat', 'input.txt'])"
    )
    run(shell, cell)
    (here / "input.txt").write_text("two")
    run(shell, cell)
    assert shell.user_ns["out"] == b"two"


def test_adding_depends_on_to_a_cached_cell_makes_it_check_the_file(
    shell: InteractiveShell, here: pathlib.Path
) -> None:
    """The entry computed without the option recorded no such file: it must not be served."""
    (here / "dep.txt").write_text("v1")
    body = "import subprocess\nout = subprocess.check_output(['cat', 'dep.txt'])"
    run(shell, "%%cache_data\n" + body)
    run(shell, "%%cache_data --depends-on dep.txt\n" + body)
    (here / "dep.txt").write_text("v2")
    run(shell, "%%cache_data --depends-on dep.txt\n" + body)
    assert shell.user_ns["out"] == b"v2"


def test_a_decorated_function_given_depends_on_later_checks_the_file(here: pathlib.Path) -> None:
    import subprocess

    (here / "dep.txt").write_text("v1")
    source = "def shell_out():\n    return subprocess.check_output(['cat', 'dep.txt'])\n"
    namespace: dict[str, object] = {"subprocess": subprocess}
    exec(source, namespace)
    plain = cache_data(namespace["shell_out"])
    exec(source, namespace)
    declared = cache_data(depends_on="dep.txt")(namespace["shell_out"])
    try:
        assert plain() == b"v1" and declared() == b"v1"
        (here / "dep.txt").write_text("v2")
        assert declared() == b"v2"
    finally:
        plain.clear()


def test_a_script_run_with_percent_run_is_a_file_input(
    shell: InteractiveShell, here: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (here / "script.py").write_text("print('v1')\n")
    run(shell, "%%cache_data\n%run script.py")
    (here / "script.py").write_text("print('v2!')\n")
    capsys.readouterr()
    run(shell, "%%cache_data\n%run script.py")
    out = capsys.readouterr().out
    assert "recomputing: `script.py` changed" in out and "v2!" in out


def test_a_helper_function_that_reads_a_file(shell: InteractiveShell, here: pathlib.Path) -> None:
    np.save(here / "weights.npy", np.arange(3))
    shell.user_ns.update(np=np)
    run(shell, "def load_weights():\n    return np.load('weights.npy')")
    cell = "%%cache_data\ntotal = int(load_weights().sum())"
    run(shell, cell)
    np.save(here / "weights.npy", np.arange(4))
    run(shell, cell)
    assert shell.user_ns["total"] == 6


def test_a_sqlite_query_in_the_cell(shell: InteractiveShell, here: pathlib.Path) -> None:
    import sqlite3

    with sqlite3.connect(here / "shop.db") as conn:
        conn.execute("create table sales (amount int)")
        conn.execute("insert into sales values (1)")
    conn.close()
    cell = (
        "%%cache_data\nimport sqlite3\nconn = sqlite3.connect('shop.db')\n"
        "total = conn.execute('select sum(amount) from sales').fetchone()[0]\nconn.close()\ndel conn"
    )
    run(shell, cell)
    with sqlite3.connect(here / "shop.db") as conn:
        conn.execute("insert into sales values (5)")
    conn.close()
    run(shell, cell)
    assert shell.user_ns["total"] == 6


def test_a_query_on_a_cached_connection_sees_the_database_change(
    shell: InteractiveShell, here: pathlib.Path
) -> None:
    """The README's pattern: the connection comes from a %%cache_resource cell, opened before."""
    import sqlite3

    with sqlite3.connect(here / "shop.db") as conn:
        conn.execute("create table sales (amount int)")
        conn.execute("insert into sales values (1)")
    conn.close()
    run(shell, "%%cache_resource\nimport sqlite3\ndb = sqlite3.connect('shop.db', check_same_thread=False)")
    cell = "%%cache_data\ntotal = db.execute('select sum(amount) from sales').fetchone()[0]"
    run(shell, cell)
    with sqlite3.connect(here / "shop.db") as conn:
        conn.execute("insert into sales values (5)")
    conn.close()
    run(shell, cell)
    assert shell.user_ns["total"] == 6


def test_eval_reads_are_keyed_on_the_namespace(shell: InteractiveShell) -> None:
    shell.user_ns.update(a=1, runs=[])
    cell = "%%cache_data --ignore runs\nruns.append(1)\nx = eval('a + 1')"
    with pytest.warns(RuntimeWarning, match="may read any variable"):
        run(shell, cell)
    run(shell, cell)
    assert shell.user_ns["runs"] == [1]
    shell.user_ns["a"] = 10
    run(shell, cell)
    assert shell.user_ns["x"] == 11


def test_dropping_ignore_from_a_dynamic_cell_makes_the_ignored_name_count(shell: InteractiveShell) -> None:
    shell.user_ns.update(a=1, b=2)
    with pytest.warns(RuntimeWarning, match="may read any variable"):
        run(shell, "%%cache_data --ignore b\nr = eval('a + b')")
    shell.user_ns["b"] = 100
    run(shell, "%%cache_data\nr = eval('a + b')")  # the same cell: said once
    assert shell.user_ns["r"] == 101


def test_a_decorated_function_that_reads_a_file(here: pathlib.Path) -> None:
    (here / "config.txt").write_text("alpha")
    log = here / "calls.log"

    @cache_data
    def load(path: str) -> str:
        with open("calls.log", "a") as calls:  # written, so an output: not part of what it depends on
            calls.write(".")
        return pathlib.Path(path).read_text()

    try:
        assert load("config.txt") == "alpha"
        assert load("config.txt") == "alpha" and log.read_text() == "."
        (here / "config.txt").write_text("beta!")
        assert load("config.txt") == "beta!" and log.read_text() == ".."
    finally:
        load.clear()


def test_a_decorated_function_with_depends_on(here: pathlib.Path) -> None:
    import subprocess

    (here / "input.txt").write_text("one")

    @cache_data(depends_on=["input.txt"])
    def shell_out() -> bytes:
        return subprocess.check_output(["cat", "input.txt"])

    try:
        assert shell_out() == b"one"
        (here / "input.txt").write_text("two")
        assert shell_out() == b"two"
    finally:
        shell_out.clear()


def test_a_decorated_function_reading_globals_dynamically(here: pathlib.Path) -> None:
    namespace: dict[str, object] = {"cache_data": cache_data, "rate": 2}
    exec("@cache_data\ndef scaled(x):\n    return x * globals()['rate']", namespace)
    scaled = namespace["scaled"]
    try:
        with pytest.warns(RuntimeWarning, match=r"`globals\(\)` may read any variable"):
            assert scaled(3) == 6  # type: ignore[operator]
        namespace["rate"] = 10
        assert scaled(3) == 30  # type: ignore[operator]
    finally:
        scaled.clear()  # type: ignore[attr-defined]


def test_a_cached_function_called_from_a_cached_cell(shell: InteractiveShell, here: pathlib.Path) -> None:
    """The cell's hit doesn't call the function, so the function's files are the cell's too."""
    (here / "config.txt").write_text("alpha")

    @cache_data
    def load(path: str) -> str:
        return pathlib.Path(path).read_text()

    shell.user_ns.update(load=load)
    cell = "%%cache_data\nvalue = load('config.txt').upper()"
    try:
        run(shell, cell)
        run(shell, cell)
        (here / "config.txt").write_text("beta!")
        run(shell, cell)
        assert shell.user_ns["value"] == "BETA!"
    finally:
        load.clear()


def test_a_persisted_entry_checks_its_files_after_a_restart(
    shell: InteractiveShell, clock: FakeClock, here: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cache_dir = str(here / "cache")

    def fresh_kernel() -> CacheStore:
        ipycache_ext.unload_ipython_extension(shell)
        store = CacheStore(timer=clock)
        ipycache_ext.load_ipython_extension(shell, store=store)
        run(shell, f"%config CacheMagics.cache_dir = {cache_dir!r}")
        return store

    write_csv(here / "data.csv", [1, 2])
    shell.user_ns.update(pd=pd, runs=[])
    cell = LOAD_CSV.replace("%%cache_data", "%%cache_data --persist")
    fresh_kernel()
    run(shell, cell)
    fresh_kernel()
    run(shell, cell)
    assert shell.user_ns["runs"] == [1]  # a hit from disk
    write_csv(here / "data.csv", [5])
    fresh_kernel()
    capsys.readouterr()
    run(shell, cell)
    assert shell.user_ns["total"] == 5 and shell.user_ns["runs"] == [1, 1]


def test_after_a_restart_the_miss_line_names_the_changed_file(
    shell: InteractiveShell, clock: FakeClock, here: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cache_dir = str(here / "cache")

    def fresh_kernel() -> None:
        ipycache_ext.unload_ipython_extension(shell)
        ipycache_ext.load_ipython_extension(shell, store=CacheStore(timer=clock))
        run(shell, f"%config CacheMagics.cache_dir = {cache_dir!r}")

    write_csv(here / "data.csv", [1, 2])
    shell.user_ns.update(pd=pd, runs=[])
    cell = LOAD_CSV.replace("%%cache_data", "%%cache_data --persist")
    fresh_kernel()
    run(shell, cell)
    write_csv(here / "data.csv", [5])
    fresh_kernel()
    capsys.readouterr()
    run(shell, cell)
    assert "recomputing: `data.csv` changed" in capsys.readouterr().out


def test_layering_deps_imports_no_front_end() -> None:
    import subprocess

    code = (
        "import sys; import ipycache_ext._deps as d; "
        "assert 'IPython' not in sys.modules and 'ipywidgets' not in sys.modules, sorted(sys.modules)"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
