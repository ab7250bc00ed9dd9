"""Serialization: fresh, writable, independent copies; clear errors when pickling fails."""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
import pandas as pd
import pytest

from ipycache_ext import UnserializableResultError
from ipycache_ext._serialize import serialize
from tests.descriptors import MEMORY_FILES, descriptors_to


def test_loads_are_equal_independent_and_writable() -> None:
    frame = pd.DataFrame({"a": np.arange(10_000), "b": np.linspace(0, 1, 10_000)})
    stored = serialize({"df": frame, "arr": np.ones(1000)})
    first, second = stored.load(), stored.load()
    pd.testing.assert_frame_equal(first["df"], frame)
    first["arr"][0] = 42.0
    first["df"].loc[0, "a"] = -1
    assert second["arr"][0] == 1.0 and second["df"].loc[0, "a"] == 0
    assert stored.load()["arr"][0] == 1.0
    assert first["arr"].flags.writeable


def test_the_store_copy_is_independent_of_the_original() -> None:
    original = np.zeros(1000)
    stored = serialize(original)
    original[:] = 7
    assert stored.load().sum() == 0


def test_nbytes_counts_meta_and_buffers() -> None:
    stored = serialize(np.zeros(1_000_000, dtype=np.uint8))
    assert 1_000_000 <= stored.nbytes < 1_010_000  # plus page padding


def test_notebook_functions_travel_by_value() -> None:
    namespace: dict[str, object] = {"__name__": "__main__"}
    exec("def triple(x):\n    return 3 * x", namespace)
    stored = serialize(namespace["triple"])
    assert stored.load()(2) == 6


def test_unpicklable_values_say_to_cache_them_as_resources() -> None:
    with pytest.raises(UnserializableResultError) as info:
        serialize({"lock": threading.Lock()}, "the result")
    assert "cached as resources" in str(info.value) and "the result" in str(info.value)


def _open_fds() -> int:
    return descriptors_to(MEMORY_FILES)


@pytest.mark.parametrize("use_mapping", [True, False])
def test_large_buffers_hits_are_writable_and_independent(use_mapping: bool) -> None:
    frame = pd.DataFrame({"x": np.arange(200_000, dtype=np.float64), "y": np.arange(200_000)})
    arrays = (np.arange(100_000), np.ones((300, 300)))
    stored = serialize({"df": frame, "arrays": arrays}, use_mapping=use_mapping)
    assert stored.mapped is (use_mapping and hasattr(__import__("os"), "memfd_create"))
    one, two = stored.load(), stored.load()
    pd.testing.assert_frame_equal(one["df"], frame)
    one["df"].loc[3, "x"] = -5.0  # through pandas
    one["arrays"][0][7] = -1  # through a numpy array
    one["df"]["y"].array[0] = 123  # through the column's array
    values = one["df"].values  # a 2-D copy or view, either way not the store's
    values[10, 0] = 99.0
    assert two["df"].loc[3, "x"] == 3.0 and two["arrays"][0][7] == 7 and two["df"].loc[0, "y"] == 0
    fresh = stored.load()
    pd.testing.assert_frame_equal(fresh["df"], frame)
    assert fresh["arrays"][0][7] == 7 and fresh["arrays"][1].flags.writeable


def test_datetimes_arrow_strings_and_categoricals_round_trip() -> None:
    pytest.importorskip("pyarrow")
    frame = pd.DataFrame(
        {
            "t": pd.date_range("2026-01-01", periods=100_000, freq="s"),
            "tz": pd.date_range("2026-01-01", periods=100_000, freq="min", tz="Europe/Paris"),
            "s": pd.Series([f"row {i}" for i in range(100_000)], dtype="string[pyarrow]"),
            "c": pd.Categorical(["a", "b"] * 50_000),
        }
    )
    stored = serialize(frame)
    pd.testing.assert_frame_equal(stored.load(), frame)
    assert len(stored.meta) < 100_000  # the datetime column travelled out-of-band


def test_entries_survive_their_hits_and_release_their_memory_file() -> None:
    import gc

    gc.collect()  # values of earlier tests in a cycle would close their descriptors mid-count
    before = _open_fds()
    stored = serialize(np.arange(1_000_000))
    hits = [stored.load() for _ in range(5)]
    assert _open_fds() == before + (1 if stored.mapped else 0)
    del hits
    gc.collect()
    assert stored.load()[999_999] == 999_999
    del stored
    gc.collect()
    assert _open_fds() == before


