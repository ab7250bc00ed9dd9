"""The store against a reference model: random operations, every invariant after every step.

A hypothesis ``RuleBasedStateMachine`` drives one ``CacheStore`` (on a fake clock) with puts
and gets of data and resource entries, refreshes, validate hooks, failing computations
(``ValueError`` and ``KeyboardInterrupt``), nested computations, deletes, clears, purges,
clock advances and budget / ``max_entries`` changes. ``StoreModel`` is the specification:
an ordered dict (least recently used first) and a few counters, written from the store's
documented contract, not from its code. After every step the store's state must equal
the model's exactly: the same keys in the same LRU order, the same sizes, expiries and hit
counts, the same counters and removal reasons, each resource released exactly once when
(and only when) it leaves, and every value that left really freed (its weakref dead).

The invariant check reads the store's private state under its lock on purpose: the public
readers purge expired entries, which would hide the lazy path ("an expired entry is never
served", tested by the ``get`` rules) behind the check itself. The public readers are
rules of their own and are compared with the model there.

Profiles (names are namespaced so that loading them can't change other test modules or
hypothesis' built-in ``ci`` profile): ``HYPOTHESIS_PROFILE=ci`` (the default, what ``make
test`` runs: 500 runs of up to 60 steps, about 29,000 operations) and
``HYPOTHESIS_PROFILE=long`` (5,000 runs of up to 150 steps, for a local soak).
"""

from __future__ import annotations

import gc
import itertools
import os
import threading
import warnings
import weakref
from collections import Counter, OrderedDict
from dataclasses import dataclass, field, replace
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from ipycache_ext import CacheStore
from ipycache_ext._serialize import SerializedValue, serialize

from .conftest import FakeClock

settings.register_profile(
    "ipycache-store-ci",
    max_examples=500,
    stateful_step_count=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "ipycache-store-long",
    max_examples=5_000,
    stateful_step_count=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "ci")
if PROFILE not in ("ci", "long"):
    PROFILE = "ci"  # another suite's profile name: keep this suite at its CI size

DATA_KEYS = ("d0", "d1", "d2", "d3", "d4")
RESOURCE_KEYS = ("r0", "r1", "r2", "r3")
GROUPS = (None, "g0", "g1")  # None: the key is its own group
BUDGETS = (40, 100, 150, 400, 10**9)
LIMITS = (None, 1, 2, 3)
TTLS = (None, 0.5, 1.0, 5.0, 30.0)
STEPS = (0.25, 0.5, 1.0, 4.0, 30.0)


class Boom(ValueError):
    """The error a failing computation raises."""


class Resource:
    """A resource object: identity matters, and it must be released exactly once."""

    def __init__(self, key: str, serial: int, hook_raises: bool) -> None:
        self.key = key
        self.serial = serial
        self.hook_raises = hook_raises


@dataclass
class ModelEntry:
    key: str
    kind: str
    group: str
    size: int | None
    created: float
    expires: float | None
    serial: int
    payload: Any  # data: the plain value a hit must load an equal copy of; resource: None
    ref: weakref.ref[Any]  # what the store holds (SerializedValue or Resource)
    hook: str | None  # resource release hook: None, "ok" or "raise"
    hits: int = 0


