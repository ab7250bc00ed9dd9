"""A backend in a dict, for tests (like httpx's ``MockTransport``): the contract, no I/O."""

from __future__ import annotations

import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable

from .base import Blob, Buffer, Landed, write_all


class MemoryBackend:
    """Entries and leases in process memory; ``timer`` is injectable so TTL tests tick a fake clock."""

    def __init__(self, *, timer: Callable[[], float] = time.time) -> None:
        self._timer = timer
        self._lock = threading.Lock()
        self._entries: OrderedDict[str, tuple[bytes, str, float | None]] = OrderedDict()  # LRU order
        self._bytes = 0
        self._leases: dict[str, tuple[str, str, float]] = {}  # key -> (holder, token, expires)

    def _live_locked(self, key: str) -> tuple[bytes, str, float | None] | None:
        found = self._entries.get(key)
        if found is not None and found[2] is not None and self._timer() >= found[2]:
            self._drop_locked(key)
            return None
        return found

    def _drop_locked(self, key: str) -> bool:
        found = self._entries.pop(key, None)
        if found is None:
            return False
        self._bytes -= len(found[0])
        return True

    def put(
        self, key: str, chunks: Iterable[Buffer], *, tag: str, size: int, ttl: float | None = None
    ) -> None:
        data = b"".join(bytes(chunk) for chunk in chunks)
        expires = None if ttl is None else self._timer() + ttl
        with self._lock:
            self._drop_locked(key)
            self._entries[key] = (data, tag, expires)
            self._bytes += len(data)

    def get(self, key: str) -> Blob | None:
        with self._lock:
            found = self._live_locked(key)
            if found is None:
                return None
            self._entries.move_to_end(key)
            return Blob(found[0], frozenset({found[1]}))

    def get_into(self, key: str, open_file: Callable[[int], int]) -> Landed | None:
        blob = self.get(key)
        if blob is None:
            return None
        write_all(open_file(len(blob.data)), memoryview(blob.data))
        return Landed(len(blob.data), blob.current)

    def contains(self, key: str) -> bool:
        with self._lock:
            return self._live_locked(key) is not None

    def delete(self, key: str, tag: str | None = None) -> bool:
        with self._lock:
            found = self._entries.get(key)
            if found is not None and tag is not None and found[1] != tag:
                return False
            return self._drop_locked(key)

    def keys(self) -> list[str]:
        with self._lock:
            return [key for key in list(self._entries) if self._live_locked(key) is not None]

    def usage(self) -> int:
        return self._bytes

    def trim(self, budget: int, keep: str | None = None) -> list[str]:
        evicted: list[str] = []
        with self._lock:
            for key in list(self._entries):  # oldest use first
                if self._bytes <= budget:
                    break
                if key != keep:
                    self._drop_locked(key)
                    evicted.append(key)
        return evicted

    def close(self) -> None:
        pass

    # leases
    def acquire(self, key: str, holder: str, ttl: float) -> _MemoryLease | None:
        with self._lock:
            current = self._leases.get(key)
            if current is not None and current[2] > self._timer():
                return None
            token = secrets.token_hex(8)
            self._leases[key] = (holder, token, self._timer() + ttl)
        return _MemoryLease(self, key, token, ttl)

    def holder(self, key: str) -> str | None:
        with self._lock:
            current = self._leases.get(key)
            return current[0] if current is not None and current[2] > self._timer() else None


class _MemoryLease:
    def __init__(self, backend: MemoryBackend, key: str, token: str, ttl: float) -> None:
        self._backend, self._key, self._token, self._ttl = backend, key, token, ttl

    def renew(self) -> bool:
        backend = self._backend
        with backend._lock:
            current = backend._leases.get(self._key)
            if current is None or current[1] != self._token:
                return False
            backend._leases[self._key] = (current[0], self._token, backend._timer() + self._ttl)
            return True

    def release(self) -> None:
        backend = self._backend
        with backend._lock:
            current = backend._leases.get(self._key)
            if current is not None and current[1] == self._token:
                del backend._leases[self._key]
