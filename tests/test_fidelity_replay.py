"""In-place replay (``_replay``), the rehoming walk (``_rehome``) and kernel effects (``_effects``).

The decorator side runs through the real engine and store: a cached function that changes
its argument in place changes the *caller's* object on a hit too.
"""

from __future__ import annotations

import collections
import dataclasses
import os
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
import pytest
from IPython.core.interactiveshell import InteractiveShell

from ipycache_ext import CacheStore
from ipycache_ext._engine import Request, engine_for
from ipycache_ext._replay import fetch_with_argument_replay, transplant

from .conftest import run


# ---------------------------------------------------------------------- transplant
@pytest.mark.parametrize(
    ("make", "change"),
    [
        (lambda: [1, 2], lambda v: v.append(3)),
        (lambda: {"a": 1}, lambda v: v.update(b=2)),
        (lambda: {1, 2}, lambda v: v.add(3)),
        (lambda: bytearray(b"ab"), lambda v: v.extend(b"c")),
        (lambda: collections.deque([1]), lambda v: v.append(2)),
        (lambda: collections.defaultdict(list, a=[1]), lambda v: v["b"].append(2)),
        (lambda: np.arange(3.0), lambda v: v.__setitem__(0, 9.0)),
        (lambda: pd.DataFrame({"a": [1, 2]}), lambda v: v.__setitem__("b", [3, 4])),
        (lambda: pd.Series([1, 2], name="s"), lambda v: v.__setitem__(0, 5)),
    ],
    ids=["list", "dict", "set", "bytearray", "deque", "defaultdict", "ndarray", "dataframe", "series"],
)
def test_transplant_makes_the_target_equal_to_the_changed_copy(
    make: Callable[[], Any], change: Callable[[Any], None]
) -> None:
    target, source = make(), make()
    change(source)
    assert transplant(target, source)
    expected = make()
    change(expected)
    if isinstance(expected, (pd.DataFrame, pd.Series)):
        assert target.equals(expected) and getattr(target, "name", None) == getattr(expected, "name", None)
    elif isinstance(expected, np.ndarray):
        assert np.array_equal(target, expected)
    else:
        assert target == expected


def test_transplant_refuses_what_it_cant_change_in_place() -> None:
    assert not transplant(np.zeros(2), np.zeros(3))  # resized: only a new array holds it
    assert not transplant([1], (1,))  # another type
    assert not transplant(os.stat_result(range(10)), os.stat_result(range(10)))  # a C type


def test_transplant_of_an_instance_keeps_its_identity() -> None:
    @dataclasses.dataclass
    class Point:
        x: int

    class Slotted:
        __slots__ = ("a",)

    target, source = Point(1), Point(2)
    assert transplant(target, source) and target.x == 2
    slotted, changed = Slotted(), Slotted()
    changed.a = 5
    assert transplant(slotted, changed) and slotted.a == 5


# ---------------------------------------------------------------------- decorated functions
def _caller(store: CacheStore, func: Callable[..., Any], kind: str = "data",
            var_keyword: str | None = None) -> Callable[..., Any]:  # fmt: skip
    """What the decorator front end does, with the one call DECOR adds (fetch_with_argument_replay)."""
    engine = engine_for(store)
    told: list[list[str]] = []

    def call(**arguments: Any) -> Any:
        request = Request(kind=kind, origin=func.__name__, label=func.__name__, code=func.__name__,  # type: ignore[arg-type]
                          group=func.__name__, scope=func.__name__, arguments=arguments)  # fmt: skip
        plan = engine.plan(request)
        flat = {k: v for k, v in arguments.items() if k != var_keyword}
        kwargs = arguments.get(var_keyword, {}) if var_keyword else {}
        compute = lambda: func(**flat, **kwargs)  # noqa: E731
        outcome = fetch_with_argument_replay(
            engine, request, plan, compute, var_keyword=var_keyword, on_unreplayable=told.append
        )
        return outcome.value

    call.told = told  # type: ignore[attr-defined]
    return call


def test_a_hit_changes_the_callers_frame_as_the_call_did(store: CacheStore) -> None:
    calls = []

    def add_column(df: pd.DataFrame) -> int:
        calls.append(1)
        df["b"] = df["a"] * 2
        return int(df["b"].sum())

    call = _caller(store, add_column)
    first = pd.DataFrame({"a": [1, 2]})
    assert call(df=first) == 6 and list(first.columns) == ["a", "b"]
    second = pd.DataFrame({"a": [1, 2]})
    alias = second
    assert call(df=second) == 6
    assert len(calls) == 1  # a hit
    assert list(alias.columns) == ["a", "b"] and alias["b"].tolist() == [2, 4]


