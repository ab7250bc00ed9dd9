"""Single flight: concurrent callers of one key run one computation and share its outcome."""

from __future__ import annotations

import threading
from collections.abc import Iterator

from ._entry import Lookup


class NotStored(Exception):
    """A look in memory and the persistent tiers only (``tiers_only``) found nothing: the
    caller computes by itself (an awaited computation can't run inside the store)."""


class Flight:
    """One computation in progress; callers of the same key wait on it."""

    def __init__(self) -> None:
        self.owner = threading.get_ident()
        self.done = threading.Event()
        self.lookup: Lookup | None = None
        self.error: BaseException | None = None

    def outcome(self) -> Lookup:
        """Wait for the computation; its lookup, or its error raised here."""
        self.done.wait()
        if self.error is not None:
            raise self.error
        assert self.lookup is not None
        return self.lookup


class Flights:
    """The computations in progress, by key (guarded by the store's lock, like the table)."""

    def __init__(self) -> None:
        self._flights: dict[str, Flight] = {}

    def join(self, key: str) -> tuple[Flight | None, bool]:
        """The flight to wait on or to run, and whether the caller runs it.

        ``(None, False)`` for a re-entrant call from inside the key's own computation: it
        must compute inline, waiting would deadlock.
        """
        flight = self._flights.get(key)
        if flight is None:
            flight = self._flights[key] = Flight()
            return flight, True
        if flight.owner == threading.get_ident():
            return None, False
        return flight, False

    def land(self, key: str, flight: Flight) -> None:
        """Take ``flight`` off the board (idempotent; a newer flight of the key stays)."""
        if self._flights.get(key) is flight:
            del self._flights[key]

    def __bool__(self) -> bool:
        return bool(self._flights)

    def __len__(self) -> int:
        return len(self._flights)

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._flights))
