"""Hashing corners: what must change a key, and what must not (needless misses)."""

from __future__ import annotations

import functools
import io
import os
import subprocess
import sys
import tempfile
import textwrap
import threading
from collections import namedtuple
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ipycache_ext._hash_buffers import PARALLEL_MIN, PIECE, set_hash_threads
from ipycache_ext._hashing import HashFuncError, Unhashable, digest, global_names

NOTEBOOK_CLASSES = textwrap.dedent(
    """
    import dataclasses, enum, functools

    @dataclasses.dataclass
    class Cfg:
        a: int = 1
        tags: set = dataclasses.field(default_factory=lambda: {"x", "y", "zz", "w", "v", "uu"})

    class Color(enum.Enum):
        RED = 1
        BLUE = 2

    class Model:
        def __init__(self):
            self.v = [1, 2]
            self.seen = frozenset({"p", "q", "r", "s"})

        @functools.cached_property
        def total(self):
            return sum(self.v)

        def predict(self, x):
            return x * self.total
    """
)


def notebook(source: str = NOTEBOOK_CLASSES) -> dict[str, Any]:
    """Run ``source`` as a notebook cell does: in a namespace called __main__."""
    namespace: dict[str, Any] = {"__name__": "__main__"}
    exec(source, namespace)
    return namespace


# ---------------------------------------------------------------- instances of notebook classes
def test_instances_hit_after_the_class_cell_is_run_again_unchanged() -> None:
    first, again = notebook(), notebook()
    assert first["Cfg"] is not again["Cfg"]
    assert digest(first["Cfg"]()) == digest(again["Cfg"]())
    assert digest(first["Cfg"](a=2)) != digest(again["Cfg"]())
    assert digest(first["Color"].RED) == digest(again["Color"].RED)
    assert digest(first["Color"].RED) != digest(first["Color"].BLUE)
    assert digest(first["Model"]().predict) == digest(again["Model"]().predict)  # `self` of a method


def test_an_edited_class_changes_its_instances_keys() -> None:
    edited = notebook(NOTEBOOK_CLASSES.replace("x * self.total", "x + self.total"))
    assert digest(notebook()["Model"]()) != digest(edited["Model"]())


def test_a_cached_property_computed_or_not_is_the_same_instance() -> None:
    model = notebook()["Model"]()
    before = digest(model)
    assert model.total == 3
    assert digest(model) == before
    model.v.append(1)
    assert digest(model) != before


RESTART_SCRIPT = """
import sys
sys.path.insert(0, {root!r})
from tests.test_hashing_corners import notebook
from ipycache_ext._hashing import digest
ns = notebook()
print(digest([ns["Cfg"](), ns["Model"](), ns["Color"].BLUE, {{"a", "b", "c", "d"}}]))
"""


def test_instances_with_sets_inside_have_one_key_across_processes_and_hash_seeds() -> None:
    root = str(Path(__file__).resolve().parent.parent)
    digests = set()
    for seed in ("1", "2", "3"):
        out = subprocess.run(
            [sys.executable, "-c", RESTART_SCRIPT.format(root=root)],
            env={**os.environ, "PYTHONHASHSEED": seed},
            capture_output=True,
            text=True,
            check=True,
            timeout=120,
        )
        digests.add(out.stdout.strip())
    assert len(digests) == 1


# ---------------------------------------------------------------- containers
def test_namedtuple_fields_and_subclass_state_count() -> None:
    xy, yx = namedtuple("P", "x y"), namedtuple("P", "y x")
    assert digest(xy(1, 2)) != digest(yx(1, 2))
    assert digest(xy(1, 2)) == digest(namedtuple("P", "x y")(1, 2))
    assert digest(xy(1, 2)) != digest((1, 2))

    ns = notebook(
        "class Tagged(list):\n    def __init__(self, items, tag):\n        super().__init__(items)\n"
        "        self.tag = tag\n"
        "class Shout(dict):\n    def __getitem__(self, k):\n        return super().__getitem__(k).upper()\n"
    )
    assert digest(ns["Tagged"]([1], "a")) != digest(ns["Tagged"]([1], "b"))
    assert digest(ns["Tagged"]([1], "a")) == digest(ns["Tagged"]([1], "a"))
    assert digest(ns["Shout"](a="x")) != digest({"a": "x"})
    quiet = notebook(
        "class Shout(dict):\n    def __getitem__(self, k):\n        return super().__getitem__(k).lower()\n"
    )
    assert digest(ns["Shout"](a="x")) != digest(quiet["Shout"](a="x"))  # its methods count


