"""Faults of a real redis-server: stopped, restarted, killed mid-write, refused, blackholed.

Every kernel keeps working from memory and disk with one warning, never waits past a short
timeout, never serves part of an entry, and reconnects by itself.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import redis

from ipycache_ext import CacheStore
from ipycache_ext._serialize import serialize

from .redis_fixtures import RedisServer, free_port, own_redis
from .team_helpers import entry, user

__all__ = ["own_redis"]
ROOT = Path(__file__).resolve().parent.parent


def test_a_stopped_server_costs_one_warning_and_the_disk_still_serves(
    tmp_path: Path, own_redis: RedisServer
) -> None:
    alice = user(tmp_path, "alice", own_redis.url, retry_after=60)
    own_redis.stop()
    started = time.monotonic()
    with pytest.warns(RuntimeWarning, match="can't be reached") as caught:
        assert alice.save("k1", serialize("value"), entry(), "team")  # saved on disk all the same
        assert alice.load("k1", "team") is not None  # from the disk
        assert alice.load("k2", "team") is None
        with alice.claim("k2", "team") as found:
            assert found is None
    assert len(caught) == 1
    assert time.monotonic() - started < 5  # disk work only: no call waits on the server


def test_a_restarted_server_is_used_again_without_anyone_reconnecting(
    tmp_path: Path, own_redis: RedisServer
) -> None:
    alice = user(tmp_path, "alice", own_redis.url, retry_after=0.2)
    bob = user(tmp_path, "bob", own_redis.url, trusts=("alice",), retry_after=0.2)
    assert alice.save("k1", serialize("before"), entry(), "team")
    own_redis.stop()
    with pytest.warns(RuntimeWarning, match="can't be reached"):
        alice.save("k2", serialize("during"), entry(), "team")
    own_redis.start()  # same port, empty (no persistence)
    time.sleep(0.3)  # the breaker's retry_after
    assert alice.save("k3", serialize("after"), entry(), "team")
    found = bob.load("k3", "team")
    assert found is not None and found.value.load() == "after"
    own_redis.stop()
    with pytest.warns(RuntimeWarning, match="can't be reached"):  # a new outage is said again
        alice.save("k4", serialize("x"), entry(), "team")


WRITER = textwrap.dedent(
    """
    import sys
    import numpy as np
    from pathlib import Path
    from ipycache_ext._persist import SignedCache
    from ipycache_ext._serialize import serialize
    from ipycache_ext._signing import Ed25519Signer
    from ipycache_ext._envelope import EntryHeader
    from ipycache_ext.backends.redis_backend import RedisBackend

    backend = RedisBackend.from_url(sys.argv[1], namespace="test")
    backend.chunk_size = 1 << 20
    cache = SignedCache(backend, Ed25519Signer.load_or_create(Path(sys.argv[2])), shared=True)
    values = [serialize(np.full(40_000_000, fill, dtype=np.uint8)) for fill in (1, 2)]
    print("ready", flush=True)
    i = 0
    while True:  # two generations in turn: a mix of them would show
        cache.save(values[i % 2], EntryHeader(key="big", kind="data", label="w", names=(),
                                              created=0.0, expires=None, compute_seconds=0.0))
        i += 1
    """
)


@pytest.mark.slow
def test_a_writer_killed_mid_write_leaves_no_partial_entry(tmp_path: Path, own_redis: RedisServer) -> None:
    key_path = tmp_path / "keys" / "alice.pem"
    bob = user(tmp_path, "bob", own_redis.url, trusts=("alice",))
    user(tmp_path, "alice", own_redis.url)  # makes alice's key
    client = redis.Redis.from_url(own_redis.url)
    complete = 0
    delays = (0.05, 0.3, 0.7, 1.5)
    for delay in delays:
        writer = subprocess.Popen(
            [sys.executable, "-c", WRITER, own_redis.url, str(key_path)],
            stdout=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )
        assert writer.stdout is not None and writer.stdout.readline().strip() == "ready"
        time.sleep(delay)
        if delay == delays[-1]:  # the last round: kill it only once a whole entry was committed
            deadline = time.monotonic() + 30
            while not client.exists("ipycache:test:m:big") and time.monotonic() < deadline:
                time.sleep(0.01)
        writer.send_signal(signal.SIGKILL)
        writer.wait(10)
        found = bob.load("big", "team")  # the last complete entry, or nothing: never a mix
        if found is not None:
            array = found.value.load()
            assert array.shape == (40_000_000,) and array[0] in (1, 2) and (array == array[0]).all()
            complete += 1
        bob.disk.delete("big")  # type: ignore[union-attr]  # ask the team again next time
        manifest = client.get("ipycache:test:m:big")
        current = json.loads(manifest)["gen"] if manifest else None
        leftovers = [
            name for name in client.keys("ipycache:test:c:big:*") if f":{current}:".encode() not in name
        ]
        assert all(client.pttl(name) > 0 for name in leftovers)  # what the killed write left expires
    client.close()
    assert complete >= 1  # at least one whole entry was written, and read back whole


def test_a_server_killed_mid_write_is_a_failed_save_not_a_hang(
    tmp_path: Path, own_redis: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ipycache_ext.backends import redis_backend

    alice = user(tmp_path, "alice", own_redis.url, retry_after=60)
    assert alice.team is not None
    alice.team.backend.chunk_size = 1 << 20  # type: ignore[attr-defined]
    value = serialize(np.ones(300_000_000, dtype=np.uint8))
    real_pieces = redis_backend._pieces
    sent: list[int] = []

    def pieces(chunks: Any, size: int) -> Iterator[Any]:
        """The server dies after the 20th of some 300 chunks: mid-write, on any machine."""
        for index, piece in enumerate(real_pieces(chunks, size)):
            if index == 20:
                own_redis.stop(signal.SIGKILL)
            sent.append(index)
            yield piece

    monkeypatch.setattr(redis_backend, "_pieces", pieces)
    started = time.monotonic()
    with pytest.warns(RuntimeWarning, match="can't be reached"):
        alice.team.save(value, entry_header())
    assert time.monotonic() - started < 10
    assert 20 <= len(sent) < 300  # it was killed mid-write, and the save stopped there
    own_redis.start()
    bob = user(tmp_path, "bob", own_redis.url, trusts=("alice",))
    assert bob.load("big", "team") is None  # the server came back empty: nothing half-written


def entry_header() -> object:
    from ipycache_ext._envelope import EntryHeader

    return EntryHeader(
        key="big", kind="data", label="w", names=(), created=0.0, expires=None, compute_seconds=0.0
    )


def test_a_refused_port_is_one_quick_warning(tmp_path: Path) -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    alice = user(tmp_path, "alice", url, retry_after=60)
    started = time.monotonic()
    with pytest.warns(RuntimeWarning, match="can't be reached") as caught:
        for index in range(5):
            assert alice.save(f"k{index}", serialize(index), entry(), "team")  # on disk
            assert alice.load(f"x{index}", "team") is None
    assert len(caught) == 1
    assert time.monotonic() - started < 5  # disk work only: a refused connection fails at once


@pytest.fixture
def blackhole() -> Iterator[str]:
    """A loopback address whose server takes connections and never answers one byte."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)  # never accepted: the kernel completes handshakes, nobody replies
    try:
        yield f"redis://127.0.0.1:{listener.getsockname()[1]}/0"
    finally:
        listener.close()


