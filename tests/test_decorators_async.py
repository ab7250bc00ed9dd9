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


def test_two_event_loops_on_one_cold_key_compute_once_and_neither_loop_blocks(cached: CacheStore) -> None:
    """Threads each running asyncio.run share one computation; the waiting loop stays free."""
    tracker = Tracker()
    started, release = threading.Event(), threading.Event()

    @cache_resource(on_release=tracker.release)
    async def connect(url: str, _tracker: Tracker) -> Resource:
        attempt = _tracker.called()
        started.set()
        while not release.is_set():
            await asyncio.sleep(0.005)  # a real await: its own loop stays free too
        return Resource(attempt)

    ticks: list[int] = []
    results: dict[str, Resource] = {}

    async def second() -> Resource:
        async def ticker() -> None:
            while True:
                ticks.append(1)
                await asyncio.sleep(0.005)

        ticking = asyncio.ensure_future(ticker())
        waiting = asyncio.ensure_future(connect("db", tracker))
        while len(ticks) < 20:  # the loop runs other coroutines while connect() waits
            await asyncio.sleep(0.005)
        assert not waiting.done()
        release.set()
        value = await waiting
        ticking.cancel()
        return value

    def in_thread(name: str, coroutine: Any) -> None:
        results[name] = run(coroutine)

    first = threading.Thread(target=in_thread, args=("a", connect("db", tracker)))
    first.start()
    assert started.wait(5)
    other = threading.Thread(target=in_thread, args=("b", second()))
    other.start()
    for thread in (first, other):
        thread.join(10)
    assert not first.is_alive() and not other.is_alive()
    assert tracker.calls == 1
    assert results["b"] is results["a"]
    assert tracker.released == []
    (entry,) = cached.entries()
    assert entry.label == "connect(url='db')"


def test_a_cancelled_caller_cancels_the_computation_nobody_else_waits_for(cached: CacheStore) -> None:
    tracker = Tracker()
    seen: list[str] = []

    @cache_data
    async def slow(x: int, _tracker: Tracker, _gate: asyncio.Event) -> int:
        _tracker.called()
        try:
            await _gate.wait()
        except asyncio.CancelledError:
            seen.append("cancelled")
            raise
        return x

    async def main() -> None:
        call = asyncio.ensure_future(slow(1, tracker, asyncio.Event()))
        for _ in range(3):
            await asyncio.sleep(0)
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        for _ in range(3):
            await asyncio.sleep(0)

    run(main())
    assert seen == ["cancelled"]
    assert cached.entries() == []
    opened = asyncio.Event()
    opened.set()
    assert run(slow(1, tracker, opened)) == 1
    assert tracker.calls == 2  # computed again: the cancelled run stored nothing
    assert len(cached.entries()) == 1


def test_the_next_call_after_a_cancelled_computation_computes_again(cached: CacheStore) -> None:
    tracker = Tracker()

    @cache_data
    async def fetch(x: int, _tracker: Tracker, _gate: asyncio.Event) -> int:
        _tracker.called()
        await _gate.wait()
        return x

    async def main() -> int:
        gate = asyncio.Event()
        call = asyncio.ensure_future(fetch(1, tracker, gate))
        await asyncio.sleep(0.01)
        call.cancel()
        await asyncio.sleep(0.01)
        gate.set()
        return await fetch(1, tracker, gate)

    assert run(main()) == 1
    assert tracker.calls == 2
    assert cached.stats().misses == 1  # only the second computation was stored


def test_a_caller_in_another_loop_keeps_the_computation_alive(cached: CacheStore) -> None:
    """The first loop's caller is cancelled; the second loop still waits, so it goes on."""
    tracker = Tracker()
    started, release = threading.Event(), threading.Event()

    @cache_data
    async def fetch(x: int, _tracker: Tracker) -> int:
        _tracker.called()
        started.set()
        while not release.is_set():
            await asyncio.sleep(0.005)
        return x * 10

    waiting = threading.Event()
    results: list[Any] = []

    async def owner() -> None:
        call = asyncio.ensure_future(fetch(1, tracker))
        assert await asyncio.to_thread(waiting.wait, 5)
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        release.set()
        while not results:  # keep this loop (where the computation runs) alive
            await asyncio.sleep(0.005)

    async def other() -> int:
        assert await asyncio.to_thread(started.wait, 5)
        call = asyncio.ensure_future(fetch(1, tracker))
        await asyncio.sleep(0.05)
        waiting.set()
        return await call

    thread = threading.Thread(target=lambda: run(owner()))
    thread.start()
    results.append(run(other()))
    thread.join(10)
    assert results == [10]
    assert tracker.calls == 1


def test_a_computation_whose_loop_ends_is_started_again_for_the_other_loop(cached: CacheStore) -> None:
    tracker = Tracker()
    started = threading.Event()
    waiting = threading.Event()

    @cache_data
    async def fetch(x: int, _tracker: Tracker) -> int:
        attempt = _tracker.called()
        started.set()
        if attempt == 1:
            await asyncio.sleep(10)  # its loop ends first: asyncio.run cancels it
        return x

    async def owner() -> None:
        left = asyncio.ensure_future(fetch(1, tracker))  # left running when owner() returns
        assert await asyncio.to_thread(waiting.wait, 5)
        assert not left.done()

    async def other() -> int:
        assert await asyncio.to_thread(started.wait, 5)
        call = asyncio.ensure_future(fetch(1, tracker))
        await asyncio.sleep(0.05)
        waiting.set()
        return await call

    thread = threading.Thread(target=lambda: run(owner()))
    thread.start()
    assert run(other()) == 1
    thread.join(10)
    assert tracker.calls == 2
    assert len(cached.entries()) == 1


