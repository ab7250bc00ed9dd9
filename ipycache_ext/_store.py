"""The kernel-wide cache store: entries, TTL, LRU limits, memory budget, statistics, events.

The store knows nothing of IPython, widgets, cells or functions. Front ends (the cell
magics, the decorators, the panel) hand it a key that they built and a ``create``
callable; the store decides whether to call it and guarantees that:

- an expired, deleted or cleared entry is never served, and is dropped (not hidden);
- concurrent callers of one key run ``create`` once; the others wait for that result or
  get that error (single flight), and a failure stores nothing and leaves no one waiting;
- every resource that leaves the store is passed to its ``on_release`` exactly once,
  outside the store's lock, and a hook that raises is reported, not propagated;
- the memory budget and the ``max_entries`` limits hold after every operation, evicting
  the least recently used entries first.

The clock is a constructor argument (as in cachetools' ``TTLCache``) so tests tick a fake
timer instead of sleeping; it is wall-clock time by default because expiry times are
shown to people and, once entries persist, outlive the process.
"""

from __future__ import annotations

import os
import threading
import time
import warnings
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from ._format import format_size

Kind = Literal["data", "resource"]
KINDS: tuple[Kind, ...] = ("data", "resource")
Timer = Callable[[], float]


@dataclass(frozen=True, slots=True)
class EntryInfo:
    """A snapshot of one entry, safe to keep and show: it never changes after it is taken."""

    key: str
    kind: Kind
    label: str
    names: tuple[str, ...]
    size: int | None
    created: float
    expires: float | None
    hits: int
    compute_seconds: float
    last_used: float
    group: str
    miss_reason: str | None = None
    inputs: Mapping[str, str] = field(default_factory=dict)
    persisted: bool = False

    def ttl_left(self, now: float) -> float | None:
        """Seconds until expiry (0 when due), or None when the entry never expires."""
        return None if self.expires is None else max(0.0, self.expires - now)


@dataclass(frozen=True, slots=True)
class CacheStats:
    """Counters since the store was created (or since ``reset_stats``)."""

    entries: int
    data_entries: int
    resource_entries: int
    data_bytes: int
    memory_budget: int
    hits: int
    misses: int
    time_saved: float
    evictions: int
    expirations: int
    disk_bytes: int = 0
    disk_budget: int = 0


@dataclass(frozen=True, slots=True)
class StoreEvent:
    """What changed: ``action`` is ``"added"``, ``"hit"`` or ``"removed"``.

    ``reason`` says why an entry was removed: ``"expired"``, ``"evicted"`` (LRU, budget or
    max entries), ``"deleted"``, ``"cleared"``, ``"invalid"`` (validate said no),
    ``"replaced"`` or ``"closed"``.
    """

    action: Literal["added", "hit", "removed"]
    key: str
    kind: Kind
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class Lookup:
    """The answer of ``get_or_create``: the stored value, whether it was a hit, and the entry.

    ``entry`` is None when the value was computed but could not be kept (larger than the
    whole memory budget); the value is still good to hand to the caller.
    """

    value: Any
    hit: bool
    entry: EntryInfo | None


@dataclass
class _Entry:
    key: str
    kind: Kind
    label: str
    names: tuple[str, ...]
    group: str
    value: Any
    size: int | None
    created: float
    expires: float | None
    compute_seconds: float
    on_release: Callable[[Any], Any] | None
    miss_reason: str | None
    inputs: Mapping[str, str]
    hits: int = 0
    last_used: float = 0.0
    persisted: bool = False

    def snapshot(self) -> EntryInfo:
        return EntryInfo(
            key=self.key,
            kind=self.kind,
            label=self.label,
            names=self.names,
            size=self.size,
            created=self.created,
            expires=self.expires,
            hits=self.hits,
            compute_seconds=self.compute_seconds,
            last_used=self.last_used,
            group=self.group,
            miss_reason=self.miss_reason,
            inputs=self.inputs,
            persisted=self.persisted,
        )


