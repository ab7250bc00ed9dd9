"""Content hashing: equal content, equal digest; any change anywhere, another digest."""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ipycache_ext._hashing import MISSING, Unhashable, combine, digest

atoms = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False),
    st.text(max_size=8),
    st.binary(max_size=8),
)
values = st.recursive(
    atoms,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.tuples(inner, inner),
        st.dictionaries(st.text(max_size=4), inner, max_size=4),
    ),
    max_leaves=12,
)


@given(values)
def test_digest_is_a_function_of_content(value: Any) -> None:
    import copy

    assert digest(value) == digest(copy.deepcopy(value))


@given(values, values)
def test_different_values_have_different_digests(a: Any, b: Any) -> None:
    if type(a) is type(b) and a == b and repr(a) == repr(b):
        return
    assert digest(a) != digest(b)


def test_framing_is_unambiguous() -> None:
    assert digest(("ab", "c")) != digest(("a", "bc"))
    assert digest(1) != digest("1") != digest(1.0)
    assert digest(True) != digest(1)
    assert digest([1, 2]) != digest((1, 2))
    assert digest(b"x") != digest("x") != digest(bytearray(b"x"))
    assert digest([[1], 2]) != digest([1, [2]])
    assert digest(0.0) != digest(-0.0)
    assert combine([("a", "bc")]) != combine([("ab", "c")])


def test_dict_order_is_part_of_the_value_set_order_is_not() -> None:
    # list(d) and pd.DataFrame(d).columns follow a dict's order; a set's order is hash-seed noise.
    assert digest({"a": 1, "b": 2}) != digest({"b": 2, "a": 1})
    assert digest({"a": 1, "b": 2}) == digest({"a": 1, "b": 2})
    assert digest({3, 1, 2}) == digest({2, 3, 1})
    assert digest(frozenset({"x", "y"})) == digest(frozenset({"y", "x"}))
    assert digest({1, 2}) != digest(frozenset({1, 2}))
    assert digest(OrderedDict(a=1, b=2)) != digest(OrderedDict(b=2, a=1))
    assert digest(OrderedDict(a=1)) != digest({"a": 1})


def test_cycles_are_cut() -> None:
    a: list[Any] = [1]
    a.append(a)
    b: list[Any] = [1]
    b.append(b)
    assert digest(a) == digest(b)
    d: dict[str, Any] = {}
    d["self"] = d
    assert digest(d)


def test_numpy_full_content_dtype_and_shape() -> None:
    x = np.arange(1_000_000, dtype=np.int64)
    y = x.copy()
    assert digest(x) == digest(y)
    y[999_999] += 1
    assert digest(x) != digest(y)
    assert digest(x) != digest(x.astype(np.float64))
    assert digest(x.reshape(1000, 1000)) != digest(x)
    assert digest(x[::2]) == digest(np.ascontiguousarray(x[::2]))
    assert digest(x[:10]) != digest(x[1:11])


def test_numpy_object_arrays_hash_their_elements() -> None:
    a = np.array(["x", 1, None], dtype=object)
    b = np.array(["x", 1, None], dtype=object)
    assert digest(a) == digest(b)
    b[1] = 2
    assert digest(a) != digest(b)


def test_dataframe_every_cell_index_and_names_count() -> None:
    rng = np.random.default_rng(0)
    df = pd.DataFrame({"a": rng.random(100_000), "b": rng.integers(0, 9, 100_000), "s": ["x"] * 100_000})
    base = digest(df)
    assert digest(df.copy()) == base
    changed = df.copy()
    changed.iloc[77_777, 0] += 1e-12
    assert digest(changed) != base
    changed = df.copy()
    changed.iloc[50_000, 2] = "y"
    assert digest(changed) != base
    assert digest(df.rename(columns={"a": "A"})) != base
    assert digest(df.set_axis(range(1, 100_001))) != base
    assert digest(df.astype({"b": "int32"})) != base
    assert digest(df["a"]) != digest(df["a"].rename("z"))


def test_pandas_extension_types() -> None:
    cats = pd.Series(pd.Categorical(["a", "b", "a"]))
    assert digest(cats) == digest(cats.copy())
    assert digest(cats) != digest(pd.Series(pd.Categorical(["a", "b", "b"])))
    ts = pd.Series(pd.date_range("2026-01-01", periods=3, tz="UTC"))
    assert digest(ts) != digest(ts.dt.tz_convert("Europe/Paris"))
    ints = pd.Series([1, None, 3], dtype="Int64")
    assert digest(ints) != digest(pd.Series([1, 2, 3], dtype="Int64"))
    pytest.importorskip("pyarrow")
    strings = pd.Series(["x", "yy", None], dtype="string[pyarrow]")
    assert digest(strings) == digest(strings.copy())
    assert digest(strings) != digest(pd.Series(["x", "yz", None], dtype="string[pyarrow]"))


def test_arrow_slices_of_one_buffer_differ() -> None:
    pytest.importorskip("pyarrow")
    s = pd.Series(["a", "b", "c", "d"], dtype="string[pyarrow]")
    assert digest(s.iloc[0:2].reset_index(drop=True)) != digest(s.iloc[2:4].reset_index(drop=True))


def helper_a(x: int) -> int:
    return x + 1


