"""Has a page of a private (copy-on-write) file mapping been written? Linux's pagemap says.

A ``MAP_PRIVATE`` mapping of a file shows the file's pages until someone writes: the
written page becomes the process's own anonymous copy. ``/proc/self/pagemap`` tells the two
apart, page by page: a page never touched (or only read) is *not present*, or *present* with
the "file page" bit; a written one is present without it. A page swapped out (or being
migrated) can't be told apart, so it counts as written. So "no page of this range is
written" means the range still holds exactly the file's bytes.

Linux 6.7+ answers in one ``PAGEMAP_SCAN`` ioctl that stops at the first written page and
skips untouched page tables at once (microseconds for an untouched 1 GB range, ~10 ms when
every page of it was read); older kernels read the 8-byte entries (2 MB for 1 GB). Anywhere
else (no ``/proc``, not Linux, an error), ``unwritten`` answers False: callers then hash in
full. Nothing here ever says "unwritten" without the kernel having said so.
"""

from __future__ import annotations

import contextlib
import ctypes
import mmap
import os
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

__all__ = ["available", "forced_fallback", "unwritten"]

_PAGE = mmap.PAGESIZE
# PAGEMAP_SCAN (linux/fs.h): _IOWR('f', 16, struct pm_scan_arg), 12 u64 fields
_PAGEMAP_SCAN = (3 << 30) | (96 << 16) | (ord("f") << 8) | 16
_IS_FILE, _IS_PRESENT, _IS_SWAPPED = 1 << 2, 1 << 3, 1 << 4
# pagemap entry bits: 63 present, 62 swapped, 61 file page or shared anonymous
_PRESENT, _SWAPPED, _FILE = 1 << 63, 1 << 62, 1 << 61
# A range this long may be scanned by two threads (page-table walks of read pages cost ~40 ns a
# page), when the first eighth of it took longer than _SLOW seconds.
_SPLIT = 64 << 20
_SLOW = 0.0002


_SCAN_FIELDS = "size flags start end walk_end vec vec_len max_pages inverted mask anyof returned"


class _ScanArg(ctypes.Structure):  # struct pm_scan_arg (the category_* fields shortened)
    _fields_ = [(name, ctypes.c_uint64) for name in _SCAN_FIELDS.split()]


class _Region(ctypes.Structure):
    _fields_ = [("start", ctypes.c_uint64), ("end", ctypes.c_uint64), ("categories", ctypes.c_uint64)]


