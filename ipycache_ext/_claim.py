"""Who computes a cold key: one kernel holds a lease, the others wait for its entry.

A waiter is told once who is computing ("being computed by alice@host since 14:02"), polls
for the entry, and takes the lease over when the holder dies (its lease lapses or its lock is
released); it gives up after ``wait_seconds`` and computes itself. The holder's lease is
renewed by a thread while the computation runs, so a slow computation keeps it and a dead
kernel loses it after one lease period.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

from .backends.base import BackendUnavailable, Lease, Leases

T = TypeVar("T")


def holder_text(who: str, timer: Callable[[], float] = time.time) -> str:
    return f"{who} since {time.strftime('%H:%M', time.localtime(timer()))}"


class _Renewer:
    """Renews a lease every third of its period until stopped."""

    def __init__(self, lease: Lease, period: float) -> None:
        self._lease = lease
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, args=(period / 3,), daemon=True, name="ipycache-lease"
        )
        self._thread.start()

    def _run(self, every: float) -> None:
        while not self._stop.wait(every):
            try:
                if not self._lease.renew():
                    return  # lost: someone else computes too; ours still gets saved
            except Exception:  # a server hiccup: try again next period
                continue

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)


@contextmanager
def claim(
    leases: Leases,
    key: str,
    *,
    who: str,
    load: Callable[[], T | None],
    present: Callable[[], bool],
    notice: Callable[[str], None],
    lease_seconds: float = 30.0,
    wait_seconds: float = 600.0,
    poll_seconds: float = 0.1,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> Iterator[T | None]:
    """Yield the entry another kernel computed meanwhile, or None holding the lease on ``key``."""
    deadline = clock() + wait_seconds
    told: str | None = None
    lease: Lease | None = None
    found: T | None = None
    try:
        while True:
            lease = leases.acquire(key, holder_text(who), lease_seconds)
            if lease is not None:
                found = load()  # it may have been finished just before we got the lease
                break
            holder = leases.holder(key)
            if holder is not None and told is None:
                told = holder
                notice(f"key {key[:12]} is being computed by {holder}: waiting for its result")
            if present():
                found = load()
                if found is not None:
                    break
            if clock() >= deadline:
                who_else = told or "another kernel"
                notice(f"gave up waiting for {who_else} after {wait_seconds:.0f} s: computing here")
                break
            sleep(poll_seconds)
    except BackendUnavailable:
        lease = None  # the store went away while we waited: compute here (said by the tier)
    if found is not None or lease is None:
        if lease is not None:
            lease.release()
        yield found
        return
    renewer = _Renewer(lease, lease_seconds)
    try:
        yield None
    finally:
        renewer.stop()
        with contextlib.suppress(Exception):  # the server is gone: the lease lapses by itself
            lease.release()
