"""Cost of one cache hit: ``@ipycache_ext.cache_data`` against Streamlit's ``@st.cache_data``.

Both decorate the same trivial function, called with one small int argument, in the same
process. Rounds alternate between the two so that load from other processes falls on both
alike; the figures are medians over the rounds. Target: ipycache_ext at least 3x faster.

Streamlit is not a dependency; install it into the venv only to run this::

    .venv/bin/pip install streamlit
    .venv/bin/python benchmarks/bench_decorators.py
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import statistics
import sys
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20_000, help="hits per round (default 20000)")
    parser.add_argument("--rounds", type=int, default=15, help="rounds per implementation (default 15)")
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
    print(f"  ratio: ipycache_ext is {ratio:.1f}x faster per hit (target: at least 3x)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
