"""A second kernel for tests: a CacheStore with the disk tier, driven by JSON lines on stdin.

Run as ``python tests/store_process.py DIRECTORY BUDGET NOW``. It opens its own store on the
cache directory (``_persist.configure`` + ``ensure_persistence``, the way a kernel does), on
a clock that stands at ``NOW`` until told otherwise, prints ``{"ready": pid}`` and then
answers one line per command line, in order:

- ``{"op": "put", "key", "value", "size", "refresh", "ttl"}``: ``get_or_create`` of a persisted
  data entry whose computation (if it runs) returns ``(value, bytes(size))``; answers
  ``hit``, the loaded ``value`` and ``size``, its ``expires`` and ``persisted``;
- ``{"op": "delete", "key"}`` -> ``found``; ``{"op": "clear"}`` -> ``in_memory``, ``in_tiers``;
- ``{"op": "evict", "key"}``: drops it from memory as memory pressure would (its file stays);
- ``{"op": "time", "now"}``: sets the clock and drops what fell due -> ``expired``;
- ``{"op": "restart"}``: closes the store and opens a new one ("a new kernel");
- ``{"op": "keys"}`` -> the keys held in memory.

Every answer carries ``warnings`` (the messages of any warning the operation raised) and,
if the operation failed, ``error`` (its traceback), so the test fails with the cause.
End of input closes the store and exits.
"""

from __future__ import annotations

import json
import os
import sys
import traceback
import warnings
from pathlib import Path
from typing import Any

from ipycache_ext._persist import configure, ensure_persistence
from ipycache_ext._serialize import serialize
from ipycache_ext._store import CacheStore


class Clock:
    """A clock that moves only when set: both kernels' clocks are set together, so expiry
    (stored in each file as a time on that shared clock) means the same in both."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def open_store(directory: Path, budget: int, clock: Clock) -> CacheStore:
    """A store with the disk tier on ``directory`` (opened now, as on a kernel's first persisted cell)."""
    store = CacheStore(memory_budget=10**9, timer=clock)
    configure(store, directory, budget)
    if not ensure_persistence(store):
        raise RuntimeError(f"persistence could not be opened on {directory}")
    return store


def put(
    store: CacheStore, key: str, *, value: int, size: int, refresh: bool, ttl: float | None
) -> dict[str, Any]:
    """One persisted ``get_or_create``; what was served (the value's number and payload size)."""

    def create() -> tuple[Any, int]:
        stored = serialize((value, bytes(size)))
        return stored, stored.nbytes

    lookup = store.get_or_create(key, create, kind="data", label=key, persist=True, refresh=refresh, ttl=ttl)
    number, payload = lookup.value.load()
    return {
        "hit": lookup.hit,
        "expires": None if lookup.entry is None else lookup.entry.expires,
        "value": number,
        "size": len(payload),
        "persisted": lookup.entry is not None and lookup.entry.persisted,
    }


def handle(
    store: CacheStore, command: dict[str, Any], directory: Path, budget: int, clock: Clock
) -> tuple[CacheStore, dict[str, Any]]:
    """One command on ``store``; the store to use next (a new one after ``restart``) and the answer."""
    op = command["op"]
    if op == "put":
        arguments = {name: command[name] for name in ("value", "size", "refresh", "ttl")}
        return store, put(store, command["key"], **arguments)
    if op == "delete":
        return store, {"found": store.delete(command["key"])}
    if op == "clear":
        cleared = store.clear()
        return store, {"in_memory": cleared.in_memory, "in_tiers": cleared.in_tiers}  # type: ignore[attr-defined]
    if op == "evict":
        return store, {"count": store.delete_where(lambda e: e.key == command["key"], reason="evicted")}
    if op == "time":
        clock.now = command["now"]
        return store, {"expired": store.purge_expired()}
    if op == "restart":
        store.close()
        return open_store(directory, budget, clock), {}
    if op == "keys":
        return store, {"keys": sorted(e.key for e in store.entries())}
    raise ValueError(f"unknown op {op!r}")


def main(argv: list[str]) -> int:
    directory, budget, clock = Path(argv[1]), int(argv[2]), Clock(float(argv[3]))
    store = open_store(directory, budget, clock)
    out = sys.stdout
    out.write(json.dumps({"ready": os.getpid()}) + "\n")
    out.flush()
    try:
        for line in sys.stdin:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                try:
                    store, answer = handle(store, json.loads(line), directory, budget, clock)
                except Exception:
                    answer = {"error": traceback.format_exc()}
            answer["warnings"] = [f"{w.category.__name__}: {w.message}" for w in caught]
            out.write(json.dumps(answer) + "\n")
            out.flush()
    finally:
        store.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
