"""Code keys see what installed wrappers run of yours, a function's attributes, and compiled
(Cython) functions; equal code built again keeps its key."""

from __future__ import annotations

import functools
from typing import Any

import pandas as pd
import pytest

from ipycache_ext._hashing import digest


def define(source: str, namespace: dict[str, Any] | None = None) -> dict[str, Any]:
    namespace = {} if namespace is None else namespace
    exec(source, namespace)
    return namespace


CONTEXT = "import contextlib\n@contextlib.contextmanager\ndef ctx():\n    yield {}\n"


def test_an_edit_under_contextmanager_changes_the_key_and_the_same_code_keeps_it() -> None:
    first = digest(define(CONTEXT.format(1))["ctx"])
    assert digest(define(CONTEXT.format(2))["ctx"]) != first
    assert digest(define(CONTEXT.format(1))["ctx"]) == first


def test_singledispatch_sees_its_implementations_and_what_is_registered() -> None:
    namespace = define("import functools\n@functools.singledispatch\ndef f(x):\n    return 1\n")
    before = digest(namespace["f"])
    define("@f.register\ndef _(x: int):\n    return 2\n", namespace)
    registered = digest(namespace["f"])
    assert registered != before
    define("@f.register\ndef _(x: int):\n    return 3\n", namespace)  # replaces the int one
    assert digest(namespace["f"]) not in (before, registered)


def test_a_notebook_wrapper_object_is_keyed_by_its_state_too() -> None:
    def g(x: int) -> int:
        return x

    class Scaled:
        def __init__(self, fn: Any, k: int) -> None:
            functools.update_wrapper(self, fn)
            self.k = k

        def __call__(self, x: int) -> int:
            return self.k * self.__wrapped__(x)  # type: ignore[attr-defined, no-any-return]

    assert digest(Scaled(g, 2)) != digest(Scaled(g, 3))
    assert digest(Scaled(g, 2)) == digest(Scaled(g, 2))


def test_a_functions_attributes_are_part_of_its_key() -> None:
    def h() -> int:
        return h.factor  # type: ignore[attr-defined, no-any-return]

    h.factor = 2  # type: ignore[attr-defined]
    two = digest(h)
    h.factor = 3  # type: ignore[attr-defined]
    assert digest(h) != two
    h.factor = 2  # type: ignore[attr-defined]
    assert digest(h) == two


@pytest.mark.parametrize(
    "make",
    [
        lambda: pd.Timestamp("2020-01-01"),
        lambda: pd.Timedelta("1D"),
        lambda: pd.NaT,
        lambda: [pd.Timestamp("2021-03-04", tz="Europe/Paris")],
        lambda: pd.Series([pd.Timestamp("2020")], dtype=object),
        lambda: pd.interval_range(0, 3),
        lambda: pd.Series(pd.cut([1, 2, 3], 2)),
    ],
    ids=["Timestamp", "Timedelta", "NaT", "list of Timestamp", "object Series", "IntervalIndex", "cut"],
)
def test_pandas_values_rebuilt_by_cython_functions_hash_by_value(make: Any) -> None:
    """Their reductions hold Cython functions, whose shared types have no module name."""
    assert digest(make()) == digest(make())


def test_a_different_timestamp_is_a_different_key() -> None:
    assert digest(pd.Timestamp("2020-01-01")) != digest(pd.Timestamp("2020-01-02"))
    assert digest(pd.Timedelta("1D")) != digest(pd.Timedelta("2D"))


@pytest.fixture
def cached(store: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    from ipycache_ext._decorators import cache_data

    monkeypatch.setattr(cache_data, "store", store)
    return cache_data


class Runs:
    """Counts computations; hashes the same whatever the count (it is not an input)."""

    def __init__(self) -> None:
        self.count = 0

    def __reduce__(self) -> tuple[Any, ...]:
        return (Runs, ())


def test_a_cached_function_recomputes_when_an_attribute_or_a_wrapped_body_it_uses_changes(
    cached: Any,
) -> None:
    runs = Runs()
    namespace = define(CONTEXT.format(1) + "def helper():\n    pass\nhelper.k = 10\n", {"runs": runs})
    source = "def f():\n    runs.count += 1\n    with ctx() as value:\n        return value + helper.k\n"
    f = cached(define(source, namespace)["f"])
    assert f() == 11 and f() == 11 and runs.count == 1  # the second call is a hit
    namespace["helper"].k = 20  # in place: the same function object
    assert f() == 21 and runs.count == 2
    define(CONTEXT.format(5), namespace)  # ctx redefined under its decorator
    assert f() == 25 and runs.count == 3
    assert f() == 25 and runs.count == 3
