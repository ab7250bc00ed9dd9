"""A memory file a shared entry is received into, verified in and mapped from.

A team hit used to read the entry into a Python buffer and then copy its buffers into the
memory file its hits map: two copies of every byte. The backend now writes the entry
straight into this file (``Backend.get_into``; a Redis reply is spliced there by the
kernel), the signed part and every buffer's digest are checked in place, and
``SerializedValue.from_file`` maps it like an entry file on disk. Nobody else holds the
descriptor, so nothing can change the bytes between the check and the mapping.

(Hashing the buffers in a thread while they land was tried and measured: on two cores,
with the Redis server busy on one, it made no difference, so it is not done.)
"""

from __future__ import annotations

import os
import sys
from types import TracebackType


class Landing:
    """One entry's landing file; ``open(size)`` is what the backend calls, once."""

    def __init__(self) -> None:
        self.fd = -1

    @staticmethod
    def possible() -> bool:
        return sys.platform.startswith("linux") and hasattr(os, "memfd_create")

    def open(self, size: int) -> int:
        """A memory file of ``size`` bytes (a backend writes the entry into it from offset 0)."""
        if self.fd >= 0:
            raise RuntimeError("a landing holds one entry")
        self.fd = os.memfd_create("ipycache_ext-landing", os.MFD_CLOEXEC)
        os.ftruncate(self.fd, size)
        return self.fd

    def __enter__(self) -> Landing:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        if self.fd >= 0:  # the value made from it holds its own duplicate
            os.close(self.fd)
            self.fd = -1
