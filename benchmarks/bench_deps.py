"""Cost of dynamic dependencies: a hit's check against reading the files, and the hooks' toll.

1. A computation reads N files of SIZE each (default 1,000 x 1 MB). On a hit nothing has
   changed: ``first_change`` stats them, it must not read them. Baseline, in the same run:
   reading the same files (warm page cache: the cheapest a read can be).
2. After ``touch`` on every file (mtime moves, content doesn't): the first check hashes each
   file once (that's the price of a touch), later checks remember the verified digest.
3. A miss: the same reads while recorded (recording hashes every input once at the end; a
   digest already verified for the same stat is reused, so this clears them first).
4. The permanent toll outside any recording: the audit hook on every audit event (``id()``
   raises one), a wrapped native reader, an ``os.environ`` lookup; before and after the
   hooks are installed, each in a fresh process.

    .venv/bin/python benchmarks/bench_deps.py [--files 1000] [--size-mb 1] [--repeats 5]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any


def best(func: Callable[[], Any], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        func()
        times.append(time.perf_counter() - started)
    return min(times)


def read_all(paths: list[str]) -> None:
    for path in paths:
        with open(path, "rb") as handle:
            handle.read()


_TOLL = r"""
import os, sys, timeit
sys.path.insert(0, {root!r})
from ipycache_ext._hashing import digest
from ipycache_ext._deps import recording
from ipycache_ext._deps._native import Target, _wrap

def noop(source):
    return source

wrapped = _wrap(noop, Target("bench", "noop", "source"))
rows = [{{"id": i, "name": "x"}} for i in range(20_000)]
if {hooks}:
    with recording():  # installs the audit hook, the environ and reader wrappers: for good
        pass

def per(stmt, number):
    return min(timeit.repeat(stmt, number=number, repeat=7, globals=globals())) / number * 1e9

call = "wrapped('a')" if {hooks} else "noop('a')"
print(per("id(rows)", 500_000), per("os.environ.get('HOME')", 100_000), per(call, 500_000),
      per("digest(rows)", 3))
"""


def toll(root: str, hooks: bool) -> list[float]:
    """Per-operation nanoseconds in a fresh process, with or without the hooks installed."""
    done = subprocess.run([sys.executable, "-c", _TOLL.format(root=root, hooks=hooks)], capture_output=True,
                          text=True, check=True, timeout=600)  # fmt: skip
    return [float(x) for x in done.stdout.split()]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--files", type=int, default=1000)
    parser.add_argument("--size-mb", type=float, default=1.0)
    parser.add_argument("--repeats", type=int, default=5)
    options = parser.parse_args()
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    sys.path.insert(0, root)
    from ipycache_ext._deps import first_change, recording
    from ipycache_ext._settle import SETTLE_NS

    size = int(options.size_mb * 1024 * 1024)
    with tempfile.TemporaryDirectory(prefix="bench_deps_") as folder:
        paths = [os.path.join(folder, f"part-{i:05d}.bin") for i in range(options.files)]
        for i, path in enumerate(paths):
            with open(path, "wb") as handle:
                handle.write(os.urandom(64) * (size // 64) + bytes([i % 256]))
        read_all(paths)  # warm the page cache
        # A stat stands for a digest only once it is settled (ipycache_ext._settle): files
        # written just now would be read again on their first check, so let them settle.
        time.sleep(SETTLE_NS / 1e9 + 0.1)

        with recording() as rec:
            read_all(paths)
        started = time.perf_counter()
        deps = rec.dependencies()
        hashing = time.perf_counter() - started

        from ipycache_ext._deps import _files

        def recorded_miss() -> None:
            _files._verified.clear()  # a real miss: no digest known yet
            with recording() as again:
                read_all(paths)
            again.dependencies()

        assert first_change(deps) is None
        check = best(lambda: first_change(deps), options.repeats)
        reading = best(lambda: read_all(paths), options.repeats)
        miss = best(recorded_miss, max(1, options.repeats // 2))

        for path in paths:  # a touch: new mtime, same content
            st = os.stat(path)
            os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
        time.sleep(SETTLE_NS / 1e9 + 0.1)  # a touch moves ctime: let it settle too
        _files._verified.clear()  # as after a restart
        started = time.perf_counter()
        assert first_change(deps) is None
        touched_first = time.perf_counter() - started
        touched_later = best(lambda: first_change(deps), options.repeats)

    total_mb = options.files * size / 1e6
    print(f"{options.files} files x {options.size_mb:g} MB ({total_mb:,.0f} MB), best of {options.repeats}:")
    rows = [
        ("hit check, nothing changed (stat only)", check, f"{reading / check:,.0f}x cheaper than reading"),
        ("reading the files (warm page cache)", reading, "the baseline"),
        ("after a touch of every file: 1st check", touched_first, "hashes each file once"),
        ("after the touch: later checks", touched_later, "verified digests remembered"),
        (
            "a miss: reading them while recorded",
            miss,
            f"{miss / reading:.2f}x reading; hashing {hashing * 1e3:.0f} ms",
        ),
    ]
    for name, seconds, note in rows:
        print(f"  {name:40s} {seconds * 1e3:9.2f} ms  {note}")

    runs = [(toll(root, False), toll(root, True)) for _ in range(3)]  # alternated: load hits both
    without = [min(r[0][i] for r in runs) for i in range(4)]
    with_hooks = [min(r[1][i] for r in runs) for i in range(4)]
    print(
        "outside any recording, with the hooks installed vs never installed (fresh processes, best of 3x7):"
    )
    names = ("an audit event (id())", "os.environ.get('HOME')", "a wrapped native reader call",
             "digest() of 20k small dicts")  # fmt: skip
    for name, a, b in zip(names, without, with_hooks, strict=True):
        unit = f"{a / 1e6:8.2f} ms -> {b / 1e6:8.2f} ms" if a > 1e5 else f"{a:8.0f} ns -> {b:8.0f} ns"
        print(f"  {name:30s} {unit}  ({b / a:.2f}x)")


if __name__ == "__main__":
    main()
