"""The store at scale: costs must not grow with the number of entries (issue 15).

Measured at 10, 10k and 100k entries, each against the 10-entry figure of the same run
(these machines are shared and noisy: absolute times drift, ratios much less):

- a miss under a limit, which must evict one entry: ``max_entries`` of a group, the
  store's ``max_entries``, and a full memory budget (median and p99 of single misses);
- hit latency while the entries expire: every entry but one hot key gets a TTL that ends
  at the same moment; the main thread hits the hot key the whole time the expiry thread
  drops them (p50, p99.9, max), and how long dropping them took.

    .venv/bin/python benchmarks/bench_store.py                  # 10, 10k, 100k
    .venv/bin/python benchmarks/bench_store.py --sizes 10 10000 # a quicker run

Target: every figure at 100k within 2x of the one at 10 ("flat").

It also measures the memory honesty of issue 15: a hit of a 477 MB entry (ten arrays),
one 47.7 MB array kept, the entry cleared: how much of the memory file stays allocated
and what ``stats().held_by_live_results`` says (``--entry-mb 0`` skips it).
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ipycache_ext._store import CacheStore, StoreEvent

VALUE = object()
SIZE = 100  # bytes each data entry counts against the budget


def _fill(store: CacheStore, count: int, **options: Any) -> None:
    for i in range(count):
        store.get_or_create(f"fill{i}", lambda: (VALUE, SIZE), kind="data", label="fill", **options)


def _misses(store: CacheStore, calls: int, **options: Any) -> list[float]:
    """Seconds of each of ``calls`` misses (new keys: each one evicts one entry)."""
    times = []
    clock = time.perf_counter
    for i in range(calls):
        key = f"miss{i}"
        started = clock()
        store.get_or_create(key, lambda: (VALUE, SIZE), kind="data", label="miss", **options)
        times.append(clock() - started)
    return times


def miss_under_limit(limit: str, entries: int, calls: int) -> list[float]:
    """Per-miss seconds with ``entries`` stored and the limit ``limit`` reached."""
    if limit == "group max_entries":
        store = CacheStore(memory_budget=10**15)
        options: dict[str, Any] = {"group": "g", "max_entries": entries}
        _fill(store, entries, **options)
    elif limit == "store max_entries":
        store = CacheStore(memory_budget=10**15, max_entries=entries)
        options = {}
        _fill(store, entries)
    else:  # a full memory budget
        store = CacheStore(memory_budget=entries * SIZE)
        options = {}
        _fill(store, entries)
    assert len(store._table) == entries
    gc.collect()
    gc.disable()  # the collector's pauses grow with the heap, not with the store
    try:
        times = _misses(store, calls, **options)
    finally:
        gc.enable()
    assert len(store._table) == entries and store.stats().evictions == calls
    store.close()
    return times


def hits_while_expiring(entries: int, min_seconds: float) -> tuple[list[float], float]:
    """Hit latencies of a hot key while ``entries`` others expire; and how long expiring took."""
    store = CacheStore(memory_budget=10**15)
    store.start_expiry_thread()
    expired = threading.Event()
    gone = [0]
    done_at = [0.0]

    def count(event: StoreEvent) -> None:
        if event.action == "removed":
            gone[0] += 1
            if gone[0] == entries:
                done_at[0] = time.time()
                expired.set()

    store.subscribe(count)
    store.get_or_create("hot", lambda: (VALUE, SIZE), kind="data", label="hot")
    lead = 0.3 + entries / 100_000  # filling must end before the first one falls due
    deadline = time.time() + lead + entries * 20e-6
    for i in range(entries):
        store.get_or_create(
            f"e{i}", lambda: (VALUE, SIZE), kind="data", label="e", ttl=deadline - time.time()
        )
    gc.collect()
    while time.time() < deadline - 0.05:
        time.sleep(0.01)
    times: list[float] = []
    clock = time.perf_counter
    hit = store.get_or_create
    create: Callable[[], tuple[Any, int]] = lambda: (VALUE, SIZE)  # noqa: E731
    started = clock()
    gc.disable()
    try:
        while not expired.is_set() or clock() - started < min_seconds:
            before = clock()
            lookup = hit("hot", create, kind="data", label="hot")
            times.append(clock() - before)
            assert lookup.hit
    finally:
        gc.enable()
    took = done_at[0] - deadline
    assert len(store._table) == 1
    store.close()
    return times, took


def kept_slice_memory(entry_mb: int) -> None:
    """Allocated bytes of an entry's memory file after a clear, with one of its arrays kept."""
    import os

    import numpy as np

    from ipycache_ext._serialize import serialize

    store = CacheStore(memory_budget=10**12)
    column = entry_mb * 1_000_000 // 10 // 8
    value = serialize({f"c{i}": np.full(column, i, dtype=np.float64) for i in range(10)})
    if value.memory_file is None:
        print("  no memory files on this system: hits are copies, nothing is held")
        return
    probe = os.dup(value.memory_file.fd)
    box, size = [value], value.nbytes
    del value
    store.get_or_create("big", lambda: (box.pop(), size), kind="data", label="big")
    hit = store.get_or_create("big", lambda: (None, 0), kind="data", label="big").value.load()
    kept = hit["c3"]
    del hit
    gc.collect()
    before = os.fstat(probe).st_blocks * 512
    store.clear()
    gc.collect()
    after = os.fstat(probe).st_blocks * 512
    held = store.stats().held_by_live_results
    print(
        f"  {size / 1e6:.0f} MB entry, one {kept.nbytes / 1e6:.1f} MB array kept from a hit: memory file "
        f"{before / 1e6:.1f} MB allocated before the clear, {after / 1e6:.1f} MB after; "
        f"stats().held_by_live_results = {held / 1e6:.1f} MB"
    )
    del kept
    gc.collect()
    print(f"  the kept array dropped too: {os.fstat(probe).st_blocks * 512 / 1e6:.1f} MB allocated")
    os.close(probe)
    store.close()


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10, 10_000, 100_000])
    parser.add_argument("--misses", type=int, default=2_000, help="timed misses per figure and round")
    parser.add_argument("--hit-seconds", type=float, default=1.0, help="least time spent hitting per round")
    parser.add_argument("--rounds", type=int, default=3, help="rounds, sizes interleaved (default 3)")
    parser.add_argument("--entry-mb", type=int, default=477, help="entry size for the memory figure")
    args = parser.parse_args()
    sizes: list[int] = args.sizes
    base = sizes[0]
    failures = 0
    limits = ("group max_entries", "store max_entries", "full memory budget")

    # Rounds interleave the sizes, so that load from other processes falls on all alike;
    # each figure is the best round's (the least disturbed one), the median round in brackets.
    misses: dict[tuple[str, int], list[tuple[float, float]]] = {}
    hits: dict[int, list[tuple[float, float, float, float, int, float]]] = {}
    for _ in range(args.rounds):
        for entries in sizes:
            for limit in limits:
                times = miss_under_limit(limit, entries, args.misses)
                misses.setdefault((limit, entries), []).append(
                    (statistics.median(times), percentile(times, 0.99))
                )
            times, took = hits_while_expiring(entries, args.hit_seconds)
            hits.setdefault(entries, []).append(
                (
                    percentile(times, 0.999),
                    statistics.median(times),
                    max(times),
                    took,
                    len(times),
                    percentile(times, 0.99),
                )
            )

    print(f"Miss that evicts one entry (µs per miss; best of {args.rounds} rounds, median round in brackets)")
    for limit in limits:
        first = min(m for m, _ in misses[limit, base])
        for entries in sizes:
            rounds = misses[limit, entries]
            median = min(m for m, _ in rounds)
            p99 = min(p for _, p in rounds)
            ratio = median / first
            failures += ratio > 2
            print(
                f"  {limit:<20} {entries:>7,} entries: median {median * 1e6:6.1f} µs "
                f"[{statistics.median(m for m, _ in rounds) * 1e6:6.1f}]  p99 {p99 * 1e6:6.1f} µs"
                f"  {ratio:.2f}x the {base:,}-entry median"
            )

    print(
        "Hit of a hot key while every other entry expires at once "
        f"(expiry thread running; best of {args.rounds} rounds, median round in brackets)"
    )
    first_p999 = min(r[0] for r in hits[base])
    for entries in sizes:
        rounds = hits[entries]
        best = min(rounds)
        p999, p50, worst, took, count, p99 = best
        middle = statistics.median(r[0] for r in rounds)
        ratio = p999 / first_p999
        failures += ratio > 2
        print(
            f"  {entries:>7,} expiring: p99.9 {p999 * 1e6:6.1f} µs [{middle * 1e6:7.1f}]"
            f"  p99 {p99 * 1e6:5.1f} µs  p50 {p50 * 1e6:5.1f} µs  max {worst * 1e3:6.2f} ms"
            f"  {ratio:.2f}x the {base:,}-entry p99.9;"
            f" {count:,} hits, all {entries:,} dropped {took:.2f} s after falling due"
        )
    print("flat within 2x: " + ("yes" if not failures else f"no ({failures} figures above 2x)"))
    if args.entry_mb:
        print("Memory of a cleared entry that a live result still uses")
        kept_slice_memory(args.entry_mb)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
