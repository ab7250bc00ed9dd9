"""The Redis backend's own reader of chunk replies (``_bulk``), against a real redis-server.

It bypasses redis-py's parser, so what it must never do is leave a connection in the pool
in the middle of a reply, serve part of an entry, or wait on a silent server forever.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator

import pytest
import redis

from ipycache_ext._landing import Landing
from ipycache_ext.backends.base import BackendUnavailable
from ipycache_ext.backends.redis_backend import RedisBackend
from tests.redis_fixtures import RedisServer


@pytest.fixture
def backend(redis_url: str) -> Iterator[RedisBackend]:
    made = RedisBackend.from_url(redis_url, namespace="bulk", socket_timeout=2.0)
    made.chunk_size = 64 << 10
    yield made
    made.close()


def _payload(size: int) -> bytes:
    return (bytes(range(251)) * (size // 251 + 1))[:size]


def _landed(backend: RedisBackend, key: str) -> bytes | None:
    with Landing() as landing:
        found = backend.get_into(key, landing.open)
        return None if found is None else os.pread(landing.fd, found.size, 0)


def test_spliced_and_received_reads_give_the_same_bytes(
    backend: RedisBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    payload = _payload(1_000_003)  # 16 chunks, the last one short
    backend.put("k1", [payload], tag="g1", size=len(payload))
    assert _landed(backend, "k1") == payload
    monkeypatch.delattr(os, "splice")  # what a TLS connection gets: recv_into a mapping
    assert _landed(backend, "k1") == payload


@pytest.mark.parametrize("damage", ["delete", "shorten"])
def test_a_chunk_missing_or_of_another_length_is_a_miss_and_the_connection_is_dropped(
    backend: RedisBackend, redis_url: str, damage: str
) -> None:
    payload = _payload(500_000)
    backend.put("k2", [payload], tag="g2", size=len(payload))
    client = redis.Redis.from_url(redis_url)
    name = f"{backend.prefix}c:k2:g2:3"
    if damage == "delete":
        client.delete(name)
    else:
        client.set(name, b"short")
    assert _landed(backend, "k2") is None
    # the replies still on their way were not left for the next command to read
    backend.client.set(f"{backend.prefix}probe", b"fine")
    assert backend.client.get(f"{backend.prefix}probe") == b"fine"
    assert backend.get("k2") is None


def test_a_server_that_stops_sending_mid_entry_times_out(own_redis: RedisServer) -> None:
    backend = RedisBackend.from_url(own_redis.url, namespace="bulk", socket_timeout=0.5)
    payload = _payload(64 << 20)
    backend.put("k3", [payload], tag="g3", size=len(payload))
    landing = Landing()
    stopped = []

    def stop_the_server(size: int) -> int:
        stopped.append(time.monotonic())
        os.kill(own_redis.pid, signal.SIGSTOP)  # the manifest was read: the chunks are next
        return landing.open(size)

    try:
        with landing, pytest.raises(BackendUnavailable):
            backend.get_into("k3", stop_the_server)
        assert stopped and time.monotonic() - stopped[0] < 0.5 + 2.0  # one socket timeout, not a hang
    finally:
        os.kill(own_redis.pid, signal.SIGCONT)
    assert bytes(backend.client.get(f"{backend.prefix}m:k3") or b"")  # it serves again
    assert _landed(backend, "k3") == payload
    backend.close()


def test_a_connection_without_a_plain_socket_is_read_through_redis_py(
    backend: RedisBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ipycache_ext.backends import _bulk, redis_backend

    payload = _payload(300_000)
    backend.put("k4", [payload], tag="g4", size=len(payload))

    def unsupported(pool: object, *args: object, **kwargs: object) -> None:
        raise _bulk.Unsupported("a connection class of another client")

    monkeypatch.setattr(redis_backend, "fetch_into", unsupported)
    assert _landed(backend, "k4") == payload  # the same bytes, through redis-py's parser