@given(st.lists(st.text(max_size=5), max_size=8, unique=True))
def test_dicts_are_ordered_sets_are_not(keys: list[str]) -> None:
    forward = dict.fromkeys(keys, 1)
    backward = dict.fromkeys(reversed(keys), 1)
    assert (digest(forward) == digest(backward)) == (list(forward) == list(backward))
    assert digest(set(keys)) == digest({*reversed(keys)})


# ---------------------------------------------------------------- numbers and arrays
def test_nan_bits_count() -> None:
    nan = float("nan")
    assert digest(nan) == digest(float("nan"))
    assert digest(nan) != digest(-nan)  # math.copysign sees the sign
    assert digest(np.array([nan])) != digest(np.array([-nan]))


def test_memory_order_counts() -> None:
    a = np.arange(12.0).reshape(3, 4)
    assert digest(a) != digest(np.asfortranarray(a))
    assert digest(np.asfortranarray(a)) == digest(np.asfortranarray(a.copy()))
    changed = np.asfortranarray(a)
    changed[2, 3] = -1
    assert digest(changed) != digest(np.asfortranarray(a))
    assert digest(a[:, ::2]) == digest(np.ascontiguousarray(a[:, ::2]))


def test_pandas_attrs_flags_and_freq_count() -> None:
    df = pd.DataFrame({"a": [1, 2]})
    labelled = df.copy()
    labelled.attrs["unit"] = "m"
    assert digest(df) != digest(labelled)
    assert digest(df["a"]) != digest(labelled["a"])
    assert digest(df) != digest(df.set_flags(allows_duplicate_labels=False))
    daily = pd.date_range("2026-01-01", periods=3, freq="D")
    assert digest(daily) != digest(pd.DatetimeIndex(list(daily)))
    assert digest(daily) == digest(pd.date_range("2026-01-01", periods=3, freq="D"))


def test_arrow_slices_hit_equal_data() -> None:
    pa = pytest.importorskip("pyarrow")
    strings = pa.array(["a", "bb", None, "ccc", "d"])
    assert digest(strings.slice(1, 3)) == digest(pa.array(["bb", None, "ccc"]))
    assert digest(strings.slice(1, 3)) != digest(strings.slice(2, 3))
    ints = pa.array([1, 2, None, 4, 5])
    assert digest(ints.slice(2)) == digest(pa.array([None, 4, 5]))
    flags = pa.array([True, False, True, True, False, False, True, True, False, True])
    assert digest(flags.slice(3, 6)) == digest(pa.array([True, False, False, True, True, False]))
    lists = pa.array([[1, 2], [3], None, [4, 5, 6]])
    assert digest(lists.slice(1)) == digest(pa.array([[3], None, [4, 5, 6]]))
    records = pa.array([{"a": 1, "b": "x"}, {"a": 2, "b": "y"}])
    assert digest(records.slice(1)) == digest(pa.array([{"a": 2, "b": "y"}]))
    column = pd.Series(["a", "b", "c", "d"], dtype="string[pyarrow]")
    assert digest(column.iloc[1:3].reset_index(drop=True)) == digest(
        pd.Series(["b", "c"], dtype="string[pyarrow]")
    )
    table = pa.table({"a": [1, 2], "b": ["x", "y"]})
    assert digest(table) == digest(pa.table({"a": [1, 2], "b": ["x", "y"]}))
    assert digest(table) != digest(pa.table({"a": [1, 3], "b": ["x", "y"]}))
    assert digest(table) != digest(table.replace_schema_metadata({"k": "v"}))


