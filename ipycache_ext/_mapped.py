"""The live copy-on-write mappings of cached buffers, and what their bytes are known to hash to.

A hit maps its large buffers privately from a file whose content never changes (the
store's memory file, or a verified entry file on disk). As long as no page of a range of
such a mapping was written, the range holds exactly the file's bytes, so its hash is the
hash of those bytes, computed once per file, offset and length. Hashing asks here before
hashing a large buffer (``known_pieces``); the kernel's pagemap says whether the range is
still unwritten (``_pagemap``); anything uncertain means: hash in full.

So a cached cell whose input is the unmodified result of another cached cell is keyed
without reading its gigabytes, and a single byte written anywhere in the range makes the
range's pages the process's own, which sends it back to full hashing.
"""

from __future__ import annotations

import bisect
import sys
import threading
from typing import Any, Protocol

from . import _pagemap

__all__ = ["ContentSource", "MappedRanges", "known_pieces", "registry", "remember_pieces"]


class ContentSource(Protocol):
    """A file whose bytes never change while it is mapped; it keeps the digests of its ranges."""

    digests: dict[tuple[int, int], bytes]  # (file offset, length) -> the hashing's piece digests


class MappedRanges:
    """Every live mapping of a content source: start address -> (length, source, file offset)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._starts: list[int] = []
        self._ranges: dict[int, tuple[int, ContentSource, int]] = {}

    def __len__(self) -> int:
        return len(self._starts)

    def add(self, address: int, length: int, source: ContentSource, offset: int) -> None:
        with self._lock:
            if address not in self._ranges:
                bisect.insort(self._starts, address)
            self._ranges[address] = (length, source, offset)

    def remove(self, address: int) -> None:
        """Called before the range is unmapped (its addresses may be reused at once)."""
        with self._lock:
            if self._ranges.pop(address, None) is not None:
                del self._starts[bisect.bisect_left(self._starts, address)]

    def find(self, address: int, length: int) -> tuple[ContentSource, int] | None:
        """The source and file offset of ``[address, address + length)``, if one mapping holds it all."""
        with self._lock:
            index = bisect.bisect_right(self._starts, address) - 1
            if index < 0:
                return None
            start = self._starts[index]
            size, source, offset = self._ranges[start]
        if address + length > start + size:
            return None
        return source, offset + (address - start)


registry = MappedRanges()


def _address(view: memoryview) -> int | None:
    np = sys.modules.get("numpy")
    if np is None:
        return None
    try:
        return int(np.frombuffer(view, dtype=np.uint8).__array_interface__["data"][0])
    except (TypeError, ValueError):
        return None


def _place(view: memoryview) -> tuple[ContentSource, tuple[int, int], int] | None:
    if not len(registry) or not view.c_contiguous:
        return None
    address = _address(view)
    if address is None:
        return None
    found = registry.find(address, view.nbytes)
    if found is None:
        return None
    source, offset = found
    return source, (offset, view.nbytes), address


def known_pieces(view: memoryview) -> tuple[bytes | None, Any]:
    """What hashing ``view`` would feed (its pieces' digests) if known, and a token to remember it.

    (None, None): not a mapped range, or pagemap can't tell; hash it and don't remember.
    (None, token): a mapped, unwritten range not hashed yet; pass the token to ``remember_pieces``.
    """
    place = _place(view)
    if place is None:
        return None, None
    source, where, address = place
    if not _pagemap.unwritten(address, view.nbytes):
        return None, None
    known = source.digests.get(where)
    return known, (None if known is not None else place)


def remember_pieces(token: Any, pieces: bytes) -> None:
    """Keep the digests just computed from the range, if no page of it was written meanwhile."""
    source, where, address = token
    if _pagemap.unwritten(address, where[1]):  # written during hashing: what was hashed is not the file
        source.digests[where] = pieces
