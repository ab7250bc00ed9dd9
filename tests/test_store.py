"""The store's contract, by example (properties and concurrency: test_store_properties/_concurrency)."""

from __future__ import annotations

import gc
import threading
import weakref
from typing import Any

import pytest

from ipycache_ext import CacheStore, StoreEvent
from ipycache_ext._flight import Flight

from .conftest import FakeClock


def put(store: CacheStore, key: str, value: Any = None, *, size: int | None = 10, **options: Any) -> Any:
    options.setdefault("kind", "data")
    options.setdefault("label", key)
    return store.get_or_create(key, lambda: (value if value is not None else key, size), **options)


def test_hit_after_miss_and_stats(store: CacheStore) -> None:
    assert put(store, "k").hit is False
    lookup = put(store, "k")
    assert lookup.hit is True and lookup.value == "k"
    assert lookup.entry is not None and lookup.entry.hits == 1
    stats = store.stats()
    assert (stats.hits, stats.misses, stats.entries, stats.data_bytes) == (1, 1, 1, 10)


def test_expired_entries_are_never_served_and_are_freed(store: CacheStore, clock: FakeClock) -> None:
    class Big:
        pass

    value = Big()
    ref = weakref.ref(value)
    put(store, "k", value, ttl=5)
    del value
    clock.advance(4.9)
    assert put(store, "k").hit is True
    clock.advance(0.2)
    assert store.entries() == []
    gc.collect()
    assert ref() is None  # freed, not hidden
    assert store.removal_reason("k") == "expired"
    assert store.stats().expirations == 1


def test_group_max_entries_evicts_least_recently_used(store: CacheStore) -> None:
    for key in "abc":
        put(store, key, group="g", max_entries=2)
    assert sorted(e.key for e in store.entries()) == ["b", "c"]
    put(store, "b", group="g", max_entries=2)  # b is now most recent
    put(store, "d", group="g", max_entries=2)
    assert sorted(e.key for e in store.entries()) == ["b", "d"]
    assert store.removal_reason("c") == "evicted"


def test_memory_budget_evicts_data_lru_and_ignores_resources(store: CacheStore) -> None:
    store.memory_budget = 25
    put(store, "r", kind="resource", size=None)
    put(store, "a")
    put(store, "b")
    put(store, "a")  # touch a
    put(store, "c")
    assert sorted(e.key for e in store.entries()) == ["a", "c", "r"]
    assert store.stats().data_bytes == 20


def test_a_result_larger_than_the_budget_is_returned_but_not_kept(store: CacheStore) -> None:
    store.memory_budget = 5
    with pytest.warns(RuntimeWarning, match="larger than the whole memory budget"):
        lookup = put(store, "huge", size=6)
    assert lookup.value == "huge" and lookup.entry is None
    assert store.entries() == []


def test_release_hook_runs_once_on_every_removal_path(store: CacheStore, clock: FakeClock) -> None:
    released: list[str] = []

    def make(key: str, **options: Any) -> Any:
        return store.get_or_create(
            key, lambda: (key, None), kind="resource", label=key, on_release=released.append, **options
        )

    make("deleted")
    store.delete("deleted")
    make("cleared")
    store.clear()
    make("expired", ttl=1)
    clock.advance(2)
    store.purge_expired()
    make("evicted", group="g", max_entries=1)
    make("evicted-2", group="g", max_entries=1)
    make("invalid")
    make("invalid", validate=lambda v: False)
    make("replaced")
    make("replaced", refresh=True)
    assert released == ["deleted", "cleared", "expired", "evicted", "invalid", "replaced"]
    make("closed")
    store.close()  # the recomputed "invalid" and "replaced" go too, once each
    assert sorted(released[6:]) == ["closed", "evicted-2", "invalid", "replaced"]


def test_a_raising_release_hook_warns_and_does_not_skip_others(store: CacheStore) -> None:
    released: list[str] = []

    def bad(value: str) -> None:
        raise RuntimeError("hook broke")

    store.get_or_create("a", lambda: ("a", None), kind="resource", label="a", on_release=bad)
    store.get_or_create("b", lambda: ("b", None), kind="resource", label="b", on_release=released.append)
    with pytest.warns(RuntimeWarning, match="hook broke"):
        store.clear()
    assert released == ["b"] and store.entries() == []