@pytest.mark.parametrize("how", ["function", "decorator", "one key"])
def test_a_clear_during_an_async_computation_keeps_its_result_out_of_the_cache(
    cached: CacheStore, how: str
) -> None:
    tracker = Tracker()

    @cache_data
    async def fetch(x: int, _tracker: Tracker, _gate: asyncio.Event) -> dict[str, int]:
        _tracker.called()
        await _gate.wait()
        return {"x": x}

    def clear() -> None:
        if how == "function":
            fetch.clear()
        elif how == "decorator":
            cache_data.clear()
        else:
            fetch.clear(1, tracker, asyncio.Event())

    async def main() -> dict[str, int]:
        gate = asyncio.Event()
        call = asyncio.ensure_future(fetch(1, tracker, gate))
        await asyncio.sleep(0.01)
        clear()
        gate.set()
        return await call

    assert run(main()) == {"x": 1}  # the caller gets its result...
    assert cached.entries() == []  # ...the cache does not
    opened = asyncio.Event()
    opened.set()
    assert run(fetch(1, tracker, opened)) == {"x": 1}
    assert tracker.calls == 2
    assert len(cached.entries()) == 1


def test_background_refresh_is_refused_for_async_functions() -> None:
    async def fetch() -> int:
        return 1

    with pytest.raises(ValueError, match=r"refresh_mode='background'.*async def.*refresh_mode='foreground'"):
        cache_data(ttl=60, refresh_mode="background")(fetch)


def test_what_an_async_function_reads_while_awaited_is_part_of_its_entry(
    cached: CacheStore, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file and an environment variable read by the coroutine itself (not arguments): a
    change to either computes it again, equal ones hit; another task's reads in the same
    loop are not taken for its own."""
    import os

    source = tmp_path / "prices.csv"
    source.write_text("1,2,3")
    elsewhere = tmp_path / "elsewhere.txt"
    elsewhere.write_text("not read by load()")
    monkeypatch.setenv("IPYCACHE_TEST_REGION", "eu")
    calls: list[str] = []

    @cache_data
    async def load(_calls: list[str]) -> str:  # not part of the key: it changes with every call
        await asyncio.sleep(0)  # the other task runs in between
        text = source.read_text()
        await asyncio.sleep(0)
        _calls.append(text)
        return f"{text} @ {os.environ['IPYCACHE_TEST_REGION']}"

    async def other() -> None:
        for _ in range(3):
            elsewhere.read_text()
            await asyncio.sleep(0)

    async def both() -> str:
        value, _ = await asyncio.gather(load(calls), other())
        return value

    assert run(both()) == "1,2,3 @ eu"
    assert run(load(calls)) == "1,2,3 @ eu" and len(calls) == 1  # a hit
    entry = cached.entries()[0]
    read = {d.get("path") for d in entry.dependencies if d.get("path")}
    assert str(source) in read and str(elsewhere) not in read
    source.write_text("4,5,6")
    assert run(load(calls)) == "4,5,6 @ eu" and len(calls) == 2  # the file changed
    monkeypatch.setenv("IPYCACHE_TEST_REGION", "us")
    assert run(load(calls)) == "4,5,6 @ us" and len(calls) == 3  # the variable changed
    assert run(load(calls)) == "4,5,6 @ us" and len(calls) == 3


def test_every_awaiter_of_one_computation_depends_on_what_it_read(cached: CacheStore, tmp_path: Any) -> None:
    """Two cached coroutines await one computation of a third that reads a file: both
    entries depend on the file, not only the one whose task started the computation."""
    source = tmp_path / "f.txt"
    source.write_text("1")

    @cache_data
    async def inner() -> str:
        await asyncio.sleep(0.01)
        return source.read_text()

    @cache_data
    async def outer_a() -> str:
        return "A" + await inner()

    @cache_data
    async def outer_b() -> str:
        return "B" + await inner()

    async def both() -> list[str]:
        return list(await asyncio.gather(outer_a(), outer_b()))

    assert run(both()) == ["A1", "B1"]
    assert run(both()) == ["A1", "B1"]
    source.write_text("2")
    assert run(both()) == ["A2", "B2"]


def test_a_persisted_async_result_is_found_again_by_a_new_kernel_without_running_the_body(
    tmp_path: Any, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    from .test_decorators import new_kernel

    calls: list[int] = []
    source = "@cache_data(persist='disk')\nasync def load(n, _calls):\n    _calls.append(n)\n"
    source += "    return list(range(n))"

    def kernel() -> Any:
        return new_kernel(tmp_path / "cache", clock, monkeypatch, source)

    store, load = kernel()
    assert run(load(3, calls)) == [0, 1, 2] and calls == [3]
    store, load = kernel()
    assert run(load(3, calls)) == [0, 1, 2] and calls == [3]  # from disk: the body did not run
    assert store.stats().hits == 1 and store.stats().misses == 0
    assert run(load(4, calls)) == [0, 1, 2, 3] and calls == [3, 4]  # not on disk: computed
    assert store.stats().misses == 1
