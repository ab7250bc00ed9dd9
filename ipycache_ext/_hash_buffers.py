"""Hashing large buffers: in 4 MiB pieces, in parallel, the same whatever the threads.

Large buffers (>= 8 MiB) are framed as their length followed by the xxh3-128 digests of
their 4 MiB pieces, in order. The frame depends on the length alone, so it stays
unambiguous and is the same on every machine, whatever the number of threads that
computed it. xxhash releases the GIL while it hashes a piece, so pieces are hashed by one
thread per core, each taking chunks of pieces from one queue (a busy core does fewer).
Several buffers that make one logical stream (an Arrow column's chunks) are framed as the
one buffer they would be joined (``feed_parts``), without joining them.
"""

from __future__ import annotations

import bisect
import itertools
import os
import struct
import sys
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import xxhash

from ._mapped import known_pieces, remember_pieces

_U64 = struct.Struct("<Q")
PIECE = 4 * 1024 * 1024
PARALLEL_MIN = 2 * PIECE

# ------------------------------------------------------------------ large buffers
_MAX_THREADS = 4
_CHUNK = 4  # pieces (16 MiB) a thread takes at a time
_forced_threads: int | None = None  # None: one per core (up to 4)
_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def set_hash_threads(count: int | None) -> None:
    """Force how many threads hash a large buffer (None: one per core). Digests don't
    depend on it; benchmarks and tests use it."""
    global _forced_threads
    _forced_threads = None if count is None else max(1, count)


def hash_threads() -> int:
    """Threads for one large buffer: one per core (up to 4), busy or not, unless forced.

    Hashing a large buffer streams memory, so it is bound by the memory bandwidth more than
    by the cores, and threads take 16 MiB chunks from one queue: a helper on a busy core
    hashes fewer chunks, it can't hold the others up by more than one. Measured on the
    2-core machine (load 0.6-1.9): two threads never slower than one (1.08-1.15x of one on
    1 GB, at the bare-xxh3 ceiling of 1.06-1.10x; a 1 GB restart hit 56 vs 70 ms).
    """
    if _forced_threads is not None:
        return _forced_threads
    return max(1, min(_MAX_THREADS, os.cpu_count() or 1))


def _get_pool() -> ThreadPoolExecutor:
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=_MAX_THREADS - 1, thread_name_prefix="ipycache-hash")
        return _pool


def feed_blob(h: Any, data: bytes | memoryview) -> None:
    """Frame ``data`` into hasher ``h``: its length, then its bytes (or its pieces' digests).

    A large buffer that is an unwritten range of a cached hit's copy-on-write mapping has
    known piece digests (``_mapped``): they are fed without reading the buffer.
    """
    view = data if isinstance(data, memoryview) else memoryview(data)
    size = view.nbytes
    h.update(_U64.pack(size))
    if size < PARALLEL_MIN:
        h.update(view)
        return
    known, token = known_pieces(view)
    if known is None:
        known = piece_digests(view)
        if token is not None:
            remember_pieces(token, known)
    h.update(known)


def feed_parts(h: Any, parts: Iterable[Any]) -> None:
    """Frame the concatenation of ``parts`` (buffers) exactly as ``feed_blob`` frames one
    buffer holding them, without joining them: equal data split differently hashes alike.

    Used for Arrow columns, whose chunking is an artefact of how they were built. A piece
    that spans parts is hashed by streaming its slices into one hasher (xxh3's streaming
    digest equals its one-shot digest), so no part is copied (a ``ZeroedSlots`` part makes
    its pieces as asked); every piece, spanning or not, is hashed by the pool. One buffer
    alone goes through ``feed_blob`` (so a mapped range's known digests are used).
    """
    views = [part if isinstance(part, ZeroedSlots) else _bytes_view(part) for part in parts]
    views = [view for view in views if view.nbytes]
    if not views:
        feed_blob(h, b"")
        return
    first = views[0]
    if len(views) == 1 and isinstance(first, memoryview):
        feed_blob(h, first)
        return
    total = sum(view.nbytes for view in views)
    h.update(_U64.pack(total))
    if total < PARALLEL_MIN:
        for view in views:
            h.update(view[0 : view.nbytes])
        return
    h.update(_stream_digests(views, total))