@dataclass
class StoreModel:
    """The specification: LRU order, budgets, group limits, TTL, releases, counters."""

    budget: int
    max_entries: int | None = None
    entries: OrderedDict[str, ModelEntry] = field(default_factory=OrderedDict)
    removed: dict[str, str] = field(default_factory=dict)
    hits: int = 0
    misses: int = 0
    evictions: int = 0
    expirations: int = 0
    must_release: set[int] = field(default_factory=set)  # serials whose hook must have run once
    gone: list[weakref.ref[Any]] = field(default_factory=list)  # values that must be freed
    warnings: Counter[str] = field(default_factory=Counter)  # expected and not yet seen

    def data_bytes(self) -> int:
        return sum(e.size or 0 for e in self.entries.values() if e.kind == "data")

    def remove(self, entry: ModelEntry, reason: str) -> None:
        del self.entries[entry.key]
        self.removed[entry.key] = reason
        self.gone.append(entry.ref)
        if entry.hook is not None:
            self.must_release.add(entry.serial)
            self.warnings["hook"] += entry.hook == "raise"

    def purge(self, now: float) -> int:
        due = [e for e in self.entries.values() if e.expires is not None and now >= e.expires]
        for entry in due:
            self.expirations += 1
            self.remove(entry, "expired")
        return len(due)

    def evict(self, entry: ModelEntry) -> None:
        self.evictions += 1
        self.remove(entry, "evicted")

    def enforce(self, added: ModelEntry | None, group_limit: int | None) -> None:
        """Group limit, then the store's max_entries, then the memory budget; LRU first each time."""
        if added is not None and group_limit is not None:
            group = [e for e in self.entries.values() if e.group == added.group and e is not added]
            for entry in group[: max(0, len(group) + 1 - group_limit)]:
                self.evict(entry)
        if self.max_entries is not None:
            others = [e for e in self.entries.values() if e is not added]
            for entry in others[: max(0, len(self.entries) - self.max_entries)]:
                self.evict(entry)
        while self.data_bytes() > self.budget:
            victims = [e for e in self.entries.values() if e.kind == "data" and e is not added]
            if not victims:
                break
            self.evict(victims[0])

    def insert(self, entry: ModelEntry, group_limit: int | None) -> None:
        old = self.entries.get(entry.key)
        if old is not None:
            self.remove(old, "replaced")
        self.entries[entry.key] = entry
        self.removed.pop(entry.key, None)
        self.enforce(entry, group_limit)

    def hit(self, entry: ModelEntry) -> None:
        entry.hits += 1
        self.hits += 1
        self.entries.move_to_end(entry.key)


@dataclass(frozen=True)
class Call:
    """One ``get_or_create`` as the rules draw it."""

    key: str
    size: int | None = None
    ttl: float | None = None
    group: str | None = None
    limit: int | None = None
    refresh: bool = False
    fail: type[BaseException] | None = None
    validate: str | None = None  # None, "true", "false", "raise"
    hook: str | None = "ok"
    nested: Call | None = None  # a get_or_create made from inside this one's computation

    @property
    def kind(self) -> str:
        return "data" if self.key.startswith("d") else "resource"


SIZES = st.one_of(st.none(), st.integers(0, 160))


def _calls(keys: tuple[str, ...], kind: str) -> st.SearchStrategy[Call]:
    return st.builds(
        Call,
        key=st.sampled_from(keys),
        size=SIZES if kind == "data" else st.none(),
        ttl=st.sampled_from(TTLS),
        group=st.sampled_from(GROUPS),
        limit=st.sampled_from(LIMITS),
        refresh=st.sampled_from([False] * 5 + [True]),
        fail=st.sampled_from([None] * 8 + [Boom, KeyboardInterrupt]),
        validate=st.sampled_from([None, None, None, "true", "true", "false", "raise"]),
        hook=st.sampled_from(["ok", "ok", "raise", None]) if kind == "resource" else st.none(),
    )


data_calls = _calls(DATA_KEYS, "data")
resource_calls = _calls(RESOURCE_KEYS, "resource")
any_calls = st.one_of(data_calls, resource_calls)


class StoreMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.clock = FakeClock()
        self.budget = BUDGETS[2]
        self.store = CacheStore(timer=self.clock, memory_budget=self.budget)
        self.model = StoreModel(budget=self.budget)
        self.serials = itertools.count()
        self.released: Counter[int] = Counter()
        self.release_errors: list[str] = []
        self.store.subscribe(self._on_event)
        self.events: Counter[str] = Counter()

    def _on_event(self, event: Any) -> None:
        self.events[event.action] += 1

    # ------------------------------------------------------------ the main operation
    def _release(self, value: Any) -> None:
        if not isinstance(value, Resource):
            self.release_errors.append(f"on_release got {value!r}, not the resource")
            return
        self.released[value.serial] += 1
        if value.hook_raises:
            raise OSError(f"cannot close {value.key}#{value.serial}")

    def _validator(self, mode: str | None) -> Any:
        if mode is None:
            return None

        def validate(value: Any) -> bool:
            if mode == "raise":
                raise RuntimeError("validate exploded")
            return mode == "true"

        return validate

    def _get(self, call: Call) -> None:
        """Run ``call`` on the store and the model, and check what the caller got."""
        model, now = self.model, self.clock()
        model.purge(now)
        found = model.entries.get(call.key)
        if found is not None and not call.refresh and call.validate in ("false", "raise"):
            model.warnings["validate"] += call.validate == "raise"
            model.remove(found, "invalid")
            found = None
        expect_hit = found is not None and not call.refresh
        ran: list[Any] = []

        def create() -> tuple[Any, int | None]:
            assert not expect_hit, f"{call.key}: computed although a live entry was stored"
            if call.nested is not None:
                self._get(call.nested)
            if call.fail is not None:
                raise call.fail(f"computing {call.key} failed")
            serial = next(self.serials)
            if call.kind == "data":
                payload = {"key": call.key, "serial": serial, "items": list(range(serial % 4))}
                value: Any = serialize(payload)
            else:
                payload = None
                value = Resource(call.key, serial, call.hook == "raise")
            ran.append((serial, payload, value))
            return value, call.size

        kwargs: dict[str, Any] = {
            "kind": call.kind,
            "label": call.key,
            "group": call.group,
            "ttl": call.ttl,
            "max_entries": call.limit,
            "on_release": self._release if call.hook is not None else None,
            "validate": self._validator(call.validate),
            "refresh": call.refresh,
        }
        if call.fail is not None and not expect_hit:
            try:  # not pytest.raises: its ExceptionInfo would keep the frames (and values) alive
                self.store.get_or_create(call.key, create, **kwargs)
            except call.fail:
                model.misses += 1
                return
            raise AssertionError(f"{call.key}: the computation's {call.fail.__name__} was swallowed")
        lookup = self.store.get_or_create(call.key, create, **kwargs)
        if expect_hit:
            assert found is not None
            model.hit(found)
            assert not ran and lookup.hit
            assert lookup.entry is not None and lookup.entry.hits == found.hits
            assert lookup.value is found.ref(), f"{call.key}: a hit served another object"
            if call.kind == "data":
                self._check_copy(lookup.value, found.payload)
            return
        model.misses += 1
        assert len(ran) == 1 and not lookup.hit
        serial, payload, value = ran[0]
        assert lookup.value is value
        if call.kind == "data" and call.size is not None and call.size > model.budget:
            model.warnings["large"] += 1
            assert lookup.entry is None
            old = model.entries.get(call.key)
            if old is not None:  # refresh: the outdated value must not outlive the refresh
                model.remove(old, "replaced")
            return
        entry = ModelEntry(
            key=call.key,
            kind=call.kind,
            group=call.key if call.group is None else call.group,
            size=call.size,
            created=now,
            expires=None if call.ttl is None else now + call.ttl,
            serial=serial,
            payload=payload,
            ref=weakref.ref(value),
            hook=call.hook if call.kind == "resource" else None,
        )
        model.insert(entry, call.limit)
        assert lookup.entry is not None and lookup.entry.key == call.key
        if call.limit is not None:
            group = [e for e in model.entries.values() if e.group == entry.group]
            assert len(group) <= call.limit

    @staticmethod
    def _check_copy(stored: SerializedValue, expected: Any) -> None:
        first, second = stored.load(), stored.load()
        assert first == expected and second == expected
        assert first is not second and first["items"] is not second["items"]
        first["items"].append("mutated by the caller")
        assert stored.load() == expected, "mutating a copy changed the cache"

    def _run(self, call: Call) -> None:
        self._quietly(lambda: self._get(call))

    def _quietly(self, action: Any) -> Any:
        """Run ``action``; the only warnings allowed are the ones the model expects."""
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            result = action()
        texts = [str(w.message) for w in caught]
        seen = Counter(
            "hook"
            if t.startswith("on_release for ")
            else "large"
            if "larger than the whole memory budget" in t
            else "validate"
            if t.startswith("validate for ")
            else t
            for t in texts
        )
        expected = +self.model.warnings
        self.model.warnings.clear()
        assert seen == expected, f"warnings {texts}, expected {dict(expected)}"
        assert all(issubclass(w.category, RuntimeWarning) for w in caught)
        return result

    # ------------------------------------------------------------ rules
    @rule(call=data_calls)
    def get_data(self, call: Call) -> None:
        self._run(call)

    @rule(call=resource_calls)
    def get_resource(self, call: Call) -> None:
        self._run(call)

    @rule(call=any_calls, refresh=st.booleans(), size=SIZES)
    def get_twice(self, call: Call, refresh: bool, size: int | None) -> None:
        """The common case: the same call again, a hit, or a refresh (maybe of another size)."""
        self._run(call)
        again = replace(call, refresh=refresh, fail=None)
        self._run(replace(again, size=size) if refresh and call.kind == "data" else again)

    @rule(outer=any_calls, inner=any_calls)
    def get_nested(self, outer: Call, inner: Call) -> None:
        """A computation that itself reads the cache (a cached function calling another)."""
        if inner.key == outer.key:
            inner = Call(key=DATA_KEYS[0] if outer.key != DATA_KEYS[0] else DATA_KEYS[1])
        self._run(replace(outer, nested=inner))

    @rule(key=st.sampled_from(DATA_KEYS + RESOURCE_KEYS))
    def delete(self, key: str, *, expired: bool = False) -> None:
        self.model.purge(self.clock())
        entry = self.model.entries.get(key)
        if entry is not None:
            self.model.remove(entry, "deleted")
        assert self._quietly(lambda: self.store.delete(key)) is (entry is not None)

    @rule(kind=st.sampled_from([None, "data", "resource"]))
    def clear(self, kind: str | None) -> None:
        self.model.purge(self.clock())
        doomed = [e for e in self.model.entries.values() if kind in (None, e.kind)]
        for entry in doomed:
            self.model.remove(entry, "cleared")
        assert self._quietly(lambda: self.store.clear(kind)) == len(doomed)  # type: ignore[arg-type]
        assert not any(kind in (None, e.kind) for e in self.store.entries())

    @rule(group=st.sampled_from(GROUPS[1:]))
    def delete_group(self, group: str) -> None:
        self.model.purge(self.clock())
        doomed = [e for e in self.model.entries.values() if e.group == group]
        for entry in doomed:
            self.model.remove(entry, "dropped")
        count = self._quietly(lambda: self.store.delete_where(lambda e: e.group == group, "dropped"))
        assert count == len(doomed)

    @rule(seconds=st.sampled_from(STEPS))
    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)  # nothing is dropped yet: expiry is lazy, or the reaper's

    @rule()
    def purge_expired(self) -> None:
        count = self.model.purge(self.clock())
        assert self._quietly(self.store.purge_expired) == count

    @rule(budget=st.sampled_from((*BUDGETS, 0, -1)))
    def set_budget(self, budget: int) -> None:
        if budget <= 0:
            with pytest.raises(ValueError, match="memory_budget"):
                self.store.memory_budget = budget
            return
        self.model.budget = budget
        self.model.enforce(None, None)

        def apply() -> None:
            self.store.memory_budget = budget

        self._quietly(apply)

    @rule(limit=st.sampled_from((None, 1, 2, 3, 5, 0)))
    def set_max_entries(self, limit: int | None) -> None:
        if limit == 0:
            with pytest.raises(ValueError, match="max_entries"):
                self.store.max_entries = limit
            return
        self.model.max_entries = limit
        self.model.enforce(None, None)

        def apply() -> None:
            self.store.max_entries = limit

        self._quietly(apply)

    @rule(key=st.sampled_from(DATA_KEYS + RESOURCE_KEYS))
    def read(self, key: str) -> None:
        """The public readers: never an expired entry, always the model's view."""
        model = self.model
        model.purge(self.clock())
        entry = model.entries.get(key)
        info = self._quietly(lambda: self.store.get(key))
        if entry is None:
            assert info is None and key not in self.store
        else:
            assert info is not None and key in self.store
            assert (info.kind, info.group, info.size, info.hits) == (
                entry.kind,
                entry.group,
                entry.size,
                entry.hits,
            )
            assert (info.created, info.expires) == (entry.created, entry.expires)
            now = self.clock()
            assert info.ttl_left(now) == (None if entry.expires is None else entry.expires - now)
        by_age = sorted(model.entries.values(), key=lambda e: e.created)
        assert [e.key for e in self.store.entries()] == [e.key for e in by_age]
        assert {e.key for e in self.store.entries("data")} == {e.key for e in by_age if e.kind == "data"}
        assert len(self.store) == len(model.entries)
        stats = self.store.stats()
        assert (stats.entries, stats.data_bytes, stats.memory_budget) == (
            len(model.entries),
            model.data_bytes(),
            model.budget,
        )
        assert stats.data_entries == sum(e.kind == "data" for e in model.entries.values())
        assert stats.resource_entries == sum(e.kind == "resource" for e in model.entries.values())

    @rule()
    def reset_stats(self) -> None:
        self.store.reset_stats()
        self.model.hits = self.model.misses = self.model.evictions = self.model.expirations = 0

    # ------------------------------------------------------------ invariants
    @invariant()
    def store_equals_model(self) -> None:
        store, model = self.store, self.model
        with store._lock:
            held = [(e.key, e.kind, e.group, e.size, e.expires, e.hits) for e in store._table]
            counted = store._counters
            counters = (counted.hits, counted.misses, counted.evictions, counted.expirations)
            data_bytes = store._table.data_bytes
            flights = list(store._flights)
            due = store._table.expiry.earliest()
        expected = [(e.key, e.kind, e.group, e.size, e.expires, e.hits) for e in model.entries.values()]
        assert held == expected, "entries or their LRU order differ from the model"
        assert counters == (model.hits, model.misses, model.evictions, model.expirations), (
            "hits, misses, evictions or expirations miscounted"
        )
        assert data_bytes == model.data_bytes(), "the reported data bytes are not the sum of the sizes"
        assert data_bytes <= store.memory_budget == model.budget
        if store.max_entries is not None:
            assert len(held) <= store.max_entries
        assert not flights, f"computations left in flight: {sorted(flights)}"
        expiring = [e.expires for e in model.entries.values() if e.expires is not None]
        assert due == (min(expiring) if expiring else None), "the expiry heap lost or kept an entry"
        for key, reason in model.removed.items():
            assert store.removal_reason(key) == (None if key in model.entries else reason), key

    @invariant()
    def lock_is_free(self) -> None:
        """No operation leaves the store's lock held (another thread must get it at once)."""
        got: list[bool] = []

        def take() -> None:
            acquired = self.store._lock.acquire(timeout=5)
            got.append(acquired)
            if acquired:
                self.store._lock.release()

        thread = threading.Thread(target=take)
        thread.start()
        thread.join(10)
        assert got == [True], "the store's lock is still held after an operation"

    @invariant()
    def released_exactly_once(self) -> None:
        assert not self.release_errors, self.release_errors
        expected = dict.fromkeys(self.model.must_release, 1)
        assert dict(self.released) == expected, "a resource was released never, twice or while held"

    @invariant()
    def removed_values_are_freed(self) -> None:
        if any(ref() is not None for ref in self.model.gone):
            gc.collect()  # a failure's traceback can hold a frame (and a value) in a cycle
        alive = [ref() for ref in self.model.gone if ref() is not None]
        assert not alive, f"the store still holds values that left it: {alive}"
        self.model.gone = []

    def teardown(self) -> None:
        """Shutdown releases every resource still held, exactly once."""
        for entry in self.model.entries.values():
            if entry.hook is not None:
                self.model.must_release.add(entry.serial)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # raising hooks were checked step by step
            self.store.close()
        assert dict(self.released) == dict.fromkeys(self.model.must_release, 1)
        assert self.store.entries() == [] and self.store.stats().data_bytes == 0


TestStoreAgainstModel = StoreMachine.TestCase
TestStoreAgainstModel.settings = settings.get_profile(f"ipycache-store-{PROFILE}")
