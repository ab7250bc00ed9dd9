"""Hashing data: numpy, pandas and Arrow by their values, and large buffers in parallel.

Libraries are only looked at when already imported: hashing never imports them.

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
import functools
import itertools
import os
import struct
import sys
import threading
from collections.abc import Callable, Iterable, Sequence
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


# ------------------------------------------------------------------ dispatch
def walk_data(w: Walker, value: Any) -> bool:
    """Hash ``value`` if it is numpy, pandas or Arrow data; False otherwise."""
    np = sys.modules.get("numpy")
    if np is not None:
        if type(value) is np.ndarray:
            ndarray(w, value)
            return True
        if isinstance(value, np.generic):
            _scalar(w, np, value)
            return True
        ma = sys.modules.get("numpy.ma")
        if ma is not None and isinstance(value, ma.MaskedArray):
            _masked(w, ma, value)
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
    # pandas' copy-on-write marks an array handed out as a view read-only (a sparse column
    # of ``s.iloc[1:3]``): like a numpy array's writeable flag, not its values (pandas 3
    # names the class by its public module)
    "pandas.api.extensions.ExtensionArray": frozenset({"_readonly"}),
    "pandas.core.arrays.base.ExtensionArray": frozenset({"_readonly"}),
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
def _scalar(w: Walker, np: Any, value: Any) -> None:
    """A numpy scalar by its dtype and bytes; a structured one (``np.void``) as the 0-d
    array it is an item of, so its field names and types count (its ``dtype.str`` is only
    ``|V4``) and its padding doesn't."""
    w.tag(b"np.scalar")
    w.text(value.dtype.str)
    if value.dtype.names is not None:
        ndarray(w, np.asarray(value))
    elif value.dtype.hasobject:
        w.walk(value.item())
    else:
        w.blob(value.tobytes())


def _masked(w: Walker, ma: Any, value: Any) -> None:
    """A masked array by what it shows, not by its lazily filled attributes.

    ``repr`` and ``filled()`` set ``_fill_value`` on first use and a pickle round trip
    turns ``nomask`` into an array of False: so its class, data, mask (no masked item is
    one frame, however stored), fill value (the property: the default when unset, as
    ``repr`` would set it) and ``hardmask``. The data under the mask counts: ``.data`` is
    public and results read it (``m.data.sum()``), so it is part of the value.
    """
    w.tag(b"np.ma")
    w.walk(type(value))
    w.walk(ma.getdata(value))
    mask = ma.getmask(value)
    if mask is ma.nomask or (mask.dtype.names is None and not mask.any()):
        w.tag(b"nomask")
    else:
        w.walk(ma.getmaskarray(value))
    w.walk(value.fill_value)
    w.walk(bool(value.hardmask))


def ndarray(w: Walker, array: Any) -> None:
    """dtype, shape, memory order (C or Fortran: ``ravel(order="K")``, ``tobytes("A")`` and
    speed differ) and every byte (but a structured dtype's padding: see ``_padded``)."""
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
    if array.dtype.names is not None and _padded(array.dtype):
        # Padding bytes are whatever memory held (they differ between equal arrays and
        # processes): hash each field on its own, in the dtype's order, with the layout.
        w.tag(b"fields")
        w.text(str(array.dtype))
        for name in array.dtype.names:
            ndarray(w, array[name])
        return
    contiguous = array.T if fortran else np.ascontiguousarray(array)
    w.blob(memoryview(contiguous.reshape(-1).view(np.uint8)))


@functools.lru_cache(maxsize=256)
def _padded(dtype: Any) -> bool:
    """Whether a structured dtype has bytes no field covers (alignment padding, offset gaps,
    or fields that overlap), itself or in a nested structured or subarray field."""
    if dtype.subdtype is not None:
        return _padded(dtype.subdtype[0])
    if dtype.names is None:
        return False
    end = 0
    for name in sorted(dtype.names, key=lambda name: dtype.fields[name][1]):
        field, offset = dtype.fields[name][:2]
        if offset != end or _padded(field):
            return True
        end = offset + field.itemsize
    return bool(end != dtype.itemsize)


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
        ndarray(w, _unmasked_zeroed(data, mask))
        ndarray(w, mask)
        return
    arrow = getattr(array, "_pa_array", None)
    if arrow is not None:
        _chunked(w, arrow)
        return
    w.reduced(array)


def _unmasked_zeroed(data: Any, mask: Any) -> Any:
    """``data`` with its masked (NA) slots zeroed: what lies under them is left over from
    whatever was there (``s.iloc[1] = pd.NA`` keeps the old value; construction writes 1),
    not part of the value. Copied only when a masked slot holds a byte that isn't zero."""
    if not mask.any() or not data[mask].view(sys.modules["numpy"].uint8).any():
        return data
    zeroed = data.copy()
    zeroed[mask] = 0
    return zeroed


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
        w.u64(value.num_rows)  # a table without columns still has rows (``t.select([])``)
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
    """An Arrow column: its chunks as one array (see ``_arrow_chunks``)."""
    w.tag(b"arrow")
    _arrow_chunks(w, chunked.type, chunked.chunks)


