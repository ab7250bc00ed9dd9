"""The store's side of the persistent tiers: the protocol, the guard, claims, real disk."""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ipycache_ext._serialize import SerializedValue, serialize
from ipycache_ext._store import CacheStore, Cleared, EntryInfo, Restored, Where

from .conftest import FakeClock

DEPS = ({"kind": "file", "path": "data.csv", "size": 12, "mtime_ns": 5},)


class MemoryTier:
    """A tier kept in a dict, logging every call (the protocol, not a real backend)."""

    def __init__(self) -> None:
        self.saved: dict[str, tuple[SerializedValue, EntryInfo, Where]] = {}
        self.calls: list[str] = []
        self.claim_yields: Restored | None = None
        self.claimed = 0  # claims held now

    def load(self, key: str, where: Where) -> Restored | None:
        self.calls.append(f"load {where}")
        found = self.saved.get(key)
        if found is None:
            return None
        value, entry, saved_where = found
        return Restored(
            value,
            value.nbytes,
            entry.created,
            entry.expires,
            entry.compute_seconds,
            dependencies=entry.dependencies,
            computed_by="alice@host",
            where=saved_where,
        )

    def save(self, key: str, value: Any, entry: EntryInfo, where: Where) -> Where:
        self.calls.append(f"save {where} claimed={self.claimed}")
        self.saved[key] = (value, entry, where)
        return where

    @contextlib.contextmanager
    def claim(self, key: str, where: Where) -> Iterator[Restored | None]:
        self.calls.append(f"claim {where}")
        self.claimed += 1
        try:
            yield self.claim_yields
        finally:
            self.claimed -= 1
            self.calls.append("release")

    def delete(self, key: str, *, expired: bool = False) -> None:
        self.calls.append("delete")
        self.saved.pop(key, None)

    def clear(self) -> int:
        count = len(self.saved)
        self.saved.clear()
        return count

    def usage(self) -> tuple[int, int]:
        return sum(v.nbytes for v, _, _ in self.saved.values()), 1000


class BrokenTier:
    """Every call fails, as a full disk or a server that went away would."""

    def load(self, key: str, where: Where) -> Restored | None:
        raise OSError("disk on fire")

    def save(self, key: str, value: Any, entry: EntryInfo, where: Where) -> Where:
        raise OSError("disk on fire")

    def claim(self, key: str, where: Where) -> contextlib.AbstractContextManager[Restored | None]:
        raise ConnectionError("team store down")

    def delete(self, key: str, *, expired: bool = False) -> None:
        raise OSError("disk on fire")

    def clear(self) -> int:
        raise OSError("disk on fire")

    def usage(self) -> tuple[int, int]:
        raise OSError("disk on fire")


def put(store: CacheStore, key: str, value: Any = 1, **options: Any) -> Any:
    stored = serialize(value)
    options.setdefault("kind", "data")
    options.setdefault("label", key)
    return store.get_or_create(key, lambda: (stored, stored.nbytes), **options)


def test_persist_true_means_disk_and_team_is_passed_through(store: CacheStore) -> None:
    tier = MemoryTier()
    store.persistence = tier
    lookup = put(store, "a", persist=True)
    assert lookup.entry.persisted and not lookup.entry.shared
    put(store, "b", persist="team")
    assert tier.calls == [
        "load disk",
        "claim disk",
        "save disk claimed=1",  # written while the claim (a team lease) is held
        "release",
        "load team",
        "claim team",
        "save team claimed=1",
        "release",
    ]
    assert store.get("b").shared and store.get("b").persisted  # type: ignore[union-attr]
    with pytest.raises(ValueError, match="persist must be"):
        put(store, "c", persist="cloud")
    with pytest.raises(ValueError, match="only data entries"):
        store.get_or_create("r", lambda: (object(), None), kind="resource", label="r", persist="team")


