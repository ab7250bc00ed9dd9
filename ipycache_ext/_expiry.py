"""When entries fall due: an indexed min-heap of expiry times, and the thread that waits for them.

The heap answers "what is due now?" in O(log n) per due entry and forgets a removed entry
in O(log n), so nothing ever scans all entries to find the expired ones: with 100k
entries falling due, each is popped once, and an operation that finds nothing due pays
one comparison.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class ExpiryQueue:
    """Keys ordered by expiry time; one position per key (pushing a key again moves it)."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, str]] = []
        self._where: dict[str, int] = {}  # key -> its index in _heap

    def __len__(self) -> int:
        return len(self._heap)

    def earliest(self) -> float | None:
        """The first expiry time, or None when no entry expires."""
        return self._heap[0][0] if self._heap else None

    def push(self, key: str, expires: float) -> None:
        if key in self._where:
            self.discard(key)
        self._heap.append((expires, key))
        self._where[key] = len(self._heap) - 1
        self._up(len(self._heap) - 1)

    def discard(self, key: str) -> None:
        index = self._where.pop(key, None)
        if index is None:
            return
        last = self._heap.pop()
        if index < len(self._heap):
            self._heap[index] = last
            self._where[last[1]] = index
            self._down(self._up(index))

    def pop_due(self, now: float, limit: int | None = None) -> list[str]:
        """Keys whose expiry is ``<= now``, earliest first (at most ``limit`` of them)."""
        due: list[str] = []
        while self._heap and self._heap[0][0] <= now and (limit is None or len(due) < limit):
            key = self._heap[0][1]
            self.discard(key)
            due.append(key)
        return due

    def clear(self) -> None:
        self._heap.clear()
        self._where.clear()

    def _up(self, index: int) -> int:
        heap, where = self._heap, self._where
        item = heap[index]
        while index > 0:
            parent = (index - 1) // 2
            if heap[parent] <= item:
                break
            heap[index] = heap[parent]
            where[heap[index][1]] = index
            index = parent
        heap[index] = item
        where[item[1]] = index
        return index

    def _down(self, index: int) -> None:
        heap, where = self._heap, self._where
        size = len(heap)
        item = heap[index]
        while True:
            child = 2 * index + 1
            if child >= size:
                break
            if child + 1 < size and heap[child + 1] < heap[child]:
                child += 1
            if item <= heap[child]:
                break
            heap[index] = heap[child]
            where[heap[index][1]] = index
            index = child
        heap[index] = item
        where[item[1]] = index


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
