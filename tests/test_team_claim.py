"""Who computes a cold key, against a real redis-server: one computes, the others wait and hit."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from ipycache_ext._serialize import serialize
from ipycache_ext._signing import whoami

from .redis_fixtures import redis_server, redis_url
from .team_helpers import entry, user

__all__ = ["redis_server", "redis_url"]
ROOT = Path(__file__).resolve().parent.parent


def test_a_waiter_is_told_who_computes_and_gets_their_entry(
    tmp_path: Path, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("IPYCACHE_EXT_USER", "alice")
    alice = user(tmp_path, "alice", redis_url)
    bob = user(tmp_path, "bob", redis_url, trusts=("alice",))
    holding, finish = threading.Event(), threading.Event()

    def compute() -> None:
        with alice.claim("cold", "team") as found:
            assert found is None  # we hold the lease: we compute
            holding.set()
            finish.wait(10)
            alice.save("cold", serialize("alice's result"), entry(), "team")

    worker = threading.Thread(target=compute)
    worker.start()
    assert holding.wait(10)
    threading.Timer(0.5, finish.set).start()
    started = time.monotonic()
    with bob.claim("cold", "team") as found:
        waited = time.monotonic() - started
        assert found is not None and found.value.load() == "alice's result"
        assert found.computed_by is not None and found.computed_by.startswith("alice@")
    worker.join(10)
    assert 0.3 < waited < 5
    notices = bob.notices  # type: ignore[attr-defined]
    assert len(notices) == 1
    assert re.search(r"being computed by alice@\S+ since \d\d:\d\d", notices[0]), notices


HOLDER = textwrap.dedent(
    """
    import sys, time
    from ipycache_ext.backends.redis_backend import RedisBackend
    backend = RedisBackend.from_url(sys.argv[1], namespace="test")
    lease = backend.acquire("cold", "alice@elsewhere since 14:02", float(sys.argv[2]))
    print("held" if lease else "busy", flush=True)
    time.sleep(60)  # never renews: killed before it could
    """
)


def test_a_dead_owners_lease_lapses_and_one_waiter_takes_over(tmp_path: Path, redis_url: str) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, redis_url, "1.0"], stdout=subprocess.PIPE, text=True, cwd=ROOT
    )
    assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
    holder.send_signal(signal.SIGKILL)
    holder.wait(10)
    bob = user(tmp_path, "bob", redis_url)
    started = time.monotonic()
    with bob.claim("cold", "team") as found:
        assert found is None  # the lease lapsed: bob computes
        assert bob.team is not None
        assert bob.team.backend.holder("cold").startswith(whoami())  # type: ignore[union-attr]
        assert time.monotonic() - started < 5
    assert "alice@elsewhere since 14:02" in bob.notices[0]  # type: ignore[attr-defined]
    assert bob.team.backend.holder("cold") is None  # type: ignore[union-attr]


def test_a_waiter_gives_up_after_its_timeout_and_computes(tmp_path: Path, redis_url: str) -> None:
    alice = user(tmp_path, "alice", redis_url)
    bob = user(tmp_path, "bob", redis_url)
    bob.wait_seconds = 0.5
    with alice.claim("cold", "team") as found:
        assert found is None
        started = time.monotonic()
        with bob.claim("cold", "team") as waited:
            assert waited is None
        assert 0.4 < time.monotonic() - started < 3
    assert "gave up waiting" in bob.notices[-1]  # type: ignore[attr-defined]


def test_the_lease_is_renewed_while_the_computation_runs(tmp_path: Path, redis_url: str) -> None:
    alice = user(tmp_path, "alice", redis_url)
    alice.lease_seconds = 2.0  # renewed every 2/3 s: it lapses only if a renewal is 4/3 s late
    assert alice.team is not None
    with alice.claim("slow", "team") as found:
        assert found is None
        time.sleep(5.0)  # two and a half lease periods
        assert alice.team.backend.holder("slow") is not None  # type: ignore[union-attr]
    assert alice.team.backend.holder("slow") is None  # type: ignore[union-attr]


KERNEL = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    import numpy as np
    from ipycache_ext import CacheStore
    from ipycache_ext._serialize import serialize
    from ipycache_ext._persist import SignedCache, StorePersistence
    from ipycache_ext._team import TeamSettings, open_team

    url, home, index, start = sys.argv[1], Path(sys.argv[2]), sys.argv[3], float(sys.argv[4])
    team = open_team(TeamSettings(url=url, namespace="test", key_path=home / "team.pem"))
    store = CacheStore()
    store.persistence = StorePersistence(SignedCache.in_directory(home / f"cache-{index}"), team)
    while time.time() < start:
        pass

    def create():
        print("computed", flush=True)
        time.sleep(1.0)
        value = serialize(np.arange(100_000))
        return value, value.nbytes

    found = store.get_or_create("coldkey", create, kind="data", label="slow", persist="team")
    print("hit" if found.hit else "miss", found.entry.computed_by if found.entry else None, flush=True)
    store.close()
    """
)


def eight_kernels(url: str, home: Path, count: int = 8) -> list[str]:
    """``count`` processes asking for one cold key at the same moment; their outputs."""
    start = time.time() + 2.0
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", KERNEL, url, str(home), str(index), str(start)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )
        for index in range(count)
    ]
    outputs = []
    for process in processes:
        out, err = process.communicate(timeout=120)
        assert process.returncode == 0, err
        outputs.append(out)
    return outputs


@pytest.mark.slow
def test_eight_processes_asking_for_one_cold_key_compute_it_once(tmp_path: Path, redis_url: str) -> None:
    outputs = eight_kernels(redis_url, tmp_path)
    assert sum(out.count("computed") for out in outputs) == 1, outputs
    hits = [line for out in outputs for line in out.splitlines() if line.startswith("hit")]
    assert len(hits) == 7, outputs
    assert all(line.split()[1] != "None" for line in hits)  # each says who computed it
