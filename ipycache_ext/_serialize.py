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

Memory is freed buffer by buffer. When the store drops an entry while hits still map some
of its buffers (say one 50 MB column kept from a 477 MB frame), the pages of every buffer
nobody maps are given back at once (``fallocate(PUNCH_HOLE)``), and each remaining one as
its last mapping goes; the descriptor is closed at once (a shared mapping of the file keeps
what is left reachable for the punching). ``held_bytes`` says how much is still mapped.

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
import threading
import weakref
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import cloudpickle
import xxhash

from ._errors import UnserializableResultError
from ._hash_buffers import piece_digests
from ._mapped import registry

PROTOCOL = 5
# Below this a buffer is copied on load: a mapping per small array would cost more than the copy.
MAP_THRESHOLD = 256 * 1024
_PAGE = mmap.PAGESIZE
# Pickle streams shorter than this are unpickled without pausing the GC (it costs ~1 µs).
_PAUSE_GC_FROM = 4096
# Descriptors always left to the rest of the process (or a 16th of the limit, if more).
DESCRIPTOR_HEADROOM = 32


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
        # (value,) once a load turned out immutable (numbers, strings, tuples of them): the
        # engine hands that one copy out again, as nobody can change it (None: not known)
        self.immutable: tuple[Any] | None = None
        # offset -> the private mapping a buffer was checked through, for the first load
        # (``from_file``); later loads map their own
        self._first: dict[int, memoryview] = {}
        if memfile is not None:  # once nobody holds this value, free what no hit still maps
            weakref.finalize(self, memfile.orphan)

    @property
    def memory_file(self) -> _MemFile | None:
        """The memory file of the large buffers (None when they are plain copies)."""
        return self._memfile

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

    @classmethod
    def from_file(
        cls,
        meta: bytes,
        fd: int,
        spans: Sequence[tuple[int, int]],
        expected: Sequence[bytes],
        *,
        check: Callable[[memoryview], bytes] | None = None,
        private: bool = False,
    ) -> SerializedValue:
        """Buffers mapped copy-on-write from an entry file (``spans``: page-aligned offset, length).

        Each buffer is checked against ``expected`` (``buffer_digest``) before anything is
        handed out; ``ValueError(index)`` names the first that differs. The file is read once,
        by the hashing threads, at memory speed, through the private mapping that the first
        load then hands out; later loads map it again without reading.
        ``fd`` stays the caller's (a duplicate is kept). Where mappings can't be had, the
        buffers are copied (a memory file or plain copies) after the same check.

        ``check``: the digest ``expected`` holds, when it is not ``buffer_digest`` (the team
        tier signs BLAKE3 digests: xxh3 guards against damage, not against a forger).
        ``private``: ``fd`` is a memory file nobody else holds (a team entry landed in it), so
        its buffers' pages are given back like the store's own once nothing maps them.
        """
        size = max((offset + length for offset, length in spans), default=0)
        if _libc is None or not (_MemFile.live < _memfile_limit() and _descriptors_to_spare()):
            return cls._copied_from_file(meta, fd, spans, expected=expected, check=check)
        memfile = _MemFile(size, fd=os.dup(fd), private=private)
        layout: list[tuple[str, int, int]] = []
        small: list[bytes] = []
        first: dict[int, memoryview] = {}
        view: memoryview | None = None
        try:
            for index, (offset, length) in enumerate(spans):
                if length >= MAP_THRESHOLD and offset % _PAGE == 0:
                    # checked through the private mapping its first load gets: no second
                    # mapping to tear down (its munmap held up the next mmap), and the check
                    # has already faulted in the pages the first hit reads
                    view = first[offset] = memfile.private_view(offset, length)
                    digests = _digests_if(view.toreadonly(), expected[index], check)
                    view = None
                    if digests is None:
                        raise ValueError(index)
                    memfile.digests[(offset, length)] = digests
                    layout.append(("mapped", offset, length))
                    if private:
                        memfile.adopt(offset, length)
                else:
                    data = pread_all(fd, offset, length)
                    if _digests_if(memoryview(data), expected[index], check) is None:
                        raise ValueError(index)
                    layout.append(("small", len(small), length))
                    small.append(data)
        except OSError:  # no more mappings to be had (vm.max_map_count, memory): copy instead
            view = None
            first.clear()
            memfile.close()
            return cls._copied_from_file(meta, fd, spans, expected=expected, check=check)
        except BaseException as failure:
            view = None
            first.clear()
            memfile.close()
            # without the frames below this one: theirs hold views of the mappings, and a
            # kept traceback (sys.last_traceback) would keep the pages of them all
            raise failure.with_traceback(None) from None
        value = cls(meta, layout, small, memfile)
        value._first = first
        return value

    @classmethod
    def _copied_from_file(
        cls,
        meta: bytes,
        fd: int,
        spans: Sequence[tuple[int, int]],
        *,
        expected: Sequence[bytes],
        check: Callable[[memoryview], bytes] | None,
    ) -> SerializedValue:
        """``from_file`` where nothing can stay mapped: buffers checked, then copied."""
        size = max((offset + length for offset, length in spans), default=0)
        whole = _map_readonly(fd, size) if size else None
        try:
            views: list[memoryview] = []
            for index, (offset, length) in enumerate(spans):
                view = whole[offset : offset + length] if whole is not None else memoryview(b"")
                actual = buffer_digest(view) if check is None else check(view)
                if actual != expected[index]:
                    raise ValueError(index)
                views.append(view)
            return _pack(meta, views, _memfd_available())
        finally:  # the mapping goes with its last view
            views, whole = [], None

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
                checked = self._first.pop(first, None) if self._first else None
                buffers.append(checked if checked is not None else self._memfile.private_view(first, length))
        if len(self.meta) < _PAUSE_GC_FROM:  # too few objects to wake the GC: not worth a pause
            return pickle.loads(self.meta, buffers=buffers)
        with _gc_paused():
            return pickle.loads(self.meta, buffers=buffers)


