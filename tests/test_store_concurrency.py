"""Many threads on one store: no exception, no deadlock, single flight, invariants at the end.

Every thread is joined with a timeout; a thread still alive fails the test (with every
thread's stack, so a deadlock shows where it is stuck) instead of hanging the suite.
Time is a fake clock that a ticker thread moves forward, so entries expire while the
workers run without the test sleeping for real TTLs.
"""

from __future__ import annotations

import faulthandler
import itertools
import random
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from ipycache_ext import CacheStore
from ipycache_ext._flight import Flight
from ipycache_ext._serialize import serialize

from .conftest import lock_is_free

HAMMER_SECONDS = 2.0
JOIN_TIMEOUT = 20.0
DATA_KEYS = [f"d{i}" for i in range(6)]
RESOURCE_KEYS = [f"r{i}" for i in range(6)]
MAX_SIZE = 400


class TickingClock:
    """A fake clock, moved by a ticker thread (reads and writes of a float are atomic)."""

    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


class Boom(RuntimeError):
    """A computation's failure, injected at random."""


@dataclass(eq=False)
class Resource:
    key: str
    serial: int


def _join_all(threads: list[threading.Thread], timeout: float = JOIN_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    alive = [t.name for t in threads if t.is_alive()]
    if alive:
        faulthandler.dump_traceback(file=sys.stderr, all_threads=True)
        pytest.fail(f"threads still running after {timeout} s (deadlock?): {alive}")


class Harness:
    """The computations, release hooks and bookkeeping the workers share."""

    def __init__(self, store: CacheStore) -> None:
        self.store = store
        self.guard = threading.Lock()
        self.serials = itertools.count()
        self.computing: Counter[str] = Counter()  # computations of a key running right now
        self.generation: Counter[str] = Counter()  # completed computations of a key
        self.per_lifetime: Counter[tuple[str, int]] = Counter()  # computations per (key, lifetime)
        self.created: set[int] = set()  # resources that were created (and so stored)
        self.released: Counter[int] = Counter()
        self.errors: list[str] = []
        self.ops: Counter[str] = Counter()

    def fail(self, message: str) -> None:
        with self.guard:
            self.errors.append(message)

    def create(self, key: str, rng: random.Random, fail_rate: float) -> Callable[[], tuple[Any, int | None]]:
        def compute() -> tuple[Any, int | None]:
            with self.guard:
                if self.computing[key]:
                    self.errors.append(f"{key}: two computations at once (single flight broken)")
                self.computing[key] += 1
                lifetime = self.generation[key]
                self.per_lifetime[key, lifetime] += 1
                serial = next(self.serials)
            try:
                with self.store._lock:
                    if self.store._table.get(key) is not None:
                        self.fail(f"{key}: computed while a live entry was stored")
                time.sleep(rng.choice((0, 0, 0.0002, 0.001)))  # widen the race windows
                if rng.random() < fail_rate:
                    raise Boom(f"{key} failed")
                if key.startswith("d"):
                    size = rng.randrange(0, MAX_SIZE)
                    return serialize({"key": key, "serial": serial}), size
                with self.guard:
                    self.created.add(serial)
                return Resource(key, serial), None
            finally:
                with self.guard:
                    self.computing[key] -= 1
                    self.generation[key] += 1

        return compute

    def validator(self, rng: random.Random) -> Callable[[Any], bool]:
        def validate(value: Any) -> bool:
            # (a concurrent clear may release it while validate runs, as after any hit; but
            # validate must never get the placeholder left behind by a release)
            if not isinstance(value, Resource):
                self.fail(f"validate got {value!r}, not a stored resource")
            return rng.random() < 0.9

        return validate

    def release(self, value: Any) -> None:
        if not isinstance(value, Resource):
            self.fail(f"on_release got {value!r}")
            return
        if self.store._lock._is_owned():  # type: ignore[attr-defined]
            self.fail("on_release ran while holding the store's lock")
        with self.store._lock:
            held = self.store._table.get(value.key)
            if held is not None and held.value is value:
                self.fail(f"{value.key}#{value.serial} released while still stored")
        with self.guard:
            self.released[value.serial] += 1

    def check_lookup(self, key: str, lookup: Any, started: float) -> None:
        value = lookup.value
        if key.startswith("d"):
            loaded = value.load()
            if loaded["key"] != key:
                self.fail(f"{key}: served the value of {loaded['key']}")
        elif not isinstance(value, Resource) or value.key != key:
            self.fail(f"{key}: served {value!r}")
        if lookup.hit:
            entry = lookup.entry
            if entry is None or entry.key != key:
                self.fail(f"{key}: a hit without its entry")
            elif entry.expires is not None and entry.expires <= started:
                self.fail(f"{key}: served an entry that had expired before the call ({entry.expires})")


@pytest.fixture
def ticking() -> Iterator[TickingClock]:
    clock = TickingClock()
    stop = threading.Event()

    def tick() -> None:
        while not stop.wait(0.0005):
            clock.now += 0.01

    ticker = threading.Thread(target=tick, name="ticker", daemon=True)
    ticker.start()
    yield clock
    stop.set()
    _join_all([ticker])


@pytest.mark.filterwarnings("error")  # a warning in any thread is a failure (the workers record it)
def test_hammer_hits_misses_clears_and_expiries(ticking: TickingClock) -> None:
    store = CacheStore(timer=ticking, memory_budget=2_000, max_entries=20)
    harness = Harness(store)
    stop_at = time.monotonic() + HAMMER_SECONDS

    def worker(seed: int) -> None:
        rng = random.Random(seed)
        try:
            while time.monotonic() < stop_at:
                op = rng.random()
                if op < 0.80:
                    key = rng.choice(DATA_KEYS + RESOURCE_KEYS)
                    kind = "data" if key.startswith("d") else "resource"
                    started = ticking()
                    try:
                        lookup = store.get_or_create(
                            key,
                            harness.create(key, rng, fail_rate=0.05),
                            kind=kind,
                            label=key,
                            group=rng.choice((None, "g0", "g1")),
                            ttl=rng.choice((None, 0.05, 0.2, 1.0)),
                            max_entries=rng.choice((None, 2, 4)),
                            on_release=harness.release,
                            validate=harness.validator(rng) if kind == "resource" else None,
                        )
                    except Boom:
                        harness.ops["failed"] += 1
                        continue
                    harness.check_lookup(key, lookup, started)
                    harness.ops["hit" if lookup.hit else "miss"] += 1
                elif op < 0.84:
                    store.clear(rng.choice((None, "data", "resource")))
                    harness.ops["clear"] += 1
                elif op < 0.90:
                    store.delete(rng.choice(DATA_KEYS + RESOURCE_KEYS))
                    harness.ops["delete"] += 1
                elif op < 0.93:
                    store.memory_budget = rng.choice((MAX_SIZE, 1_000, 2_000))
                    harness.ops["budget"] += 1
                elif op < 0.96:
                    stats = store.stats()
                    if stats.data_bytes > stats.memory_budget:
                        harness.fail(f"over budget: {stats}")
                    harness.ops["stats"] += 1
                else:
                    store.purge_expired()
                    store.entries()
                    harness.ops["purge"] += 1
        except BaseException as exc:  # anything else is a failure of the store
            harness.fail(f"worker {seed}: {type(exc).__name__}: {exc}")

    threads = [threading.Thread(target=worker, args=(seed,), name=f"worker-{seed}") for seed in range(8)]
    for thread in threads:
        thread.start()
    _join_all(threads, HAMMER_SECONDS + JOIN_TIMEOUT)

    assert not harness.errors, harness.errors[:10]
    ops = harness.ops
    assert ops["hit"] > 100 and ops["miss"] > 100 and ops["failed"] > 0 and ops["clear"] > 0, ops
    # each lifetime of each key was computed exactly once, and never two at once
    assert set(harness.per_lifetime.values()) == {1}
    assert not +harness.computing
    # the books balance once the dust settles
    entries = store.entries()
    stats = store.stats()
    assert stats.data_bytes == sum(e.size or 0 for e in entries if e.kind == "data")
    assert stats.data_bytes <= stats.memory_budget
    assert stats.entries == len(entries) <= 20
    assert not store._flights and lock_is_free(store)
    assert all(count == 1 for count in harness.released.values()), "a resource was released twice"
    store.close()
    assert dict(harness.released) == dict.fromkeys(harness.created, 1), "a resource was never released"
    assert store.entries() == []


class Waiters:
    """Counts the callers waiting on a flight (``Flight.outcome``), to end a computation only
    once all of them wait: a caller arriving after a failed computation computes again."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.count = 0
        self._changed = threading.Condition()
        outcome = Flight.outcome

        def counted(flight: Flight) -> Any:
            with self._changed:
                self.count += 1
                self._changed.notify_all()
            return outcome(flight)

        monkeypatch.setattr(Flight, "outcome", counted)

    def wait_for(self, n: int, timeout: float = 10.0) -> bool:
        with self._changed:
            return self._changed.wait_for(lambda: self.count >= n, timeout)


@pytest.mark.parametrize("fail", [None, Boom, KeyboardInterrupt])
def test_one_key_many_callers_single_flight(
    fail: type[BaseException] | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Callers of one key wait for one computation and get its value, or its error."""
    store = CacheStore(memory_budget=10**6)
    calls: list[int] = []
    gate = threading.Barrier(16)
    outcomes: list[Any] = []
    guard = threading.Lock()
    waiters = Waiters(monkeypatch)
    all_waiting: list[bool] = []

    def compute() -> tuple[Any, int | None]:
        calls.append(1)
        all_waiting.append(waiters.wait_for(15))  # every other caller waits on this computation
        if fail is not None:
            raise fail("the one computation failed")
        return Resource("k", 0), None

    def caller() -> None:
        gate.wait(5)
        try:
            outcome: Any = store.get_or_create("k", compute, kind="resource", label="k").value
        except BaseException as exc:
            outcome = exc
        with guard:
            outcomes.append(outcome)

    threads = [threading.Thread(target=caller) for _ in range(16)]
    for thread in threads:
        thread.start()
    _join_all(threads)

    assert all_waiting == [True], f"only {waiters.count} of 15 callers waited on the computation"
    assert len(calls) == 1 and len(outcomes) == 16
    if fail is None:
        assert all(o is outcomes[0] for o in outcomes) and isinstance(outcomes[0], Resource)
        assert store.stats().hits == 15 and store.stats().misses == 1
    else:
        assert all(isinstance(o, fail) for o in outcomes)
        assert "k" not in store and not store._flights and lock_is_free(store)
        # nothing was left behind: the next caller computes again
        fail = None
        assert store.get_or_create("k", compute, kind="resource", label="k").hit is False
        assert len(calls) == 2
    store.close()


def test_clear_and_close_while_computing() -> None:
    """Clearing during a computation doesn't lose the resource; closing releases it once."""
    store = CacheStore(memory_budget=10**6)
    released: list[Any] = []
    started, finish = threading.Event(), threading.Event()

    def compute() -> tuple[Any, int | None]:
        started.set()
        finish.wait(5)
        return Resource("k", 1), None

    result: list[Any] = []
    thread = threading.Thread(
        target=lambda: result.append(
            store.get_or_create("k", compute, kind="resource", label="k", on_release=released.append)
        )
    )
    thread.start()
    assert started.wait(5)
    assert store.clear() == 0  # nothing stored yet, and clear doesn't wait for the computation
    finish.set()
    _join_all([thread])
    again = store.get_or_create("k", compute, kind="resource", label="k")
    assert again.hit and again.value is result[0].value
    assert released == []
    store.close()
    assert released == [result[0].value]


def test_expiry_thread_releases_on_time_and_stops_on_close() -> None:
    """On the real clock the reaper drops expired resources; close stops it (no thread left)."""
    store = CacheStore(memory_budget=10**6)
    store.start_expiry_thread()
    released = threading.Event()
    store.get_or_create(
        "k",
        lambda: (Resource("k", 1), None),
        kind="resource",
        label="k",
        ttl=0.05,
        on_release=lambda value: released.set(),
    )
    assert released.wait(5), "the expiry thread did not release an expired resource"
    assert store.removal_reason("k") == "expired"
    assert store._expiry is not None
    reaper = store._expiry.thread
    assert reaper.is_alive()
    store.close()
    _join_all([reaper], 5)


class LeasingTier:
    """A thread-safe tier in a dict whose claims are exclusive leases, like the team tier's."""

    def __init__(self) -> None:
        self.guard = threading.Lock()
        self.saved: dict[str, tuple[Any, Any]] = {}
        self.leases: dict[str, threading.Lock] = {}
        self.held: Counter[str] = Counter()
        self.errors: list[str] = []

    def load(self, key: str, where: str) -> Any:
        from ipycache_ext._store import Restored

        with self.guard:
            found = self.saved.get(key)
        if found is None:
            return None
        value, entry = found
        return Restored(value, value.nbytes, entry.created, entry.expires, entry.compute_seconds)

    def save(self, key: str, value: Any, entry: Any, where: str) -> str:
        with self.guard:
            if not self.held[key]:
                self.errors.append(f"{key}: saved without holding its lease")
            self.saved[key] = (value, entry)
        return where

    def claim(self, key: str, where: str) -> Any:
        import contextlib

        @contextlib.contextmanager
        def lease() -> Iterator[Any]:
            with self.guard:
                lock = self.leases.setdefault(key, threading.Lock())
            with lock:  # another kernel's computation of the key: wait for it, then look again
                with self.guard:
                    self.held[key] += 1
                try:
                    yield self.load(key, where)
                finally:
                    with self.guard:
                        self.held[key] -= 1

        return lease()

    def delete(self, key: str, *, expired: bool = False) -> None:
        with self.guard:
            self.saved.pop(key, None)

    def clear(self) -> int:
        with self.guard:
            count = len(self.saved)
            self.saved.clear()
        return count

    def usage(self) -> tuple[int, int]:
        with self.guard:
            return sum(v.nbytes for v, _ in self.saved.values()), 10**9


@pytest.mark.filterwarnings("error")
def test_two_kernels_on_one_tier_compute_each_key_once(ticking: TickingClock) -> None:
    """Two stores (two kernels) share a leasing tier: each key is computed once between them."""
    tier = LeasingTier()
    kernels = [CacheStore(timer=ticking, memory_budget=10**6) for _ in range(2)]
    for kernel in kernels:
        kernel.persistence = tier  # type: ignore[assignment]
    computed: Counter[str] = Counter()
    guard = threading.Lock()
    errors: list[str] = []
    barrier = threading.Barrier(8)

    def worker(seed: int) -> None:
        rng = random.Random(seed)
        store = kernels[seed % 2]
        try:
            barrier.wait(5)
            for _ in range(200):
                key = rng.choice(DATA_KEYS)

                def compute(key: str = key) -> tuple[Any, int]:
                    with guard:
                        computed[key] += 1
                    time.sleep(rng.choice((0, 0.001)))
                    value = serialize({"key": key})
                    return value, value.nbytes

                lookup = store.get_or_create(key, compute, kind="data", label=key, persist="team")
                if lookup.value.load() != {"key": key}:
                    errors.append(f"{key}: served {lookup.value.load()}")
        except BaseException as exc:
            errors.append(f"worker {seed}: {type(exc).__name__}: {exc}")

    threads = [threading.Thread(target=worker, args=(seed,)) for seed in range(8)]
    for thread in threads:
        thread.start()
    _join_all(threads)
    assert not errors and not tier.errors, (errors + tier.errors)[:5]
    assert dict(computed) == dict.fromkeys(DATA_KEYS, 1)  # once, by one kernel or the other
    assert not +tier.held and all(not k._flights and lock_is_free(k) for k in kernels)
    for kernel in kernels:
        assert {e.key for e in kernel.entries()} <= set(DATA_KEYS)
        kernel.close()
