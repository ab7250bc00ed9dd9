"""When entries fall due: a heap of expiry times, and the thread that waits for them.

The heap answers "what is due now?" in O(log n) per due entry (``heapq``, in C), and a
removed entry is forgotten in O(1) (its heap item goes stale and is skipped when it comes
up; stale items are swept out once they outnumber the live ones, amortized O(1)). Nothing
ever scans all entries to find the expired ones: with 100k entries falling due, each is
popped once, and an operation that finds nothing due pays one comparison.
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections.abc import Callable


class ExpiryQueue:
    """Keys ordered by expiry time; one live position per key (pushing a key again moves it)."""

    _SWEEP_AFTER = 1024  # stale items tolerated before a sweep is considered

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, str]] = []  # (expires, serial, key)
        self._live: dict[str, int] = {}  # key -> serial of its live heap item
        self._serials = itertools.count()
        self._stale = 0

    def __len__(self) -> int:
        return len(self._live)

    def earliest(self) -> float | None:
        """The first expiry time, or None when no entry expires."""
        self._drop_stale_head()
        return self._heap[0][0] if self._heap else None

    def any_due(self, now: float) -> bool:
        """A quick look: False means nothing is due (True may be a stale item, checked on pop)."""
        return bool(self._heap) and self._heap[0][0] <= now

    def push(self, key: str, expires: float) -> None:
        if key in self._live:
            self._stale += 1
        serial = next(self._serials)
        self._live[key] = serial
        heapq.heappush(self._heap, (expires, serial, key))

    def discard(self, key: str) -> None:
        if self._live.pop(key, None) is not None:
            self._stale += 1
            if self._stale > self._SWEEP_AFTER and self._stale > len(self._live):
                self._sweep()

    def pop_due(self, now: float, limit: int | None = None) -> list[str]:
        """Keys whose expiry is ``<= now``, earliest first (at most ``limit`` of them)."""
        due: list[str] = []
        heap, live = self._heap, self._live
        while heap and (limit is None or len(due) < limit):
            expires, serial, key = heap[0]
            if live.get(key) != serial:
                heapq.heappop(heap)
                self._stale -= 1
            elif expires <= now:
                heapq.heappop(heap)
                del live[key]
                due.append(key)
            else:
                break
        return due

    def clear(self) -> None:
        self._heap.clear()
        self._live.clear()
        self._stale = 0

    def _drop_stale_head(self) -> None:
        heap, live = self._heap, self._live
        while heap and live.get(heap[0][2]) != heap[0][1]:
            heapq.heappop(heap)
            self._stale -= 1

    def _sweep(self) -> None:
        live = self._live
        self._heap = [item for item in self._heap if live.get(item[2]) == item[1]]
        heapq.heapify(self._heap)
        self._stale = 0


class ExpiryThread:
    """A daemon thread that sleeps until the earliest entry falls due, then has it dropped.

    ``due_in()`` (called with ``condition`` held) says how many seconds until the next
    expiry (None: none); ``drop(limit)`` (called without it) drops and releases up to
    ``limit`` due entries. ``activity()`` counts the store's operations: while they run,
    each of them drops a few due entries itself, so the thread drops only small batches
    with pauses in between. Under the GIL every batch this thread runs is time a hitting
    thread waits, so with 100k entries falling due at once hits stay as fast as ever;
    when nothing else runs, the thread drops large batches back to back.
    """

    BUSY_BATCH = 16
    BUSY_PAUSE = 0.02
    IDLE_BATCH = 512

    def __init__(
        self,
        condition: threading.Condition,
        due_in: Callable[[], float | None],
        drop: Callable[[int], int],
        activity: Callable[[], int],
    ) -> None:
        self._condition = condition
        self._due_in = due_in
        self._drop = drop
        self._activity = activity
        self._stopped = False
        self.thread = threading.Thread(target=self._run, name="ipycache_ext-expiry", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        """Ask the thread to end (it does at its next wake-up, which this causes)."""
        with self._condition:
            self._stopped = True
            self._condition.notify_all()

    def _run(self) -> None:
        seen = self._activity()
        while True:
            with self._condition:
                if self._stopped:
                    return
                wait = self._due_in()
                if wait is None or wait > 0:
                    # Capped: a TTL of years would overflow the wait and kill this thread.
                    self._condition.wait(None if wait is None else min(wait + 0.005, 3600.0))
                    continue
                busy, seen = self._activity() != seen, self._activity()
            self._drop(self.BUSY_BATCH if busy else self.IDLE_BATCH)
            if busy:
                with self._condition:
                    self._condition.wait(self.BUSY_PAUSE)
            else:
                time.sleep(0)  # hand the interpreter over between batches
