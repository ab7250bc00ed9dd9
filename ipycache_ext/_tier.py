"""The store's side of the persistent tiers: their protocol, and one guard around every call.

A tier (the user's disk, a team's shared store) can fail in any way: a full disk, a
server that went away, a bug. The store must keep working all the same, so every call
goes through ``Tier``: an exception is one ``RuntimeWarning`` per kind of failure (the
operation and the exception's type) for the life of the store, and counts as a miss
(load, claim), a failed write (save) or a no-op (delete, clear, usage).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from typing import Any, Protocol

from ._entry import EntryInfo, Where
from ._errors import warn
from ._progress import progress

# Removals after which a persisted entry must not be found again in a tier. Not "evicted"
# (memory pressure is no reason to forget it), "closed" (the kernel stops: that is what
# persistence is for) or "replaced" (the new value has just been saved under that key).
DROP_FROM_TIERS = frozenset({"deleted", "cleared", "expired", "invalid"})


@dataclass(frozen=True)
class Restored:
    """An entry found again in a persistent tier (after a restart, or from another kernel)."""

    value: Any  # a SerializedValue
    size: int | None
    created: float
    expires: float | None
    compute_seconds: float
    dependencies: tuple[Mapping[str, Any], ...] = ()  # JSON-able records, opaque to store and tiers
    computed_by: str | None = None  # "alice@host": who computed it
    where: str = "disk"  # the tier it came from: "disk" or "team"


class Persistence(Protocol):
    """Where persisted data entries are kept beyond the kernel (see ``_persist.py``).

    The store asks it on a miss of a persisted key (``load``, then ``claim`` around the
    computation), tells it about every new persisted entry (``save``) and about every
    entry that must not be found again (``delete``: deleted, cleared, expired, invalid).
    It never hands it resources.
    """

    def load(self, key: str, where: Where) -> Restored | None: ...

    def save(self, key: str, value: Any, entry: EntryInfo, where: Where) -> Where | None:
        """Where the entry was written (``disk`` when the team store didn't take it), or None."""

    def claim(self, key: str, where: Where) -> AbstractContextManager[Restored | None]: ...

    def delete(self, key: str, *, expired: bool = False) -> None:
        """``expired``: only the generation this kernel holds may go (another may be newer)."""

    def clear(self) -> int: ...

    def usage(self) -> tuple[int, int]: ...


class Tier:
    """A ``Persistence`` behind the guard: nothing it raises reaches the store's callers."""

    def __init__(self, persistence: Persistence) -> None:
        self.persistence = persistence
        self._warned: set[tuple[str, str]] = set()
        self._lock = threading.Lock()

    def load(self, key: str, where: Where, now: float) -> Restored | None:
        """The live entry found in the tier, or None (absent, expired, or the tier failed)."""
        place = "the team store" if where == "team" else "disk"
        try:
            with progress(f"loading the cached entry {key[:12]} from {place}"):  # shown if > 1 s
                found = self.persistence.load(key, where)
        except Exception as exc:
            self._failed("read", exc, f"the persisted entry {key[:12]}", "it is computed instead")
            return None
        return self._live(key, found, now)

    @contextmanager
    def claim(self, key: str, where: Where, now: float) -> Iterator[Restored | None]:
        """The tier's claim on computing ``key``: yields an entry another kernel made, or None."""
        try:
            claim = self.persistence.claim(key, where)
            found = claim.__enter__()
        except Exception as exc:
            self._failed("claim", exc, f"the key {key[:12]}", "it is computed here without a lease")
            claim = None
        if claim is None:  # yielded outside the except: the computation's errors are its own
            yield None
            return
        try:
            yield self._live(key, found, now)
        except BaseException as error:
            try:
                claim.__exit__(type(error), error, error.__traceback__)  # never swallows the error
            except Exception as exc:
                self._failed("release", exc, f"the lease on {key[:12]}", "it expires by itself")
            raise
        try:
            claim.__exit__(None, None, None)
        except Exception as exc:
            self._failed("release", exc, f"the lease on {key[:12]}", "it expires by itself")

    def save(self, key: str, value: Any, entry: EntryInfo, where: Where) -> Where | None:
        try:
            return self.persistence.save(key, value, entry, where)
        except Exception as exc:
            self._failed("write", exc, repr(entry.label), "it stays cached in memory only")
            return None

    def delete(self, key: str, *, expired: bool = False) -> None:
        try:
            self.persistence.delete(key, expired=expired)
        except Exception as exc:
            self._failed("delete", exc, f"the persisted entry {key[:12]}", "another kernel may still find it")

    def clear(self) -> int:
        """How many entries the tiers removed (0 when they failed)."""
        try:
            return int(self.persistence.clear())
        except Exception as exc:
            self._failed("clear", exc, "the persisted entries", "another kernel may still find them")
            return 0

    def usage(self) -> tuple[int, int]:
        """Local bytes on disk and the disk budget ((0, 0) when the tier can't say)."""
        try:
            used, budget = self.persistence.usage()
            return int(used), int(budget)
        except Exception as exc:
            self._failed("usage", exc, "the disk usage", "it is shown as 0")
            return 0, 0

    def _live(self, key: str, found: Restored | None, now: float) -> Restored | None:
        if found is None:
            return None
        if found.expires is not None and now >= found.expires:
            self.delete(key, expired=True)
            return None
        return found

    def _failed(self, operation: str, exc: Exception, what: str, consequence: str) -> None:
        with self._lock:
            kind = (operation, type(exc).__name__)
            if kind in self._warned:
                return
            self._warned.add(kind)
        warn(
            f"the persistent cache could not {operation} {what} ({type(exc).__name__}: {exc}); "
            f"{consequence}. Further {operation} failures like this one are not reported.",
        )