def _arrow_array(w: Walker, chunk: Any) -> None:
    """One Arrow array: a column of one chunk."""
    _arrow_chunks(w, chunk.type, [chunk])


def _arrow_chunks(w: Walker, kind: Any, chunks: Sequence[Any]) -> None:
    """Arrow chunks of one type by the *logical* values of the array they make together.

    Chunks are an artefact of how a column was built (``concat``, a reader's batches,
    pandas' ``concat`` of ``str`` columns), offsets one of slicing: numbers, booleans,
    strings and binaries are hashed as the streams the combined array would hold
    (validity bits, values or offsets and bytes), whatever their chunks and offsets, and
    never by the bytes under null slots. Other types (dictionary, nested, views, extension
    types not stored fixed-width) are hashed chunk by chunk: their chunking still counts.
    """
    pa, np = sys.modules["pyarrow"], sys.modules["numpy"]
    chunks = [chunk for chunk in chunks if len(chunk)]
    nulls = sum(chunk.null_count for chunk in chunks)
    w.text(str(kind))
    w.h.update(struct.pack("<2Q", sum(map(len, chunks)), nulls))
    layout = _layout(pa, kind)
    if layout is None:
        w.tag(b"chunks")
        w.u64(len(chunks))
        for chunk in chunks:
            _arrow_nested(w, chunk)
        return
    if layout == "null":  # no buffer: the length is the value
        w.tag(b"null")
        return
    if nulls:
        feed_parts(w.h, _bit_stream(np, [(chunk.buffers()[0], chunk.offset, len(chunk)) for chunk in chunks]))
    if layout == "bool":
        w.tag(b"bool")
        feed_parts(w.h, _bit_stream(np, [_bool_bits(np, chunk) for chunk in chunks]))
    elif layout == "fixed":
        w.tag(b"fixed")
        width = _byte_width(kind)
        feed_parts(w.h, [_fixed_values(np, chunk, width) for chunk in chunks])
    else:
        w.tag(b"varbinary")
        dtype = np.dtype(np.int64 if layout == "large" else np.int32)
        pairs = [_var_chunk(np, chunk, dtype) for chunk in chunks]
        feed_parts(w.h, _joined_offsets(np, dtype, [offsets for offsets, _ in pairs]))
        feed_parts(w.h, [data for _, data in pairs])


def _layout(pa: Any, kind: Any) -> str | None:
    """How a type's values are hashed as one stream: "null", "bool", "fixed" (a fixed width
    in whole bytes), "small"/"large" (int32/int64 offsets + bytes), or None (chunk by chunk)."""
    types = pa.types
    if types.is_dictionary(kind):
        return None
    if types.is_null(kind):
        return "null"
    if types.is_boolean(kind):
        return "bool"
    if _byte_width(kind) and kind.num_buffers == 2:
        return "fixed"
    if types.is_string(kind) or types.is_binary(kind):
        return "small"
    if types.is_large_string(kind) or types.is_large_binary(kind):
        return "large"
    return None


