"""A cached cell whose input is the unmodified hit of another cached cell is keyed without
re-hashing the hit's large buffers (pagemap says they are unwritten); one written byte, a
rebinding, or a pagemap that can't be read means: hashed in full, as before."""

from __future__ import annotations

import ctypes
import gc
import mmap
import os
from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd
import pytest
from IPython.core.interactiveshell import InteractiveShell

from ipycache_ext import _hash_buffers, _mapped, _pagemap
from ipycache_ext._hashing import digest
from ipycache_ext._serialize import serialize

from .conftest import run

pytestmark = pytest.mark.skipif(not _pagemap.available(), reason="needs Linux's /proc/self/pagemap")

ROWS = 3_000_000  # 24 MB per column: every column is hashed as a large buffer (>= 8 MiB)
LOAD = "%%cache_data --quiet\ndf = make()"
READ = "%%cache_data --quiet --ignore runs\nruns.append(1)\ntotal = float(df['a'].sum() + df['b'].sum())"


def make() -> pd.DataFrame:
    rng = np.random.default_rng(7)
    return pd.DataFrame({"a": rng.random(ROWS), "b": rng.random(ROWS)})


@pytest.fixture
def hashed(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Bytes of every large buffer hashed in full from now on."""
    sizes: list[int] = []
    original = _hash_buffers.piece_digests

    def counting(data: Any) -> bytes:
        sizes.append(memoryview(data).nbytes)
        return original(data)

    monkeypatch.setattr(_hash_buffers, "piece_digests", counting)
    return sizes


@pytest.fixture
def chained(shell: InteractiveShell) -> Iterator[InteractiveShell]:
    """Cell A loads a frame (its hit is a copy-on-write mapping); cell B reads it."""
    shell.user_ns.update(make=make, runs=[])
    run(shell, LOAD)  # A computes
    run(shell, READ)  # B computes (A's own frame: hashed in full)
    run(shell, LOAD)  # A hits: a mapping
    run(shell, READ)  # B hits; the mapping's ranges are hashed once and remembered
    assert shell.user_ns["runs"] == [1]
    yield shell


def test_a_chained_hit_hashes_no_large_buffer(chained: InteractiveShell, hashed: list[int]) -> None:
    run(chained, LOAD)  # a new hit: a new mapping of the same memory file
    total = chained.user_ns.get("total")
    run(chained, READ)
    assert chained.user_ns["runs"] == [1]  # a hit
    assert chained.user_ns["total"] == total
    assert [n for n in hashed if n >= _hash_buffers.PARALLEL_MIN] == []


def test_one_written_byte_recomputes(chained: InteractiveShell) -> None:
    run(chained, LOAD)
    frame = chained.user_ns["df"]
    expected = float(frame["a"].sum() + frame["b"].sum())
    raw = frame["b"].to_numpy().view(np.uint8)
    raw.setflags(write=True)  # pandas hands out read-only views; the hit's memory itself is writable
    assert _mapped.registry.find(raw.__array_interface__["data"][0], raw.nbytes) is not None
    raw[ROWS * 4 + 3] ^= 0x10  # one byte in the middle of column b, in place in the mapping
    assert frame["b"].to_numpy()[ROWS // 2] != make()["b"][ROWS // 2]
    changed = float(frame["a"].sum() + frame["b"].sum())
    assert changed != expected
    run(chained, READ)
    assert chained.user_ns["runs"] == [1, 1]  # recomputed
    assert chained.user_ns["total"] == changed


def test_a_changed_column_or_a_rebinding_recomputes(chained: InteractiveShell) -> None:
    run(chained, LOAD)
    chained.user_ns["df"]["b"] = np.zeros(ROWS)  # a new column object: not a mapped range
    run(chained, READ)
    assert chained.user_ns["runs"] == [1, 1]
    run(chained, LOAD)
    chained.user_ns["df"] = chained.user_ns["df"].iloc[::-1]  # a rebinding to other data
    run(chained, READ)
    assert chained.user_ns["runs"] == [1, 1, 1]


def test_without_pagemap_everything_is_hashed_in_full_and_still_hits(
    chained: InteractiveShell, hashed: list[int]
) -> None:
    run(chained, LOAD)
    with _pagemap.forced_fallback():
        assert not _pagemap.unwritten(1 << 30, 4096)
        run(chained, READ)
    assert chained.user_ns["runs"] == [1]  # same key
    assert sum(n for n in hashed if n >= _hash_buffers.PARALLEL_MIN) == 2 * ROWS * 8


def test_a_known_digest_is_the_digest_full_hashing_gives() -> None:
    value = {"frame": make(), "array": np.arange(4_000_000, dtype=np.int64)}
    stored = serialize(value)
    first = stored.load()
    full = digest(first)  # remembers the mapped ranges' pieces
    assert full == digest(value)
    second = stored.load()  # another mapping: the remembered pieces are used
    assert digest(second) == full
    with _pagemap.forced_fallback():
        assert digest(second) == full
    second["array"][-1] = -1
    assert digest(second) != full
    assert digest(first) == full


def test_ranges_leave_the_registry_with_their_mapping() -> None:
    gc.collect()  # an earlier test's mapping collected mid-test would move the count
    before = len(_mapped.registry)
    stored = serialize(np.ones(4_000_000))
    hit = stored.load()
    assert len(_mapped.registry) == before + 1
    del hit
    assert len(_mapped.registry) == before


@pytest.mark.parametrize("scan", [True, False], ids=["PAGEMAP_SCAN", "pagemap entries"])
def test_pagemap_tells_written_pages_of_a_private_file_mapping(
    scan: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert _pagemap.available()
    if scan and not _pagemap._pagemap.scan:
        pytest.skip("this kernel has no PAGEMAP_SCAN (Linux < 6.7)")
    monkeypatch.setattr(_pagemap._pagemap, "scan", scan)
    size = 256 * mmap.PAGESIZE
    fd = os.memfd_create("test", os.MFD_CLOEXEC)
    try:
        os.pwrite(fd, b"x" * size, 0)
        mapping = mmap.mmap(fd, size, flags=mmap.MAP_PRIVATE)
        address = ctypes.addressof(ctypes.c_char.from_buffer(mapping))
        assert _pagemap.unwritten(address, size)  # untouched
        assert mapping[: size // 2].count(b"x") == size // 2  # read: still the file's pages
        assert _pagemap.unwritten(address, size)
        mapping[size - 1] = 0x79  # one byte of the last page
        assert not _pagemap.unwritten(address, size)
        assert _pagemap.unwritten(address, size - mmap.PAGESIZE)
        assert not _pagemap.unwritten(address + size - 10, 1)
    finally:
        os.close(fd)
