"""``SerializedValue.from_file``: an entry file's buffers are checked through the private
mapping the first load then hands out (no second mapping, nothing read twice); later loads
map their own; a damaged buffer leaves no descriptor or mapping behind; a value dropped
unloaded gives a landed memory file's pages back."""

from __future__ import annotations

import gc
import mmap
import os
from pathlib import Path

import numpy as np
import pytest

from ipycache_ext._serialize import (
    MAP_THRESHOLD,
    SerializedValue,
    _memfd_available,
    _MemFile,
    buffer_digest,
    serialize,
)
from tests.descriptors import MEMORY_FILES, descriptors_to

pytestmark = pytest.mark.skipif(not _memfd_available(), reason="maps files: Linux only")

Entry = tuple[bytes, list[tuple[int, int]], list[bytes]]


def write_entry(fd: int, value: object) -> Entry:
    """``value``'s buffers written page-aligned into ``fd`` (as format 3 lays them out)."""
    meta, views = serialize(value).parts()
    spans: list[tuple[int, int]] = []
    at = mmap.PAGESIZE  # something before the first buffer, like a header
    for view in views:
        os.pwrite(fd, view, at)
        spans.append((at, view.nbytes))
        at += -(-max(view.nbytes, 1) // mmap.PAGESIZE) * mmap.PAGESIZE
    os.ftruncate(fd, at)
    return bytes(meta), spans, [buffer_digest(view) for view in views]


def mappings_of(path: Path) -> int:
    return Path("/proc/self/maps").read_text().count(str(path))


def resident_in_page_tables(array: np.ndarray) -> int:
    """Pages of ``array`` this process's page tables already map (pagemap's present bit)."""
    address = array.__array_interface__["data"][0]
    first, last = address // mmap.PAGESIZE, (address + array.nbytes - 1) // mmap.PAGESIZE
    with open("/proc/self/pagemap", "rb") as pagemap:
        pagemap.seek(first * 8)
        entries = np.frombuffer(pagemap.read((last - first + 1) * 8), dtype=np.uint64)
    return int(((entries >> np.uint64(63)) & np.uint64(1)).sum())


@pytest.fixture
def entry_file(tmp_path: Path) -> tuple[Path, int]:
    path = tmp_path / "one.entry"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    yield path, fd
    os.close(fd)


def test_the_first_load_gets_the_checked_mapping_later_loads_their_own(entry_file: tuple[Path, int]) -> None:
    path, fd = entry_file
    data = {"big": np.arange(1_000_000, dtype=np.int64), "small": np.arange(10)}
    meta, spans, digests = write_entry(fd, data)
    assert spans[0][1] >= MAP_THRESHOLD and spans[1][1] < MAP_THRESHOLD
    value = SerializedValue.from_file(meta, fd, spans, digests)
    assert mappings_of(path) == 1  # the checked buffer's own mapping, nothing else is left
    first = value.load()
    assert mappings_of(path) == 1  # the first load took that mapping
    # the check read every page through it, so the first hit's pages are mapped already
    assert resident_in_page_tables(first["big"]) == -(-first["big"].nbytes // mmap.PAGESIZE)
    second = value.load()
    assert mappings_of(path) == 2 and resident_in_page_tables(second["big"]) < 16
    first["big"][:] = -1  # a hit is writable, copy-on-write: nothing else sees it
    assert int(second["big"].sum()) == int(data["big"].sum())
    assert int(value.load()["big"][7]) == 7
    assert os.pread(fd, 8, spans[0][0] + 8) == np.int64(1).tobytes()  # nor the file
    del first, second, value
    gc.collect()
    assert mappings_of(path) == 0


def test_a_damaged_buffer_is_named_and_leaves_nothing_mapped_or_open(entry_file: tuple[Path, int]) -> None:
    path, fd = entry_file
    meta, spans, digests = write_entry(fd, [np.ones(200_000), np.zeros(300_000)])
    offset, length = spans[1]
    os.pwrite(fd, b"\x01", offset + length - 1)  # one flipped byte in the last page of the second
    gc.collect()  # serialize()'s own memory file goes
    live, descriptors = _MemFile.live, descriptors_to(path, MEMORY_FILES)
    with pytest.raises(ValueError) as raised:
        SerializedValue.from_file(meta, fd, spans, digests)
    assert raised.value.args == (1,)
    kept = raised.value.__traceback__  # as IPython keeps sys.last_traceback
    gc.collect()
    assert _MemFile.live == live and descriptors_to(path, MEMORY_FILES) == descriptors
    assert mappings_of(path) == 0  # the kept traceback holds no view of a mapping
    assert kept is not None


def test_a_landed_value_dropped_unloaded_gives_its_pages_back() -> None:
    fd = os.memfd_create("landing-test", os.MFD_CLOEXEC)
    probe = os.dup(fd)
    try:
        meta, spans, digests = write_entry(fd, np.full(2_000_000, 3.0))
        value = SerializedValue.from_file(meta, fd, spans, digests, private=True)
        os.close(fd)  # the landing's own descriptor goes; the value keeps a duplicate
        fd = -1
        assert os.fstat(probe).st_blocks * 512 >= 16_000_000
        del value  # never loaded: its checked mapping goes with it
        gc.collect()
        assert os.fstat(probe).st_blocks * 512 <= 2 * mmap.PAGESIZE  # the buffer's pages were punched
    finally:
        if fd >= 0:
            os.close(fd)
        os.close(probe)
