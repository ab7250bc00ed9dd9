"""Hashing Arrow data by its logical values: chunks as one stream, nothing under nulls.

Only looked at when pyarrow is already imported: hashing never imports it.
"""

from __future__ import annotations

import struct
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ._hash_buffers import ZeroedSlots, feed_parts

if TYPE_CHECKING:
    from ._hashing import Walker


# ------------------------------------------------------------------ arrow
def walk_arrow(w: Walker, pa: Any, value: Any) -> bool:
    """Hash ``value`` if it is an Arrow array, column, table, batch or schema; False otherwise."""
    if isinstance(value, pa.ChunkedArray):
        chunked(w, value)
    elif isinstance(value, pa.Array):
        w.tag(b"pa.Array")
        _arrow_array(w, value)
    elif isinstance(value, (pa.Table, pa.RecordBatch)):
        w.tag(b"pa.Table" if isinstance(value, pa.Table) else b"pa.RecordBatch")
        _schema(w, value.schema)
        w.u64(value.num_rows)  # a table without columns still has rows (``t.select([])``)
        for column in value.columns:
            if isinstance(column, pa.ChunkedArray):
                chunked(w, column)
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


def chunked(w: Walker, chunked: Any) -> None:
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
