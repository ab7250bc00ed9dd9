"""The team cache, measured against baselines of the same run (issue 13), and the disk at scale (issue 15).

1. A team hit of a numeric frame (100 MB, 1 GB) over loopback from a real redis-server:
   the transfer into a memory file, Ed25519 over the signed part and BLAKE3 over every
   buffer, mapping the value and one load of it (the local disk fill that follows runs in a
   thread and is waited for outside the timing), against
   ``pd.read_parquet`` of the same frame from local disk (page cache warm) and against
   computing it (a stand-in: a random walk per column, ``rng.normal`` + ``cumsum``).
2. Eight processes asking for one cold key at once: how many computed it (must be 1).
3. A persisted save at 10 and 3,000 files in the cache directory (the budget used to list
   every file on every save): median per save, and the ratio (target: flat within 2x).

    .venv/bin/python benchmarks/bench_team.py                # everything
    .venv/bin/python benchmarks/bench_team.py --sizes 100MB  # quicker
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ipycache_ext._envelope import EntryHeader
from ipycache_ext._landing import Landing
from ipycache_ext._persist import SignedCache
from ipycache_ext._serialize import serialize
from tests.redis_fixtures import RedisServer
from tests.team_helpers import entry, user

SIZES = {"100MB": 100_000_000, "1GB": 1_000_000_000}


def frame_of(nbytes: int) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    return pd.DataFrame(
        rng.normal(size=(nbytes // 80, 10)).cumsum(axis=0), columns=[f"c{i}" for i in range(10)]
    )


def best(function: Any, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        times.append(time.perf_counter() - started)
    return min(times)


def team_hits(server: RedisServer, work: Path, repeats: int, sizes: list[str]) -> None:
    print("team hit (loopback redis-server) vs pd.read_parquet (local disk) vs computing")
    columns = ("frame", "compute", "read_parquet", "team hit", "of which redis", "GB/s", "vs parquet")
    print(" | ".join(columns))
    for name in sizes:
        nbytes = SIZES[name]
        started = time.perf_counter()
        frame = frame_of(nbytes)
        compute = time.perf_counter() - started
        parquet = work / f"{name}.parquet"
        frame.to_parquet(parquet)
        pd.read_parquet(parquet)  # warm the page cache: the fair case for parquet
        read = best(lambda parquet=parquet: pd.read_parquet(parquet), repeats)
        alice = user(work, "alice", server.url, socket_timeout=30)
        assert alice.save(f"frame{name}", serialize(frame), entry(), "team")
        del frame
        hits: list[float] = []
        transfer: list[float] = []
        for repeat in range(repeats):
            bob = user(work, f"bob{name}{repeat}", server.url, trusts=("alice",), socket_timeout=30)
            assert bob.team is not None
            with Landing() as landing:
                started = time.perf_counter()
                assert bob.team.backend.get_into(f"frame{name}", landing.open) is not None
                transfer.append(time.perf_counter() - started)
            started = time.perf_counter()
            found = bob.load(f"frame{name}", "team")
            assert found is not None and found.where == "team"
            found.value.load()
            hits.append(time.perf_counter() - started)
            bob.flush()  # the local disk fill runs after the hit, in a thread: not part of it
            del found
        hit = min(hits)
        print(
            f"{name:>6} | {compute:8.2f}s | {read:11.3f}s | {hit:8.3f}s | {min(transfer):13.3f}s | "
            f"{nbytes / hit / 1e9:4.2f} | {hit / read:5.2f}x"
        )


def eight_processes(server: RedisServer, work: Path) -> None:
    from tests.test_team_claim import eight_kernels

    outputs = eight_kernels(server.url, work / "eight")
    computed = sum(out.count("computed") for out in outputs)
    print(f"eight processes, one cold key: computed {computed} time(s) (must be 1)")


def disk_saves(work: Path, counts: tuple[int, ...] = (10, 3000), samples: int = 200) -> None:
    print("persisted save (small value) with N files already in the cache directory")
    value = serialize(list(range(100)))
    medians = {}
    for count in counts:
        cache = SignedCache.in_directory(work / f"disk{count}")
        for index in range(count):
            cache.save(value, header(f"fill{index}"))
        times = []
        for index in range(samples):
            started = time.perf_counter()
            cache.save(value, header(f"probe{index}"))
            times.append(time.perf_counter() - started)
        medians[count] = statistics.median(times)
        usage = timed(cache.usage)
        print(f"  {count:>5} files: {medians[count] * 1e3:6.2f} ms per save, usage() {usage:.1f} µs")
    print(
        f"  ratio {counts[-1]} / {counts[0]}: {medians[counts[-1]] / medians[counts[0]]:.2f}x (target <= 2x)"
    )


def timed(function: Any) -> float:
    started = time.perf_counter()
    for _ in range(100):
        function()
    return (time.perf_counter() - started) / 100 * 1e6


def header(key: str) -> EntryHeader:
    return EntryHeader(
        key=key, kind="data", label=key, names=(), created=time.time(), expires=None, compute_seconds=0
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", nargs="*", default=list(SIZES), choices=list(SIZES))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip", nargs="*", default=[], choices=["hits", "eight", "disk"])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        work = Path(directory)
        server = RedisServer(work / "redis").start()
        try:
            if "hits" not in args.skip:
                team_hits(server, work, args.repeats, args.sizes)
            if "eight" not in args.skip:
                eight_processes(server, work)
        finally:
            server.stop()
        if "disk" not in args.skip:
            disk_saves(work)


if __name__ == "__main__":
    main()
