"""Costs that must not grow with the number of entries (the timings are in benchmarks/bench_store.py).

No timed tests here: these check the *shape* of the work instead. A miss under any limit,
a hit, a get, a delete and the expiry of due entries never walk the table (its walking
methods are made to fail), and the expiry heap agrees with a sorted model under random
pushes, moves, discards and pops.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ipycache_ext._expiry import ExpiryQueue
from ipycache_ext._store import CacheStore
from ipycache_ext._table import EntryTable

from .conftest import FakeClock

ENTRIES = 2_000


def _no_walks(monkeypatch: pytest.MonkeyPatch) -> None:
    def walk(*args: Any) -> Iterator[Any]:
        raise AssertionError("walked every entry")

    monkeypatch.setattr(EntryTable, "__iter__", walk)
    monkeypatch.setattr(EntryTable, "remove_where", walk)


def _put(store: CacheStore, key: str, **options: Any) -> Any:
    return store.get_or_create(key, lambda: (key, 100), kind="data", label=key, **options)


@pytest.mark.parametrize("limit", ["group", "store", "budget"])
def test_a_miss_under_a_limit_evicts_without_walking_the_entries(
    limit: str, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = CacheStore(timer=clock, memory_budget=ENTRIES * 100 if limit == "budget" else 10**12)
    options: dict[str, Any] = {"group": "g", "max_entries": ENTRIES} if limit == "group" else {}
    if limit == "store":
        store.max_entries = ENTRIES
    for i in range(ENTRIES):
        _put(store, f"k{i}", ttl=None if i % 2 else 1_000, **options)
    _put(store, "k0", **options)  # k0 is now the most recently used: k1 goes first
    _no_walks(monkeypatch)
    for i in range(5):
        assert _put(store, f"new{i}", **options).hit is False
        assert _put(store, f"new{i}", **options).hit is True
        assert store.get(f"new{i}") is not None
    assert [store.removal_reason(f"k{i}") for i in range(1, 6)] == ["evicted"] * 5
    assert store.get("k0") is not None and store.stats().entries == ENTRIES
    assert store.delete("new0") and store.stats().evictions == 5
    monkeypatch.undo()
    store.close()


def test_falling_due_costs_the_due_entries_only(clock: FakeClock, monkeypatch: pytest.MonkeyPatch) -> None:
    store = CacheStore(timer=clock, memory_budget=10**12)
    for i in range(ENTRIES):
        _put(store, f"k{i}", ttl=10 + i)  # one falls due each second
    _put(store, "hot")
    _no_walks(monkeypatch)
    for second in range(1, 6):
        clock.advance(1 if second > 1 else 10.5)
        assert _put(store, "hot").hit
        assert store.removal_reason(f"k{second - 1}") == "expired"
        assert store.get(f"k{second}") is not None
    assert store.stats().expirations == 5 and store.stats().entries == ENTRIES + 1 - 5
    monkeypatch.undo()
    store.close()


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["push", "discard", "pop"]),
            st.integers(0, 12),  # key
            st.integers(0, 20),  # expiry time / now
        ),
        max_size=80,
    )
)
def test_the_expiry_heap_agrees_with_a_sorted_model(steps: list[tuple[str, int, int]]) -> None:
    """Earliest first; ties in the order they were pushed."""
    queue, model = ExpiryQueue(), {}
    for order, (action, key_number, time) in enumerate(steps):
        key = f"k{key_number}"
        if action == "push":
            queue.push(key, float(time))
            model[key] = (float(time), order)
        elif action == "discard":
            queue.discard(key)
            model.pop(key, None)
        else:
            due = queue.pop_due(float(time), limit=3)
            expected = sorted((t, o, k) for k, (t, o) in model.items() if t <= time)[:3]
            assert due == [k for _, _, k in expected]
            for key_due in due:
                del model[key_due]
        assert len(queue) == len(model)
        assert queue.earliest() == (min(t for t, _ in model.values()) if model else None)


def test_the_expiry_heap_sweeps_stale_items() -> None:
    queue = ExpiryQueue()
    for i in range(5_000):
        queue.push(f"k{i}", float(i))
    for i in range(4_990):
        queue.discard(f"k{i}")
    assert len(queue) == 10 and len(queue._heap) < 2_000  # swept, not left to pile up
    assert queue.pop_due(10_000.0) == [f"k{i}" for i in range(4_990, 5_000)]
