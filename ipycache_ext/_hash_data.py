"""Hashing data: numpy, pandas and Arrow by their values, and large buffers in parallel.

Libraries are only looked at when already imported: hashing never imports them.

Large buffers (>= 8 MiB) are framed as their length followed by the xxh3-128 digests of
their 4 MiB pieces, in order. The frame depends on the length alone, so it stays
unambiguous and is the same on every machine, whatever the number of threads that
computed it. xxhash releases the GIL while it hashes a piece, so pieces are hashed by one
thread per core, each taking chunks of pieces from one queue (a busy core does fewer).
"""

from __future__ import annotations

import os
import struct
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import xxhash

from ._mapped import known_pieces, remember_pieces

if TYPE_CHECKING:
    from ._hashing import Walker

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


def _piece_digests(view: memoryview, first: int, last: int) -> bytes:
    return b"".join(xxhash.xxh3_128(view[i * PIECE : (i + 1) * PIECE]).digest() for i in range(first, last))


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


def piece_digests(data: bytes | memoryview, threads: int | None = None) -> bytes:
    """The xxh3-128 digests of ``data``'s 4 MiB pieces, in order, hashed by the pool
    (``threads``: how many, default ``hash_threads()``; the digests never depend on it)."""
    view = data if isinstance(data, memoryview) else memoryview(data)
    if view.format != "B" or view.ndim != 1:
        view = view.cast("B")
    pieces = -(-view.nbytes // PIECE)
    workers = min(hash_threads() if threads is None else max(1, min(_MAX_THREADS, threads)), pieces)
    if workers <= 1:
        return _piece_digests(view, 0, pieces)
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
            found[first // _CHUNK] = _piece_digests(view, first, min(first + _CHUNK, pieces))

    pool = _get_pool()
    helpers = [pool.submit(take) for _ in range(workers - 1)]
    take()
    for helper in helpers:
        helper.result()
    return b"".join(found)


# ------------------------------------------------------------------ dispatch
def walk_data(w: Walker, value: Any) -> bool:
    """Hash ``value`` if it is numpy, pandas or Arrow data; False otherwise."""
    np = sys.modules.get("numpy")
    if np is not None:
        if type(value) is np.ndarray:
            ndarray(w, value)
            return True
        if isinstance(value, np.generic):
            w.tag(b"np.scalar")
            w.text(value.dtype.str)
            if value.dtype.hasobject:
                w.walk(value.item())
            else:
                w.blob(value.tobytes())
            return True
    pd = sys.modules.get("pandas")
    if pd is not None and _pandas(w, pd, value):
        return True
    pa = sys.modules.get("pyarrow")
    return pa is not None and _arrow(w, pa, value)


# ------------------------------------------------------------------ library objects
# Attributes that are not content: back-links keyed by id() (they differ in every process
# and between two equal figures); the artists they point to are reached from the figure.
_VOLATILE = {
    "matplotlib.transforms.TransformNode": frozenset({"_parents", "_inverted"}),
    # pyplot's figure number and whether pyplot still holds it: which window, not what's drawn
    "matplotlib.figure.Figure": frozenset({"_number", "_restore_to_pylab"}),
}


def volatile_attributes(cls: type) -> frozenset[str]:
    found: frozenset[str] = frozenset()
    for klass in cls.__mro__:
        names = _VOLATILE.get(f"{klass.__module__}.{klass.__qualname__}")
        if names:
            found |= names
    return found


def library_stand_in(value: Any) -> Any:
    """What to hash instead of an object whose pickled state is not its content, or None.

    matplotlib's CallbackRegistry advances a counter each time it is pickled, and its
    callback ids count every connection ever made: its content is the picklable callbacks.
    """
    artist = sys.modules.get("matplotlib.artist")
    if artist is not None and isinstance(value, artist.Artist):
        # Drawing fills caches (text layout, ticks, transforms), and the inline backend draws
        # every figure its cell made: hash artists as drawn, so drawn or not is one key.
        # Nothing is rendered to pixels, and drawing again leaves the same state. The
        # figure is drawn before any of its artists is hashed, whichever is met first.
        figure: Any = getattr(value, "figure", None)
        while getattr(figure, "figure", figure) is not figure:  # a subfigure's root figure
            figure = figure.figure
        draw = getattr(figure, "draw_without_rendering", None)
        if draw is not None and figure.stale:
            draw()
    transforms = sys.modules.get("matplotlib.transforms")
    if transforms is not None and isinstance(value, transforms.TransformNode) and value._invalid:
        # A transform or box caches its matrix or points until asked: ask, so the cache
        # holds what it would compute now, whatever was drawn before.
        refresh = getattr(value, "get_matrix", None) or getattr(value, "get_points", None)
        if refresh is not None:
            refresh()
    cbook = sys.modules.get("matplotlib.cbook")
    if cbook is not None and isinstance(value, cbook.CallbackRegistry):
        kept = value._pickled_cids
        return {
            signal: [proxy() for cid, proxy in sorted(callbacks.items()) if cid in kept]
            for signal, callbacks in sorted(value.callbacks.items())
        }
    return None


# ------------------------------------------------------------------ numpy
def ndarray(w: Walker, array: Any) -> None:
    """dtype, shape, memory order (C or Fortran: ``ravel(order="K")``, ``tobytes("A")`` and
    speed differ) and every byte."""
    np = sys.modules["numpy"]
    w.tag(b"ndarray")
    w.text(array.dtype.str if array.dtype.fields is None else repr(array.dtype.descr))
    w.walk(tuple(int(n) for n in array.shape))
    fortran = array.ndim > 1 and array.flags.f_contiguous and not array.flags.c_contiguous
    w.tag(b"F" if fortran else b"C")
    if array.dtype.hasobject:
        items = array.ravel(order="C").tolist()
        if all(type(item) is str for item in items):
            _strings(w, items)
        else:
            for item in items:
                w.walk(item)
        return
    contiguous = array.T if fortran else np.ascontiguousarray(array)
    w.blob(memoryview(contiguous.reshape(-1).view(np.uint8)))


def _strings(w: Walker, items: list[str]) -> None:
    """Many strings at once: their concatenation plus every length, so the split is unique."""
    np = sys.modules["numpy"]
    w.tag(b"strings")
    lengths = np.fromiter(map(len, items), dtype=np.int64, count=len(items))
    w.blob(memoryview(lengths).cast("B"))
    w.blob("".join(items).encode("utf-8", "surrogatepass"))


# ------------------------------------------------------------------ pandas
def _frame_extras(w: Walker, value: Any) -> None:
    """What travels with a pandas object besides its values: ``attrs`` and its flags."""
    w.walk(dict(value.attrs))
    w.walk(bool(value.flags.allows_duplicate_labels))


def _pandas(w: Walker, pd: Any, value: Any) -> bool:
    if isinstance(value, pd.DataFrame):
        w.tag(b"pd.DataFrame")
        w.walk(type(value))
        _frame_extras(w, value)
        w.walk(value.columns)
        w.walk(value.index)
        w.u64(value.shape[1])
        for column in (value.iloc[:, i] for i in range(value.shape[1])):
            w.text(str(column.dtype))
            _array(w, column.array)
        return True
    if isinstance(value, pd.Series):
        w.tag(b"pd.Series")
        w.walk(type(value))
        _frame_extras(w, value)
        w.walk(value.name)
        w.walk(value.index)
        w.text(str(value.dtype))
        _array(w, value.array)
        return True
    if isinstance(value, pd.MultiIndex):
        w.tag(b"pd.MultiIndex")
        w.walk(list(value.names))
        w.walk(list(value.levels))
        w.walk([value.codes[i] for i in range(value.nlevels)])
        return True
    if isinstance(value, pd.RangeIndex):
        w.tag(b"pd.RangeIndex")
        w.walk(value.name)
        w.walk((value.start, value.stop, value.step))
        return True
    if isinstance(value, pd.Index):
        w.tag(b"pd.Index")
        w.walk(type(value))
        w.walk(value.name)
        w.text(str(value.dtype))
        w.walk(getattr(value, "freqstr", None))  # a DatetimeIndex's freq shows in shift(), +1
        _array(w, value.array)
        return True
    if isinstance(value, pd.api.extensions.ExtensionArray):
        _array(w, value)
        return True
    return False


def _array(w: Walker, array: Any) -> None:
    """The values of a pandas column or index, by their physical layout."""
    pd = sys.modules["pandas"]
    w.text(type(array).__qualname__)
    if isinstance(array, pd.Categorical):
        w.walk(array.categories)
        w.walk(bool(array.ordered))
        ndarray(w, array.codes)
        return
    inner = getattr(array, "_ndarray", None)  # numpy-backed: datetimes, python strings
    if inner is not None:
        w.text(str(array.dtype))
        ndarray(w, inner)
        return
    data, mask = getattr(array, "_data", None), getattr(array, "_mask", None)
    if data is not None and mask is not None:  # masked: Int64, Float64, boolean
        ndarray(w, data)
        ndarray(w, mask)
        return
    arrow = getattr(array, "_pa_array", None)
    if arrow is not None:
        _chunked(w, arrow)
        return
    w.reduced(array)


# ------------------------------------------------------------------ arrow
def _arrow(w: Walker, pa: Any, value: Any) -> bool:
    if isinstance(value, pa.ChunkedArray):
        _chunked(w, value)
    elif isinstance(value, pa.Array):
        w.tag(b"pa.Array")
        _arrow_array(w, value)
    elif isinstance(value, (pa.Table, pa.RecordBatch)):
        w.tag(b"pa.Table" if isinstance(value, pa.Table) else b"pa.RecordBatch")
        _schema(w, value.schema)
        for column in value.columns:
            if isinstance(column, pa.ChunkedArray):
                _chunked(w, column)
            else:
                _arrow_array(w, column)
    elif isinstance(value, pa.Schema):
        _schema(w, value)
    else:
        return False
    return True


def _schema(w: Walker, schema: Any) -> None:
    w.tag(b"pa.Schema")
    w.u64(len(schema))
    for field in schema:
        w.text(field.name)
        w.text(str(field.type))
        w.walk(bool(field.nullable))
        w.walk(field.metadata)
    w.walk(schema.metadata)


def _chunked(w: Walker, chunked: Any) -> None:
    """Arrow columns chunk by chunk (so equal values chunked differently are another key)."""
    w.tag(b"arrow")
    w.text(str(chunked.type))
    w.u64(chunked.num_chunks)
    for chunk in chunked.chunks:
        _arrow_array(w, chunk)


def _bits(w: Walker, buffer: Any, offset: int, length: int) -> None:
    """A bitmap from bit ``offset`` on, as one byte per bit (bits past the end don't count)."""
    np = sys.modules["numpy"]
    raw = np.frombuffer(buffer, dtype=np.uint8)
    w.blob(memoryview(np.unpackbits(raw, bitorder="little")[offset : offset + length].copy()))


def _arrow_array(w: Walker, chunk: Any) -> None:
    """One Arrow array by its *logical* values: only the bytes its offset and length cover,
    so a slice and an equal array made afresh have one key; never a sample of them."""
    pa = sys.modules["pyarrow"]
    kind = chunk.type
    offset, length = chunk.offset, len(chunk)
    w.text(str(kind))
    w.h.update(struct.pack("<2Q", length, chunk.null_count))
    buffers = chunk.buffers()
    if chunk.null_count and buffers[0] is not None:
        _bits(w, buffers[0], offset, length)
    if pa.types.is_dictionary(kind):
        w.tag(b"dictionary")
        _arrow_array(w, chunk.indices)
        _arrow_array(w, chunk.dictionary)
        return
    if pa.types.is_boolean(kind):
        w.tag(b"bool")
        _bits(w, buffers[1], offset, length)
        return
    width = _byte_width(kind)
    if width and len(buffers) == 2:
        w.tag(b"fixed")
        w.blob(memoryview(buffers[1])[offset * width : (offset + length) * width])
        return
    if (
        pa.types.is_string(kind)
        or pa.types.is_binary(kind)
        or pa.types.is_large_string(kind)
        or pa.types.is_large_binary(kind)
    ):
        np = sys.modules["numpy"]
        dtype = np.int64 if (pa.types.is_large_string(kind) or pa.types.is_large_binary(kind)) else np.int32
        offsets = np.frombuffer(buffers[1], dtype=dtype)[offset : offset + length + 1]
        start, end = (int(offsets[0]), int(offsets[-1])) if length else (0, 0)
        w.tag(b"varbinary")
        w.blob(memoryview(offsets - start if start else offsets).cast("B"))
        w.blob(memoryview(buffers[2])[start:end] if buffers[2] is not None else b"")
        return
    if pa.types.is_struct(kind):
        w.tag(b"struct")
        for child in chunk.flatten():
            _arrow_array(w, child)
        return
    if pa.types.is_list(kind) or pa.types.is_large_list(kind) or pa.types.is_fixed_size_list(kind):
        w.tag(b"list")
        if not pa.types.is_fixed_size_list(kind):
            import pyarrow.compute as pc  # loaded with pyarrow's pandas support; cheap if not

            _arrow_array(w, pc.list_value_length(chunk).fill_null(0))
        _arrow_array(w, chunk.flatten())
        return
    # Anything else (unions, maps, views, extension types): every buffer, with the offset.
    w.tag(b"buffers")
    w.u64(offset)
    w.u64(len(buffers))
    for buffer in buffers:
        if buffer is None:
            w.tag(b"nobuf")
        else:
            w.blob(memoryview(buffer))
    dictionary = getattr(chunk, "dictionary", None)
    if dictionary is not None:
        _arrow_array(w, dictionary)


def _byte_width(kind: Any) -> int:
    try:
        bits = int(kind.bit_width)
    except (ValueError, AttributeError):
        return 0
    return bits // 8 if bits % 8 == 0 else 0
