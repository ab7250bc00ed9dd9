"""The store over the real disk tier, against a model: persisted puts, refreshes, deletes,
clears, expiry and restarts ("a new kernel": a new store on the same directory).

The model is two dicts: what this kernel's store holds, and what is on disk, each key
with its value and expiry. After every step the store's entries must be the model's
memory, and every hit must serve the value the model says (from memory, or found again
on disk after a restart); ``clear`` must count the memory entries and the files it
removed. A restart proves what persistence promises: nothing that was persisted and not
deleted, cleared or expired is lost, and nothing that was is found again.
"""

from __future__ import annotations

import tempfile
import warnings
from pathlib import Path

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from ipycache_ext._serialize import serialize
from ipycache_ext._store import CacheStore

from .conftest import FakeClock

KEYS = ("a1", "b2", "c3")
TTLS = (None, 1.0, 5.0)


class TierMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.directory = tempfile.TemporaryDirectory()
        self.clock = FakeClock()
        self.values = iter(range(10**9))
        self.memory: dict[str, tuple[int, float | None]] = {}
        self.disk: dict[str, tuple[int, float | None]] = {}
        self.store = self._kernel()

    def _kernel(self) -> CacheStore:
        from ipycache_ext._persist import DiskCache, StorePersistence

        store = CacheStore(timer=self.clock, memory_budget=10**9)
        store.persistence = StorePersistence(
            DiskCache.in_directory(Path(self.directory.name) / "cache", timer=self.clock)
        )
        return store

    def _expire(self) -> None:
        """Due entries leave memory (and their files), or are refused when found on disk."""
        now = self.clock()
        for key, (_, expires) in list(self.memory.items()):
            if expires is not None and now >= expires:
                del self.memory[key]
                self.disk.pop(key, None)

    def _disk_live(self, key: str) -> tuple[int, float | None] | None:
        found = self.disk.get(key)
        if found is not None and found[1] is not None and self.clock() >= found[1]:
            del self.disk[key]  # loading an expired file removes it
            return None
        return found

    # ------------------------------------------------------------ rules
    @rule(key=st.sampled_from(KEYS), ttl=st.sampled_from(TTLS), refresh=st.booleans())
    def put(self, key: str, ttl: float | None, refresh: bool) -> None:
        self._expire()
        value = next(self.values)
        stored = serialize(value)
        lookup = self.store.get_or_create(
            key,
            lambda: (stored, stored.nbytes),
            kind="data",
            label=key,
            ttl=ttl,
            persist=True,
            refresh=refresh,
        )
        expected = None if refresh else self.memory.get(key) or self._disk_live(key)
        if expected is not None:
            assert lookup.hit and lookup.value.load() == expected[0]
            self.memory[key] = expected
        else:
            assert not lookup.hit and lookup.value.load() == value
            now = self.clock()
            self.memory[key] = self.disk[key] = (value, None if ttl is None else now + ttl)
        assert lookup.entry is not None and lookup.entry.persisted

    @rule(key=st.sampled_from(KEYS))
    def delete(self, key: str, *, expired: bool = False) -> None:
        self._expire()
        held = key in self.memory
        assert self.store.delete(key) is held
        if held:
            del self.memory[key]
            self.disk.pop(key, None)  # a persisted entry deleted here is gone from disk too

    @rule()
    def clear(self) -> None:
        self._expire()
        cleared = self.store.clear()
        on_disk_only = set(self.disk) - set(self.memory)  # expired files count: they are removed
        counts = (cleared.in_memory, cleared.in_tiers)  # type: ignore[attr-defined]
        assert counts == (len(self.memory), len(on_disk_only))
        self.memory.clear()
        self.disk.clear()

    @rule(seconds=st.sampled_from((0.5, 2.0)))
    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)

    @rule()
    def restart(self) -> None:
        """The kernel stops (its entries stay on disk) and a new one starts on the same directory."""
        self.store.close()
        self.memory.clear()
        self.store = self._kernel()

    # ------------------------------------------------------------ invariants
    @invariant()
    def memory_is_the_model(self) -> None:
        self._expire()
        assert {e.key for e in self.store.entries()} == set(self.memory)

    def teardown(self) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.store.close()
        self.directory.cleanup()


TestStoreOverDisk = TierMachine.TestCase
TestStoreOverDisk.settings = settings(
    max_examples=40, stateful_step_count=25, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