@dataclass(frozen=True)
class Restored:
    """An entry found again by the persistence layer (after a restart, or from another kernel)."""

    value: Any
    size: int | None
    created: float
    expires: float | None
    compute_seconds: float


class Persistence(Protocol):
    """Where persisted data entries are kept beyond the kernel (see ``_persist.py``).

    The store asks it on a miss of a persisted key, tells it about every new persisted
    entry, and about every entry that must not be found again (deleted, cleared, expired,
    invalid). It never hands it resources.
    """

    def load(self, key: str) -> Restored | None: ...

    def save(self, key: str, value: Any, entry: EntryInfo) -> bool: ...

    def delete(self, key: str) -> None: ...

    def clear(self) -> int: ...

    def usage(self) -> tuple[int, int]: ...


# Removals after which a persisted entry must not be found again on disk. Not "evicted"
# (memory pressure is no reason to forget it), "closed" (the kernel stops: that is what
# persistence is for) or "replaced" (the new value has just been saved under that key).
_DROP_FROM_DISK = frozenset({"deleted", "cleared", "expired", "invalid"})


class _Flight:
    """One computation in progress; callers of the same key wait on it."""

    def __init__(self) -> None:
        self.owner = threading.get_ident()
        self.done = threading.Event()
        self.lookup: Lookup | None = None
        self.error: BaseException | None = None