class ZeroedSlots:
    """A buffer of fixed-width values read with some slots as zeros, a range at a time.

    Hashing asks for at most a piece (4 MiB) at once, in the pool's threads, so zeroing
    values under a column's null slots copies a piece at a time, never the column.
    """

    def __init__(self, data: memoryview, width: int, slots: Any) -> None:
        self.data, self.width, self.slots = data, width, slots  # slots: sorted indices
        self.nbytes = data.nbytes

    def __getitem__(self, span: slice) -> Any:
        np = sys.modules["numpy"]
        start, stop, _ = span.indices(self.nbytes)
        width = self.width
        piece = np.frombuffer(self.data[start:stop], dtype=np.uint8).copy()
        first, last = np.searchsorted(self.slots, [start // width, -(-stop // width)])
        slots = self.slots[first:last]
        if width in (1, 2, 4, 8) and start % width == 0 and piece.size % width == 0:
            piece.view(f"u{width}")[slots - start // width] = 0  # whole slots (pieces are)
            return piece
        zeros = (slots[:, None] * width + np.arange(width)).ravel() - start
        piece[zeros[(zeros >= 0) & (zeros < piece.size)]] = 0
        return piece


def _bytes_view(data: Any) -> memoryview:
    """A flat byte view of any contiguous buffer (numpy array, Arrow buffer, bytes)."""
    view = data if isinstance(data, memoryview) else memoryview(data)
    return view if view.format == "B" and view.ndim == 1 else view.cast("B")


def _stream_digests(views: list[Any], total: int) -> bytes:
    """The 4 MiB pieces' digests of the concatenation of ``views`` (non-empty ones)."""
    starts = list(itertools.accumulate((view.nbytes for view in views), initial=0))

    def digest_of(index: int) -> bytes:
        begin, stop = index * PIECE, min((index + 1) * PIECE, total)
        part = bisect.bisect_right(starts, begin) - 1
        if stop <= starts[part + 1]:  # inside one part: its slice, as piece_digests would
            return xxhash.xxh3_128(views[part][begin - starts[part] : stop - starts[part]]).digest()
        hasher = xxhash.xxh3_128()
        while begin < stop:
            end = min(stop, starts[part + 1])
            hasher.update(views[part][begin - starts[part] : end - starts[part]])
            begin, part = end, part + 1
        return hasher.digest()

    return _digests(-(-total // PIECE), digest_of, None)


def piece_digests(data: bytes | memoryview, threads: int | None = None) -> bytes:
    """The xxh3-128 digests of ``data``'s 4 MiB pieces, in order, hashed by the pool
    (``threads``: how many, default ``hash_threads()``; the digests never depend on it)."""
    view = _bytes_view(data)

    def digest_of(index: int) -> bytes:
        return xxhash.xxh3_128(view[index * PIECE : (index + 1) * PIECE]).digest()

    return _digests(-(-view.nbytes // PIECE), digest_of, threads)


def _digests(pieces: int, digest_of: Callable[[int], bytes], threads: int | None) -> bytes:
    """``digest_of(i)`` for every piece, joined in order, computed by up to ``threads`` threads."""
    workers = min(hash_threads() if threads is None else max(1, min(_MAX_THREADS, threads)), pieces)
    if workers <= 1:
        return b"".join(map(digest_of, range(pieces)))
    # Threads take chunks of pieces from one queue rather than a fixed share each, so a
    # helper on a busy core hashes fewer of them instead of making everyone wait for it.
    chunks = iter(range(0, pieces, _CHUNK))
    lock = threading.Lock()
    found: list[bytes] = [b""] * -(-pieces // _CHUNK)

    def take() -> None:
        while True:
            with lock:
                first = next(chunks, None)
            if first is None:
                return
            found[first // _CHUNK] = b"".join(map(digest_of, range(first, min(first + _CHUNK, pieces))))

    pool = _get_pool()
    helpers = [pool.submit(take) for _ in range(workers - 1)]
    take()
    for helper in helpers:
        helper.result()
    return b"".join(found)
