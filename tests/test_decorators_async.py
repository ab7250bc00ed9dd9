"""``async def`` functions under ``@cache_data`` / ``@cache_resource``: shared computations, free loop."""

from __future__ import annotations

import asyncio
import inspect
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

import pytest

from ipycache_ext import CacheStore
from ipycache_ext._decorators import cache_data, cache_resource

from .conftest import FakeClock
from .test_decorators import Resource, Tracker

T = TypeVar("T")


@pytest.fixture
def cached(store: CacheStore, monkeypatch: pytest.MonkeyPatch) -> CacheStore:
    monkeypatch.setattr(cache_data, "store", store)
    monkeypatch.setattr(cache_resource, "store", store)
    return store


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run on a fresh loop, failing instead of hanging if something waits forever."""
    return asyncio.run(asyncio.wait_for(coroutine, 10))


def test_an_async_function_stays_a_coroutine_function(cached: CacheStore) -> None:
    @cache_data
    async def fetch(x: int) -> int:
        return x

    assert inspect.iscoroutinefunction(fetch) or asyncio.iscoroutinefunction(fetch)
    assert run(fetch(2)) == 2
    assert run(fetch(2)) == 2
    assert cached.stats().misses == 1
    assert cached.stats().hits == 1


def test_sixteen_awaiters_of_one_key_share_one_computation_without_blocking_the_loop(
    cached: CacheStore,
) -> None:
    tracker = Tracker()

    @cache_data
    async def fetch(city: str, _gate: asyncio.Event, _tracker: Tracker) -> dict[str, str]:
        _tracker.called()
        await _gate.wait()  # only this test's coroutine can open it: the loop must be free
        return {"city": city}

    async def main() -> list[dict[str, str]]:
        gate = asyncio.Event()
        calls = [asyncio.ensure_future(fetch("Paris", gate, tracker)) for _ in range(16)]
        for _ in range(5):
            await asyncio.sleep(0)  # let every caller reach the shared computation
        assert tracker.calls == 1
        gate.set()
        return await asyncio.gather(*calls)

    results = run(main())
    assert results == [{"city": "Paris"}] * 16
    assert len({id(r) for r in results}) == 16  # cache_data: a fresh copy for every awaiter
    assert tracker.calls == 1
    assert cached.stats().misses == 1
    assert run(fetch("Paris", asyncio.Event(), tracker)) == {"city": "Paris"}  # now a hit
    assert tracker.calls == 1


def test_async_resources_are_one_shared_instance(cached: CacheStore) -> None:
    @cache_resource
    async def connect(url: str) -> Resource:
        await asyncio.sleep(0)
        return Resource(url)

    async def main() -> list[Resource]:
        return await asyncio.gather(*(connect("db://a") for _ in range(8)))

    results = run(main())
    assert all(r is results[0] for r in results)
    assert run(connect("db://a")) is results[0]


def test_an_async_failure_reaches_every_awaiter_and_is_not_cached(cached: CacheStore) -> None:
    tracker = Tracker()
    tracker.fail = True

    @cache_resource
    async def flaky(_tracker: Tracker) -> Resource:
        attempt = _tracker.called()
        await asyncio.sleep(0.01)
        if _tracker.fail:
            raise ValueError(f"attempt {attempt}")
        return Resource(attempt)

    async def main() -> list[Any]:
        return await asyncio.gather(*(flaky(tracker) for _ in range(8)), return_exceptions=True)

    outcomes = run(main())
    assert all(isinstance(o, ValueError) for o in outcomes)
    assert len({id(o) for o in outcomes}) == 1
    assert tracker.calls == 1
    assert cached.entries() == []
    tracker.fail = False
    assert run(flaky(tracker)).name == 2


def test_one_cancelled_awaiter_does_not_cancel_the_others(cached: CacheStore) -> None:
    @cache_data
    async def slow(x: int, _gate: asyncio.Event) -> int:
        await _gate.wait()
        return x

    async def main() -> int:
        gate = asyncio.Event()
        first = asyncio.ensure_future(slow(1, gate))
        second = asyncio.ensure_future(slow(1, gate))
        await asyncio.sleep(0)
        first.cancel()
        await asyncio.sleep(0)
        gate.set()
        with pytest.raises(asyncio.CancelledError):
            await first
        return await second

    assert run(main()) == 1
    assert cached.stats().misses == 1


def test_async_hits_validate_and_expire(cached: CacheStore, clock: FakeClock) -> None:
    tracker = Tracker()

    @cache_resource(ttl=60, validate=lambda r: r.ok, on_release=tracker.release)
    async def connect(url: str) -> Resource:
        return Resource(url)

    first = run(connect("a"))
    assert run(connect("a")) is first
    first.ok = False
    second = run(connect("a"))
    assert second is not first
    clock.advance(61)
    third = run(connect("a"))
    assert tracker.released == [first, second]
    assert third is not second


def test_two_loops_computing_one_key_keep_one_value_and_release_the_other(cached: CacheStore) -> None:
    """Single flight is per loop; across loops the first value stored wins, the other is released."""
    tracker = Tracker()
    both_started = threading.Barrier(2)

    @cache_resource(on_release=tracker.release)
    async def connect(url: str, _name: str, _go: threading.Event, _started: threading.Barrier) -> Resource:
        _started.wait(5)  # each loop runs on its own thread: blocking here blocks only it
        assert _go.wait(5)
        return Resource(_name)

    go_a, go_b = threading.Event(), threading.Event()
    results: dict[str, Resource] = {}

    def in_thread(name: str, go: threading.Event) -> None:
        results[name] = run(connect("db", name, go, both_started))

    threads = [threading.Thread(target=in_thread, args=(n, g)) for n, g in (("a", go_a), ("b", go_b))]
    for thread in threads:
        thread.start()
    go_a.set()
    threads[0].join(10)
    go_b.set()
    threads[1].join(10)
    assert not any(t.is_alive() for t in threads)
    assert results["a"].name == "a"
    assert results["b"] is results["a"]  # b is handed the stored value
    assert [r.name for r in tracker.released] == ["b"]  # b's own value belonged to no one
    (entry,) = cached.entries()
    assert entry.label == "connect(url='db')"
