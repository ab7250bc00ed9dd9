"""The dynamic-dependency layer, files: what a computation reads is recorded and checked cheaply."""

from __future__ import annotations

import contextlib
import glob
import json
import os
import pathlib
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
import pytest

from ipycache_ext._deps import files_in, files_of, first_change, recording

Deps = tuple[dict[str, Any], ...]


def record(body: Callable[[], Any], **options: Any) -> Deps:
    with recording(**options) as rec:
        body()
    return rec.dependencies()


def kinds(deps: Deps, kind: str) -> list[dict[str, Any]]:
    return [d for d in deps if d["kind"] == kind]


def paths(deps: Deps) -> set[str]:
    return {d["path"] for d in kinds(deps, "file")}


@pytest.fixture
def here(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> pathlib.Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path


def rewrite(path: pathlib.Path, text: str) -> None:
    """Change a file's content (and make sure its mtime moves, even on a coarse clock)."""
    before = path.stat().st_mtime_ns if path.exists() else 0
    path.write_text(text)
    if path.stat().st_mtime_ns == before:
        os.utime(path, ns=(before + 1_000_000, before + 1_000_000))


def test_open_read_is_an_input_and_a_content_change_is_named(here: pathlib.Path) -> None:
    data = here / "data.txt"
    data.write_text("1,2,3")

    def body() -> str:
        with open("data.txt") as handle:  # builtins.open
            return handle.read()

    deps = record(body)
    assert paths(deps) == {str(data)}
    (entry,) = kinds(deps, "file")
    assert entry["state"] == "present" and entry["size"] == 5 and len(entry["digest"]) == 32
    assert first_change(deps) is None
    rewrite(data, "1,2,4")
    assert first_change(deps) == "`data.txt` changed"


def test_a_touch_that_keeps_the_content_is_not_a_change(here: pathlib.Path) -> None:
    data = here / "data.txt"
    data.write_text("same")
    deps = record(lambda: data.read_text())
    stat = data.stat()
    os.utime(data, ns=(stat.st_atime_ns, stat.st_mtime_ns + 5_000_000_000))
    assert first_change(deps) is None
    assert first_change(deps) is None  # the verified digest is remembered: still unchanged


@pytest.mark.skipif(os.name != "posix", reason="POSIX change time")
def test_a_same_size_edit_that_restores_mtime_is_still_seen(here: pathlib.Path) -> None:
    """Size and mtime_ns alone would miss it; ctime_ns (which no program can set back) doesn't."""
    data = here / "data.txt"
    data.write_text("abc")
    deps = record(lambda: data.read_text())
    stat = data.stat()
    data.write_text("abd")
    os.utime(data, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert data.stat().st_size == stat.st_size and data.stat().st_mtime_ns == stat.st_mtime_ns
    assert first_change(deps) == "`data.txt` changed"


def _coarse_stats(monkeypatch: pytest.MonkeyPatch, tick_ns: int = 1_000_000_000) -> None:
    """Stats stamped by a clock that ticks once a second, as on Linux before 6.13 (whose
    ext4 ticks every few ms) or a file server: this machine's kernel stamps finer times."""
    from ipycache_ext._deps import _files, _records, _state

    real = _state.stat_key

    def coarse(path: str) -> tuple[int, int, int] | None:
        stat = real(path)
        return None if stat is None else (stat[0], stat[1] // tick_ns * tick_ns, stat[2] // tick_ns * tick_ns)

    for module in (_files, _records, _state):
        monkeypatch.setattr(module, "stat_key", coarse)


def test_a_same_size_rewrite_within_one_tick_of_the_clock_is_seen(
    here: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _coarse_stats(monkeypatch)
    data = here / "data.txt"
    for _attempt in range(3):  # a rewrite that crossed a tick moves the stat anyway: try again
        data.write_text("abc")
        deps = record(lambda: data.read_text())
        (entry,) = kinds(deps, "file")
        data.write_text("abd")
        if os.stat(data).st_ctime_ns // 10**9 == entry["ctime_ns"] // 10**9:
            break
    else:
        pytest.skip("no rewrite landed within the recorded second")
    assert entry["settled"] is False  # changed less than SETTLE_NS before it was read
    assert first_change(deps) == "`data.txt` changed"


def test_an_unsettled_record_is_read_once_then_its_stat_stands(
    here: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ipycache_ext import _settle
    from ipycache_ext._deps import _files

    data = here / "data.txt"
    data.write_text("abc")
    deps = record(lambda: data.read_text())
    assert kinds(deps, "file")[0]["settled"] is False  # just written
    reads: list[str] = []
    real = _files.content_digest
    monkeypatch.setattr(_files, "content_digest", lambda path: reads.append(path) or real(path))
    monkeypatch.setattr(_settle, "SETTLE_NS", 0)  # from here on, every stat taken before a read is settled
    assert first_change(deps) is None and reads == [str(data)]  # the stat alone did not vouch
    assert first_change(deps) is None and reads == [str(data)]  # the digest verified then does


def test_a_vanished_file_is_a_change_and_never_raises(here: pathlib.Path) -> None:
    data = here / "data.txt"
    data.write_text("x")
    deps = record(lambda: data.read_text())
    data.unlink()
    assert first_change(deps) == "`data.txt` was deleted"


def test_a_file_that_was_missing_is_an_input_too(here: pathlib.Path) -> None:
    def body() -> None:
        with contextlib.suppress(FileNotFoundError), open("optional.cfg") as handle:
            handle.read()

    deps = record(body)
    assert kinds(deps, "file") == [{"kind": "file", "path": str(here / "optional.cfg"), "state": "absent"}]
    assert first_change(deps) is None
    (here / "optional.cfg").write_text("on")
    assert first_change(deps) == "`optional.cfg` appeared"


def test_pandas_read_csv(here: pathlib.Path) -> None:
    csv = here / "data.csv"
    pd.DataFrame({"v": [1, 2]}).to_csv(csv, index=False)
    deps = record(lambda: pd.read_csv("data.csv"))
    assert paths(deps) == {str(csv)}
    assert first_change(deps) is None
    pd.DataFrame({"v": [1, 3]}).to_csv(csv, index=False)
    os.utime(csv, ns=(1, 1))  # even with an mtime from the past
    assert first_change(deps) == "`data.csv` changed"


def test_pandas_read_parquet_through_pyarrow_is_seen(here: pathlib.Path) -> None:
    """pyarrow opens the file in C++ (no audit event): the reader wrapper sees it."""
    pq_path = here / "sales.parquet"
    pd.DataFrame({"v": [1, 2]}).to_parquet(pq_path)
    deps = record(lambda: pd.read_parquet(pq_path))
    assert paths(deps) == {str(pq_path)}
    assert first_change(deps) is None
    pd.DataFrame({"v": [1, 2, 3]}).to_parquet(pq_path)
    assert first_change(deps) == "`sales.parquet` changed"


def test_pyarrow_readers_and_a_dataset_directory(here: pathlib.Path) -> None:
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.dataset as ds
    import pyarrow.parquet as pq
    from pyarrow import feather

    table = pa.table({"v": [1, 2]})
    (here / "parts").mkdir()
    pq.write_table(table, here / "parts" / "a.parquet")
    feather.write_feather(table, str(here / "t.feather"))
    pacsv.write_csv(table, str(here / "t.csv"))

    def body() -> None:
        pq.read_table("parts/a.parquet")
        feather.read_table("t.feather")
        pacsv.read_csv("t.csv")
        ds.dataset("parts").to_table()

    deps = record(body)
    assert paths(deps) == {str(here / "parts" / "a.parquet"), str(here / "t.feather"), str(here / "t.csv")}
    assert [d["path"] for d in kinds(deps, "listing")] == [str(here / "parts")]
    assert first_change(deps) is None
    pq.write_table(table, here / "parts" / "b.parquet")
    assert first_change(deps) == "`parts/` gained file `b.parquet`"


def test_files_written_by_the_computation_are_outputs_not_inputs(here: pathlib.Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    def body() -> None:
        with open("report.txt", "w") as out:
            out.write("done")
        pq.write_table(pa.table({"v": [1]}), "out.parquet")
        pd.DataFrame({"v": [1]}).to_csv("out.csv")
        with open("log.txt", "a") as log:
            log.write("line")

    deps = record(body)
    assert paths(deps) == set()
    assert first_change(deps) is None


def test_a_file_read_back_after_writing_it_is_not_a_perpetual_change(here: pathlib.Path) -> None:
    def body() -> None:
        pathlib.Path("scratch.txt").write_text("tmp")
        pathlib.Path("scratch.txt").read_text()

    deps = record(body)
    assert paths(deps) == set()
    assert first_change(deps) is None


def test_a_file_changed_by_someone_else_during_the_run_is_stale_at_once(here: pathlib.Path) -> None:
    data = here / "data.txt"
    data.write_text("v1")

    # an outside writer (a thread: its opens are not the computation's)
    def outside() -> None:
        rewrite(data, "v2-longer")

    def computation() -> None:
        data.read_text()
        writer = threading.Thread(target=outside)
        writer.start()
        writer.join()

    deps = record(computation)
    assert kinds(deps, "file") == [{"kind": "file", "path": str(data), "state": "changing"}]
    assert first_change(deps) == "`data.txt` changed while the computation read it"


def test_numpy_load_and_fromfile(here: pathlib.Path) -> None:
    np.save(here / "a.npy", np.arange(5))
    np.arange(3, dtype=np.int64).tofile(here / "b.bin")
    deps = record(lambda: (np.load("a.npy"), np.fromfile("b.bin", dtype=np.int64)))
    assert paths(deps) == {str(here / "a.npy"), str(here / "b.bin")}
    np.save(here / "a.npy", np.arange(6))
    assert first_change(deps) == "`a.npy` changed"


def test_sqlite_database_read_by_a_query(here: pathlib.Path) -> None:
    db = here / "shop.db"
    with sqlite3.connect(db) as conn:
        conn.execute("create table t (v int)")
        conn.execute("insert into t values (1)")
    conn.close()

    def query() -> Any:
        conn = sqlite3.connect("shop.db")
        try:
            return conn.execute("select sum(v) from t").fetchone()
        finally:
            conn.close()

    deps = record(query)
    assert str(db) in paths(deps)
    assert first_change(deps) is None
    with sqlite3.connect(db) as conn:
        conn.execute("insert into t values (2)")
    conn.close()
    assert first_change(deps) == "`shop.db` changed"


def test_a_database_the_computation_writes_to_is_its_output(here: pathlib.Path) -> None:
    def build() -> None:
        conn = sqlite3.connect("made.db")
        conn.execute("create table t (v int)")
        conn.commit()
        conn.close()

    deps = record(build)
    assert str(here / "made.db") not in paths(deps)
    assert first_change(deps) is None


def test_glob_over_a_folder_that_gains_a_file(here: pathlib.Path) -> None:
    (here / "data").mkdir()
    (here / "data" / "a.csv").write_text("1")
    deps = record(lambda: [pathlib.Path(p).read_text() for p in glob.glob("data/*.csv")])
    assert not kinds(deps, "listing")  # the glob's own scans are not listings
    assert first_change(deps) is None
    (here / "data" / "notes.txt").write_text("not a match")
    assert first_change(deps) is None
    (here / "data" / "b.csv").write_text("2")
    assert first_change(deps) == "`data/*.csv` gained match `b.csv`"


def test_path_glob_and_listings(here: pathlib.Path) -> None:
    (here / "d").mkdir()
    (here / "d" / "a.txt").write_text("1")
    deps = record(lambda: (list(pathlib.Path("d").glob("*.txt")), os.listdir("d")))
    assert [g["pattern"] for g in kinds(deps, "glob")] == ["*.txt"]
    assert [d["path"] for d in kinds(deps, "listing")] == [str(here / "d")]
    (here / "d" / "z.bin").write_text("1")
    assert first_change(deps) == "`d/` gained file `z.bin`"
    (here / "d" / "z.bin").unlink()
    (here / "d" / "a.txt").unlink()
    assert first_change(deps) == "`d/` lost file `a.txt`"


def test_makedirs_of_an_existing_folder_keeps_its_listing_an_input(here: pathlib.Path) -> None:
    (here / "data").mkdir()
    deps = record(lambda: (os.makedirs("data", exist_ok=True), os.listdir("data")))
    assert [d["path"] for d in kinds(deps, "listing")] == [str(here / "data")]
    deps = record(lambda: (os.makedirs("made/sub"), os.listdir("made/sub")))
    assert not kinds(deps, "listing")  # made by the computation: its output


def test_scandir_iterdir_and_walk_are_listings(here: pathlib.Path) -> None:
    (here / "d" / "sub").mkdir(parents=True)
    deps = record(lambda: (list(os.scandir("d")), list(pathlib.Path("d").iterdir()), list(os.walk("d"))))
    assert {d["path"] for d in kinds(deps, "listing")} == {str(here / "d"), str(here / "d" / "sub")}
    (here / "d" / "sub" / "new").write_text("")
    assert first_change(deps) == "`d/sub/` gained file `new`"


def test_a_relative_path_after_chdir_is_a_change(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "data.csv").write_text("same content")
    monkeypatch.chdir(tmp_path / "a")
    deps = record(lambda: pathlib.Path("data.csv").read_text())
    assert paths(deps) == {str(tmp_path / "a" / "data.csv")}
    assert first_change(deps) is None
    os.chdir(tmp_path / "b")
    assert first_change(deps) == "the working directory is `{}/`, was `{}/`".format(
        tmp_path / "b", tmp_path / "a"
    )


def test_absolute_reads_do_not_depend_on_the_working_directory(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = tmp_path / "data.txt"
    data.write_text("x")
    deps = record(lambda: pathlib.Path(str(data)).read_text())
    assert not kinds(deps, "cwd")
    monkeypatch.chdir("/")
    assert first_change(deps) is None


def test_another_threads_reads_are_not_recorded(here: pathlib.Path) -> None:
    (here / "mine.txt").write_text("1")
    (here / "theirs.txt").write_text("2")
    started, stop = threading.Event(), threading.Event()

    def other() -> None:
        started.set()
        while not stop.is_set():
            (here / "theirs.txt").read_text()

    thread = threading.Thread(target=other)
    thread.start()
    started.wait(5)
    try:
        deps = record(lambda: [(here / "mine.txt").read_text() for _ in range(50)])
    finally:
        stop.set()
        thread.join(5)
    assert paths(deps) == {str(here / "mine.txt")}


def test_nothing_is_recorded_outside_a_recording(here: pathlib.Path) -> None:
    (here / "x.txt").write_text("1")
    with recording() as rec:
        pass
    (here / "x.txt").read_text()
    assert rec.dependencies() == ()


def test_installed_libraries_and_kernel_files_are_not_inputs(here: pathlib.Path) -> None:
    def body() -> None:
        import email.mime.audio  # noqa: F401  a stdlib module imported fresh: its files are code
        import importlib

        importlib.invalidate_caches()
        if os.path.exists("/proc/self/status"):
            pathlib.Path("/proc/self/status").read_text()

    sys.modules.pop("email.mime.audio", None)
    deps = record(body)
    assert paths(deps) == set()
    assert not kinds(deps, "listing")


def test_declared_paths_and_globs(here: pathlib.Path) -> None:
    (here / "raw").mkdir()
    (here / "raw" / "a.json").write_text("{}")
    (here / "model.bin").write_bytes(b"\0" * 10)
    deps = record(lambda: None, declared=["raw/*.json", str(here / "model.bin")])
    assert paths(deps) == {str(here / "raw" / "a.json"), str(here / "model.bin")}
    assert first_change(deps) is None
    (here / "raw" / "a.json").write_text('{"k": 1}')
    assert first_change(deps) == "`raw/a.json` changed"
    deps = record(lambda: None, declared=["raw/*.json"])
    (here / "raw" / "b.json").write_text("{}")
    assert first_change(deps) == "`raw/*.json` gained match `b.json`"


def test_declared_relative_paths_resolve_against_the_given_cwd(tmp_path: pathlib.Path) -> None:
    (tmp_path / "in.txt").write_text("x")
    deps = record(lambda: None, declared=["in.txt"], cwd=str(tmp_path))
    assert paths(deps) == {str(tmp_path / "in.txt")}


def test_a_nested_recording_is_part_of_the_outer_one_and_so_is_a_nested_hit(here: pathlib.Path) -> None:
    (here / "inner.txt").write_text("i")
    (here / "outer.txt").write_text("o")
    with recording() as outer:
        with recording() as inner:
            (here / "inner.txt").read_text()
        (here / "outer.txt").read_text()
    assert paths(inner.dependencies()) == {str(here / "inner.txt")}
    assert paths(outer.dependencies()) == {str(here / "inner.txt"), str(here / "outer.txt")}

    inner_deps = inner.dependencies()
    with recording() as served:  # a cached function served from cache inside a cached cell
        assert first_change(inner_deps) is None
    assert paths(served.dependencies()) == {str(here / "inner.txt")}


def test_records_are_json_and_checked_again_in_a_fresh_process(here: pathlib.Path) -> None:
    (here / "data.csv").write_text("v\n1\n")
    (here / "d").mkdir()
    deps = record(lambda: (pd.read_csv("data.csv"), os.listdir("d"), glob.glob("*.csv")))
    stored = here / "deps.json"
    stored.write_text(json.dumps(deps))
    script = (
        "import json, sys; from ipycache_ext._deps import first_change; "
        "print(first_change(json.load(open(sys.argv[1]))))"
    )

    def check() -> str:
        done = subprocess.run([sys.executable, "-c", script, str(stored)], capture_output=True, text=True,
                              cwd=here, check=True, timeout=120)  # fmt: skip
        return done.stdout.strip()

    assert json.loads(json.dumps(deps)) == list(deps)
    assert check() == "None"
    (here / "data.csv").write_text("v\n2\n")
    assert check() == "`data.csv` changed"


def test_a_malformed_or_unknown_record_is_a_change_not_an_error() -> None:
    assert first_change([{"kind": "file", "path": "/x"}]) is not None
    unknown = first_change([{"kind": "from-the-future"}])
    assert unknown == "a dependency of an unknown kind (`from-the-future`)"


def test_files_of_lazy_readers_and_connections(here: pathlib.Path) -> None:
    import pyarrow as pa
    import pyarrow.dataset as ds
    import pyarrow.parquet as pq

    (here / "parts").mkdir()
    pq.write_table(pa.table({"v": [1]}), here / "parts" / "a.parquet")
    assert files_of(ds.dataset("parts")) == [str(here / "parts" / "a.parquet")]
    conn = sqlite3.connect("shop.db")
    assert files_of(conn) == [str(here / "shop.db")]
    conn.close()
    with open("parts/a.parquet", "rb") as handle:
        assert files_of(handle) == [str(here / "parts" / "a.parquet")]
    assert files_of(pd.DataFrame()) is None
    assert files_of(42) is None
    conn = sqlite3.connect("shop.db")
    assert files_in({"db": conn, "n": 1}.values(), [ds.dataset("parts")]) == (
        str(here / "shop.db"),
        str(here / "parts" / "a.parquet"),
    )
    conn.close()


def test_polars_readers_and_lazy_frames(here: pathlib.Path) -> None:
    pl = pytest.importorskip("polars")
    pd.DataFrame({"v": [1, 2]}).to_parquet(here / "a.parquet")
    pd.DataFrame({"v": [1, 2]}).to_csv(here / "b.csv", index=False)
    deps = record(lambda: (pl.read_parquet("a.parquet"), pl.scan_csv("b.csv").collect()))
    assert paths(deps) == {str(here / "a.parquet"), str(here / "b.csv")}
    lazy = pl.scan_parquet("a.parquet")
    assert files_of(lazy) == [str(here / "a.parquet")]
    deps = record(lambda: pl.DataFrame({"v": [1]}).write_parquet("out.parquet"))
    assert paths(deps) == set()


def test_polars_glob_sources_are_patterns(here: pathlib.Path) -> None:
    pl = pytest.importorskip("polars")
    (here / "p").mkdir()
    pd.DataFrame({"v": [1]}).to_csv(here / "p" / "1.csv", index=False)
    deps = record(lambda: pl.read_csv("p/*.csv"))
    assert paths(deps) == {str(here / "p" / "1.csv")}
    pd.DataFrame({"v": [2]}).to_csv(here / "p" / "2.csv", index=False)
    assert first_change(deps) == "`p/*.csv` gained match `2.csv`"


def test_duckdb_and_h5py(here: pathlib.Path) -> None:
    duckdb = pytest.importorskip("duckdb")
    h5py = pytest.importorskip("h5py")
    pd.DataFrame({"v": [1, 2]}).to_csv(here / "d.csv", index=False)
    with h5py.File(here / "x.h5", "w") as f:
        f["a"] = np.arange(3)

    def body() -> None:
        duckdb.read_csv("d.csv").fetchall()
        with h5py.File("x.h5") as f:
            f["a"][()]

    deps = record(body)
    assert paths(deps) == {str(here / "d.csv"), str(here / "x.h5")}
    deps = record(lambda: h5py.File("new.h5", "w").close())
    assert paths(deps) == set()

    with duckdb.connect("shop.duckdb") as conn:
        conn.execute("create table t as select 1 as v")

    def query() -> Any:
        with duckdb.connect("shop.duckdb") as conn:
            return conn.execute("select sum(v) from t").fetchall()

    deps = record(query)
    assert str(here / "shop.duckdb") in paths(deps)
    assert first_change(deps) is None
    with duckdb.connect("shop.duckdb") as conn:
        conn.execute("insert into t values (2)")
    assert first_change(deps) in ("`shop.duckdb` changed", "`shop.duckdb.wal` appeared")


def test_a_reader_imported_after_the_first_recording_is_wrapped_too(tmp_path: pathlib.Path) -> None:
    """A fresh process: the hooks go in first, pyarrow.parquet is imported (and bound by name) later."""
    pd.DataFrame({"v": [1]}).to_parquet(tmp_path / "late.parquet")
    script = (
        "import sys\n"
        "from ipycache_ext._deps import recording\n"
        "with recording():\n    pass\n"
        "assert 'pyarrow.parquet' not in sys.modules\n"
        "from pyarrow.parquet import read_table\n"
        "with recording() as rec:\n    read_table('late.parquet')\n"
        "print([d['path'] for d in rec.dependencies() if d['kind'] == 'file'])\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path,
                          check=True, timeout=120)  # fmt: skip
    assert str(tmp_path / "late.parquet") in done.stdout


def test_an_async_computation_records_only_its_own_task(here: pathlib.Path) -> None:
    import asyncio

    (here / "mine.txt").write_text("1")
    (here / "theirs.txt").write_text("2")

    async def recorded() -> Deps:
        with recording() as rec:
            for _ in range(5):
                await asyncio.sleep(0)  # the other task runs in between
                (here / "mine.txt").read_text()
        return rec.dependencies()

    async def other() -> None:
        for _ in range(5):
            await asyncio.sleep(0)
            (here / "theirs.txt").read_text()

    async def both() -> Deps:
        deps, _ = await asyncio.gather(recorded(), other())
        return deps

    assert paths(asyncio.run(both())) == {str(here / "mine.txt")}