def test_failures_store_nothing_and_waiters_get_the_error(
    store: CacheStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    waiting = 0
    changed = threading.Condition()
    outcome = Flight.outcome

    def counted(flight: Flight) -> Any:  # a caller waiting on the computation
        nonlocal waiting
        with changed:
            waiting += 1
            changed.notify_all()
        return outcome(flight)

    monkeypatch.setattr(Flight, "outcome", counted)
    all_waiting: list[bool] = []
    calls: list[int] = []

    def create() -> tuple[Any, int]:
        calls.append(1)
        with changed:  # fail only once the other three wait: a later caller would compute again
            all_waiting.append(changed.wait_for(lambda: waiting >= 3, 10))
        raise ValueError("boom")

    errors: list[BaseException] = []

    def call() -> None:
        try:
            store.get_or_create("k", create, kind="data", label="k")
        except ValueError as exc:
            errors.append(exc)

    threads = [threading.Thread(target=call) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert not any(t.is_alive() for t in threads)
    assert all_waiting == [True], f"only {waiting} of 3 callers waited on the computation"
    assert len(errors) == 4 and len(calls) == 1
    assert store.entries() == []
    assert put(store, "k").hit is False  # the next call computes again


def test_single_flight(store: CacheStore) -> None:
    calls: list[int] = []
    barrier = threading.Barrier(8)

    def create() -> tuple[Any, int]:
        calls.append(1)
        threading.Event().wait(0.2)
        return object(), None  # type: ignore[return-value]

    results: list[Any] = []

    def call() -> None:
        barrier.wait(5)
        results.append(store.get_or_create("k", create, kind="resource", label="k").value)

    threads = [threading.Thread(target=call) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert len(calls) == 1 and len(results) == 8 and len({id(r) for r in results}) == 1


def test_events_are_announced(store: CacheStore) -> None:
    events: list[StoreEvent] = []
    unsubscribe = store.subscribe(events.append)
    put(store, "k")
    put(store, "k")
    store.delete("k")
    unsubscribe()
    put(store, "other")
    assert [(e.action, e.key, e.reason) for e in events] == [
        ("added", "k", None),
        ("hit", "k", None),
        ("removed", "k", "deleted"),
    ]


def test_expiry_thread_drops_entries_on_real_time() -> None:
    store = CacheStore()
    removed = threading.Event()
    store.subscribe(lambda e: removed.set() if e.action == "removed" else None)
    store.start_expiry_thread()
    try:
        store.get_or_create("k", lambda: ("v", 1), kind="data", label="k", ttl=0.2)
        assert removed.wait(5)
        assert store.removal_reason("k") == "expired"
    finally:
        store.close()


def test_bad_settings_are_rejected(store: CacheStore) -> None:
    with pytest.raises(ValueError, match="memory_budget"):
        store.memory_budget = 0
    with pytest.raises(ValueError, match="max_entries"):
        store.max_entries = -1
    with pytest.raises(ValueError, match="kind"):
        store.clear("other")  # type: ignore[arg-type]


def test_a_snapshot_carries_every_field_of_its_entry_and_is_frozen() -> None:
    import dataclasses

    from ipycache_ext._entry import Entry, EntryInfo

    entry = Entry(
        key="k", kind="data", label="[1] x", names=("x",), group="g", value=1, size=10, created=1.0,
        expires=2.0, compute_seconds=0.5, on_release=None, miss_reason="first run", inputs={"a": "d"},
        hits=3, last_used=1.5, persisted=True, dependencies=({"kind": "file"},), computed_by="a@h",
        shared=True,
    )  # fmt: skip
    info = entry.snapshot()
    expected = EntryInfo(**{f.name: getattr(entry, f.name) for f in dataclasses.fields(EntryInfo)})
    assert info == expected
    assert all(hasattr(info, f.name) for f in dataclasses.fields(EntryInfo))
    with pytest.raises(dataclasses.FrozenInstanceError):
        info.hits = 4  # type: ignore[misc]


@pytest.mark.parametrize(
    ("options", "error", "words"),
    [
        ({"memory_budget": "1GB"}, TypeError, "memory_budget must be a positive whole number of bytes"),
        ({"memory_budget": 0}, ValueError, "memory_budget"),
        ({"max_entries": 0.5}, TypeError, "max_entries must be a positive whole number"),
        ({"max_entries": -3}, ValueError, "max_entries"),
    ],
)
def test_the_constructor_checks_its_limits_as_the_setters_do(
    options: dict[str, object], error: type[Exception], words: str
) -> None:
    with pytest.raises(error, match=words):
        CacheStore(**options)  # type: ignore[arg-type]
