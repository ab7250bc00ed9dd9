"""A miss, from start to finish: found again in a persistent tier, or computed; then kept.

The flight's owner (or a re-entrant caller) runs here: it asks the tiers first (``load``,
then ``claim`` held around the computation, so another kernel's entry that appears
meanwhile is a hit), computes, inserts the entry into the table (unless it is larger than
the whole memory budget), writes a new value through to the tiers (even one too large for
memory: that is where disk matters most) and finally lets the flight's waiters go.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ._entry import Dependencies, Entry, Kind, Lookup, Where
from ._errors import warn
from ._events import StoreEvent
from ._flight import Flight, NotStored
from ._format import format_size
from ._table import Removed
from ._tier import Restored

if TYPE_CHECKING:
    from ._store import CacheStore


@dataclass(frozen=True)
class MissRequest:
    """What a miss needs to know to compute, keep and persist an entry."""

    kind: Kind
    label: str
    names: tuple[str, ...]
    group: str
    ttl: float | None
    max_entries: int | None
    on_release: Callable[[Any], Any] | None
    miss_reason: str | Callable[[], str | None] | None
    dependencies: Dependencies | Callable[[], Dependencies] | None
    inputs: Mapping[str, str]
    where: Where | None
    refresh: bool
    tiers_only: bool = False  # look in the tiers, never compute: NotStored when not there


class Filler:
    """Fills missing keys for one store (whose lock, table, counters and tiers it uses)."""

    def __init__(self, store: CacheStore) -> None:
        self._store = store

    def fly(self, key: str, create: Callable[[], tuple[Any, int | None]], flight: Flight | None,
             request: MissRequest) -> Lookup:  # fmt: skip
        """Fill the key as the flight's owner (or inline, re-entrant); waiters get the outcome."""
        __tracebackhide__ = True
        store = self._store
        lookup: Lookup | None = None
        try:
            lookup = self._fill(key, create, request)
            return lookup
        except BaseException as exc:
            if flight is not None:
                flight.error = exc
            raise
        finally:
            if flight is not None:  # also when interrupted where nothing could be recorded
                with store._lock:
                    store._flights.land(key, flight)
                flight.lookup = lookup
                if lookup is None and flight.error is None:
                    flight.error = RuntimeError(f"computing {request.label!r} was interrupted")
                flight.done.set()

    def _fill(self, key: str, create: Callable[[], tuple[Any, int | None]], request: MissRequest) -> Lookup:
        """A persisted entry found again, or one computed now (claimed in the tiers meanwhile)."""
        __tracebackhide__ = True
        store = self._store
        tier, where = store._tier, request.where
        if tier is None or where is None:
            if request.tiers_only:
                raise NotStored
            return self._compute(key, create, request)
        restored = None if request.refresh else tier.load(key, where, store._timer())
        if restored is not None:
            return self._keep(
                key, request, restored.value, restored.size, restored.compute_seconds, restored=restored
            )
        if request.tiers_only:
            raise NotStored
        with tier.claim(key, where, store._timer()) as claimed:
            if claimed is not None and not request.refresh:  # another kernel computed it meanwhile
                return self._keep(
                    key, request, claimed.value, claimed.size, claimed.compute_seconds, restored=claimed
                )
            return self._compute(key, create, request)

    def _compute(
        self, key: str, create: Callable[[], tuple[Any, int | None]], request: MissRequest
    ) -> Lookup:
        __tracebackhide__ = True
        store = self._store
        started = time.perf_counter()
        try:
            value, size = create()
        except BaseException:
            with store._lock:
                store._counters.misses += 1
            raise
        return self._keep(key, request, value, size, time.perf_counter() - started, restored=None)

    def _keep(self, key: str, request: MissRequest, value: Any, size: int | None, elapsed: float, *,
              restored: Restored | None) -> Lookup:  # fmt: skip
        """Store what was computed or restored, write a new value through to the tiers."""
        store = self._store
        reason = request.miss_reason() if callable(request.miss_reason) else request.miss_reason
        if restored is not None:
            dependencies = tuple(restored.dependencies)
        elif callable(request.dependencies):
            dependencies = tuple(request.dependencies())
        else:
            dependencies = tuple(request.dependencies or ())
        removed: Removed = []
        with store._lock:
            now = store._timer()
            if restored is None:
                store._counters.misses += 1
                created, expires = now, (None if request.ttl is None else now + request.ttl)
            else:
                store._counters.hit(elapsed)
                created, expires = restored.created, restored.expires
            entry = Entry(
                key=key,
                kind=request.kind,
                label=request.label,
                names=request.names,
                group=request.group,
                value=value,
                size=size,
                created=created,
                expires=expires,
                compute_seconds=elapsed,
                on_release=request.on_release,
                miss_reason=reason,
                inputs=request.inputs,
                last_used=now,
                persisted=restored is not None,
                hits=0 if restored is None else 1,  # found in a tier: that was a hit
                dependencies=dependencies,
                computed_by=None if restored is None else restored.computed_by,
                shared=restored is not None and restored.where == "team",
            )
            kept = not (entry.kind == "data" and size is not None and size > store._table.memory_budget)
            if kept:
                store._table.insert(entry, request.max_entries, removed)
                if expires is not None and store._table.expiry.earliest() == expires:
                    store._changed.notify_all()  # the expiry thread sleeps until the earliest one
            else:  # a refresh too: the value it replaces is outdated, even if this one isn't kept
                store._table.remove(key, "replaced", removed)
            lookup = Lookup(value, restored is not None, entry.snapshot() if kept else None)
        saved = False
        if request.where is not None and restored is None:
            saved = self._write_through(entry, request.where)
            if saved and kept:
                with store._lock:
                    if store._table.get(key) is entry:
                        lookup = Lookup(value, False, entry.snapshot())
        if kept:
            store._subscribers.emit(StoreEvent("added", key, entry.kind))
        else:
            self._too_large(entry, written=saved, restored=restored is not None)
        store._after(removed)
        return lookup

    def _write_through(self, entry: Entry, where: Where) -> bool:
        """Save a new value to the tiers (slow I/O: outside the lock).

        If it can't be written, an older file under the same key (a refresh) must go too,
        or the next kernel would find the outdated value.
        """
        store = self._store
        assert store._tier is not None
        landed = store._tier.save(entry.key, entry.value, entry.snapshot(), where)
        if landed is None:
            store._tier.delete(entry.key)
            return False
        with store._lock:
            entry.persisted = True
            entry.shared = landed == "team"  # not when the team store didn't take it
        return True

    def _too_large(self, entry: Entry, *, written: bool, restored: bool) -> None:
        store = self._store
        where = (
            "; it was read from disk and is served from there"
            if restored
            else "; it was written to disk, where it is found again"
            if written
            else ""
        )
        warn(
            f"{entry.label!r}: the result ({format_size(entry.size)}) is larger than the whole memory "
            f"budget ({format_size(store._table.memory_budget)}), so it was not cached in memory{where}. "
            "Raise the store's memory_budget to keep it in memory.",
        )
