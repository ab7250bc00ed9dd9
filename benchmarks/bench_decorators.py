"""Cost of one cache hit: ``@ipycache_ext.cache_data`` against Streamlit's ``@st.cache_data``.

Both decorate the same trivial function, called with one small int argument, in the same
process. Rounds alternate between the two so that load from other processes falls on both
alike; the figures are medians over the rounds. Target: ipycache_ext at least 3x faster.

Then the cross-loop single flight of an ``async def``: a thread runs ``asyncio.run`` on a
cold key (a 20 ms computation), a second loop asks for the same key meanwhile; measured is
how long after the first computation ends the second loop has the value (it waits on a
``concurrent.futures.Future``, woken by the first loop, not polling), and how many
computations ran (must be 1).

Streamlit is not a dependency; install it into the venv only to run this::

    .venv/bin/pip install streamlit
    .venv/bin/python benchmarks/bench_decorators.py
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import logging
import os
import statistics
import sys
import threading
import time
from collections.abc import Callable
from typing import Any


def double(x: int) -> int:
    return x * 2


def per_call_ns(func: Callable[[int], Any], calls: int) -> float:
    """Nanoseconds per call of ``func(7)``, the loop's own cost subtracted."""
    started = time.perf_counter_ns()
    for _ in range(calls):
        func(7)
    elapsed = time.perf_counter_ns() - started
    started = time.perf_counter_ns()
    for _ in range(calls):
        pass
    return (elapsed - (time.perf_counter_ns() - started)) / calls


async def _slow(key: int, _started: threading.Event, _done: list[float], _runs: list[int]) -> int:
    _runs.append(key)
    _started.set()
    await asyncio.sleep(0.02)
    _done.append(time.perf_counter())
    return key


def cross_loop_us(decorator: Callable[[Any], Any], rounds: int) -> tuple[float, float]:
    """Median microseconds from the owner loop's end of computation to the other loop's value,
    and computations per key."""
    latencies: list[float] = []
    runs: list[int] = []
    cached = decorator(_slow)
    for key in range(rounds):
        started, done = threading.Event(), []
        owner = threading.Thread(target=asyncio.run, args=(cached(key, started, done, runs),))
        owner.start()
        started.wait(10)

        async def other(
            key: int = key, started: threading.Event = started, done: list[float] = done
        ) -> float:
            await cached(key, started, done, runs)
            return time.perf_counter()

        arrived = asyncio.run(other())
        owner.join(10)
        latencies.append((arrived - done[0]) * 1e6)
    return statistics.median(latencies), len(runs) / rounds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20_000, help="hits per round (default 20000)")
    parser.add_argument("--rounds", type=int, default=15, help="rounds per implementation (default 15)")
    parser.add_argument(
        "--loop-rounds", type=int, default=20, help="keys for the two-loop measure (default 20)"
    )
    args = parser.parse_args()

    if importlib.util.find_spec("streamlit") is None:
        print("streamlit is not installed; it is needed only for this comparison:")
        print("    .venv/bin/pip install streamlit")
        return 0

    import streamlit as st

    # Outside `streamlit run` there is no runtime, and Streamlit says so on every cache call.
    for name in ["streamlit", *logging.root.manager.loggerDict]:
        if name.startswith("streamlit"):
            logging.getLogger(name).setLevel(logging.CRITICAL)

    import ipycache_ext

    ours = ipycache_ext.cache_data(double)
    theirs = st.cache_data(double)
    if not (ours(7) == theirs(7) == 14):
        raise SystemExit("the two cached functions disagree")
    stats = ipycache_ext.get_store().stats()

    times: dict[str, list[float]] = {"ipycache_ext": [], "streamlit": []}
    for _ in range(args.rounds):
        times["ipycache_ext"].append(per_call_ns(ours, args.calls))
        times["streamlit"].append(per_call_ns(theirs, args.calls))

    hits = ipycache_ext.get_store().stats().hits - stats.hits
    if hits != args.rounds * args.calls:
        raise SystemExit(f"expected {args.rounds * args.calls} hits in ipycache_ext's store, got {hits}")

    ours_us = statistics.median(times["ipycache_ext"]) / 1000
    theirs_us = statistics.median(times["streamlit"]) / 1000
    versions = f"streamlit {st.__version__}, ipycache_ext {ipycache_ext.__version__}"
    print(f"Python {sys.version.split()[0]}, {versions}")
    print(f"one cache hit, f(7) -> 14, median of {args.rounds} rounds x {args.calls} calls:")
    print(
        f"  ipycache_ext.cache_data  {ours_us:8.2f} us   (best round {min(times['ipycache_ext']) / 1000:.2f})"
    )
    print(
        f"  streamlit st.cache_data  {theirs_us:8.2f} us   (best round {min(times['streamlit']) / 1000:.2f})"
    )
    ratio = theirs_us / ours_us
    # the rounds alternate, so a round's pair saw the same load: the median of their ratios
    # is steadier than the ratio of the medians when other processes come and go
    paired = statistics.median(t / o for o, t in zip(times["ipycache_ext"], times["streamlit"], strict=True))
    best = min(times["streamlit"]) / min(times["ipycache_ext"])
    print(f"  ratio: ipycache_ext is {ratio:.1f}x faster per hit (rounds' ratios: median {paired:.1f}x, "
          f"best rounds {best:.1f}x; target: at least 3x; load {os.getloadavg()[0]:.2f})")  # fmt: skip

    print(f"two event loops on one cold key (async def, 20 ms), median of {args.loop_rounds} keys:")
    for name, decorator in (
        ("ipycache_ext.cache_data", ipycache_ext.cache_data),
        ("streamlit st.cache_data", st.cache_data),
    ):
        latency, computations = cross_loop_us(decorator, args.loop_rounds)
        print(f"  {name}  second loop has the value {latency:7.0f} us after the computation ends; "
              f"computations per key: {computations:g}")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