# ---------------------------------------------------------------- code
def test_a_docstring_edit_is_not_a_change() -> None:
    one = notebook('def f(x):\n    "Adds one."\n    return x + 1\n')
    two = notebook('def f(x):\n    """Adds one,\n    explained at length."""\n    return x + 1\n')
    none = notebook("def f(x):\n    return x + 1\n")
    assert digest(one["f"]) == digest(two["f"]) == digest(none["f"])
    assert digest(one["f"]) != digest(notebook('def f(x):\n    "Adds one."\n    return x + 2\n')["f"])
    text, nothing = notebook('def f():\n    return "text"\n'), notebook("def f():\n    return None\n")
    assert digest(text["f"]) != digest(nothing["f"])


def test_attribute_names_are_not_global_reads() -> None:
    ns = notebook("def width_of(self):\n    return self.conn.width + _db.width\n")
    assert global_names(ns["width_of"].__code__) == ["_db"]
    ns.update(conn="a", width=1, _db=None)
    before = digest(ns["width_of"])
    ns.update(conn="b", width=2)  # unrelated globals named like the attributes
    assert digest(ns["width_of"]) == before
    ns["_db"] = 1
    assert digest(ns["width_of"]) != before
    writer = notebook("def reset():\n    global counter\n    counter = 0\n")
    assert global_names(writer["reset"].__code__) == []  # written, never read


def test_globals_read_in_nested_code_and_class_bodies_count() -> None:
    ns = notebook(
        "def outer():\n    def inner():\n        return LIMIT\n    class K:\n        size = SIZE\n"
        "    return inner, K\n"
    )
    assert {"LIMIT", "SIZE"} <= set(global_names(ns["outer"].__code__))


def test_partials_are_keyed_by_their_function_and_arguments() -> None:
    ns = notebook("def scale(x, k):\n    return x * k\n")
    edited = notebook("def scale(x, k):\n    return x / k\n")
    assert digest(functools.partial(ns["scale"], k=2)) == digest(functools.partial(ns["scale"], k=2))
    assert digest(functools.partial(ns["scale"], k=2)) != digest(functools.partial(ns["scale"], k=3))
    assert digest(functools.partial(ns["scale"], k=2)) != digest(functools.partial(edited["scale"], k=2))


# ---------------------------------------------------------------- files
def test_file_handles_hash_as_streamlit_does(tmp_path: Path) -> None:
    path = tmp_path / "data.bin"
    path.write_bytes(b"abcdef")
    with open(path, "rb") as one, open(path, "rb") as two:
        assert digest(one) == digest(two)
        two.seek(2)
        assert digest(one) != digest(two)  # position
        before = digest(one)
        os.utime(path, ns=(1, 1))
        assert digest(one) != before  # modification time
    with tempfile.NamedTemporaryFile() as temporary:
        temporary.write(b"x")
        temporary.flush()
        first = digest(temporary)
        temporary.seek(0)
        assert digest(temporary) != first
    assert digest(io.BytesIO(b"ab")) != digest(io.BytesIO(b"ac"))
    closed = io.StringIO("text")
    closed.close()
    with pytest.raises(Unhashable):
        digest(closed)


# ---------------------------------------------------------------- the engine's hooks
class Context:
    """A context like the engine's: one resource list, identity tokens for unhashables."""

    def __init__(self, resource: Any) -> None:
        self.resource = resource
        self.asked: list[str] = []

    def identity_of(self, value: Any) -> str | None:
        return "resource-token" if value is self.resource else None

    def unhashable(self, name: str, value: Any, error: Unhashable) -> str | None:
        self.asked.append(name)
        return f"identity-{id(value)}" if name != "REFUSED" else None