def test_a_blackholed_server_costs_one_socket_timeout_not_a_hang(tmp_path: Path, blackhole: str) -> None:
    alice = user(tmp_path, "alice", blackhole, socket_timeout=1.0, retry_after=60)
    started = time.monotonic()
    with pytest.warns(RuntimeWarning, match="can't be reached") as caught:
        assert alice.load("k1", "team") is None
        assert alice.save("k1", serialize(1), entry(), "team")
        with alice.claim("k2", "team") as found:
            assert found is None
    assert len(caught) == 1
    # one 1 s timeout (the load's), then the breaker skips the server: three would be 3 s
    assert time.monotonic() - started < 2.5


def test_a_kernel_keeps_working_through_the_store_when_the_team_is_down(tmp_path: Path) -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    store = CacheStore()
    store.persistence = user(tmp_path, "alice", url, retry_after=60)
    calls: list[int] = []

    def create(n: int) -> tuple[object, int]:
        calls.append(n)
        value = serialize(np.arange(n))
        return value, value.nbytes

    try:
        with pytest.warns(RuntimeWarning, match="can't be reached") as caught:
            for n in (10, 20, 10):
                found = store.get_or_create(
                    f"key{n}", lambda n=n: create(n), kind="data", label="c", persist="team"
                )
                assert np.array_equal(found.value.load(), np.arange(n))
        assert len(caught) == 1
        assert calls == [10, 20]
    finally:
        store.close()


def test_a_password_in_the_team_url_is_never_shown(tmp_path: Path) -> None:
    url = f"redis://alice:s3cret-pw@127.0.0.1:{free_port()}/0?password=s3cret-pw"
    alice = user(tmp_path, "alice", url, retry_after=60)
    with pytest.warns(RuntimeWarning, match="can't be reached") as caught:
        assert alice.save("k1", serialize(1), entry(), "team") == "disk"  # the team store didn't take it
    (message,) = [str(w.message) for w in caught]
    assert "s3cret" not in message and "redis://***@127.0.0.1:" in message and "password=***" in message


@pytest.fixture
def not_redis() -> Iterator[str]:
    """A loopback server that answers everything as a web server would."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    listener.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                peer, _ = listener.accept()
            except OSError:
                continue
            with peer:
                try:
                    peer.settimeout(1)
                    peer.recv(65536)
                    peer.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
                except OSError:
                    pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"redis://127.0.0.1:{listener.getsockname()[1]}/0"
    finally:
        stop.set()
        thread.join(2)
        listener.close()


def test_a_server_that_is_not_redis_is_one_warning_and_the_disk_copy_stays(
    tmp_path: Path, not_redis: str
) -> None:
    store = CacheStore()
    store.persistence = user(tmp_path, "alice", not_redis, retry_after=60)
    try:
        with pytest.warns(RuntimeWarning, match="did not answer as a Redis server") as caught:
            value = serialize(np.arange(1000))
            store.get_or_create("k", lambda: (value, value.nbytes), kind="data", label="c", persist="team")
        assert len(caught) == 1 and not_redis.removeprefix("redis://").split("/")[0] in str(caught[0].message)
        (info,) = store.entries()
        assert info.persisted and not info.shared  # on this disk, not in the team store
        assert list((tmp_path / "alice-cache").rglob("*.entry"))  # the disk copy was kept
    finally:
        store.close()
