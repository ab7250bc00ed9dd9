"""The one place that turns a cache_data result into bytes and back into a fresh copy.

Results are pickled with cloudpickle (so functions and classes defined in the notebook
travel by value) using pickle protocol 5 with out-of-band buffers: the large blocks of
numpy arrays, pandas frames and Arrow columns are kept apart from the pickle stream.

Where the OS allows (Linux ``memfd_create``), the large buffers of an entry live in one
anonymous memory file, each starting on a page boundary. A hit maps each buffer with
``mmap(..., access=ACCESS_COPY)``: a private copy-on-write view. The hit is writable and
independent — writes go to the hit's own pages, never to the file or to other hits — yet
nothing is copied until somebody writes, so a hit on a 1 GB frame costs milliseconds and
k hits read in full share the same physical pages. Elsewhere, and for small buffers, each
load copies the buffers into fresh ``bytearray`` objects.

numpy pickles datetime64/timedelta64 arrays in-band; they are reduced here to their int64
view so they travel out-of-band like any other numeric array.
"""

from __future__ import annotations

import ctypes
import gc
import io
import mmap
import os
import pickle
import resource
import sys
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import cloudpickle

from ._errors import UnserializableResultError

PROTOCOL = 5
# Below this a buffer is copied on load: a mapping per small array would cost more than the copy.
MAP_THRESHOLD = 256 * 1024
_PAGE = mmap.PAGESIZE


class SerializedValue:
    """A pickled value: the stream, small buffers as bytes, large ones in a memory file."""

    def __init__(
        self, meta: bytes, layout: list[tuple[str, int, int]], small: list[bytes], memfile: _MemFile | None
    ):
        self.meta = meta
        # per out-of-band buffer: ("small", index, length) or ("mapped", offset, length)
        self._layout = layout
        self._small = small
        self._memfile = memfile

    @property
    def nbytes(self) -> int:
        """Bytes the store really holds for this value (the memory file counts its page padding)."""
        return (
            len(self.meta) + sum(len(b) for b in self._small) + (self._memfile.size if self._memfile else 0)
        )

    @property
    def mapped(self) -> bool:
        """True when loads are copy-on-write mappings rather than copies."""
        return self._memfile is not None

    def parts(self) -> tuple[bytes, list[memoryview]]:
        """The pickle stream and read-only views of its buffers, in order (to write them out)."""
        views: list[memoryview] = []
        for where, first, length in self._layout:
            if where == "small":
                views.append(memoryview(self._small[first]))
            elif length == 0:
                views.append(memoryview(b""))
            else:
                assert self._memfile is not None
                views.append(self._memfile.private_view(first, length).toreadonly())
        return self.meta, views

    @classmethod
    def from_parts(cls, meta: bytes, buffers: list[memoryview]) -> SerializedValue:
        """The inverse of ``parts``: buffers are copied, so the caller's memory can go."""
        return _pack(meta, buffers, _memfd_available())

    def load(self) -> Any:
        """Return a fresh, independent, writable copy of the value."""
        buffers: list[Any] = []
        for where, first, length in self._layout:
            if where == "small":
                buffers.append(_fresh_copy(self._small[first]))
            elif length == 0:
                buffers.append(bytearray())
            else:
                assert self._memfile is not None
                buffers.append(self._memfile.private_view(first, length))
        with _gc_paused():
            return pickle.loads(self.meta, buffers=buffers)


class _MemFile:
    """An anonymous memory file holding an entry's large buffers; closed when dropped."""

    live = 0  # memory files open now: each holds a file descriptor

    def __init__(self, size: int) -> None:
        self.size = size
        self.fd = os.memfd_create("ipycache_ext", os.MFD_CLOEXEC)
        _MemFile.live += 1
        self._finalizer = weakref.finalize(self, _MemFile._close, self.fd)
        os.ftruncate(self.fd, size)

    @staticmethod
    def _close(fd: int) -> None:
        _MemFile.live -= 1
        os.close(fd)

    def write(self, offset: int, data: memoryview) -> None:
        view = data.cast("B")
        written = 0
        while written < view.nbytes:  # pwrite may write less than asked
            written += os.pwrite(self.fd, view[written:], offset + written)

    def private_view(self, offset: int, length: int) -> memoryview:
        """A private (MAP_PRIVATE) writable mapping of one buffer, unmapped when unreferenced.

        Through libc rather than ``mmap.mmap``, which dup()s the descriptor for every
        mapping: a kernel holding a few hundred hits would run out of file descriptors.
        """
        assert _libc is not None
        address = _libc.mmap(
            None, length, mmap.PROT_READ | mmap.PROT_WRITE, mmap.MAP_PRIVATE, self.fd, offset
        )
        if address is None or address == _MAP_FAILED:
            error = ctypes.get_errno()
            raise OSError(error, f"mmap of a cached buffer failed: {os.strerror(error)}")
        memory = (ctypes.c_char * length).from_address(address)
        unmap = weakref.finalize(memory, _libc.munmap, address, length)
        unmap.atexit = False  # at exit the OS unmaps; a late reader must not find it gone
        return memoryview(memory).cast("B")

    def close(self) -> None:
        self._finalizer()


