"""Change events and their subscribers (the panel listens here)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from ._entry import Kind
from ._errors import warn


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


class Subscribers:
    """Callbacks called after every change, on the changing thread, outside the store's lock."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._callbacks: tuple[Callable[[StoreEvent], None], ...] = ()

    def subscribe(self, callback: Callable[[StoreEvent], None]) -> Callable[[], None]:
        """Add ``callback``; returns a function that removes it again."""
        with self._lock:
            self._callbacks = (*self._callbacks, callback)

        def unsubscribe() -> None:
            with self._lock:
                if callback in self._callbacks:
                    callbacks = list(self._callbacks)
                    callbacks.remove(callback)
                    self._callbacks = tuple(callbacks)

        return unsubscribe

    def emit(self, event: StoreEvent) -> None:
        for callback in self._callbacks:  # a tuple, replaced (never changed) on (un)subscribe
            try:
                callback(event)
            except Exception as exc:  # a broken listener must not break caching
                warn(
                    f"cache event listener {callback!r} raised {type(exc).__name__}: {exc}",
                )