def test_dependencies_are_kept_saved_and_restored(store: CacheStore) -> None:
    tier = MemoryTier()
    store.persistence = tier
    ran: list[str] = []

    def create() -> tuple[Any, int]:
        ran.append("create")
        value = serialize(41)
        return value, value.nbytes

    def dependencies() -> tuple[dict[str, Any], ...]:
        assert ran == ["create"], "dependencies are asked for after create() ran"
        return DEPS  # type: ignore[return-value]

    first = store.get_or_create("k", create, kind="data", label="k", persist=True, dependencies=dependencies)
    assert first.entry.dependencies == DEPS and first.entry.computed_by is None
    assert tier.saved["k"][1].dependencies == DEPS  # handed to the tier in the entry

    kernel2 = CacheStore(timer=store.now, memory_budget=10**6)  # a restart: same tier, new memory
    kernel2.persistence = tier
    again = kernel2.get_or_create("k", create, kind="data", label="k", persist=True, dependencies=())
    assert again.hit and ran == ["create"]
    assert again.entry.dependencies == DEPS and again.entry.computed_by == "alice@host"
    assert kernel2.get("k").dependencies == DEPS  # type: ignore[union-attr]
    kernel2.close()


def test_an_entry_another_kernel_made_while_we_waited_is_a_hit(store: CacheStore, clock: FakeClock) -> None:
    tier = MemoryTier()
    value = serialize("theirs")
    tier.claim_yields = Restored(value, value.nbytes, clock(), None, 2.5, DEPS, "bob@host", "team")
    store.persistence = tier

    def create() -> tuple[Any, int]:
        raise AssertionError("computed although the claim found the entry")

    lookup = store.get_or_create("k", create, kind="data", label="k", persist="team")
    assert lookup.hit and lookup.value is value
    assert lookup.entry.shared and lookup.entry.computed_by == "bob@host"
    assert store.stats().hits == 1 and store.stats().time_saved == 2.5
    assert "save team claimed=1" not in tier.calls  # found, not written again


def test_a_failing_computation_releases_its_claim(store: CacheStore) -> None:
    tier = MemoryTier()
    store.persistence = tier

    def create() -> tuple[Any, int]:
        raise ZeroDivisionError("the user's own error")

    with pytest.raises(ZeroDivisionError, match="own error"):
        store.get_or_create("k", create, kind="data", label="k", persist="team")
    assert tier.calls == ["load team", "claim team", "release"] and tier.claimed == 0
    assert not store._flights and store.entries() == []


def test_a_broken_tier_costs_one_warning_per_failure_and_nothing_else(store: CacheStore) -> None:
    store.persistence = BrokenTier()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        first = put(store, "a", persist=True)  # load, claim and save fail: computed, cached in memory
        second = put(store, "b", persist="team")  # the same failures again: no new warning
        assert first.hit is False and first.entry is not None and not first.entry.persisted
        assert second.entry is not None and store.get("b") is not None
        assert put(store, "a", persist=True).hit  # a memory hit never asks the tier
        stats = store.stats()  # usage fails
        assert (stats.entries, stats.disk_bytes, stats.disk_budget) == (2, 0, 0)
        assert sorted(e.key for e in store.entries()) == ["a", "b"]
        assert store.delete("a")
        store.get_or_create("p", lambda: (serialize(1), 10), kind="data", label="p")
        assert store.clear() == 2  # clear fails on the tier: the memory entries go all the same
        assert store.entries() == []
    texts = [str(w.message) for w in caught]
    assert all(issubclass(w.category, RuntimeWarning) for w in caught)
    kinds = sorted(t.split(" could not ")[1].split(" ")[0] for t in texts)
    # (a failed write also tries to delete an older file of the key: that fails too)
    assert kinds == ["claim", "clear", "delete", "read", "usage", "write"], texts
    assert all("disk on fire" in t or "team store down" in t for t in texts)
    assert not any("CacheMagics" in t or "%%" in t for t in texts)  # no front end in core messages


