"""Counting a process's open descriptors by what they point at.

Tests that check a resource lets go of its descriptors count only the descriptors aimed at
that resource's files: a plain count of ``/proc/self/fd`` also moves whenever the garbage
collector or a background thread left by an earlier test closes something of its own
(a CI run once saw 43 descriptors drop to 17 mid-test)."""

from __future__ import annotations

import os

MEMORY_FILES = "/memfd:ipycache_ext"  # what the serializer's memory files read as


def descriptors_to(*targets: str | os.PathLike[str]) -> int:
    """How many of this process's descriptors point at a path starting with one of ``targets``."""
    prefixes = tuple(os.fspath(t) for t in targets)
    count = 0
    for name in os.listdir("/proc/self/fd"):
        try:
            link = os.readlink(f"/proc/self/fd/{name}")
        except OSError:  # closed since the listing (the listing's own descriptor, for one)
            continue
        count += link.startswith(prefixes)
    return count
