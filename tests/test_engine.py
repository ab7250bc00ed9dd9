"""The engine alone (no IPython): keys, identities, resources, dependencies, the unloadable fallback."""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import pytest

from ipycache_ext import CacheStore, _engine
from ipycache_ext._engine import CacheEngine, Request, engine_for


def _request(**changes: Any) -> Request:
    base: dict[str, Any] = {"kind": "data", "origin": "o", "label": "l", "code": "c", "group": "g"}
    base.update(changes)
    return Request(**base)


def test_equal_inputs_make_equal_keys_and_any_difference_changes_it(store: CacheStore) -> None:
    engine = CacheEngine(store)
    key = engine.plan(_request(outside={"n": [1, 2]})).key
    assert engine.plan(_request(outside={"n": [1, 2]})).key == key
    assert engine.plan(_request(outside={"n": [1, 3]})).key != key
    assert engine.plan(_request(outside={"m": [1, 2]})).key != key
    assert engine.plan(_request(outside={"n": [1, 2]}, code="d")).key != key
    assert engine.plan(_request(outside={"n": [1, 2]}, kind="resource")).key != key
    assert engine.plan(_request(arguments={"n": [1, 2]})).key != key  # an argument is not an input


def test_an_unhashable_outside_value_is_keyed_by_identity_and_an_argument_is_an_error(
    store: CacheStore,
) -> None:
    engine = CacheEngine(store)
    lock = threading.Lock()
    first = engine.plan(_request(outside={"lock": lock}))
    assert first.by_identity == ("lock",)
    assert engine.plan(_request(outside={"lock": lock})).key == first.key
    assert engine.plan(_request(outside={"lock": threading.Lock()})).key != first.key

    def refuse(name: str, value: object, exc: Exception) -> Exception:
        return TypeError(f"no {name}")

    with pytest.raises(TypeError, match="no lock"):
        engine.plan(_request(arguments={"lock": lock}, unhashable_argument=refuse))


def test_an_identity_token_is_never_reused_by_a_new_object_at_the_same_address(store: CacheStore) -> None:
    engine = CacheEngine(store)

    class Handle:
        def __reduce__(self) -> Any:
            raise TypeError("a handle")

    seen: dict[int, str] = {}
    for _ in range(200):  # addresses are reused quickly once objects die
        handle = Handle()
        token = engine.identities.token(handle)
        assert seen.get(id(handle)) != token
        seen[id(handle)] = token
        del handle
        gc.collect()


def test_a_value_a_resource_entry_holds_is_keyed_by_that_entry_until_it_leaves(store: CacheStore) -> None:
    engine = CacheEngine(store)
    resource = _request(kind="resource", label="conn")
    plan = engine.plan(resource)
    handle = engine.fetch(resource, plan, threading.Lock).value
    token = engine.resources.token(handle)
    assert token is not None
    assert engine.plan(_request(outside={"conn": handle})).by_identity == ()  # a resource, not an identity
    store.delete(plan.key)
    assert engine.resources.token(handle) is None


def test_fetch_computes_once_serves_fresh_copies_and_says_why_it_computed(store: CacheStore) -> None:
    engine = CacheEngine(store)
    calls: list[int] = []
    said: list[tuple[str, bool]] = []

    def compute() -> list[int]:
        calls.append(1)
        return [len(calls)]

    for value in (1, 1, 2):
        request = _request(outside={"n": value})
        outcome = engine.fetch(
            request, engine.plan(request), compute, on_miss=lambda r, again: said.append((r, again))
        )
        outcome.value.append("mine")  # a copy: never the store's
    assert len(calls) == 2
    assert said == [("first run", False), ("`n` changed", True)]
    request = _request(outside={"n": 1})
    again = engine.fetch(request, engine.plan(request), compute)
    assert again.hit and again.value == [1]


