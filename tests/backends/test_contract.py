"""The one contract every backend keeps (cachetools' CacheTestMixin, as a parametrized fixture).

memory, file and Redis (a real redis-server on loopback) run the same tests.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from ipycache_ext._landing import Landing
from ipycache_ext.backends import Backend, FileBackend, Leases, MemoryBackend
from ipycache_ext.backends.redis_backend import RedisBackend


@pytest.fixture(params=["memory", "file", "redis"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    made: Backend
    if request.param == "memory":
        made = MemoryBackend()
    elif request.param == "file":
        made = FileBackend(tmp_path / "store")
    else:
        url = request.getfixturevalue("redis_url")
        made = RedisBackend.from_url(url, namespace="contract")
        made.chunk_size = 1000  # small chunks, so every test here also crosses chunk boundaries
    yield made
    made.close()


def _bytes(blob: object) -> bytes:
    assert blob is not None
    return bytes(blob.data)  # type: ignore[attr-defined]


def test_put_then_get_returns_the_concatenation(backend: Backend) -> None:
    chunks = [b"head", memoryview(b"x" * 5000), bytearray(b"middle"), memoryview(bytes(range(256)) * 20), b""]
    expected = b"".join(bytes(c) for c in chunks)
    backend.put("k1", chunks, tag="g1", size=len(expected))
    blob = backend.get("k1")
    assert _bytes(blob) == expected
    assert blob is not None and blob.current in (None, frozenset({"g1"}))


def test_missing_keys(backend: Backend) -> None:
    assert backend.get("nothere") is None
    assert not backend.contains("nothere")
    assert backend.delete("nothere") is False


def test_replace_is_whole_and_the_new_tag_is_current(backend: Backend) -> None:
    backend.put("k1", [b"a" * 3000], tag="old", size=3000)
    backend.put("k1", [b"b" * 10], tag="new", size=10)
    blob = backend.get("k1")
    assert _bytes(blob) == b"b" * 10
    assert (
        blob is not None and blob.current is not None and "new" in blob.current and "old" not in blob.current
    )


def test_delete_contains_and_keys(backend: Backend) -> None:
    for key in ("aa", "bb", "cc"):
        backend.put(key, [key.encode() * 700], tag=key, size=1400)
    assert backend.contains("bb")
    assert sorted(backend.keys()) == ["aa", "bb", "cc"]
    assert backend.delete("bb") is True
    assert not backend.contains("bb") and backend.get("bb") is None
    assert sorted(backend.keys()) == ["aa", "cc"]


def test_usage_follows_writes_and_deletes(backend: Backend) -> None:
    if isinstance(backend, RedisBackend):
        assert backend.usage() > 0  # the server's used_memory: its own figure, not ours to add up
        return
    start = backend.usage()
    backend.put("k1", [b"x" * 4000], tag="1", size=4000)
    backend.put("k2", [b"x" * 1000], tag="2", size=1000)
    assert backend.usage() == start + 5000
    backend.put("k1", [b"x" * 10], tag="3", size=10)
    assert backend.usage() == start + 1010
    backend.delete("k2")
    assert backend.usage() == start + 10


def test_trim_evicts_least_recently_used_and_keeps_the_new_one(backend: Backend) -> None:
    if isinstance(backend, RedisBackend):
        assert backend.trim(0) == []  # the server's LRU policy keeps the team budget
        return
    for key in ("aa", "bb", "cc"):
        backend.put(key, [b"x" * 1000], tag=key, size=1000)
    assert backend.get("aa") is not None  # aa is now the most recently used
    backend.put("dd", [b"x" * 1000], tag="dd", size=1000)
    evicted = backend.trim(2000, keep="dd")
    assert sorted(evicted) == ["bb", "cc"]
    assert sorted(backend.keys()) == ["aa", "dd"]
    assert backend.trim(0, keep="dd") == ["aa"]
    assert backend.keys() == ["dd"]


def test_a_reader_sees_the_old_entry_or_the_new_one_never_a_mix(backend: Backend) -> None:
    values = [bytes([fill]) * 20_000 for fill in (1, 2)]
    backend.put("k", [values[0]], tag="t0", size=20_000)
    stop = threading.Event()

    def write() -> None:
        i = 0
        while not stop.is_set():
            i += 1
            backend.put("k", [values[i % 2][:7000], values[i % 2][7000:]], tag=f"t{i}", size=20_000)

    writer = threading.Thread(target=write)
    writer.start()
    try:
        for _ in range(200):
            blob = backend.get("k")
            if blob is not None:  # a multi-chunk Redis read may lose the race for an old generation
                assert bytes(blob.data) in values
    finally:
        stop.set()
        writer.join(30)


def test_leases_have_one_holder_at_a_time(backend: Backend) -> None:
    assert isinstance(backend, Leases)
    first = backend.acquire("k", "alice@host since 14:02", 30)
    assert first is not None
    assert backend.acquire("k", "bob@host since 14:03", 30) is None
    assert backend.holder("k") == "alice@host since 14:02"
    assert backend.acquire("other", "bob@host", 30) is not None  # per key
    assert first.renew() is True
    first.release()
    assert backend.holder("k") is None
    second = backend.acquire("k", "bob@host since 14:03", 30)
    assert second is not None
    first.release()  # releasing twice, or after someone else took it, does not drop theirs
    assert backend.holder("k") == "bob@host since 14:03"
    second.release()


def test_get_into_writes_the_same_bytes_and_generations_as_get(backend: Backend) -> None:
    payload = bytes(range(256)) * 97  # crosses the small Redis chunks, and not on a boundary
    backend.put("k9", [payload[:700], memoryview(payload[700:])], tag="g9", size=len(payload))
    with Landing() as landing:
        landed = backend.get_into("k9", landing.open)
        assert landed is not None and landed.size == len(payload)
        assert os.fstat(landing.fd).st_size == len(payload)
        assert os.pread(landing.fd, len(payload) + 1, 0) == payload
        blob = backend.get("k9")
        assert blob is not None and landed.current == blob.current
    with Landing() as missing:
        assert backend.get_into("nothere", missing.open) is None
        assert missing.fd == -1  # nothing was opened for it


def test_a_delete_of_one_generation_leaves_a_newer_one(backend: Backend) -> None:
    backend.put("k10", [b"old" * 500], tag="g1", size=1500)
    backend.put("k10", [b"new" * 500], tag="g2", size=1500)
    assert backend.delete("k10", "g1") is False  # expired somewhere: not this entry
    assert _bytes(backend.get("k10")) == b"new" * 500
    assert backend.delete("k10", "g2") is True
    assert backend.get("k10") is None