def _null_positions(np: Any, chunk: Any) -> Any:
    """The indices of a chunk's null slots (it has some), from the bitmap's bytes that are
    not all set: only those are unpacked, so few nulls cost little."""
    offset, length = chunk.offset, len(chunk)
    if length <= 8192:  # fewer numpy calls: they cost more than the bits
        return np.flatnonzero(_unpacked(np, chunk.buffers()[0], offset, length) == 0)
    raw = np.frombuffer(chunk.buffers()[0], dtype=np.uint8)[offset // 8 : (offset + length + 7) // 8]
    holes = np.flatnonzero(raw != 0xFF)
    unset = np.flatnonzero(np.unpackbits(raw[holes], bitorder="little") == 0)
    positions = holes[unset >> 3] * 8 + (unset & 7) - offset % 8
    return positions[(positions >= 0) & (positions < length)]


def _unpacked(np: Any, buffer: Any, offset: int, length: int) -> Any:
    """Bits ``offset`` to ``offset + length`` of a bitmap, one uint8 (0 or 1) per bit."""
    raw = np.frombuffer(buffer, dtype=np.uint8)[offset // 8 : (offset + length + 7) // 8]
    return np.unpackbits(raw, bitorder="little")[offset % 8 : offset % 8 + length]


def _bit_stream(np: Any, bitmaps: Sequence[tuple[Any, int, int]]) -> list[Any]:
    """The bitmaps ``(buffer or None for all set, bit offset, length)`` joined into one
    packed, LSB-first bitmap, in parts; the last byte's unused bits are zero.

    A bitmap that starts on a byte boundary of both its buffer and the stream is used in
    place; only the others (and the trailing bits) are unpacked and packed again.
    """
    parts: list[Any] = []
    pending = np.empty(0, dtype=np.uint8)  # unpacked bits not yet making a whole byte
    for bitmap, start, length in bitmaps:
        buffer, offset = (np.full(-(-length // 8), 0xFF, np.uint8), 0) if bitmap is None else (bitmap, start)
        if not pending.size and offset % 8 == 0:
            whole = length // 8
            if whole:
                parts.append(memoryview(buffer)[offset // 8 : offset // 8 + whole])
            pending = _unpacked(np, buffer, offset + whole * 8, length % 8)
            continue
        bits = np.concatenate([pending, _unpacked(np, buffer, offset, length)])
        cut = bits.size // 8 * 8
        parts.append(np.packbits(bits[:cut], bitorder="little"))
        pending = bits[cut:]
    if pending.size:
        parts.append(np.packbits(pending, bitorder="little"))
    return parts


def _bool_bits(np: Any, chunk: Any) -> tuple[Any, int, int]:
    """A boolean chunk's value bits for ``_bit_stream``, False under its null slots."""
    values = chunk.buffers()[1]
    if values is None:
        return np.zeros(-(-len(chunk) // 8), dtype=np.uint8), 0, len(chunk)
    offset, length = chunk.offset, len(chunk)
    if not chunk.null_count:
        return values, offset, length
    span = slice(offset // 8, (offset + length + 7) // 8)  # both bitmaps share the offset
    valid = np.frombuffer(chunk.buffers()[0], dtype=np.uint8)[span]
    return np.frombuffer(values, dtype=np.uint8)[span] & valid, offset % 8, length


def _fixed_values(np: Any, chunk: Any, width: int) -> Any:
    """A fixed-width chunk's value bytes, zero under its null slots: in place when they
    are (Arrow's builders and parquet reader write zeros), else zeroed piece by piece as
    they are hashed (``pa.array(values, mask=...)`` and kernels such as ``if_else`` leave
    the old values there)."""
    values, length = chunk.buffers()[1], len(chunk)
    if values is None:
        return np.zeros(length * width, dtype=np.uint8)
    own = memoryview(values)[chunk.offset * width : (chunk.offset + length) * width]
    if not chunk.null_count:
        return own
    rows = np.frombuffer(own, dtype=np.uint8).reshape(length, width)
    nulls = _null_positions(np, chunk)
    return own if not rows[nulls].any() else ZeroedSlots(own, width, nulls)


def _var_chunk(np: Any, chunk: Any, dtype: Any) -> tuple[Any, Any]:
    """A string/binary chunk's offsets (``length + 1`` of them) and the bytes they cover.
    Bytes under null slots (rare: Arrow's builders and kernels write empty ones) are left
    out, in a copy."""
    buffers, length = chunk.buffers(), len(chunk)
    offsets = np.frombuffer(buffers[1], dtype=dtype)[chunk.offset : chunk.offset + length + 1]
    start, end = int(offsets[0]), int(offsets[-1])
    data: Any = memoryview(buffers[2])[start:end] if buffers[2] is not None else b""
    if not chunk.null_count:
        return offsets, data
    nulls = _null_positions(np, chunk)
    if not (offsets[nulls + 1] - offsets[nulls]).any():
        return offsets, data
    lengths = np.diff(offsets)
    kept = np.ones(length, dtype=bool)
    kept[nulls] = False
    data = np.frombuffer(data, np.uint8)[np.repeat(kept, lengths)]
    lengths[nulls] = 0
    return np.concatenate([np.zeros(1, dtype), np.cumsum(lengths, dtype=dtype)]), data


def _joined_offsets(np: Any, dtype: Any, chunk_offsets: Sequence[Any]) -> list[Any]:
    """The offsets of the array the chunks make together: each chunk's, shifted to start
    where the previous one ended (its first offset dropped, but the first chunk's).

    A chunk already in place (the first, starting at 0) is used as it is. int32 offsets of
    chunks holding more than 2 GiB together wrap around: still one frame per value, since
    each difference (a value's length) is below 2**31.
    """
    parts: list[Any] = []
    base = 0
    for offsets in chunk_offsets:
        start = int(offsets[0])
        shift = base - start
        if dtype.itemsize == 4:
            shift = (shift + 2**31) % 2**32 - 2**31
        own = offsets if not parts else offsets[1:]
        parts.append(own + dtype.type(shift) if shift else own)
        base += int(offsets[-1]) - start
    return parts or [np.zeros(1, dtype)]


def _arrow_nested(w: Walker, chunk: Any) -> None:
    """One chunk of a type that is not one stream: validity, then its children or buffers."""
    pa = sys.modules["pyarrow"]
    kind = chunk.type
    offset, length = chunk.offset, len(chunk)
    w.text(str(kind))
    w.h.update(struct.pack("<2Q", length, chunk.null_count))
    buffers = chunk.buffers()
    if chunk.null_count and buffers[0] is not None:
        feed_parts(w.h, _bit_stream(sys.modules["numpy"], [(buffers[0], offset, length)]))
    if pa.types.is_dictionary(kind):
        w.tag(b"dictionary")
        _arrow_array(w, chunk.indices)
        _arrow_array(w, chunk.dictionary)
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