def test_a_stored_value_that_no_longer_loads_is_dropped_with_a_warning_and_computed_again(
    store: CacheStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = CacheEngine(store)
    request = _request()
    plan = engine.plan(request)
    engine.fetch(request, plan, lambda: 1)
    real_load = engine.load
    failures = [AttributeError("Can't get attribute 'Thing'")]

    def load(kind: Any, stored: Any) -> Any:
        if failures:
            raise failures.pop()
        return real_load(kind, stored)

    monkeypatch.setattr(engine, "load", load)
    with pytest.warns(RuntimeWarning, match="could not be loaded .*Thing.*dropped and computed again"):
        outcome = engine.fetch(request, plan, lambda: 2)
    assert outcome.value == 2 and outcome.computed
    assert engine.fetch(request, plan, lambda: 3).value == 2  # the new value is served


class _FakeDeps:
    """A dependency layer that reports a changed file once."""

    def __init__(self) -> None:
        self.changed: str | None = None
        self.replayed: list[Sequence[Mapping[str, Any]]] = []

    @contextmanager
    def recording(self, *, declared: Sequence[str] = (), **_ignored: Any) -> Iterator[Any]:
        class Recording:
            def dependencies(self) -> tuple[dict[str, Any], ...]:
                return ({"kind": "file", "path": "/data.csv"},)

        yield Recording()

    def first_change(self, dependencies: Sequence[Mapping[str, Any]], **_ignored: Any) -> str | None:
        found, self.changed = self.changed, None
        return found

    def files_in(self, *groups: Any) -> tuple[str, ...]:
        return ()

    def replay_effects(self, dependencies: Sequence[Mapping[str, Any]]) -> None:
        self.replayed.append(dependencies)


def test_a_changed_dependency_recomputes_with_its_reason(
    store: CacheStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = _FakeDeps()
    monkeypatch.setattr(_engine, "deps", fake)
    engine = CacheEngine(store)
    request = _request()
    plan = engine.plan(request)
    calls: list[int] = []
    engine.fetch(request, plan, lambda: calls.append(1))
    assert engine.fetch(request, plan, lambda: calls.append(1)).hit
    assert fake.replayed == [({"kind": "file", "path": "/data.csv"},)]
    fake.changed = "`data.csv` changed"
    outcome = engine.fetch(request, plan, lambda: calls.append(1))
    assert not outcome.hit and outcome.reason == "`data.csv` changed" and len(calls) == 2
    assert store.stats().hits == 1  # the out-of-date entry was not counted as a hit
    assert store.get(plan.key) is not None and store.get(plan.key).miss_reason == "`data.csv` changed"  # type: ignore[union-attr]


def test_peek_serves_only_what_is_stored(store: CacheStore) -> None:
    engine = engine_for(store)
    request = _request()
    plan = engine.plan(request)
    assert engine.peek(request, plan) is None
    engine.fetch(request, plan, lambda: 5)
    served = engine.peek(request, plan)
    assert served is not None and served.hit and served.value == 5
    assert engine_for(store) is engine


def test_immutable_inputs_remembered_by_identity_keep_their_own_digest(store: CacheStore) -> None:
    """Numbers and short strings are hashed once per object: equal-comparing values of other
    types or bits (1, 1.0, True; 0.0 and -0.0) still get their own digests, a long string
    is not held, and the memory stays bounded."""
    from ipycache_ext._hashing import digest

    engine = CacheEngine(store)
    values: list[Any] = [1, 1.0, True, 0.0, -0.0, "s", b"s", None, 10**30, "x" * 10_000]
    for _ in range(2):
        assert [engine.digest_outside("v", v) for v in values] == [digest(v) for v in values]
    assert len({engine.digest_outside("v", v) for v in values}) == len(values)
    assert all(known is not values[-1] for known, _ in engine._atoms.values())
    for number in range(3 * _engine._ATOM_MEMORY):
        engine.digest_outside("n", float(number))
    assert len(engine._atoms) <= _engine._ATOM_MEMORY


def test_an_outcome_says_how_long_its_computation_took_even_when_nothing_was_kept(store: CacheStore) -> None:
    """The cell status of a result too large to keep says "computed in …", not "0ms"."""
    import time

    import numpy as np

    engine = CacheEngine(store)
    store.memory_budget = 1024  # nothing of 8 MB fits

    def slow() -> Any:
        time.sleep(0.05)
        return np.ones(1_000_000)

    request = _request()
    with pytest.warns(RuntimeWarning, match="larger than the whole memory budget"):
        outcome = engine.fetch(request, engine.plan(request), slow)
    assert outcome.computed and outcome.entry is None and outcome.seconds >= 0.05
    kept = _request(code="other")
    store.memory_budget = 10**9
    first = engine.fetch(kept, engine.plan(kept), lambda: 1)
    hit = engine.fetch(kept, engine.plan(kept), lambda: 1)
    assert first.seconds > 0 and hit.hit and hit.seconds == 0.0