class _MemFile:
    """An anonymous memory file holding an entry's large buffers.

    Alive while its ``SerializedValue`` or any mapping of it is. Once the value is gone
    (``orphan``), each buffer's pages are punched out as soon as no mapping uses them, so
    a kept slice holds its own buffer and nothing else; the descriptor is closed then.
    """

    live = 0  # memory files with an open descriptor now

    def __init__(self, size: int, fd: int | None = None, *, private: bool = False) -> None:
        self.size = size
        # a verified entry file (``fd`` given) is mapped like a memory file, never punched;
        # a ``private`` one is a memory file of ours (a landed team entry): punched like ours
        self.is_file = fd is not None and not private
        self.fd = os.memfd_create("ipycache_ext", os.MFD_CLOEXEC) if fd is None else fd
        self._handle = _Handle(self.fd, size)
        _MemFile.live += 1
        self._finalizer = weakref.finalize(self, self._handle.close)
        self._lock = threading.RLock()  # finalizers run on any thread, even inside this lock
        self._buffers: dict[int, int] = {}  # offset -> length rounded up to pages
        self._mapped: dict[int, int] = {}  # offset -> live mappings
        self._orphaned = False
        self.held = 0  # bytes of buffers still mapped after orphan()
        # (offset, length) -> piece digests of those bytes, as hashing computes them (see _mapped)
        self.digests: dict[tuple[int, int], bytes] = {}
        if not self.is_file:
            os.ftruncate(self.fd, size)

    def adopt(self, offset: int, length: int) -> None:
        """A buffer already in the file (written by someone else), to give back like a written one."""
        self._buffers[offset] = -(-length // _PAGE) * _PAGE

    def write(self, offset: int, data: memoryview) -> None:
        view = data.cast("B")
        self._buffers[offset] = -(-view.nbytes // _PAGE) * _PAGE
        written = 0
        while written < view.nbytes:  # pwrite may write less than asked
            written += os.pwrite(self.fd, view[written:], offset + written)

    def private_view(self, offset: int, length: int) -> memoryview:
        """A private (MAP_PRIVATE) writable mapping of one buffer, unmapped when unreferenced.

        Through libc rather than ``mmap.mmap``, which dup()s the descriptor for every
        mapping: a kernel holding a few hundred hits would run out of file descriptors.
        """
        assert _libc is not None
        with self._lock:
            if self._handle.fd < 0:
                raise OSError(9, "the memory file of this value was released")
            address = _libc.mmap(
                None, length, mmap.PROT_READ | mmap.PROT_WRITE, mmap.MAP_PRIVATE, self._handle.fd, offset
            )
            if address is None or address == _MAP_FAILED:
                error = ctypes.get_errno()
                raise OSError(error, f"mmap of a cached buffer failed: {os.strerror(error)}")
            self._mapped[offset] = self._mapped.get(offset, 0) + 1
            registry.add(address, length, self, offset)  # hashing may know its bytes' digest
        memory = (ctypes.c_char * length).from_address(address)
        unmap = weakref.finalize(memory, self._unmapped, address, length, offset)
        unmap.atexit = False  # at exit the OS unmaps; a late reader must not find it gone
        return memoryview(memory).cast("B")

    def _unmapped(self, address: int, length: int, offset: int) -> None:
        assert _libc is not None
        registry.remove(address)  # before the addresses can be reused
        _libc.munmap(address, length)
        with self._lock:
            self._mapped[offset] -= 1
            if self._mapped[offset] == 0 and self._orphaned:
                self._punch(offset)
                self.held -= self._buffers.get(offset, 0)
                _held.add(-self._buffers.get(offset, 0))

    def orphan(self) -> None:
        """Nobody holds the value any more: free every buffer no mapping uses, and the descriptor."""
        with self._lock:
            if self._orphaned:
                return
            self._orphaned = True
            if self.is_file:  # its pages are the file's: nothing to give back; mappings need no descriptor
                self._handle.keep_pages_without_descriptor(False)
                return
            for offset in self._buffers:
                if self._mapped.get(offset, 0) == 0:
                    self._punch(offset)
                else:
                    self.held += self._buffers[offset]
            _held.add(self.held)
            self._handle.keep_pages_without_descriptor(self.held > 0)

    def _punch(self, offset: int) -> None:
        if self.is_file:
            return
        self._handle.punch(offset, self._buffers.get(offset, 0))

    def close(self) -> None:
        self._finalizer()


class _Handle:
    """The descriptor (and, once it is closed, a shared mapping) behind a memory file.

    Apart from ``_MemFile`` so that its finalizer can close it without keeping the file alive.
    """

    def __init__(self, fd: int, size: int) -> None:
        self.fd = fd
        self.size = size
        self.shared: int | None = None  # address of a shared mapping of the whole file

    def keep_pages_without_descriptor(self, needed: bool) -> None:
        """Close the descriptor; keep a shared mapping to punch later if pages are still mapped."""
        if needed and _libc is not None and self.fd >= 0:
            address = _libc.mmap(
                None, self.size, mmap.PROT_READ | mmap.PROT_WRITE, mmap.MAP_SHARED, self.fd, 0
            )
            if address is None or address == _MAP_FAILED:
                return  # keep the descriptor: it is closed with the file
            self.shared = address
        self._close_fd()

    def punch(self, offset: int, length: int) -> None:
        """Give the pages of one buffer back to the system (best effort: they go with the file anyway)."""
        if _libc is None or length <= 0:
            return
        if self.fd >= 0:
            _libc.fallocate(self.fd, _FALLOC_FL_PUNCH_HOLE | _FALLOC_FL_KEEP_SIZE, offset, length)
        elif self.shared is not None:
            _libc.madvise(self.shared + offset, length, _MADV_REMOVE)

    def _close_fd(self) -> None:
        if self.fd >= 0:
            fd, self.fd = self.fd, -1
            _MemFile.live -= 1
            os.close(fd)

    def close(self) -> None:
        self._close_fd()
        if self.shared is not None and _libc is not None:
            address, self.shared = self.shared, None
            _libc.munmap(address, self.size)


class _HeldBytes:
    """Bytes of dropped values that live hits still map (all stores of the process)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.value = 0

    def add(self, delta: int) -> None:
        with self._lock:
            self.value += delta


_held = _HeldBytes()


def held_bytes() -> int:
    """Memory of values no longer stored that live results still map (their pages are theirs)."""
    return _held.value


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
        libc.fallocate.restype = ctypes.c_int
        libc.fallocate.argtypes = (ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64)
        libc.madvise.restype = ctypes.c_int
        libc.madvise.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
    except (OSError, AttributeError):
        return None
    return libc


_libc = _load_libc()
_MAP_FAILED = ctypes.c_void_p(-1).value
_FALLOC_FL_KEEP_SIZE = 0x01
_FALLOC_FL_PUNCH_HOLE = 0x02
_MADV_REMOVE = getattr(mmap, "MADV_REMOVE", 9)


def _memfd_available() -> bool:
    return _libc is not None


def buffer_digest(data: bytes | memoryview) -> bytes:
    """The integrity digest of one buffer in an entry file: xxh3-128 of its pieces' digests
    (the pieces hashing uses, so checking a file also tells hashing what its ranges hash to)."""
    return xxhash.xxh3_128(piece_digests(data)).digest()


def _digests_if(
    data: memoryview, expected: bytes, check: Callable[[memoryview], bytes] | None
) -> bytes | None:
    """``data``'s piece digests if its digest is ``expected`` (``check``'s, else ``buffer_digest``'s)."""
    digests = piece_digests(data)
    actual = xxhash.xxh3_128(digests).digest() if check is None else check(data)
    return digests if actual == expected else None


def pread_all(fd: int, offset: int, length: int) -> bytes:
    """``length`` bytes at ``offset`` (fewer only at the end of the file)."""
    parts, done = [], 0
    while done < length:
        got = os.pread(fd, length - done, offset + done)
        if not got:
            break
        parts.append(got)
        done += len(got)
    return b"".join(parts)


def _map_readonly(fd: int, size: int) -> memoryview:
    """A read-only shared mapping of a file's first ``size`` bytes (unmapped with its last view)."""
    if _libc is None:
        return memoryview(mmap.mmap(fd, size, access=mmap.ACCESS_READ))
    # not MAP_POPULATE: faulting in while hashing (on all hashing threads) measured 1-5 ms
    # faster for 1 GB than populating first, whether the page cache held large folios or not
    address = _libc.mmap(None, size, mmap.PROT_READ, mmap.MAP_SHARED, fd, 0)
    if address is None or address == _MAP_FAILED:
        error = ctypes.get_errno()
        raise OSError(error, f"mmap of a cached entry file failed: {os.strerror(error)}")
    memory = (ctypes.c_char * size).from_address(address)
    weakref.finalize(memory, _libc.munmap, address, size)
    return memoryview(memory).cast("B").toreadonly()


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
            "Objects that can't be pickled (connections, models, locks) must be cached as "
            "resources (kept as they are, not copied), or left out of the result.",
        ) from exc
    mapping = _memfd_available() if use_mapping is None else use_mapping and _memfd_available()
    return _pack(stream.getvalue(), views, mapping)


def _pack(meta: bytes, views: list[memoryview], mapping: bool) -> SerializedValue:
    """Copy the buffers out of the caller's objects (they may be mutated later).

    If the memory file can't be made or filled (no descriptors left, no shared memory
    left), the buffers are kept as plain copies instead: slower hits, same results.
    """
    if mapping and _MemFile.live < _memfile_limit() and _descriptors_to_spare():
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


def _descriptors_to_spare() -> bool:
    """True when a memory file leaves the process (not only the cache) enough descriptors.

    Counted against every descriptor in use (the user's files, sockets, the kernel's own),
    so the user's next ``open()`` still works when the limit is close.
    """
    try:
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    except (OSError, ValueError):
        return True
    if soft == resource.RLIM_INFINITY:
        return True
    try:
        in_use = len(os.listdir("/proc/self/fd"))
    except OSError:
        return True  # no /proc: the quarter-of-the-limit rule alone
    return in_use + max(DESCRIPTOR_HEADROOM, soft // 16) < soft


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