def test_a_broken_tier_never_breaks_deleting_a_persisted_entry(store: CacheStore) -> None:
    tier = MemoryTier()
    store.persistence = tier
    put(store, "a", persist=True)
    store.persistence = BrokenTier()  # the disk goes away while the entry is loaded
    with pytest.warns(RuntimeWarning, match="could not delete the persisted entry"):
        assert store.delete("a")
    assert store.get("a") is None


def test_an_expired_restored_entry_is_a_miss_and_is_deleted(store: CacheStore, clock: FakeClock) -> None:
    tier = MemoryTier()
    store.persistence = tier
    put(store, "k", persist=True, ttl=10)
    store.close()
    clock.advance(11)
    kernel2 = CacheStore(timer=clock, memory_budget=10**6)
    kernel2.persistence = tier
    assert put(kernel2, "k", persist=True).hit is False
    assert "delete" in tier.calls
    kernel2.close()


# --------------------------------------------------------------------------- the real disk tier
@pytest.fixture
def disk(tmp_path: Path, clock: FakeClock) -> Any:
    from ipycache_ext._persist import DiskCache, StorePersistence

    def open_disk() -> Any:
        return StorePersistence(DiskCache.in_directory(tmp_path / "cache", timer=clock))

    return open_disk


def test_a_result_larger_than_the_memory_budget_is_still_written_to_disk(disk: Any, clock: FakeClock) -> None:
    big = np.arange(200_000)  # 1.6 MB, the budget is 1 MB
    kernel1 = CacheStore(timer=clock, memory_budget=1_000_000)
    kernel1.persistence = disk()
    with pytest.warns(RuntimeWarning, match=r"larger than the whole memory budget.*written to disk"):
        first = put(kernel1, "big", big, persist=True)
    assert first.entry is None and not first.hit and kernel1.entries() == []
    kernel1.close()

    kernel2 = CacheStore(timer=clock, memory_budget=1_000_000)
    kernel2.persistence = disk()

    def create() -> tuple[Any, int]:
        raise AssertionError("computed again although it is on disk")

    with pytest.warns(RuntimeWarning, match=r"larger than the whole memory budget.*read from disk"):
        again = kernel2.get_or_create("big", create, kind="data", label="big", persist=True)
    assert again.hit and again.entry is None
    assert np.array_equal(again.value.load(), big)
    kernel2.close()


def test_dependencies_survive_the_disk(disk: Any, clock: FakeClock) -> None:
    kernel1 = CacheStore(timer=clock, memory_budget=10**6)
    kernel1.persistence = disk()
    put(kernel1, "k", 7, persist=True, dependencies=DEPS)
    kernel1.close()
    kernel2 = CacheStore(timer=clock, memory_budget=10**6)
    kernel2.persistence = disk()
    again = put(kernel2, "k", 8, persist=True)
    assert again.hit and again.value.load() == 7
    assert [dict(d) for d in again.entry.dependencies] == [dict(d) for d in DEPS]
    kernel2.close()


def test_clear_in_a_fresh_kernel_counts_the_files_it_removes(disk: Any, clock: FakeClock) -> None:
    kernel1 = CacheStore(timer=clock, memory_budget=10**6)
    kernel1.persistence = disk()
    for key in ("a", "b", "c"):
        put(kernel1, key, persist=True)
    kernel1.close()

    kernel2 = CacheStore(timer=clock, memory_budget=10**6)
    kernel2.persistence = disk()
    assert put(kernel2, "a", persist=True).hit  # loaded here: one in memory, two only on disk
    put(kernel2, "m")  # memory only
    cleared = kernel2.clear()
    assert isinstance(cleared, Cleared)
    assert (cleared, cleared.in_memory, cleared.in_tiers) == (4, 2, 2)
    assert kernel2.clear() == 0
    kernel3 = CacheStore(timer=clock, memory_budget=10**6)
    kernel3.persistence = disk()
    assert put(kernel3, "b", persist=True).hit is False  # really gone from disk
    kernel2.close()
    kernel3.close()
