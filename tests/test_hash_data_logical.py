"""Data is keyed by its logical value: equal data hits however it is laid out (Arrow chunks
and offsets, bytes under null slots or NA, structured padding, lazily set attributes),
and any change of a value, a null or a byte is another key."""

from __future__ import annotations

import decimal
import itertools
import os
import pickle
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import xxhash

from ipycache_ext._hash_arrow import _fixed_values, _joined_offsets
from ipycache_ext._hash_buffers import (
    PARALLEL_MIN,
    PIECE,
    ZeroedSlots,
    feed_blob,
    feed_parts,
    set_hash_threads,
)
from ipycache_ext._hash_data import _padded, _unmasked_zeroed
from ipycache_ext._hashing import digest

pa = pytest.importorskip("pyarrow")
pc = pytest.importorskip("pyarrow.compute")


# ---------------------------------------------------------------- feed_parts
def _framed(feed: Callable[[Any, Any], None], data: Any) -> bytes:
    hasher = xxhash.xxh3_128()
    feed(hasher, data)
    return hasher.digest()


@pytest.mark.parametrize("size", [0, 5, PARALLEL_MIN - 1, PARALLEL_MIN, PARALLEL_MIN + 3 * PIECE + 17])
@pytest.mark.parametrize("threads", [1, 3])
def test_parts_are_framed_as_the_one_buffer_they_make(size: int, threads: int) -> None:
    data = np.random.default_rng(size).integers(0, 255, size, dtype=np.uint8).tobytes()
    whole = _framed(feed_blob, data)
    rng = np.random.default_rng(1)
    splits = [
        [],
        [size // 2],
        [0, 0, size // 3, size // 3, size],  # empty parts
        sorted(rng.integers(0, size + 1, 9).tolist()),  # odd places, some inside one piece
        list(range(PIECE - 1, size, PIECE)),  # every piece spans two parts
        list(range(0, size, PIECE // 3 + 1)),  # pieces spanning four parts
    ]
    try:
        set_hash_threads(threads)
        for cuts in splits:
            bounds = [0, *cuts, size]
            parts = [memoryview(data)[a:b] for a, b in itertools.pairwise(bounds)]
            assert _framed(feed_parts, parts) == whole, cuts
    finally:
        set_hash_threads(None)
    if size:
        changed = bytearray(data)
        changed[min(PIECE, size - 1)] ^= 1
        half = size // 2
        assert _framed(feed_parts, [changed[:half], changed[half:]]) != whole


def test_parts_of_any_buffer_type_are_their_bytes() -> None:
    ints = np.arange(10, dtype=np.int32)
    raw = ints.tobytes()
    assert _framed(feed_parts, [ints[:3], pa.py_buffer(raw[12:20]), raw[20:]]) == _framed(feed_blob, raw)


# ---------------------------------------------------------------- Arrow chunking
def _values() -> dict[str, Any]:
    """One array per type hashed as one stream, with nulls (not in every chunk)."""
    n = 67  # not a multiple of 8: bitmaps of later chunks start mid-byte
    rng = np.random.default_rng(5)
    nulls = rng.random(n) < 0.2
    nulls[:20] = False  # a run without nulls: chunks of it have none

    def nullable(values: list[Any], kind: Any) -> Any:
        return pa.array([None if gone else v for v, gone in zip(values, nulls, strict=True)], kind)

    ints = rng.integers(-(10**9), 10**9, n).tolist()
    words = ["".join(chr(97 + c) for c in rng.integers(0, 26, k)) for k in rng.integers(0, 7, n)]
    return {
        "int64": nullable(ints, pa.int64()),
        "int8": nullable([v % 100 for v in ints], pa.int8()),
        "float64": nullable([v / 7 for v in ints], pa.float64()),
        "bool": nullable([v % 3 == 0 for v in ints], pa.bool_()),
        "bool-no-nulls": pa.array([v % 3 == 0 for v in ints]),
        "timestamp": nullable(ints, pa.timestamp("ns", "UTC")),
        "decimal": nullable([decimal.Decimal(v) / 100 for v in ints], pa.decimal128(12, 2)),
        "fixed-binary": nullable([w.ljust(6, "_").encode() for w in words], pa.binary(6)),
        "string": nullable(words, pa.string()),
        "large_string": nullable(words, pa.large_string()),
        "binary": nullable([w.encode() for w in words], pa.binary()),
        "large_binary": nullable([w.encode() for w in words], pa.large_binary()),
        "null": pa.nulls(n),
    }


VALUES = _values()


def _rebuilt(chunk: Any, how: int) -> Any:
    """The same values in another layout: a slice, fresh buffers, or a slice at an odd
    offset of a bigger array (the bitmap and values start mid-buffer, mid-byte)."""
    if how == 0:
        return chunk
    if how == 1:
        return pa.array(chunk.to_pylist(), chunk.type)  # offset 0, no bitmap without nulls
    padding = pa.array([None] * (3 + how), chunk.type)
    bigger = pa.concat_arrays([padding, chunk, padding])
    return bigger.slice(len(padding), len(chunk))


def _chunkings(array: Any, seed: int) -> Iterator[Any]:
    """The array as a ChunkedArray, chunked many ways: cut anywhere, empty chunks, each
    chunk laid out another way."""
    rng = np.random.default_rng(seed)
    n = len(array)
    yield pa.chunked_array([array])
    yield pa.chunked_array([array.slice(i, 1) for i in range(n)], array.type)
    for _ in range(8):
        cuts = sorted(rng.integers(0, n + 1, int(rng.integers(1, 8))).tolist())
        bounds = [0, *cuts, n]
        chunks = [
            _rebuilt(array.slice(a, b - a), int(rng.integers(0, 4))) for a, b in itertools.pairwise(bounds)
        ]
        if rng.random() < 0.5:
            chunks.insert(int(rng.integers(0, len(chunks) + 1)), array.slice(0, 0))
        yield pa.chunked_array(chunks, array.type)


@pytest.mark.parametrize("name", list(VALUES))
def test_equal_arrow_values_chunked_any_way_have_one_digest(name: str) -> None:
    array = VALUES[name]
    expected = digest(pa.chunked_array([array]))
    for seed in range(4):
        for chunked in _chunkings(array, seed):
            assert digest(chunked) == expected, [c.offset for c in chunked.chunks]
    sliced = pa.concat_arrays([array, array]).slice(len(array) - 3, len(array) + 6)
    assert digest(sliced) == digest(_rebuilt(sliced, 1))  # a pa.Array too


def _changed(array: Any, index: int) -> Any:
    """``array`` with the value at ``index`` made another of its values, or null (every
    other index), or valid if it was null."""
    values = array.to_pylist()
    value = values[index]
    if value is not None and index % 2:
        values[index] = None
    else:
        values[index] = next(v for v in values if v is not None and v != value)
    return pa.array(values, array.type)


@pytest.mark.parametrize("name", [name for name in VALUES if name != "null"])
def test_any_changed_value_or_null_changes_the_arrow_digest(name: str) -> None:
    array = VALUES[name]
    original = {digest(chunked) for chunked in _chunkings(array, 0)}
    assert len(original) == 1
    for index in (0, 7, 8, 21, 40, len(array) - 1):
        changed = _changed(array, index)
        assert changed.to_pylist() != array.to_pylist()
        for chunked in _chunkings(changed, index):
            assert digest(chunked) not in original, (index, chunked.to_pylist()[index])
    moved_null = pa.array([None, *array.to_pylist()[:-1]], array.type)
    assert digest(moved_null) != digest(array)


def test_large_arrow_columns_chunked_at_odd_places_have_one_digest() -> None:
    n = 2 * PARALLEL_MIN // 8 + 12_345  # > 16 MiB of int64: many 4 MiB pieces
    values = np.random.default_rng(3).integers(0, 2**62, n)
    valid = np.ones(n, dtype=bool)
    valid[[5, PIECE // 8 + 1, n - 2]] = False
    array = pa.array(values, mask=~valid)
    whole = digest(pa.chunked_array([array]))
    cuts = [0, 3, PIECE // 8 - 1, PIECE // 8 + 3, 2 * PIECE // 8 + 7, 1_500_001, n]
    chunked = pa.chunked_array([array.slice(a, b - a) for a, b in itertools.pairwise(cuts)])
    assert digest(chunked) == whole
    for index in (PIECE // 8 - 1, PIECE // 8, 2 * PIECE // 8 - 1, n - 1):  # around piece ends
        bumped = values.copy()
        bumped[index] ^= 1 << 40
        other = pa.array(bumped, mask=~valid)
        again = pa.chunked_array([other.slice(a, b - a) for a, b in itertools.pairwise(cuts)])
        assert digest(again) != whole
        assert digest(again) == digest(pa.chunked_array([other]))
    flipped = valid.copy()
    flipped[PIECE // 8] = False
    nulled = pa.array(values, mask=~flipped)
    assert digest(pa.chunked_array([nulled.slice(a, b - a) for a, b in itertools.pairwise(cuts)])) != whole


def test_large_string_columns_chunked_at_odd_places_have_one_digest() -> None:
    words = [f"w{i % 9973}" * (1 + i % 5) for i in range(1_200_000)]  # > 8 MiB of bytes
    array = pa.array(words, pa.large_string())
    whole = digest(pa.chunked_array([array]))
    cuts = [0, 1, 333_333, 333_334, 900_001, len(words)]
    chunks = [pa.array(words[a:b], pa.large_string()) for a, b in itertools.pairwise(cuts)]
    assert digest(pa.chunked_array(chunks)) == whole
    words[900_000] = words[900_000][:-1] + "!"
    assert digest(pa.chunked_array([pa.array(words, pa.large_string())])) != whole


def test_string_offsets_are_joined_as_one_array_would_hold_them() -> None:
    first, second = np.array([3, 4, 6], np.int32), np.array([10, 10, 13], np.int32)
    joined = np.concatenate(_joined_offsets(np, np.dtype(np.int32), [first, second]))
    assert joined.tolist() == [0, 1, 3, 3, 6]
    # int32 chunks holding more than 2 GiB together wrap around, without an error
    huge = np.array([0, 2**31 - 1], np.int32)
    wrapped = _joined_offsets(np, np.dtype(np.int32), [huge, np.array([5, 7], np.int32)])
    assert wrapped[-1].tolist() == [2**31 + 1 - 2**32]
    large = _joined_offsets(np, np.dtype(np.int64), [huge.astype(np.int64), np.array([5, 7], np.int64)])
    assert large[-1].tolist() == [2**31 + 1]


def test_chunked_tables_and_pandas_strings_hit_equal_data() -> None:
    table = pa.table({"a": [1, 2, None, 4], "b": ["w", None, "yy", "z"], "c": [True, False, None, True]})
    assert digest(pa.concat_tables([table.slice(0, 1), table.slice(1)])) == digest(table)
    assert digest(pa.chunked_array([[1, 2], [3]])) == digest(pa.chunked_array([[1, 2, 3]]))
    joined = pd.concat([pd.Series(["a", "b"]), pd.Series(["c"])], ignore_index=True)
    assert digest(joined) == digest(pd.Series(["a", "b", "c"]))
    frame = pd.concat([pd.DataFrame({"s": ["a", None]}), pd.DataFrame({"s": ["c"]})], ignore_index=True)
    assert digest(frame) == digest(pd.DataFrame({"s": ["a", None, "c"]}))
    assert digest(joined) != digest(pd.Series(["a", "b", "d"]))


def test_other_arrow_types_are_hashed_chunk_by_chunk() -> None:
    # Their chunking counts (README); within a chunk, lists and structs hash their children
    # logically, so fresh chunks of equal values hit; dictionaries and views count their
    # dictionary and data buffers as they are.
    for array, fresh_hits in (
        (pa.array(["x", "y", "x"]).dictionary_encode(), False),
        (pa.array([[1], None, [2, 3]]), True),
        (pa.array([{"a": 1}, {"a": 2}, None]), True),
        (pa.array(["x", None, "zz"], pa.string_view()), False),
    ):
        chunked = pa.chunked_array([array.slice(0, 1), array.slice(1)])
        assert digest(chunked) == digest(pa.chunked_array([array.slice(0, 1), array.slice(1)]))
        if fresh_hits:
            assert digest(chunked) == digest(pa.chunked_array([_rebuilt(c, 1) for c in chunked.chunks]))
        values = array.to_pylist()
        other = pa.array([values[0], values[0], values[2]], array.type)
        assert digest(chunked) != digest(pa.chunked_array([other.slice(0, 1), other.slice(1)]))


def test_columns_with_zeros_under_their_nulls_are_hashed_in_place() -> None:
    array = pa.array(np.arange(10, dtype=np.int64)).slice(2)
    view = _fixed_values(np, array, 8)
    assert isinstance(view, memoryview)  # no copy
    assert np.frombuffer(view, np.int64)[0] == 2
    assert isinstance(_fixed_values(np, pa.array([1, None, 3]).slice(1), 8), memoryview)
    dirty = pa.array(np.arange(4), mask=np.array([False, True, False, False]))
    assert isinstance(_fixed_values(np, dirty, 8), ZeroedSlots)  # zeroed a piece at a time
    data, mask = np.arange(4), np.zeros(4, dtype=bool)
    assert _unmasked_zeroed(data, mask) is data


# ---------------------------------------------------------------- under nulls and NA
def test_arrow_values_under_null_slots_do_not_count() -> None:
    kept = pc.if_else(pa.array([True, False, True, True]), pa.array([1, 9, 3, 4]), None)
    assert digest(kept) == digest(pa.array([1, None, 3, 4]))
    assert digest(kept) != digest(pa.array([1, None, 3, 5]))
    flags = pc.if_else(pa.array([True, False, True]), pa.array([True, True, False]), None)
    assert digest(flags) == digest(pa.array([True, None, False]))
    # a string whose null slot still covers bytes ("zz"), as Arrow allows
    offsets = pa.py_buffer(np.array([0, 1, 3, 4], np.int32).tobytes())
    validity = pa.py_buffer(np.packbits([1, 0, 1], bitorder="little").tobytes())
    dirty = pa.Array.from_buffers(pa.string(), 3, [validity, offsets, pa.py_buffer(b"azzb")], null_count=1)
    assert dirty.to_pylist() == ["a", None, "b"]
    assert digest(dirty) == digest(pa.array(["a", None, "b"]))
    assert digest(pa.chunked_array([dirty, dirty])) == digest(pa.chunked_array([["a", None, "b"] * 2]))
    assert digest(dirty) != digest(pa.array(["a", None, "c"]))


def _fixed_width(kind: Any, raw: Any, valid: Any) -> Any:
    bitmap = pa.py_buffer(np.packbits(valid, bitorder="little").tobytes())
    nulls = int((~valid).sum())
    return pa.Array.from_buffers(kind, len(valid), [bitmap, pa.py_buffer(raw.tobytes())], null_count=nulls)


@pytest.mark.parametrize(("kind", "width"), [(pa.int64(), 8), (pa.binary(3), 3), (pa.decimal128(30, 2), 16)])
def test_large_columns_with_values_under_their_nulls_hash_as_zeros(kind: Any, width: int) -> None:
    n = (PARALLEL_MIN + 2 * PIECE) // width + 5  # pieces split slots when 4 MiB isn't a multiple
    rng = np.random.default_rng(width)
    raw = rng.integers(0, 256, (n, width), dtype=np.uint8)
    if width == 16:
        raw[:, 8:] = 0  # small positive decimals
    valid = rng.random(n) > 0.01
    edge = PIECE // width
    valid[[0, edge - 1, edge, edge + 1, 2 * edge, n - 1]] = False  # slots across piece edges
    clean = raw.copy()
    clean[~valid] = 0
    dirty = _fixed_width(kind, raw, valid)
    expected = digest(pa.chunked_array([_fixed_width(kind, clean, valid)]))
    assert digest(pa.chunked_array([dirty])) == expected
    cuts = [0, 7, edge + 3, 2 * edge - 1, n]
    assert digest(pa.chunked_array([dirty.slice(a, b - a) for a, b in itertools.pairwise(cuts)])) == expected
    changed = raw.copy()
    changed[edge + 2, 0] ^= 1  # a valid value next to nulls on a piece edge
    assert valid[edge + 2]
    assert digest(pa.chunked_array([_fixed_width(kind, changed, valid)])) != expected


@pytest.mark.parametrize(
    ("dtype", "values"), [("Int64", [1, 5]), ("Float64", [1.5, 2.5]), ("boolean", [True, True])]
)
def test_pandas_values_under_na_do_not_count(dtype: str, values: list[Any]) -> None:
    series = pd.Series(values, dtype=dtype)
    series.iloc[1] = pd.NA
    assert digest(series) == digest(pd.Series([values[0], None], dtype=dtype))
    assert digest(series) != digest(pd.Series([None, None], dtype=dtype))
    assert digest(series) != digest(pd.Series(values, dtype=dtype))


# ---------------------------------------------------------------- numpy structures
ALIGNED = np.dtype([("a", "i1"), ("b", "f8")], align=True)


def _with_garbage(dtype: Any, fill: Callable[[Any], None], byte: int) -> Any:
    array = np.empty(3, dtype)
    array.view(np.uint8)[...] = byte  # what uninitialised memory might hold
    fill(array)
    return array


def test_structured_padding_does_not_count() -> None:
    def fill(array: Any) -> None:
        array["a"] = [1, 2, 3]
        array["b"] = [0.5, 1.5, 2.5]

    clean = _with_garbage(ALIGNED, fill, 0)
    assert digest(_with_garbage(ALIGNED, fill, 0xAB)) == digest(clean)
    assert digest(clean[::-1]) == digest(clean[::-1].copy())
    changed = clean.copy()
    changed["b"][2] = 3.0
    assert digest(changed) != digest(clean)
    packed = np.zeros(3, [("a", "i1"), ("b", "f8")])
    packed["a"], packed["b"] = clean["a"], clean["b"]
    assert digest(packed) != digest(clean)  # another layout: another dtype
    renamed = clean.astype(np.dtype([("x", "i1"), ("b", "f8")], align=True))
    assert digest(renamed) != digest(clean)


def test_nested_and_subarray_padding_does_not_count() -> None:
    nested = np.dtype([("p", ALIGNED), ("q", "i2", (2,)), ("r", ALIGNED, (2,))])

    def fill(array: Any) -> None:
        array["p"]["a"], array["p"]["b"] = 1, 2.0
        array["q"] = [[1, 2], [3, 4], [5, 6]]
        array["r"]["a"], array["r"]["b"] = 7, 8.0

    clean = _with_garbage(nested, fill, 0)
    assert digest(_with_garbage(nested, fill, 0x5C)) == digest(clean)
    clean["r"]["b"][1, 1] = 9.0
    assert digest(_with_garbage(nested, fill, 0)) != digest(clean)


def test_padding_is_found_only_where_it_is() -> None:
    assert not _padded(np.dtype([("a", "i1"), ("b", "f8")]))
    assert not _padded(np.dtype([("a", "i4"), ("b", [("c", "i2"), ("d", "i2")], (3,))]))
    assert _padded(ALIGNED)
    assert _padded(np.dtype({"names": ["a"], "formats": ["i4"], "offsets": [4], "itemsize": 8}))
    assert _padded(np.dtype({"names": ["a", "b"], "formats": ["i4", "i2"], "offsets": [0, 0]}))
    assert _padded(np.dtype([("n", ALIGNED, (2,))]))


def test_structured_scalars_are_keyed_by_their_fields() -> None:
    scalars = [np.zeros(1, [("a", "i4")])[0], np.zeros(1, [("b", "i4")])[0], np.zeros(1, [("a", "f4")])[0]]
    assert len({digest(s) for s in scalars}) == 3
    assert digest(np.zeros(1, [("a", "i4")])[0]) == digest(scalars[0])

    def fill(array: Any) -> None:
        array["a"], array["b"] = 1, 2.0

    assert digest(_with_garbage(ALIGNED, fill, 0)[1]) == digest(_with_garbage(ALIGNED, fill, 0xFF)[1])
    assert digest(np.void(b"ab")) != digest(np.void(b"ac"))


# ---------------------------------------------------------------- masked arrays
def _masked() -> Any:
    return np.ma.array([1, 2, 3], mask=[0, 1, 0])


def test_masked_arrays_do_not_change_when_shown_filled_or_pickled() -> None:
    before = digest(_masked())
    shown = _masked()
    repr(shown)
    assert digest(shown) == before
    filled = _masked()
    filled.filled()
    assert digest(filled) == before
    assert digest(pickle.loads(pickle.dumps(_masked()))) == before
    plain = np.ma.array([1, 2, 3])
    assert digest(pickle.loads(pickle.dumps(plain))) == digest(plain)  # nomask or an array of False


def test_masked_arrays_count_data_mask_fill_value_and_hardmask() -> None:
    before = digest(_masked())
    assert before != digest(np.ma.array([1, 2, 3], mask=[0, 0, 1]))
    assert before != digest(np.ma.array([1, 5, 3], mask=[0, 1, 0]))  # data under the mask is public
    assert before != digest(np.ma.array([1, 2, 3], mask=[0, 1, 0], fill_value=-1))
    assert before != digest(np.ma.array([1, 2, 3], mask=[0, 1, 0], hard_mask=True))
    assert before != digest(np.array([1, 2, 3]))
    records = np.ma.array(np.zeros(2, [("a", "i4"), ("b", "f8")]), mask=[(0, 1), (0, 0)])
    assert digest(records) == digest(pickle.loads(pickle.dumps(records)))
    assert digest(records) != digest(
        np.ma.array(np.zeros(2, [("a", "i4"), ("b", "f8")]), mask=[(1, 0), (0, 0)])
    )


# ---------------------------------------------------------------- tables, indexes
def test_tables_without_columns_count_their_rows() -> None:
    three, none = pa.table({"a": [1, 2, 3]}).select([]), pa.table({"a": pa.array([], pa.int64())}).select([])
    assert digest(three) != digest(none)
    assert digest(three) == digest(pa.table({"b": ["x", "y", "z"]}).select([]))
    batch = pa.record_batch({"a": [1, 2, 3]})
    assert digest(batch.select([])) != digest(batch.slice(0, 1).select([]))


def test_a_sliced_sparse_column_hits_an_equal_fresh_one() -> None:
    sparse = pd.SparseDtype("int64", 0)
    sliced = pd.Series([1, 0, 3, 4], dtype=sparse).iloc[1:3].reset_index(drop=True)
    assert digest(sliced) == digest(pd.Series([0, 3], dtype=sparse))
    assert digest(sliced) != digest(pd.Series([0, 4], dtype=sparse))
    assert digest(pd.arrays.SparseArray([0, 0, 1, 2])[1:]) == digest(pd.arrays.SparseArray([0, 1, 2]))


def test_a_sliced_multiindex_keeps_its_unused_levels_in_the_key() -> None:
    # Not a needless miss: ``levels`` is public and shows them (``for k in idx.levels[0]``
    # would meet "b" with one and not the other), so the two are not the same input.
    index = pd.MultiIndex.from_product([["a", "b"], [1, 2]])
    sliced = index[:2]
    fresh = pd.MultiIndex.from_tuples([("a", 1), ("a", 2)])
    assert list(sliced.levels[0]) != list(fresh.levels[0])
    assert digest(sliced) != digest(fresh)
    assert digest(sliced.remove_unused_levels()) == digest(fresh)


# ---------------------------------------------------------------- another process
SCRIPT = textwrap.dedent(
    """
    import numpy as np, pandas as pd, pyarrow as pa
    from ipycache_ext._hashing import digest
    aligned = np.dtype([("a", "i1"), ("b", "f8")], align=True)
    junk = np.frombuffer(np.random.default_rng().bytes(aligned.itemsize * 4), aligned).copy()
    junk["a"], junk["b"] = [1, 2, 3, 4], [0.5, 1.5, 2.5, 3.5]
    masked = np.ma.array([1, 2, 3], mask=[0, 1, 0])
    chunked = pa.chunked_array([pa.array([1, None]), pa.array([3]).slice(0)])
    strings = pd.concat([pd.Series(["a", None]), pd.Series(["c"])], ignore_index=True)
    print(digest([junk, junk[0], masked, chunked, strings]))
    """
)


def test_digests_are_the_same_in_a_new_process() -> None:
    aligned = np.dtype([("a", "i1"), ("b", "f8")], align=True)
    clean = np.zeros(4, aligned)
    clean["a"], clean["b"] = [1, 2, 3, 4], [0.5, 1.5, 2.5, 3.5]
    here = digest(
        [
            clean,
            clean[0],
            np.ma.array([1, 2, 3], mask=[0, 1, 0]),
            pa.chunked_array([[1, None, 3]]),
            pd.Series(["a", None, "c"]),
        ]
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    for _ in range(2):
        found = subprocess.run(
            [sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=env, check=True
        )
        assert found.stdout.strip() == here
