"""The kernel-wide cache store: one lock around an entry table, single flight, events, tiers.

The store knows nothing of IPython, widgets, cells or functions. Front ends (the cell
magics, the decorators, the panel) hand it a key that they built and a ``create``
callable; the store decides whether to call it and guarantees that:

- an expired, deleted or cleared entry is never served, and is dropped (not hidden);
- concurrent callers of one key run ``create`` once; the others wait for that result or
  get that error (single flight), and a failure stores nothing and leaves no one waiting;
- every resource that leaves the store is passed to its ``on_release`` exactly once,
  outside the store's lock, and a hook that raises is reported, not propagated;
- the memory budget and the ``max_entries`` limits hold after every operation, evicting
  the least recently used entries first, without walking the other entries;
- a persistent tier that fails costs a warning, never a cell, ``stats()`` or ``clear()``.

Each job has its own module: ``_table`` (entries, LRU indexes, budget, limits),
``_expiry`` (the expiry heap and thread), ``_flight`` (single flight), ``_fill`` (a
miss: found in a tier, or computed, then kept and written through), ``_events``
(subscribers), ``_tier`` (the guarded persistent tiers), ``_stats`` (counters). This
module holds them together under one lock, serves hits, removes and releases, and keeps
the import path of every name.

The clock is a constructor argument (as in cachetools' ``TTLCache``) so tests tick a fake
timer instead of sleeping; it is wall-clock time by default because expiry times are
shown to people and, once entries persist, outlive the process.
"""

from __future__ import annotations

import numbers
import os
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from ._entry import KINDS, Dependencies, Entry, EntryInfo, Kind, Lookup, Where
from ._errors import warn
from ._events import StoreEvent, Subscribers
from ._expiry import ExpiryThread
from ._fill import Filler, MissRequest
from ._flight import Flight, Flights, NotStored
from ._serialize import held_bytes
from ._stats import CacheStats, Counters
from ._table import EntryTable, Removed
from ._tier import DROP_FROM_TIERS, Persistence, Restored, Tier

__all__ = [
    "KINDS",
    "CacheStats",
    "CacheStore",
    "Cleared",
    "EntryInfo",
    "Kind",
    "Lookup",
    "Persistence",
    "Restored",
    "StoreEvent",
    "Where",
    "default_memory_budget",
    "get_store",
]

Timer = Callable[[], float]
EXPIRY_BATCH = 64  # entries dropped per turn of the lock when many fall due at once
LAZY_EXPIRY = 2  # due entries each operation drops itself while an expiry thread runs