def test_a_hit_appends_to_the_callers_list_and_returns_it(store: CacheStore) -> None:
    def grow(items: list[int]) -> list[int]:
        items.append(len(items))
        return items

    call = _caller(store, grow)
    assert call(items=[7]) == [7, 1]
    mine = [7]
    returned = call(items=mine)
    assert mine == [7, 1] and returned is mine  # the caller's object, as a real call returns it
    assert store.stats().hits == 1


def test_keyword_arguments_are_replayed_onto_the_callers_objects(store: CacheStore) -> None:
    def fill(**buckets: list[int]) -> int:
        for bucket in buckets.values():
            bucket.append(0)
        return len(buckets)

    call = _caller(store, fill, var_keyword="buckets")
    assert call(buckets={"a": [1], "b": [2]}) == 2
    a, b = [1], [2]
    assert call(buckets={"a": a, "b": b}) == 2
    assert (a, b) == ([1, 0], [2, 0]) and store.stats().hits == 1


def test_a_resource_that_changes_its_argument_says_so(store: CacheStore) -> None:
    def connect(options: dict[str, int]) -> object:
        options["opened"] = 1
        return object()

    call = _caller(store, connect, kind="resource")
    call(options={"port": 1})
    assert call.told == [["options"]]  # type: ignore[attr-defined]


# ---------------------------------------------------------------------- rehoming, in a real shell
def _twice(shell: InteractiveShell, setup: str, cell: str) -> None:
    run(shell, setup)
    run(shell, cell)
    shell.reset(new_session=False)
    run(shell, setup)
    run(shell, cell)


def test_decorated_functions_and_methods_are_rehomed(shell: InteractiveShell, store: CacheStore) -> None:
    cell = """%%cache_data
import functools
def traced(func):
    @functools.wraps(func)
    def wrapper(*args):
        return ('traced', func(*args))
    return wrapper
@traced
def scaled(x):
    return x * FACTOR
class Tool:
    @staticmethod
    def s():
        return FACTOR
    @classmethod
    def c(cls):
        return FACTOR
    @property
    def p(self):
        return FACTOR
tool = Tool()
partial = functools.partial(scaled, 2)
bound = tool.__class__.c
handlers = {'scale': scaled, 'pair': (scaled, [lambda: FACTOR])}
"""
    _twice(shell, "FACTOR = 1", cell)
    assert store.stats().hits == 1
    run(shell, "FACTOR = 5")
    assert run(shell, "scaled(1), scaled.__wrapped__(1), Tool.s(), Tool.c(), tool.p") == (
        ("traced", 5),
        5,
        5,
        5,
        5,
    )
    assert run(shell, "partial(), bound(), handlers['scale'](1), handlers['pair'][1][0]()") == (
        ("traced", 10), 5, ("traced", 5), 5,
    )  # fmt: skip
    assert run(shell, "handlers['scale'] is scaled and handlers['pair'][0] is scaled") is True


def test_the_walk_leaves_library_objects_and_resources_alone(
    shell: InteractiveShell, store: CacheStore
) -> None:
    _twice(shell, "import numpy as np", "%%cache_resource\nmaker = lambda: FACTOR\narr = np.zeros(2)")
    run(shell, "FACTOR = 3")
    assert run(shell, "maker(), maker.__globals__ is globals()") == (3, True)  # never pickled: real globals


def test_a_cell_that_changes_the_working_directory_and_environment_replays_it(
    shell: InteractiveShell, store: CacheStore, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("FID_UNIT", raising=False)
    (tmp_path / "sub").mkdir()
    cell = (
        f"%%cache_data\nimport os\nos.chdir({str(tmp_path / 'sub')!r})\nos.environ['FID_UNIT'] = '1'\nk = 1"
    )
    run(shell, cell)
    os.chdir(tmp_path)
    del os.environ["FID_UNIT"]
    shell.reset(new_session=False)
    run(shell, cell)
    assert store.stats().hits == 1
    assert os.getcwd() == str(tmp_path / "sub") and os.environ["FID_UNIT"] == "1"


def test_the_cache_data_decorator_replays_changes_to_its_arguments(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from ipycache_ext import cache_data

    @cache_data(show_spinner=False)
    def add_column(df: pd.DataFrame) -> int:
        print("computing")
        df["b"] = df["a"] * 2
        return int(df["b"].sum())

    try:
        assert add_column(pd.DataFrame({"a": [1, 2]})) == 6
        mine = pd.DataFrame({"a": [1, 2]})
        alias = mine
        assert add_column(mine) == 6
        assert capsys.readouterr().out.count("computing") == 1  # the second call was a hit
        assert list(alias.columns) == ["a", "b"]
    finally:
        add_column.clear()
