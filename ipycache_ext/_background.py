"""``refresh_mode="background"``: serve a stale value at once and refresh it on one thread.

As in Streamlit: once an entry is older than its ``ttl`` it is stale, but a hit still
serves it immediately and starts one background computation of that key (never two at
a time); the new value replaces the old one when it is ready. The store keeps the entry
until its hard expiry (``BACKGROUND_HARD_EXPIRY`` x ttl); past that, a call waits for a
new value as in the foreground mode. A refresh that fails keeps the stale value, says so
once in the caller's thread on the next call (a warning from a background thread would
land in whichever cell happens to run), and is not tried again for ``FAILURE_COOLDOWN``
seconds (Streamlit's figure), or until the entry is computed anew.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from ._engine import Outcome
from ._errors import warn
from ._store import CacheStore, EntryInfo

__all__ = ["FAILURE_COOLDOWN", "BackgroundRefresher"]

FAILURE_COOLDOWN = 60.0  # seconds before a failed refresh is tried again (as Streamlit)


class BackgroundRefresher:
    """The background refreshes of one cached function, by key."""

    def __init__(self, name: str, ttl: float) -> None:
        self._name = name
        self._ttl = ttl
        self._lock = threading.Lock()
        self._running: dict[str, threading.Thread] = {}
        self._failed: dict[str, tuple[float, str]] = {}  # key -> (retry after, message)

    def stale(self, store: CacheStore, entry: EntryInfo) -> bool:
        return store.now() - entry.created >= self._ttl

    def refreshing(self, key: str) -> bool:
        with self._lock:
            return key in self._running

    def served(self, store: CacheStore, entry: EntryInfo, refresh: Callable[[], Outcome | None]) -> None:
        """A hit of ``entry`` was served: start its refresh if it is stale (and none runs)."""
        if not self.stale(store, entry):
            return
        key = entry.key
        with self._lock:
            failed = self._failed.get(key)
            if failed is not None:
                retry_after, message = failed
                self._failed[key] = (retry_after, "")
                if message:
                    warn(message)
                if store.now() < retry_after:
                    return
                del self._failed[key]
            if key in self._running:
                return
            thread = threading.Thread(
                target=self._refresh, args=(store, key, refresh), name=f"refresh {self._name}", daemon=True
            )
            self._running[key] = thread
        thread.start()

    def forget(self, key: str) -> None:
        """The entry was computed anew (in the foreground): a past failure no longer counts."""
        if self._failed:
            with self._lock:
                self._failed.pop(key, None)

    def join(self, timeout: float | None = None) -> None:
        """Wait for the refreshes in progress (tests, and a kernel that wants to be quiet)."""
        with self._lock:
            threads = list(self._running.values())
        for thread in threads:
            thread.join(timeout)

    def _refresh(self, store: CacheStore, key: str, refresh: Callable[[], Outcome | None]) -> None:
        try:
            refresh()
        except Exception as exc:  # the stale value stays; the caller hears of it next time
            message = (
                f"refreshing {self._name}() in the background failed ({type(exc).__name__}: {exc}); "
                f"its stale value is served until it expires, and the refresh is tried again in "
                f"{FAILURE_COOLDOWN:g} s"
            )
            with self._lock:
                self._failed[key] = (store.now() + FAILURE_COOLDOWN, message)
        finally:
            with self._lock:
                self._running.pop(key, None)
