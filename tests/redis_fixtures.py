"""A real redis-server per test session, on a free loopback port in a temporary directory.

Started with no persistence (``--save '' --appendonly no``) and stopped with SIGTERM to the
PID in its pidfile (the process we started, never one found by name). Tests that kill or
restart it use ``RedisServer.stop``/``start`` on the same port. Without ``redis-server``
the tests skip, except under ``CI=true``, where that is a failure (``make test`` installs it
with scripts/ensure-redis.sh).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class RedisServer:
    """One redis-server we started; ``url`` for clients."""

    def __init__(self, directory: Path, port: int | None = None, *, extra: tuple[str, ...] = ()) -> None:
        self.directory = directory
        self.port = port or free_port()
        self.extra = extra
        self.pidfile = directory / "redis.pid"
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.pidfile.unlink(missing_ok=True)
        command = [
            "redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.directory),
            "--save", "", "--appendonly", "no", "--daemonize", "yes", "--pidfile", str(self.pidfile),
            "--logfile", str(self.directory / "redis.log"), *self.extra,
        ]  # fmt: skip
        subprocess.run(command, check=True, timeout=30)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.pidfile.exists() and self.ping():
                return self
            time.sleep(0.02)
        raise RuntimeError(f"redis-server did not start on port {self.port}: {self.log()}")

    def log(self) -> str:
        path = self.directory / "redis.log"
        return path.read_text()[-2000:] if path.exists() else ""

    def ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as connection:
                connection.sendall(b"PING\r\n")
                return connection.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    @property
    def pid(self) -> int:
        return int(self.pidfile.read_text().strip())

    def stop(self, sig: signal.Signals = signal.SIGTERM) -> None:
        """Stop it (SIGTERM) or kill it (SIGKILL), and wait until the port is free."""
        if not self.pidfile.exists():
            return
        pid = self.pid
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.02)
        self.pidfile.unlink(missing_ok=True)


def require_redis_server() -> None:
    if shutil.which("redis-server") is None:
        message = "redis-server is not installed (scripts/ensure-redis.sh installs it)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    require_redis_server()
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """The session's server, emptied for this test."""
    import redis

    if not redis_server.ping():
        redis_server.start()  # a fault test stopped it
    client = redis.Redis.from_url(redis_server.url)
    client.flushall()
    client.close()
    return redis_server.url


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A server of this test alone, for tests that stop, kill or restart it."""
    require_redis_server()
    server = RedisServer(tmp_path / "redis").start()
    try:
        yield server
    finally:
        server.stop()
