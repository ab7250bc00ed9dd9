"""The byte-level storage protocol every backend implements, and what a backend returns.

A backend keeps opaque *signed* blobs by key. It never unpickles, never verifies and never
decides what is trusted: that is the signing layer's job (``ipycache_ext._envelope``). What a
backend does own is what only it can do well: atomic replacement (a reader sees the old
blob or the new one), the bytes it uses (counted incrementally, never by a scan per
write), its own budget, and, optionally, leases that say who is computing a key.

Exceptions: ``BackendUnavailable`` means "the server can't be reached now" (the caller
falls back to the other tiers and tries again later); ``OSError`` from a file backend means
the disk refused. Anything else is a bug.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

Buffer = bytes | bytearray | memoryview


class BackendUnavailable(ConnectionError):
    """The backend's server can't be reached (down, refused, timed out)."""


@dataclass(frozen=True)
class Blob:
    """A stored entry as bytes, with the generations the backend considers current.

    ``current`` is the set of generation tags the backend's index says may be served for
    this key (the one last written, plus writes in flight); an entry whose signed tag is not
    in it is an older copy put back by hand (a rollback). ``None``: the backend keeps no
    such index and the caller can't tell.
    """

    data: Buffer
    current: frozenset[str] | None = None


@dataclass(frozen=True)
class Landed:
    """What ``get_into`` wrote: ``size`` bytes, and the current generations (as ``Blob.current``)."""

    size: int
    current: frozenset[str] | None = None


class Backend(Protocol):
    """Where signed entries live (see the module docstring for who does what)."""

    def put(
        self, key: str, chunks: Iterable[Buffer], *, tag: str, size: int, ttl: float | None = None
    ) -> None:
        """Store the concatenation of ``chunks`` (``size`` bytes in all) atomically under ``key``.

        ``tag`` is the entry's generation (also inside its signed header); ``ttl`` seconds
        after which the backend may drop it on its own (None: never).
        """

    def get(self, key: str) -> Blob | None:
        """The whole entry (and mark it used, for least-recently-used eviction), or None."""

    def get_into(self, key: str, open_file: Callable[[int], int]) -> Landed | None:
        """``get``, but written into the descriptor ``open_file(size)`` returns, from offset 0.

        A big shared entry lands in the memory file its hits will map, copied once (by the
        kernel where it can) instead of into a Python buffer and then again. None when the
        entry is missing or only partly there (what landed is then ignored).
        """

    def contains(self, key: str) -> bool:
        """Cheap presence check (waiters poll it), no transfer of the entry."""

    def delete(self, key: str, tag: str | None = None) -> bool:
        """Remove the entry if it is there; False when it was not.

        ``tag``: only if that generation is still the current one. An entry that expired in
        one kernel must not take with it the newer entry another kernel wrote since.
        """

    def keys(self) -> list[str]:
        """Every stored key (O(n): for clearing, never on a hot path)."""

    def usage(self) -> int:
        """Bytes used, including writes in flight and leftovers of killed writers (O(1))."""

    def trim(self, budget: int, keep: str | None = None) -> list[str]:
        """Evict least recently used entries until ``usage() <= budget``; the keys evicted."""

    def close(self) -> None:
        """Let go of connections and files."""


class Lease(Protocol):
    """The right to compute one key, held until released or lapsed."""

    def renew(self) -> bool:
        """Extend the lease; False when it was lost (lapsed and taken by someone else)."""

    def release(self) -> None:
        """Give the lease up (only if still ours)."""


@runtime_checkable
class Leases(Protocol):
    """Who computes a key: at most one holder per key at a time, across processes."""

    def acquire(self, key: str, holder: str, ttl: float) -> Lease | None:
        """The lease on ``key`` if nobody holds it (``holder`` says who and since when), else None."""

    def holder(self, key: str) -> str | None:
        """The holder text of the current lease on ``key``, or None when it is free."""


def write_all(fd: int, data: memoryview, offset: int = 0) -> None:
    """``pwrite`` every byte of ``data`` at ``offset`` (pwrite may write less than asked)."""
    done = 0
    while done < data.nbytes:
        done += os.pwrite(fd, data[done:], offset + done)
