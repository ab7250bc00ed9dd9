"""The store's counters and the totals it reports."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class CacheStats:
    """Counters since the store was created (or since ``reset_stats``), and totals now.

    ``held_by_live_results``: bytes of values that already left the store (cleared,
    evicted, expired) but that results still alive in the kernel map, so they stay in
    memory until those results go. Only the buffers those results use are held; the rest
    of such a value is freed when it leaves. It is reported next to the budget, not
    counted in it: it is the memory of the user's own variables.
    """

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
    held_by_live_results: int = 0


class Counters:
    """Hits, misses, time saved, evictions and expirations (guarded by the store's lock)."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.hits = self.misses = self.evictions = self.expirations = 0
        self.time_saved = 0.0

    def hit(self, compute_seconds: float) -> None:
        self.hits += 1
        self.time_saved += compute_seconds

    def removed(self, reason: str) -> None:
        if reason == "evicted":
            self.evictions += 1
        elif reason == "expired":
            self.expirations += 1