def _memfd_mappings() -> int:
    from pathlib import Path

    return Path("/proc/self/maps").read_text().count("memfd:ipycache_ext")


def test_descriptors_and_mappings_go_with_their_entries_and_hits() -> None:
    import gc

    from ipycache_ext._serialize import _memfd_available

    if not _memfd_available():
        pytest.skip("no memory files on this system")

    from ipycache_ext import CacheStore

    store = CacheStore(memory_budget=10**9)
    gc.collect()
    fds, mappings = _open_fds(), _memfd_mappings()
    for i in range(10):
        value = serialize(np.full(100_000, i))
        store.get_or_create(f"k{i}", lambda v=value: (v, v.nbytes), kind="data", label=f"k{i}")  # type: ignore[misc]
    del value  # from here on only the store holds the serialized values
    hits = [
        store.get_or_create(f"k{i}", lambda: (None, 0), kind="data", label="").value.load() for i in range(10)
    ]
    assert _open_fds() == fds + 10 and _memfd_mappings() >= mappings + 10
    assert [int(h[0]) for h in hits] == list(range(10))
    store.memory_budget = 2 * store.entries()[0].size  # evicts eight
    store.clear()  # and the rest
    gc.collect()
    assert _open_fds() == fds + 0  # descriptors are the store's: gone with the entries
    assert [int(h[-1]) for h in hits] == list(range(10))  # live hits keep their pages
    del hits
    gc.collect()
    assert _memfd_mappings() == mappings


needs_memfd = pytest.mark.skipif(
    not __import__("ipycache_ext._serialize", fromlist=["_memfd_available"])._memfd_available(),
    reason="large buffers go to a memory file on Linux only",
)


@needs_memfd
@pytest.mark.parametrize("leaves", ["cleared", "evicted"])
def test_a_kept_array_holds_its_own_buffer_not_the_whole_entry(leaves: str) -> None:
    """Issue 15: a 4 MB array kept from a hit of a 32 MB entry keeps 4 MB, and says so."""
    import gc
    import os

    from ipycache_ext import CacheStore
    from ipycache_ext._serialize import held_bytes

    column = 4_000_000
    store = CacheStore(memory_budget=10**9)
    gc.collect()  # an earlier test's value collected mid-test would move the baseline
    held_before = held_bytes()
    value = serialize({f"c{i}": np.full(column // 8, i, dtype=np.int64) for i in range(8)})
    assert value.memory_file is not None
    probe = os.dup(value.memory_file.fd)  # to read the file's allocation after its own fd is closed

    def allocated() -> int:
        return os.fstat(probe).st_blocks * 512

    box, size = [value], value.nbytes
    del value  # from here on only the store holds it
    try:
        store.get_or_create("k", lambda: (box.pop(), size), kind="data", label="k")
        hit = store.get_or_create("k", lambda: (None, 0), kind="data", label="k").value.load()
        kept = hit["c3"]
        whole = allocated()
        assert whole >= 8 * column
        if leaves == "cleared":
            store.clear()
        else:
            store.memory_budget = 1  # evicts it
        gc.collect()
        assert store.entries() == [] and store.stats().data_bytes == 0
        assert allocated() == whole  # the whole hit is alive: every buffer is still in use
        assert store.stats().held_by_live_results - held_before == whole
        del hit
        gc.collect()
        assert allocated() <= column + 4096  # only the kept array's buffer is left
        assert store.stats().held_by_live_results - held_before == allocated()
        assert int(kept.sum()) == 3 * (column // 8)
        kept[0] = -1  # still an ordinary writable array
        del kept
        gc.collect()
        assert allocated() == 0 and held_bytes() == held_before
    finally:
        os.close(probe)
        store.close()


@needs_memfd
def test_memory_files_leave_descriptors_for_the_users_own_files(tmp_path: Any) -> None:
    """Issue 15: near the descriptor limit, the user's next open() still works (in a subprocess)."""
    import subprocess
    import sys
    import textwrap

    script = textwrap.dedent(
        """
        import os, resource
        import numpy as np
        from ipycache_ext._serialize import serialize

        in_use = len(os.listdir("/proc/self/fd"))
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (in_use + 24, hard))
        kept = [serialize(np.ones(100_000)) for _ in range(40)]  # each would like a memory file
        mine = [open(os.devnull) for _ in range(16)]  # the user's own files
        assert all(float(v.load().sum()) == 100_000 for v in kept)
        print(sum(v.mapped for v in kept), len(mine))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    mapped, opened = map(int, done.stdout.split())
    assert opened == 16 and mapped < 40  # the rest were kept as plain copies