class _Pagemap:
    """The open ``/proc/self/pagemap`` and the way this kernel can be asked."""

    def __init__(self) -> None:
        self.fd = -1
        self.scan = False
        self.disabled = False
        self._pid = -1
        self._lock = threading.Lock()
        self._libc: ctypes.CDLL | None = None
        self._pool: ThreadPoolExecutor | None = None

    def ready(self) -> bool:
        if self.disabled or not sys.platform.startswith("linux"):
            return False
        if self.fd >= 0 and self._pid == os.getpid():
            return True
        with self._lock:
            if self.fd >= 0 and self._pid == os.getpid():
                return True
            try:  # after a fork, /proc/self is another process: open it again
                self.fd = os.open("/proc/self/pagemap", os.O_RDONLY | os.O_CLOEXEC)
                self._pid = os.getpid()
                libc = ctypes.CDLL(None, use_errno=True)
                libc.ioctl.argtypes = (ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p)
                libc.ioctl.restype = ctypes.c_int
                self._libc = libc
            except (OSError, AttributeError):
                self.disabled = True
                return False
            self.scan = self._scan_works()
        return True

    def _scan_works(self) -> bool:
        probe = mmap.mmap(-1, _PAGE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        try:
            cell = ctypes.c_char.from_buffer(probe)
            address = ctypes.addressof(cell)
            del cell
            written = self._scan(address, address + _PAGE)
            probe[0] = 1
            written_after = self._scan(address, address + _PAGE)
        except OSError:
            return False
        finally:
            with contextlib.suppress(BufferError):
                probe.close()
        # a private anonymous page is never a file page: untouched it is absent, written it is found
        return written is False and written_after is True

    def _scan(self, start: int, end: int) -> bool:
        """True when a page in [start, end) is written (or swapped): one PAGEMAP_SCAN."""
        assert self._libc is not None
        found = (_Region * 1)()
        arg = _ScanArg(
            ctypes.sizeof(_ScanArg), 0, start, end, 0, ctypes.addressof(found), 1, 1,
            _IS_FILE, _IS_FILE, _IS_PRESENT | _IS_SWAPPED, _IS_FILE | _IS_PRESENT | _IS_SWAPPED,
        )  # fmt: skip
        # matches pages that are not file pages and are present or swapped: written ones
        count = self._libc.ioctl(self.fd, _PAGEMAP_SCAN, ctypes.byref(arg))
        if count < 0:
            error = ctypes.get_errno()
            raise OSError(error, os.strerror(error))
        return bool(count > 0 or arg.walk_end < end)

    def _entries(self, start: int, end: int) -> bool:
        """True when a page in [start, end) is written, swapped or unknown: the 8-byte entries."""
        first, pages = start // _PAGE, (end - start) // _PAGE
        step = 1 << 16  # 512 KB of entries at a time
        np = sys.modules.get("numpy")
        for done in range(0, pages, step):
            count = min(step, pages - done)
            raw = os.pread(self.fd, count * 8, (first + done) * 8)
            if len(raw) != count * 8:
                return True
            if np is not None:
                entries = np.frombuffer(raw, dtype=np.uint64)
                present = (entries & np.uint64(_PRESENT)) != 0
                if bool(((entries & np.uint64(_SWAPPED)) != 0).any()):
                    return True
                if bool((present & ((entries & np.uint64(_FILE)) == 0)).any()):
                    return True
            else:
                for entry in memoryview(raw).cast("Q"):
                    if entry & _SWAPPED or (entry & _PRESENT and not entry & _FILE):
                        return True
        return False

    def written(self, start: int, end: int) -> bool:
        check = self._scan if self.scan else self._entries
        if end - start < _SPLIT:
            return check(start, end)
        # An untouched range is answered in microseconds, one whose pages were all read costs
        # a walk of every page table entry: try an eighth, and walk the rest in two threads
        # only if that eighth was slow.
        first = start + (end - start) // 8 // _PAGE * _PAGE
        began = time.perf_counter()
        if check(start, first):
            return True
        if time.perf_counter() - began < _SLOW:
            return check(first, end)
        middle = first + (end - first) // 2 // _PAGE * _PAGE
        if self._pool is None:
            with self._lock:
                if self._pool is None:
                    self._pool = ThreadPoolExecutor(1, thread_name_prefix="ipycache-pagemap")
        other = self._pool.submit(check, middle, end)
        return check(first, middle) | other.result()


_pagemap = _Pagemap()


def available() -> bool:
    """True when this process can ask the kernel which pages it wrote."""
    return _pagemap.ready()


def unwritten(address: int, length: int) -> bool:
    """True only if no page under ``[address, address + length)`` was written in this process.

    The range must lie inside one private file mapping. False when any page of it was
    written, is swapped, or the kernel can't be asked: then its bytes must be hashed.
    """
    if length <= 0 or not _pagemap.ready():
        return False
    start = address // _PAGE * _PAGE
    end = -(-(address + length) // _PAGE) * _PAGE
    try:
        return not _pagemap.written(start, end)
    except OSError:
        return False


@contextlib.contextmanager
def forced_fallback() -> Iterator[None]:
    """As if pagemap could not be read (tests: every buffer is then hashed in full)."""
    was, _pagemap.disabled = _pagemap.disabled, True
    try:
        yield
    finally:
        _pagemap.disabled = was