def default_memory_budget() -> int:
    """A quarter of physical memory (2 GiB where the OS won't say)."""
    try:
        return int(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")) // 4
    except (ValueError, OSError, AttributeError):
        return 2 * 1024**3


_REMOVAL_MEMORY = 4096  # how many removal reasons are remembered to explain later misses


class CacheStore:
    """A thread-safe store of cache entries shared by every front end in the kernel."""

    def __init__(
        self,
        *,
        memory_budget: int | None = None,
        max_entries: int | None = None,
        timer: Timer = time.time,
    ) -> None:
        self._timer = timer
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._entries: OrderedDict[str, _Entry] = OrderedDict()  # least recently used first
        self._flights: dict[str, _Flight] = {}
        self._removed: OrderedDict[str, str] = OrderedDict()
        self._subscribers: list[Callable[[StoreEvent], None]] = []
        self._memory_budget = default_memory_budget() if memory_budget is None else memory_budget
        self._max_entries = max_entries
        self._data_bytes = 0
        self._hits = self._misses = self._evictions = self._expirations = 0
        self._time_saved = 0.0
        self._reaper: threading.Thread | None = None
        self._closed = False
        self.persistence: Persistence | None = None
        # Never later than the earliest expiry of a live entry: until then, nothing is due
        # and no operation needs to scan the entries (a hit stays O(1) with many entries).
        self._next_expiry: float | None = None

    # ----------------------------------------------------------------- settings
    def now(self) -> float:
        """The store's clock; every front end reads time through this."""
        return self._timer()

    @property
    def memory_budget(self) -> int:
        """Bytes that data entries may hold in all; the least recently used go first."""
        return self._memory_budget

    @memory_budget.setter
    def memory_budget(self, value: int) -> None:
        if value <= 0:
            raise ValueError(f"memory_budget must be a positive number of bytes, not {value!r}")
        self._mutate(lambda removed: self._set_budget_locked(value, removed))

    @property
    def max_entries(self) -> int | None:
        """At most this many entries in the whole store (None: no limit)."""
        return self._max_entries

    @max_entries.setter
    def max_entries(self, value: int | None) -> None:
        if value is not None and value <= 0:
            raise ValueError(f"max_entries must be a positive integer or None, not {value!r}")

        def apply(removed: list[tuple[_Entry, str]]) -> None:
            self._max_entries = value
            self._enforce_limits_locked(None, None, removed)

        self._mutate(apply)

    def _set_budget_locked(self, value: int, removed: list[tuple[_Entry, str]]) -> None:
        self._memory_budget = value
        self._enforce_limits_locked(None, None, removed)

    # ----------------------------------------------------------------- reading
    def entries(self, kind: Kind | None = None) -> list[EntryInfo]:
        """Snapshots of the live entries, oldest first (expired ones are dropped first)."""
        self.purge_expired()
        with self._lock:
            found = [e.snapshot() for e in self._entries.values() if kind in (None, e.kind)]
        return sorted(found, key=lambda info: info.created)

    def get(self, key: str) -> EntryInfo | None:
        """The entry's snapshot, without counting a hit; None when absent or expired."""
        self.purge_expired()
        with self._lock:
            entry = self._entries.get(key)
            return None if entry is None else entry.snapshot()

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self.get(key) is not None

    def __len__(self) -> int:
        return len(self.entries())

    def stats(self) -> CacheStats:
        """Totals and counters."""
        self.purge_expired()
        disk = self.persistence.usage() if self.persistence is not None else (0, 0)
        with self._lock:
            kinds = [e.kind for e in self._entries.values()]
            return CacheStats(
                entries=len(kinds),
                data_entries=kinds.count("data"),
                resource_entries=kinds.count("resource"),
                data_bytes=self._data_bytes,
                memory_budget=self._memory_budget,
                hits=self._hits,
                misses=self._misses,
                time_saved=self._time_saved,
                evictions=self._evictions,
                expirations=self._expirations,
                disk_bytes=disk[0],
                disk_budget=disk[1],
            )

    def reset_stats(self) -> None:
        """Zero the hit, miss, eviction and expiry counters (entries stay)."""
        with self._lock:
            self._hits = self._misses = self._evictions = self._expirations = 0
            self._time_saved = 0.0

    def removal_reason(self, key: str) -> str | None:
        """Why the entry with this key left the store, if it did recently."""
        with self._lock:
            return self._removed.get(key)

    # ----------------------------------------------------------------- the main path
    def get_or_create(
        self,
        key: str,
        create: Callable[[], tuple[Any, int | None]],
        *,
        kind: Kind,
        label: str,
        names: Iterable[str] = (),
        group: str | None = None,
        ttl: float | None = None,
        max_entries: int | None = None,
        on_release: Callable[[Any], Any] | None = None,
        validate: Callable[[Any], Any] | None = None,
        refresh: bool = False,
        miss_reason: str | Callable[[], str | None] | None = None,
        inputs: Mapping[str, str] | None = None,
        persist: bool = False,
    ) -> Lookup:
        """Return the live entry for ``key`` or create it with ``create() -> (value, size)``.

        ``validate(value)`` runs on a hit; falsy or raising drops the entry (released) and
        creates it again. ``refresh`` creates a new value even when one is stored, and
        replaces the old one only once the new one exists, so a failure loses nothing.
        ``max_entries`` limits the entries of ``group`` (default: the key itself).
        ``miss_reason`` may be a callable, asked after ``create`` ran. ``persist`` (data only)
        looks for the key in ``self.persistence`` before creating
        it, and saves what it creates there.
        """
        __tracebackhide__ = True  # pytest and IPython leave this frame out of tracebacks
        if kind not in KINDS:
            raise ValueError(f"kind must be 'data' or 'resource', not {kind!r}")
        if persist and kind != "data":
            raise ValueError("only data entries can be persisted: resources are kept as they are")
        group = key if group is None else group
        while True:
            removed: list[tuple[_Entry, str]] = []
            hit: _Entry | None = None
            flight: _Flight | None = None
            owner = False
            with self._lock:
                self._purge_expired_locked(removed)
                entry = self._entries.get(key)
                if entry is not None and not refresh:
                    hit = entry
                else:
                    flight = self._flights.get(key)
                    if flight is None:
                        flight = self._flights[key] = _Flight()
                        owner = True
                    elif flight.owner == threading.get_ident():
                        flight = None  # re-entrant call from inside create(): compute inline
            self._after(removed)

            if hit is not None:
                if validate is not None and not self._still_valid(hit, validate):
                    continue
                looked = self._record_hit(hit)
                if looked is not None:
                    return looked
                continue  # removed between the look and the hit: look again
            if flight is not None and not owner:
                flight.done.wait()
                if flight.error is not None:
                    raise flight.error
                assert flight.lookup is not None
                if flight.lookup.entry is not None:
                    shared = self._record_hit_by_key(key)
                    if shared is not None:
                        return shared
                return Lookup(flight.lookup.value, False, flight.lookup.entry)
            return self._create(
                key,
                create,
                flight if owner else None,
                kind=kind,
                label=label,
                names=tuple(names),
                group=group,
                ttl=ttl,
                max_entries=max_entries,
                on_release=on_release,
                miss_reason=miss_reason,
                inputs=dict(inputs or {}),
                persist=persist and self.persistence is not None,
                restore=persist and not refresh,
            )

    def _create(
        self,
        key: str,
        create: Callable[[], tuple[Any, int | None]],
        flight: _Flight | None,
        *,
        kind: Kind,
        label: str,
        names: tuple[str, ...],
        group: str,
        ttl: float | None,
        max_entries: int | None,
        on_release: Callable[[Any], Any] | None,
        miss_reason: str | Callable[[], str | None] | None,
        inputs: Mapping[str, str],
        persist: bool,
        restore: bool,
    ) -> Lookup:
        __tracebackhide__ = True
        restored = self._restore(key) if persist and restore else None
        if restored is not None:
            value, size, elapsed = restored.value, restored.size, restored.compute_seconds
        else:
            started = time.perf_counter()
            try:
                value, size = create()
            except BaseException as exc:
                with self._lock:
                    self._misses += 1
                    if flight is not None:
                        flight.error = exc
                        del self._flights[key]
                if flight is not None:
                    flight.done.set()
                raise
            elapsed = time.perf_counter() - started
        if callable(miss_reason):  # worked out by create() itself, only when it runs
            miss_reason = miss_reason()
        removed: list[tuple[_Entry, str]] = []
        added: _Entry | None = None
        try:
            with self._lock:
                now = self._timer()
                if restored is None:
                    self._misses += 1
                    created, expires = now, (None if ttl is None else now + ttl)
                else:
                    self._hits += 1
                    self._time_saved += elapsed
                    created, expires = restored.created, restored.expires
                if kind == "data" and size is not None and size > self._memory_budget:
                    lookup = Lookup(value, False, None)
                    old = self._entries.pop(key, None)
                    if old is not None:  # a refresh: the value it replaces is outdated, even uncached
                        self._account_removed_locked(old, "replaced", removed)
                else:
                    added = _Entry(
                        key=key,
                        kind=kind,
                        label=label,
                        names=names,
                        group=group,
                        value=value,
                        size=size,
                        created=created,
                        expires=expires,
                        compute_seconds=elapsed,
                        on_release=on_release,
                        miss_reason=miss_reason,
                        inputs=inputs,
                        last_used=now,
                        persisted=restored is not None,
                        hits=0 if restored is None else 1,  # found on disk: that was a hit
                    )
                    old = self._entries.pop(key, None)
                    if old is not None:
                        self._account_removed_locked(old, "replaced", removed)
                    self._entries[key] = added
                    if expires is not None and (self._next_expiry is None or expires < self._next_expiry):
                        self._next_expiry = expires
                    self._removed.pop(key, None)
                    if kind == "data" and size is not None:
                        self._data_bytes += size
                    self._enforce_limits_locked(added, max_entries, removed)
                    lookup = Lookup(value, restored is not None, added.snapshot())
                    self._changed.notify_all()
                if flight is not None:
                    flight.lookup = lookup
                    del self._flights[key]
        finally:
            if flight is not None:
                with self._lock:  # interrupted inside the block: don't strand anyone
                    if self._flights.get(key) is flight:
                        del self._flights[key]
                if flight.lookup is None:
                    flight.error = flight.error or RuntimeError(f"computing {label!r} was interrupted")
                flight.done.set()
        if added is None:
            if persist and self.persistence is not None:
                self._forget_on_disk(key)  # a refresh too large to keep: the old file is outdated
            warnings.warn(
                f"{label!r}: the result ({format_size(size)}) is larger than the whole memory budget "
                f"({format_size(self._memory_budget)}), so it was not cached. Raise the budget (e.g. "
                "%config CacheMagics.memory_budget = 8_000_000_000) to cache it.",
                RuntimeWarning,
                stacklevel=3,
            )
        else:
            if persist and restored is None:
                lookup = self._save(added, lookup)
            self._emit(StoreEvent("added", key, kind))
        self._after(removed)
        return lookup

    def _restore(self, key: str) -> Restored | None:
        assert self.persistence is not None
        try:
            restored = self.persistence.load(key)
        except Exception as exc:  # a broken disk must not break the cell: it is a miss
            warnings.warn(
                f"could not read the persisted entry {key[:12]}: {exc}", RuntimeWarning, stacklevel=4
            )
            return None
        if restored is not None and restored.expires is not None and self._timer() >= restored.expires:
            self.persistence.delete(key)
            return None
        return restored

    def _save(self, added: _Entry, lookup: Lookup) -> Lookup:
        """Write a new persisted entry to disk (slow I/O: outside the lock).

        If it can't be written, an older file under the same key (a refresh) must go too,
        or the next kernel would find the outdated value.
        """
        assert self.persistence is not None and lookup.entry is not None
        try:
            saved = self.persistence.save(added.key, added.value, lookup.entry)
        except Exception as exc:  # the value is cached in memory all the same
            warnings.warn(f"could not persist {added.label!r}: {exc}", RuntimeWarning, stacklevel=4)
            saved = False
        if not saved:
            self._forget_on_disk(added.key)
            return lookup
        with self._lock:
            added.persisted = True
            if self._entries.get(added.key) is not added:
                return lookup
            return Lookup(lookup.value, lookup.hit, added.snapshot())

    def _forget_on_disk(self, key: str) -> None:
        assert self.persistence is not None
        try:
            self.persistence.delete(key)
        except Exception as exc:  # nothing more to do: its TTL or the next clear removes it
            warnings.warn(
                f"could not delete the persisted entry {key[:12]}: {exc}", RuntimeWarning, stacklevel=4
            )

    def _still_valid(self, entry: _Entry, validate: Callable[[Any], Any]) -> bool:
        with self._lock:  # release hooks ran since the look: the entry may have left (value None)
            if self._entries.get(entry.key) is not entry:
                return False  # gone already: look again, nothing to validate or drop
            value = entry.value
        try:
            ok = bool(validate(value))
        except Exception as exc:  # a validate hook that raises means "not valid"
            warnings.warn(
                f"validate for {entry.label!r} raised {type(exc).__name__}: {exc}; "
                "the entry is released and recomputed",
                RuntimeWarning,
                stacklevel=4,
            )
            ok = False
        if not ok:
            self._remove_if(lambda e: e is entry, "invalid")
        return ok

    def _record_hit(self, entry: _Entry) -> Lookup | None:
        with self._lock:
            lookup = self._hit_locked(entry) if self._entries.get(entry.key) is entry else None
        if lookup is not None:
            self._emit(StoreEvent("hit", entry.key, entry.kind))
        return lookup

    def _record_hit_by_key(self, key: str) -> Lookup | None:
        with self._lock:
            entry = self._entries.get(key)
            lookup = None if entry is None else self._hit_locked(entry)
        if entry is not None:
            self._emit(StoreEvent("hit", key, entry.kind))
        return lookup

    def _hit_locked(self, entry: _Entry) -> Lookup:
        entry.hits += 1
        entry.last_used = self._timer()
        self._entries.move_to_end(entry.key)
        self._hits += 1
        self._time_saved += entry.compute_seconds
        return Lookup(entry.value, True, entry.snapshot())

    # ----------------------------------------------------------------- removing
    def delete(self, key: str) -> bool:
        """Drop one entry (releasing a resource); True if it was there."""
        return self._remove_if(lambda e: e.key == key, "deleted") > 0

    def clear(self, kind: Kind | None = None) -> int:
        """Drop every entry, or every entry of one kind; returns how many were dropped."""
        if kind is not None and kind not in KINDS:
            raise ValueError(f"kind must be 'data', 'resource' or None, not {kind!r}")
        count = self._remove_if(lambda e: kind in (None, e.kind), "cleared")
        if kind != "resource" and self.persistence is not None:
            self.persistence.clear()  # persisted entries not loaded in this kernel go too
        return count

    def delete_where(self, predicate: Callable[[EntryInfo], bool], reason: str = "deleted") -> int:
        """Drop the entries whose snapshot satisfies ``predicate``; returns how many."""
        return self._remove_if(lambda e: predicate(e.snapshot()), reason)

    def purge_expired(self) -> int:
        """Drop (and release) every expired entry now; returns how many."""
        removed: list[tuple[_Entry, str]] = []
        with self._lock:
            self._purge_expired_locked(removed)
        self._after(removed)
        return len(removed)

    def close(self) -> None:
        """Release everything and stop the expiry thread (kernel shutdown)."""
        with self._lock:
            self._closed = True
            self._changed.notify_all()
        self._remove_if(lambda e: True, "closed")

    def _remove_if(self, predicate: Callable[[_Entry], bool], reason: str) -> int:
        removed: list[tuple[_Entry, str]] = []
        with self._lock:
            self._purge_expired_locked(removed)
            expired = len(removed)
            for entry in [e for e in self._entries.values() if predicate(e)]:
                del self._entries[entry.key]
                self._account_removed_locked(entry, reason, removed)
        self._after(removed)
        return len(removed) - expired

    def _mutate(self, change: Callable[[list[tuple[_Entry, str]]], None]) -> None:
        removed: list[tuple[_Entry, str]] = []
        with self._lock:
            change(removed)
        self._after(removed)

    def _purge_expired_locked(self, removed: list[tuple[_Entry, str]]) -> None:
        now = self._timer()
        if self._next_expiry is None or now < self._next_expiry:
            return
        earliest: float | None = None
        for entry in list(self._entries.values()):
            if entry.expires is None:
                continue
            if now >= entry.expires:
                del self._entries[entry.key]
                self._expirations += 1
                self._account_removed_locked(entry, "expired", removed)
            elif earliest is None or entry.expires < earliest:
                earliest = entry.expires
        self._next_expiry = earliest

    def _enforce_limits_locked(
        self, added: _Entry | None, group_limit: int | None, removed: list[tuple[_Entry, str]]
    ) -> None:
        def evict(candidates: list[_Entry], excess: int) -> None:
            for entry in candidates[: max(0, excess)]:
                del self._entries[entry.key]
                self._evictions += 1
                self._account_removed_locked(entry, "evicted", removed)

        if added is not None and group_limit is not None:
            group = [e for e in self._entries.values() if e.group == added.group and e is not added]
            evict(group, len(group) + 1 - group_limit)
        if self._max_entries is not None:
            others = [e for e in self._entries.values() if e is not added]
            evict(others, len(self._entries) - self._max_entries)
        while self._data_bytes > self._memory_budget:
            victims = [e for e in self._entries.values() if e.kind == "data" and e is not added]
            if not victims:
                break
            evict(victims, 1)

    def _account_removed_locked(self, entry: _Entry, reason: str, removed: list[tuple[_Entry, str]]) -> None:
        if entry.kind == "data" and entry.size is not None:
            self._data_bytes -= entry.size
        self._removed[entry.key] = reason
        self._removed.move_to_end(entry.key)
        while len(self._removed) > _REMOVAL_MEMORY:
            self._removed.popitem(last=False)
        removed.append((entry, reason))

    def _after(self, removed: list[tuple[_Entry, str]]) -> None:
        """Release and announce removed entries, outside the lock (hooks are user code).

        These entries have already left the store, so nobody else will ever release them: a
        hook interrupted by Ctrl-C (or a warning turned into an error) is re-raised only
        after the other hooks ran.
        """
        pending: BaseException | None = None
        for entry, reason in removed:
            if entry.kind == "resource" and entry.on_release is not None:
                try:
                    try:
                        entry.on_release(entry.value)
                    except Exception as exc:  # one bad hook must not skip the others
                        warnings.warn(
                            f"on_release for {entry.label!r} raised {type(exc).__name__}: {exc}",
                            RuntimeWarning,
                            stacklevel=2,
                        )
                except BaseException as exc:
                    if pending is None:
                        pending = exc
            if entry.persisted and reason in _DROP_FROM_DISK and self.persistence is not None:
                try:
                    self.persistence.delete(entry.key)
                except Exception as exc:  # the memory side is done; the disk will expire it
                    warnings.warn(
                        f"could not delete {entry.label!r} from disk: {exc}", RuntimeWarning, stacklevel=2
                    )
            entry.value = None  # drop our reference now: "freed, not only hidden"
            self._emit(StoreEvent("removed", entry.key, entry.kind, reason))
        if pending is not None:
            raise pending

    # ----------------------------------------------------------------- events
    def subscribe(self, callback: Callable[[StoreEvent], None]) -> Callable[[], None]:
        """Call ``callback(event)`` after every change; returns a function that unsubscribes.

        Callbacks run on whichever thread changed the store, outside its lock.
        """
        with self._lock:
            self._subscribers.append(callback)

        def unsubscribe() -> None:
            with self._lock:
                if callback in self._subscribers:
                    self._subscribers.remove(callback)

        return unsubscribe

    def _emit(self, event: StoreEvent) -> None:
        with self._lock:
            subscribers = list(self._subscribers)
        for callback in subscribers:
            try:
                callback(event)
            except Exception as exc:  # a broken listener must not break caching
                warnings.warn(
                    f"cache event listener {callback!r} raised {type(exc).__name__}: {exc}",
                    RuntimeWarning,
                    stacklevel=2,
                )

    # ----------------------------------------------------------------- expiry thread
    def start_expiry_thread(self) -> None:
        """Drop expired entries in the background, as they fall due, on a daemon thread.

        Only for a store on the real clock: a fake timer doesn't advance while we sleep.
        Release hooks of expired resources then run on that thread.
        """
        with self._lock:
            if self._reaper is not None or self._closed:
                return
            self._reaper = threading.Thread(target=self._reap, name="ipycache_ext-expiry", daemon=True)
            self._reaper.start()

    def _reap(self) -> None:
        while True:
            removed: list[tuple[_Entry, str]] = []
            with self._lock:
                if self._closed:
                    return
                self._purge_expired_locked(removed)
                due = self._next_expiry
                if not removed:
                    timeout = None if due is None else max(0.0, due - self._timer()) + 0.01
                    # Capped: a TTL of years would overflow the wait and kill this thread.
                    self._changed.wait(None if timeout is None else min(timeout, 3600.0))
            self._after(removed)


_default_store: CacheStore | None = None
_default_lock = threading.Lock()


def get_store() -> CacheStore:
    """The kernel-wide store shared by the magics, the decorators and the panel.

    Created on first use with an expiry thread; its resources are released at exit.
    """
    global _default_store
    with _default_lock:
        if _default_store is None:
            import atexit

            store = CacheStore()
            store.start_expiry_thread()
            atexit.register(store.close)
            _default_store = store
        return _default_store