def test_functions_hash_their_code_defaults_closures_and_globals() -> None:
    namespace: dict[str, Any] = {}
    exec("k = 1\ndef f(x, y=2):\n    return x * y + k", namespace)
    before = digest(namespace["f"])
    namespace["k"] = 2
    assert digest(namespace["f"]) != before
    namespace["k"] = 1
    assert digest(namespace["f"]) == before
    exec("def f(x, y=3):\n    return x * y + k", namespace)
    assert digest(namespace["f"]) != before

    def outer(v: int) -> Any:
        return lambda: v

    assert digest(outer(1)) != digest(outer(2))


def test_functions_ignore_position_and_comments() -> None:
    a: dict[str, Any] = {}
    b: dict[str, Any] = {}
    exec("def f(x):\n    return x + 1", a)
    exec("\n\n# moved down\ndef f(x):\n    # comment\n    return x + 1", b)
    assert digest(a["f"]) == digest(b["f"])


def test_recursive_functions_terminate() -> None:
    namespace: dict[str, Any] = {}
    exec(
        "def even(n):\n    return n == 0 or odd(n - 1)\ndef odd(n):\n    return n != 0 and even(n - 1)",
        namespace,
    )
    assert digest(namespace["even"])


def test_library_functions_and_modules_by_name_and_version(monkeypatch: pytest.MonkeyPatch) -> None:
    from ipycache_ext import _hash_code

    before = digest(np.mean)
    assert digest(np.mean) != digest(np.median)
    assert digest(np) != digest(pd)
    assert _hash_code.module_version("numpy")  # read from numpy's metadata
    real = _hash_code.module_version
    monkeypatch.setattr(_hash_code, "module_version", lambda module: real(module) + ".post1")
    assert digest(np.mean) != before  # another numpy version: another key
    monkeypatch.undo()
    assert digest(np.mean) == before


def test_hash_funcs_apply_to_subclasses_and_by_name() -> None:
    class Conn:
        def __init__(self, url: str) -> None:
            self.url = url
            self.lock = threading.Lock()

    class SubConn(Conn):
        pass

    with pytest.raises(Unhashable):
        digest(Conn("a"))
    funcs = {Conn: lambda c: c.url}
    assert digest(SubConn("a"), hash_funcs=funcs) == digest(Conn("a"), hash_funcs=funcs)
    assert digest(Conn("a"), hash_funcs=funcs) != digest(Conn("b"), hash_funcs=funcs)
    by_name = {f"{Conn.__module__}.{Conn.__qualname__}": lambda c: c.url}
    assert digest(Conn("a"), hash_funcs=by_name) == digest(Conn("a"), hash_funcs=by_name)


def test_unhashable_values_say_which_type() -> None:
    with pytest.raises(Unhashable) as info:
        digest({"inner": [threading.Lock()]})
    assert "lock" in info.value.reason


def test_missing_is_its_own_value() -> None:
    assert digest(MISSING) != digest(None)


@pytest.mark.parametrize("row", [0, 4_999_999, 9_999_999])
def test_one_changed_cell_in_a_ten_million_row_frame_changes_the_key(row: int) -> None:
    frame = pd.DataFrame({"a": np.zeros(10_000_000), "b": np.arange(10_000_000)})
    base = digest(frame)
    frame.iloc[row, 1] = -1
    assert digest(frame) != base


def test_object_strings_are_split_unambiguously() -> None:
    assert digest(np.array(["ab", "c"], dtype=object)) != digest(np.array(["a", "bc"], dtype=object))
    assert digest(np.array(["a\x00", "b"], dtype=object)) != digest(np.array(["a", "\x00b"], dtype=object))


def test_dictionary_encoded_arrow_columns_hash_their_values() -> None:
    pa = pytest.importorskip("pyarrow")

    def column(values: list[str]) -> pd.Series:
        encoded = pa.DictionaryArray.from_arrays(pa.array([0, 1], pa.int8()), pa.array(values))
        return pd.Series(pd.arrays.ArrowExtensionArray(encoded))

    assert digest(column(["a", "b"])) != digest(column(["x", "y"]))
    assert digest(column(["a", "b"])) == digest(column(["a", "b"]))


def test_subclasses_are_not_their_base() -> None:
    from collections import Counter, defaultdict

    assert digest(defaultdict(int)) != digest(defaultdict(list))
    assert digest(Counter(a=1)) != digest({"a": 1})
    masked = np.ma.array([1, 2, 3], mask=[0, 1, 0])
    assert digest(masked) != digest(np.ma.array([1, 2, 3], mask=[0, 0, 0]))
    assert digest(masked) != digest(np.array([1, 2, 3]))


def test_wrapped_helpers_and_bound_builtins_hash_what_they_run() -> None:
    import functools

    a: dict[str, Any] = {}
    b: dict[str, Any] = {}
    exec("import functools\n@functools.cache\ndef g(x):\n    return x * 2", a)
    exec("import functools\n@functools.cache\ndef g(x):\n    return x * 3", b)
    assert digest(a["g"]) != digest(b["g"])
    assert digest({"a": 1}.get) != digest({"a": 2}.get)
    assert digest(len) == digest(len)
    assert functools  # imported for the exec'd code's sake only