def _fresh_copy(data: bytes) -> Any:
    """A writable copy. numpy's allocator asks for transparent huge pages for large arrays,
    which makes a 1 GB copy ~3x faster than ``bytearray`` (page faults dominate)."""
    np = sys.modules.get("numpy")
    if np is not None and len(data) >= MAP_THRESHOLD:
        return np.frombuffer(data, dtype=np.uint8).copy()
    return bytearray(data)


def _load_libc() -> Any:
    if not sys.platform.startswith("linux") or not hasattr(os, "memfd_create"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.mmap.restype = ctypes.c_void_p
        libc.mmap.argtypes = (
            ctypes.c_void_p,
            ctypes.c_size_t,
            ctypes.c_int,
            ctypes.c_int,
            ctypes.c_int,
            ctypes.c_int64,
        )
        libc.munmap.restype = ctypes.c_int
        libc.munmap.argtypes = (ctypes.c_void_p, ctypes.c_size_t)
    except (OSError, AttributeError):
        return None
    return libc


_libc = _load_libc()
_MAP_FAILED = ctypes.c_void_p(-1).value


def _memfd_available() -> bool:
    return _libc is not None


class _Pickler(cloudpickle.Pickler):  # type: ignore[misc]
    """cloudpickle, plus datetime64/timedelta64 arrays reduced to int64 so they go out-of-band."""

    def reducer_override(self, obj: Any) -> Any:
        np = sys.modules.get("numpy")
        if (
            np is not None
            and type(obj) is np.ndarray
            and obj.dtype.kind in "mM"
            and obj.dtype.byteorder in "=<|"
        ):
            return _rebuild_time_array, (obj.view(np.int64), obj.dtype.str)
        return super().reducer_override(obj)


def _rebuild_time_array(ints: Any, dtype: str) -> Any:
    return ints.view(dtype)


def serialize(value: Any, what: str = "the result", *, use_mapping: bool | None = None) -> SerializedValue:
    """Pickle ``value``; raise UnserializableResultError naming ``what`` if it can't be.

    ``use_mapping`` forces the copy-on-write path on or off (default: where available).
    """
    views: list[memoryview] = []
    stream = io.BytesIO()

    def keep(buffer: pickle.PickleBuffer) -> None:
        views.append(buffer.raw())

    try:
        _Pickler(stream, protocol=PROTOCOL, buffer_callback=keep).dump(value)
    except Exception as exc:  # pickling raises anything: TypeError, PicklingError, ...
        raise UnserializableResultError(
            what,
            f"{type(exc).__name__}: {exc}",
            "Cache objects that can't be pickled (connections, models, locks) with "
            "%%cache_resource or @cache_resource, or name only the variables to keep.",
        ) from exc
    mapping = _memfd_available() if use_mapping is None else use_mapping and _memfd_available()
    return _pack(stream.getvalue(), views, mapping)


def _pack(meta: bytes, views: list[memoryview], mapping: bool) -> SerializedValue:
    """Copy the buffers out of the caller's objects (they may be mutated later).

    If the memory file can't be made or filled (no descriptors left, no shared memory
    left), the buffers are kept as plain copies instead: slower hits, same results.
    """
    if mapping and _MemFile.live < _memfile_limit():
        try:
            return _layout(meta, views, map_large=True)
        except OSError:
            pass  # EMFILE, ENOSPC, ENOMEM: fall back to copies below
    return _layout(meta, views, map_large=False)


def _layout(meta: bytes, views: list[memoryview], *, map_large: bool) -> SerializedValue:
    layout: list[tuple[str, int, int]] = []
    small: list[bytes] = []
    large: list[tuple[int, memoryview]] = []
    offset = 0
    for view in views:
        if map_large and view.nbytes >= MAP_THRESHOLD:
            layout.append(("mapped", offset, view.nbytes))
            large.append((offset, view))
            offset += -(-view.nbytes // _PAGE) * _PAGE
        else:
            layout.append(("small", len(small), view.nbytes))
            small.append(bytes(view))
    memfile = None
    if large:
        memfile = _MemFile(offset)
        try:
            for start, view in large:
                memfile.write(start, view)
        except BaseException:
            memfile.close()
            raise
    return SerializedValue(meta, layout, small, memfile)


def _memfile_limit() -> int:
    """Use at most a quarter of the process's file descriptors for memory files."""
    try:
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    except (OSError, ValueError):
        return 256
    return 256 if soft == resource.RLIM_INFINITY else max(16, soft // 4)


@contextmanager
def _gc_paused() -> Iterator[None]:
    """Unpickling many small objects triggers the cyclic GC again and again, for nothing."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