def test_the_context_names_resources_anywhere_and_keys_unhashable_globals() -> None:
    resource = [threading.Lock()]
    context = Context(resource)
    assert digest({"conn": resource}, context=context) == digest({"conn": resource}, context=context)
    with pytest.raises(Unhashable):
        digest({"conn": resource})
    ns = notebook("def query():\n    return LOCK, conn\n")
    ns.update(LOCK=threading.Lock(), conn=resource)
    assert digest(ns["query"], context=context)
    assert context.asked == ["LOCK"]  # the resource was named by identity_of, not unhashable()
    before = digest(ns["query"], context=context)
    ns["LOCK"] = threading.Lock()
    assert digest(ns["query"], context=context) != before
    ns["REFUSED"] = threading.Lock()
    exec("def strict():\n    return REFUSED\n", ns)
    with pytest.raises(Unhashable):
        digest(ns["strict"], context=context)


def test_a_failing_hash_func_is_a_hash_func_error() -> None:
    def broken(value: Any) -> Any:
        raise KeyError("no url")

    with pytest.raises(HashFuncError) as caught:
        digest({"z": 1 + 2j}, hash_funcs={complex: broken})
    assert caught.value.func is broken and caught.value.value_type is complex
    assert isinstance(caught.value.error, KeyError) and "broken" in caught.value.reason
    assert isinstance(caught.value, Unhashable)


# ---------------------------------------------------------------- large buffers
def test_large_buffers_have_one_digest_whatever_the_thread_count() -> None:
    data = np.random.default_rng(1).integers(0, 255, PARALLEL_MIN + 3 * PIECE + 17, dtype=np.uint8)
    try:
        set_hash_threads(1)
        serial = digest(data)
        set_hash_threads(3)
        assert digest(data) == serial
    finally:
        set_hash_threads(None)
    changed = data.copy()
    changed[-1] ^= 1  # the last byte of the last, partial piece
    assert digest(changed) != serial
    changed = data.copy()
    changed[PIECE] ^= 1
    assert digest(changed) != serial
    assert digest(data[:-1]) != serial


# ---------------------------------------------------------------- matplotlib
MATPLOTLIB_SCRIPT = """
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
from ipycache_ext._hashing import digest
fig, ax = plt.subplots()
ax.plot([1, 2, 3], [4, 5, 6])
ax.set_title("sales")
print(digest(fig), digest(ax))
"""


def test_matplotlib_figures_and_axes_hit_when_made_again_drawn_or_not(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def make(title: str = "sales", y: int = 6) -> Any:
        fig, ax = plt.subplots()
        ax.plot([1, 2, 3], [4, 5, y])
        ax.set_title(title)
        return fig, ax

    try:
        (fig, ax), (again, again_ax) = make(), make()
        assert digest(fig) == digest(again) and digest(ax) == digest(again_ax)
        before = digest(fig)
        assert digest(fig) == before  # hashing does not change it (pickling would)
        fig.savefig(tmp_path / "drawn.png")  # the inline backend draws every new figure
        assert digest(fig) == before
        assert digest(make(title="costs")[0]) != before
        assert digest(make(y=7)[0]) != before
        ax.set_xlim(0, 10)
        assert digest(fig) != before
        # and after a restart: another process, another hash seed, other ids
        out = subprocess.run(
            [sys.executable, "-c", MATPLOTLIB_SCRIPT],
            env={**os.environ, "PYTHONHASHSEED": "7"},
            capture_output=True,
            text=True,
            check=True,
            timeout=120,
        )
        assert out.stdout.split() == [digest(again), digest(again_ax)]
    finally:
        plt.close("all")


def test_a_function_named_after_an_installed_module_is_still_hashed_by_what_it_reads() -> None:
    """``__module__`` is only a name: an exec namespace called ``json`` (or ``notebook``, an
    installed package once Jupyter imported it) holds notebook code, not json's."""
    import json

    namespace: dict[str, object] = {"__name__": "json", "RATE": 2}
    exec("def scaled(x):\n    return x * RATE\nclass Box:\n    size = 1\n", namespace)
    before = digest(namespace["scaled"]), digest(namespace["Box"])
    namespace["RATE"] = 3
    namespace["Box"].size = 2  # type: ignore[attr-defined]
    assert digest(namespace["scaled"]) != before[0]
    assert digest(namespace["Box"]) != before[1]
    assert digest(json.dumps) == digest(json.dumps)  # the real json: by name and version