def default_memory_budget() -> int:
    """A quarter of physical memory (2 GiB where the OS won't say)."""
    try:
        return int(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")) // 4
    except (ValueError, OSError, AttributeError):
        return 2 * 1024**3


def checked_memory_budget(value: Any, kept: str = "") -> int:
    """``value`` as a memory budget, or the error naming it (``kept``: what stays instead)."""
    if not _is_whole(value):
        got = f"{value!r} ({type(value).__name__})" if value is not None else "None (memory has a budget)"
        raise TypeError(f"memory_budget must be a positive whole number of bytes (an int), not {got}{kept}")
    if value <= 0:
        raise ValueError(f"memory_budget must be a positive whole number of bytes, not {value!r}{kept}")
    return int(value)


def checked_max_entries(value: Any, kept: str = "") -> int | None:
    """``value`` as an entry limit (None: no limit), or the error naming it."""
    if value is not None and not _is_whole(value):
        raise TypeError(
            f"max_entries must be a positive whole number (an int) or None for no limit, not "
            f"{value!r} ({type(value).__name__}){kept}"
        )
    if value is not None and value <= 0:
        raise ValueError(
            f"max_entries must be a positive whole number or None for no limit, not {value!r}{kept}"
        )
    return None if value is None else int(value)


def _is_whole(value: object) -> bool:
    """An integer, numpy's too, but not a bool (``True`` is no size) and not a float."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


class Cleared(int):
    """How many entries ``clear`` removed: ``in_memory`` plus ``in_tiers`` (persisted, not loaded)."""

    in_memory: int
    in_tiers: int

    def __new__(cls, in_memory: int, in_tiers: int = 0) -> Cleared:
        cleared = super().__new__(cls, in_memory + in_tiers)
        cleared.in_memory, cleared.in_tiers = in_memory, in_tiers
        return cleared


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
        self._changed = threading.Condition(self._lock)  # the expiry thread waits on it
        self._counters = Counters()
        budget = default_memory_budget() if memory_budget is None else checked_memory_budget(memory_budget)
        self._table = EntryTable(budget, checked_max_entries(max_entries), self._counters)
        self._flights = Flights()
        self._subscribers = Subscribers()
        self._expiry: ExpiryThread | None = None
        self._operations = 0  # counted for the expiry thread: it backs off while they run
        self._closed = False
        self._tier: Tier | None = None
        self._filler = Filler(self)

    # ----------------------------------------------------------------- settings
    def now(self) -> float:
        """The store's clock; every front end reads time through this."""
        return self._timer()

    @property
    def persistence(self) -> Persistence | None:
        """Where persisted entries go beyond the kernel; every call into it is guarded."""
        return None if self._tier is None else self._tier.persistence

    @persistence.setter
    def persistence(self, value: Persistence | None) -> None:
        self._tier = None if value is None else Tier(value)

    @property
    def memory_budget(self) -> int:
        """Bytes that data entries may hold in all; the least recently used go first."""
        return self._table.memory_budget

    @memory_budget.setter
    def memory_budget(self, value: int) -> None:
        value = checked_memory_budget(value, f"; it stays {self.memory_budget}")

        def apply(removed: Removed) -> None:
            self._table.memory_budget = value
            self._table.enforce(None, None, removed)

        self._mutate(apply)

    @property
    def max_entries(self) -> int | None:
        """At most this many entries in the whole store (None: no limit)."""
        return self._table.max_entries

    @max_entries.setter
    def max_entries(self, value: int | None) -> None:
        value = checked_max_entries(value, f"; it stays {self.max_entries}")

        def apply(removed: Removed) -> None:
            self._table.max_entries = value
            self._table.enforce(None, None, removed)

        self._mutate(apply)

    # ----------------------------------------------------------------- reading
    def entries(self, kind: Kind | None = None) -> list[EntryInfo]:
        """Snapshots of the live entries, oldest first (expired ones are dropped first)."""
        self.purge_expired()
        with self._lock:
            now = self._timer()
            found = [
                e.snapshot()
                for e in self._table
                if kind in (None, e.kind) and (e.expires is None or now < e.expires)
            ]
        return sorted(found, key=lambda info: info.created)

    def get(self, key: str) -> EntryInfo | None:
        """The entry's snapshot, without counting a hit; None when absent or expired."""
        removed: Removed = []
        with self._lock:
            self._purge_lazily(removed)
            entry = self._live(key, removed)
            info = None if entry is None else entry.snapshot()
        self._after(removed)
        return info

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self.get(key) is not None

    def __len__(self) -> int:
        self.purge_expired()
        with self._lock:
            return len(self._table)

    def stats(self) -> CacheStats:
        """Totals and counters (O(1) in the number of entries)."""
        self.purge_expired()
        disk = self._tier.usage() if self._tier is not None else (0, 0)
        with self._lock:
            table, counters = self._table, self._counters
            return CacheStats(
                entries=len(table),
                data_entries=table.count("data"),
                resource_entries=table.count("resource"),
                data_bytes=table.data_bytes,
                memory_budget=table.memory_budget,
                hits=counters.hits,
                misses=counters.misses,
                time_saved=counters.time_saved,
                evictions=counters.evictions,
                expirations=counters.expirations,
                disk_bytes=disk[0],
                disk_budget=disk[1],
                held_by_live_results=held_bytes(),
            )

    def reset_stats(self) -> None:
        """Zero the hit, miss, eviction and expiry counters (entries stay)."""
        with self._lock:
            self._counters.reset()

    def removal_reason(self, key: str) -> str | None:
        """Why the entry with this key left the store, if it did recently."""
        with self._lock:
            return self._table.removal_reason(key)

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
        persist: bool | Where = False,
        dependencies: Dependencies | Callable[[], Dependencies] | None = None,
        stale: Callable[[Dependencies], str | None] | None = None,
        tiers_only: bool = False,
    ) -> Lookup:
        """Return the live entry for ``key`` or create it with ``create() -> (value, size)``.

        ``validate(value)`` runs on a hit; falsy or raising drops the entry (released) and
        creates it again. ``refresh`` creates a new value even when one is stored, and
        replaces the old one only once the new one exists, so a failure loses nothing.
        ``max_entries`` limits the entries of ``group`` (default: the key itself).
        ``miss_reason`` and ``dependencies`` may be callables, asked after ``create`` ran.
        ``stale(dependencies)`` runs on a hit of an entry that has dependencies, before the
        hit counts: a reason (a file it read changed, say) means the entry is computed again
        and replaced, as with ``refresh``.
        ``persist`` (data only; True means "disk") looks for the key in the persistent
        tiers before creating it (and claims it there while computing), and saves what it
        creates there, even a result too large to keep in memory.
        ``tiers_only`` serves the key from memory or the persistent tiers and raises
        ``NotStored`` instead of creating it (for a caller that must compute by itself).
        """
        __tracebackhide__ = True  # pytest and IPython leave this frame out of tracebacks
        if kind not in KINDS:
            raise ValueError(f"kind must be 'data' or 'resource', not {kind!r}")
        where: Where | None = "disk" if persist is True else (persist or None)
        if where not in (None, "disk", "team"):
            raise ValueError(f"persist must be False, True, 'disk' or 'team', not {persist!r}")
        if where is not None and kind != "data":
            raise ValueError("only data entries can be persisted: resources are kept as they are")
        while True:
            removed: Removed = []
            hit: Entry | None = None
            looked: Lookup | None = None
            flight: Flight | None = None
            owner = False
            with self._lock:
                self._purge_lazily(removed)
                entry = self._live(key, removed)
                if entry is None or refresh:
                    flight, owner = self._flights.join(key)
                elif validate is None and (stale is None or not entry.dependencies):
                    looked = self._hit_locked(entry)  # the common case: one turn of the lock
                else:
                    hit = entry  # validate runs outside the lock (user code), then the hit counts
            if removed:
                self._after(removed)
            if looked is not None:
                self._subscribers.emit(StoreEvent("hit", key, entry.kind))  # type: ignore[union-attr]
                return looked

            if hit is not None:
                if stale is not None and hit.dependencies and stale(hit.dependencies) is not None:
                    refresh = True  # what it read changed: compute it again, then replace it
                    continue
                if validate is not None and not self._still_valid(hit, validate):
                    continue
                looked = self._record_hit(key, hit)
                if looked is not None:
                    return looked
                continue  # removed between the look and the hit: look again
            if flight is not None and not owner:
                try:
                    lookup = flight.outcome()
                except NotStored:  # the owner only looked in the tiers: look again
                    continue
                if lookup.entry is not None:
                    shared = self._record_hit(key)
                    if shared is not None:
                        return shared
                return Lookup(lookup.value, False, lookup.entry)
            request = MissRequest(  # built on a miss only: hits stay cheap
                kind=kind,
                label=label,
                names=tuple(names),
                group=key if group is None else group,
                ttl=ttl,
                max_entries=max_entries,
                on_release=on_release,
                miss_reason=miss_reason,
                dependencies=dependencies,
                inputs=dict(inputs or {}),
                where=where if self._tier is not None else None,
                refresh=refresh,
                tiers_only=tiers_only,
            )
            return self._filler.fly(key, create, flight, request)

    def _still_valid(self, entry: Entry, validate: Callable[[Any], Any]) -> bool:
        with self._lock:  # release hooks ran since the look: the entry may have left (value None)
            if self._table.get(entry.key) is not entry:
                return False  # gone already: look again, nothing to validate or drop
            value = entry.value
        try:
            ok = bool(validate(value))
        except Exception as exc:  # a validate hook that raises means "not valid"
            warn(
                f"validate for {entry.label!r} raised {type(exc).__name__}: {exc}; "
                "the entry is released and recomputed",
            )
            ok = False
        if not ok:
            self._mutate(
                lambda removed: (
                    self._table.remove(entry.key, "invalid", removed)
                    if self._table.get(entry.key) is entry
                    else None
                )
            )
        return ok

    def _record_hit(self, key: str, expected: Entry | None = None) -> Lookup | None:
        """Count a hit of the live entry ``key`` (only if it is still ``expected``, when given)."""
        removed: Removed = []
        with self._lock:
            entry = self._live(key, removed)
            if entry is None or (expected is not None and entry is not expected):
                lookup, kind = None, None
            else:
                kind = entry.kind
                lookup = self._hit_locked(entry)
        self._after(removed)
        if kind is not None:
            self._subscribers.emit(StoreEvent("hit", key, kind))
        return lookup

    def _hit_locked(self, entry: Entry) -> Lookup:
        entry.hits += 1
        entry.last_used = self._timer()
        self._table.touch(entry)
        counters = self._counters
        counters.hits += 1
        counters.time_saved += entry.compute_seconds
        return Lookup(entry.value, True, entry.snapshot())

    # ----------------------------------------------------------------- removing
    def delete(self, key: str) -> bool:
        """Drop one entry (releasing a resource); True if it was there."""
        removed: Removed = []
        with self._lock:
            self._purge_lazily(removed)
            found = self._live(key, removed) is not None
            if found:
                self._table.remove(key, "deleted", removed)
        self._after(removed)
        return found

    def clear(self, kind: Kind | None = None) -> int:
        """Drop every entry, or every entry of one kind, and (for data) the persisted ones too.

        Returns how many entries were removed, as a ``Cleared`` (an int): those in memory,
        plus those the persistent tiers removed that were not loaded here (``.in_memory``,
        ``.in_tiers``), so a fresh kernel that empties the disk says how many it removed.
        """
        if kind is not None and kind not in KINDS:
            raise ValueError(f"kind must be 'data', 'resource' or None, not {kind!r}")
        count = self._remove_where(lambda e: kind in (None, e.kind), "cleared")
        in_tiers = 0
        if kind != "resource" and self._tier is not None:
            in_tiers = self._tier.clear()  # persisted entries not loaded in this kernel go too
        return Cleared(count, in_tiers)

    def delete_where(self, predicate: Callable[[EntryInfo], bool], reason: str = "deleted") -> int:
        """Drop the entries whose snapshot satisfies ``predicate``; returns how many."""
        return self._remove_where(lambda e: predicate(e.snapshot()), reason)

    def purge_expired(self) -> int:
        """Drop (and release) every expired entry now; returns how many.

        In batches: the lock is let go between them, so other threads' hits go on.
        """
        total = 0
        while True:
            removed: Removed = []
            with self._lock:
                self._table.expire_due(self._timer(), removed, EXPIRY_BATCH)
            self._after(removed)
            total += len(removed)
            if len(removed) < EXPIRY_BATCH:
                return total

    def close(self) -> None:
        """Release everything and stop the expiry thread (kernel shutdown)."""
        with self._lock:
            self._closed = True
            expiry, self._expiry = self._expiry, None
        if expiry is not None:
            expiry.stop()
        self._remove_where(lambda e: True, "closed")
        close_tiers = getattr(self.persistence, "close", None)
        if callable(close_tiers):  # flushes background disk fills, releases the index's descriptors
            try:
                close_tiers()
            except Exception as exc:  # shutting down: say it, don't raise
                warn(f"closing the persistent tiers failed: {exc}")

    def _remove_where(self, predicate: Callable[[Entry], bool], reason: str) -> int:
        removed: Removed = []
        with self._lock:
            self._operations += 1
            self._table.expire_due(self._timer(), removed)  # walks every entry anyway
            count = self._table.remove_where(predicate, reason, removed)
        self._after(removed)
        return count

    def _mutate(self, change: Callable[[Removed], Any]) -> None:
        removed: Removed = []
        with self._lock:
            change(removed)
        self._after(removed)

    def _live(self, key: str, removed: Removed) -> Entry | None:
        """The entry for ``key`` unless it is due (then it is dropped now: never served)."""
        entry = self._table.get(key)
        if entry is not None and entry.expires is not None and self._timer() >= entry.expires:
            self._table.remove(key, "expired", removed)
            return None
        return entry

    def _purge_lazily(self, removed: Removed) -> None:
        """Drop what is due (O(log n) each): all of it, or a few while an expiry thread runs.

        With a thread, operations and the thread share the work of a mass expiry in small
        pieces, so a hit never pays for thousands of other entries falling due at once.
        """
        self._operations += 1
        now = self._timer()
        if self._table.expiry.any_due(now):  # one comparison when nothing is due
            self._table.expire_due(now, removed, None if self._expiry is None else LAZY_EXPIRY)

    def _after(self, removed: Removed) -> None:
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
                        warn(
                            f"on_release for {entry.label!r} raised {type(exc).__name__}: {exc}",
                        )
                except BaseException as exc:
                    if pending is None:
                        pending = exc
            if entry.persisted and reason in DROP_FROM_TIERS and self._tier is not None:
                self._tier.delete(entry.key, expired=reason == "expired")
            entry.value = None  # drop our reference now: "freed, not only hidden"
            self._subscribers.emit(StoreEvent("removed", entry.key, entry.kind, reason))
        if pending is not None:
            raise pending

    # ----------------------------------------------------------------- events
    def subscribe(self, callback: Callable[[StoreEvent], None]) -> Callable[[], None]:
        """Call ``callback(event)`` after every change; returns a function that unsubscribes.

        Callbacks run on whichever thread changed the store, outside its lock.
        """
        return self._subscribers.subscribe(callback)

    # ----------------------------------------------------------------- expiry thread
    def start_expiry_thread(self) -> None:
        """Drop expired entries in the background, as they fall due, on a daemon thread.

        Only for a store on the real clock: a fake timer doesn't advance while we sleep.
        Release hooks of expired resources then run on that thread.
        """
        with self._lock:
            if self._expiry is not None or self._closed:
                return
            self._expiry = ExpiryThread(self._changed, self._due_in, self._drop_due, lambda: self._operations)
            self._expiry.start()

    def _due_in(self) -> float | None:
        earliest = self._table.expiry.earliest()
        return None if earliest is None else earliest - self._timer()

    def _drop_due(self, limit: int) -> int:
        removed: Removed = []
        with self._lock:
            self._table.expire_due(self._timer(), removed, limit)
        self._after(removed)
        return len(removed)


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
