"""The one place that turns a cache_data result into bytes and back into a fresh copy.

Results are pickled with cloudpickle (so functions and classes defined in the notebook
travel by value) using pickle protocol 5 with out-of-band buffers: the large blocks of
numpy arrays and pandas frames are kept as separate buffers instead of being copied into
one big byte string. ``load`` hands each buffer to ``pickle.loads`` as a fresh writable
``bytearray``, so every caller gets objects that share no memory with the store or with
each other.
"""

from __future__ import annotations

import gc
import pickle
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import cloudpickle

from ._errors import UnserializableResultError

PROTOCOL = 5


@dataclass(frozen=True, eq=False)
class SerializedValue:
    """A pickled value: the pickle stream plus its out-of-band buffers (owned copies)."""

    meta: bytes
    buffers: tuple[bytes, ...]

    @property
    def nbytes(self) -> int:
        """Bytes the store really holds for this value."""
        return len(self.meta) + sum(len(b) for b in self.buffers)

    def load(self) -> Any:
        """Return a fresh, independent copy of the value."""
        buffers = [bytearray(b) for b in self.buffers]
        with _gc_paused():
            return pickle.loads(self.meta, buffers=buffers)


def serialize(value: Any, what: str = "the result") -> SerializedValue:
    """Pickle ``value``; raise UnserializableResultError naming ``what`` if it can't be."""
    buffers: list[bytes] = []

    def keep(buffer: pickle.PickleBuffer) -> None:
        # Copy now: the buffer is a view of the caller's object, which they may mutate later.
        buffers.append(bytes(buffer.raw()))

    try:
        meta = cloudpickle.dumps(value, protocol=PROTOCOL, buffer_callback=keep)
    except Exception as exc:  # pickling raises anything: TypeError, PicklingError, ...
        raise UnserializableResultError(
            what,
            f"{type(exc).__name__}: {exc}",
            "Cache objects that can't be pickled (connections, models, locks) with "
            "%%cache_resource or @cache_resource, or name only the variables to keep.",
        ) from exc
    return SerializedValue(meta, tuple(buffers))


@contextmanager
def _gc_paused() -> Iterator[None]:
    """Unpickling many small objects triggers the cyclic GC again and again, for nothing."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
