"""Key cost of a 1 GB input: parallel piece hashing against the single-thread stream.

Three ways to hash the same 1 GB numeric DataFrame, alternating round by round so load
from other processes falls on all alike; the figures are medians:

- ``stream``: what keys did before (one xxh3-128 stream over every column's buffer, one
  thread: the old ``_blob``), the baseline;
- ``digest, 1 thread``: today's ``digest`` with its pool limited to one thread;
- ``digest, N threads``: today's ``digest`` made to use one thread per core;
- ``digest, as shipped``: ``hash_threads()`` (one per core, chunks from one queue), which is what
  a kernel does.

Target: ``stream / digest N threads >= 1.7`` on two cores. The memory bandwidth bounds
this: when one core already streams memory as fast as the machine delivers it, a second
core can't add much. So each comparison also measures the ceiling in the same run: bare
``xxh3_128`` over the same bytes in 4 MiB pieces on one thread and on N threads (plain
threads, no framing), printed with GB/s; the benchmark also prints the same comparison on a
buffer that fits in the cache, where only the hashing itself counts. Run it on a quiet
machine::

    .venv/bin/python benchmarks/bench_hashing.py [--size 1GB] [--rounds 7]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import xxhash

from ipycache_ext._hash_buffers import PIECE, hash_threads, set_hash_threads
from ipycache_ext._hashing import digest


def seconds(func: Callable[[], object]) -> float:
    started = time.perf_counter()
    func()
    return time.perf_counter() - started


def stream(columns: list[memoryview]) -> bytes:
    """The old framing: every buffer through one hasher, on the calling thread."""
    h = xxhash.xxh3_128()
    for column in columns:
        h.update(len(column).to_bytes(8, "little"))
        h.update(column)
    return h.digest()


def raw_pieces(columns: list[memoryview], threads: int) -> None:
    """The memory-bandwidth ceiling: xxh3 of the same bytes in 4 MiB pieces, split over
    ``threads`` threads, with no framing, no digest walk and no pool of ours."""
    pieces = [(column, start) for column in columns for start in range(0, column.nbytes, PIECE)]

    def run(share: list[tuple[memoryview, int]]) -> None:
        for column, start in share:
            xxhash.xxh3_128(column[start : start + PIECE]).digest()

    if threads == 1:
        run(pieces)
        return
    bounds = [len(pieces) * k // threads for k in range(threads + 1)]
    helpers = [_raw_pool.submit(run, pieces[bounds[k] : bounds[k + 1]]) for k in range(1, threads)]
    run(pieces[: bounds[1]])
    for helper in helpers:
        helper.result()


_raw_pool = ThreadPoolExecutor(max_workers=3, thread_name_prefix="bare-xxh3")  # started once, like ours


def compare(label: str, value: object, columns: list[memoryview], rounds: int, threads: int) -> None:
    many = f"digest, {threads} threads"
    raw_many = f"raw xxh3, {threads} threads"
    times: dict[str, list[float]] = {"stream": [], "digest, 1 thread": [], many: [], "digest, as shipped": [],
                                     "raw xxh3, 1 thread": [], raw_many: []}  # fmt: skip
    for _ in range(rounds):
        times["stream"].append(seconds(lambda: stream(columns)))
        times["raw xxh3, 1 thread"].append(seconds(lambda: raw_pieces(columns, 1)))
        times[raw_many].append(seconds(lambda: raw_pieces(columns, threads)))
        set_hash_threads(1)
        times["digest, 1 thread"].append(seconds(lambda: digest(value)))
        set_hash_threads(threads)
        times[many].append(seconds(lambda: digest(value)))
        set_hash_threads(None)
        times["digest, as shipped"].append(seconds(lambda: digest(value)))
    medians = {name: statistics.median(values) for name, values in times.items()}
    base = medians["stream"]
    size = sum(column.nbytes for column in columns)
    print(f"\n## {label}")
    for name, median in medians.items():
        print(f"{name:>22}: {median * 1000:8.1f} ms   ({base / median:4.2f}x the stream, "
              f"{size / median / 1e9:5.1f} GB/s)")  # fmt: skip
    ceiling = medians["raw xxh3, 1 thread"] / medians[raw_many]
    ours = medians["digest, 1 thread"] / medians[many]
    print(f"  ceiling: bare xxh3 on {threads} threads is {ceiling:.2f}x one thread on this machine now "
          f"(bandwidth, other cores' load); digest on {threads} threads is {ours:.2f}x one")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="1GB", help="input size: 1GB, 256MB, ...")
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    units = {"GB": 10**9, "MB": 10**6}
    size = int(float(args.size[:-2]) * units[args.size[-2:].upper()])
    threads = max(1, min(4, os.cpu_count() or 1))
    print(f"load average before: {os.getloadavg()}; cores: {os.cpu_count()}; threads: {threads}; "
          f"as shipped now: {hash_threads()}")

    import pandas as pd

    rng = np.random.default_rng(42)
    frame = pd.DataFrame({name: rng.random(size // 32) for name in "abcd"})
    columns = [memoryview(frame[name].to_numpy().view(np.uint8)) for name in "abcd"]
    compare(f"numeric DataFrame, {size / 1e9:.2f} GB (from memory)", frame, columns, args.rounds, threads)

    cached = rng.integers(0, 255, 16 * 1024 * 1024, dtype=np.uint8)  # 16 MiB: near the cache
    label = "16 MiB buffer, repeated (cache-resident)"
    compare(label, cached, [memoryview(cached)], args.rounds * 20, threads)
    print(f"\nload average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
