"""The team tier against a real redis-server: trust, fill, refusals that delete nothing."""

from __future__ import annotations

import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import redis

from ipycache_ext._serialize import serialize
from ipycache_ext.backends.redis_backend import RedisBackend

from .redis_fixtures import own_redis, redis_server, redis_url
from .team_helpers import entry, user

__all__ = ["own_redis", "redis_server", "redis_url"]


class Marker:
    """Unpickling this creates a file: proof that a refused entry was never loaded."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple[object, tuple[Path, str]]:
        return (Path.write_text, (Path(self.path), "pwned"))


def _team_keys(url: str) -> list[bytes]:
    client = redis.Redis.from_url(url)
    try:
        return sorted(client.keys("ipycache:test:*"))
    finally:
        client.close()


def test_a_colleagues_entry_is_a_hit_and_fills_the_local_disk(
    tmp_path: Path, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    alice = user(tmp_path, "alice", redis_url)
    bob = user(tmp_path, "bob", redis_url, trusts=("alice",))
    frame = np.arange(3_000_000, dtype=np.float64)
    monkeypatch.setenv("IPYCACHE_EXT_USER", "alice")
    assert alice.save("k1", serialize(frame), entry(), "team")
    monkeypatch.setenv("IPYCACHE_EXT_USER", "bob")
    assert bob.load("k1", "disk") is None  # "disk" never asks the team
    found = bob.load("k1", "team")
    assert found is not None and np.array_equal(found.value.load(), frame)
    assert found.computed_by is not None and found.computed_by.startswith("alice@")
    assert found.where == "team"
    assert found.dependencies == ({"kind": "file", "path": "data.csv"},)
    assert found.compute_seconds == 2.5
    bob.flush()  # 24 MB: written to bob's disk in the background
    again = bob.load("k1", "disk")  # now from bob's own disk, re-signed with bob's key
    assert again is not None and again.where == "disk"
    assert again.computed_by is not None and again.computed_by.startswith("alice@")


def test_an_untrusted_signer_is_a_miss_said_once_never_unpickled_never_deleted(
    tmp_path: Path, redis_url: str
) -> None:
    marker = tmp_path / "marker"
    mallory = user(tmp_path, "mallory", redis_url)
    bob = user(tmp_path, "bob", redis_url, trusts=("alice",))
    assert mallory.save("k2", serialize(Marker(str(marker))), entry(), "team")
    before = _team_keys(redis_url)
    with pytest.warns(RuntimeWarning, match="not in the trusted keys") as caught:
        assert bob.load("k2", "team") is None
        assert bob.load("k2", "team") is None
    assert len(caught) == 1  # reported once
    assert not marker.exists()
    assert _team_keys(redis_url) == before  # nothing deleted from the shared store


def test_a_tampered_chunk_is_refused_and_left_in_place(tmp_path: Path, redis_url: str) -> None:
    marker = tmp_path / "marker"
    alice = user(tmp_path, "alice", redis_url)
    bob = user(tmp_path, "bob", redis_url, trusts=("alice",))
    assert alice.save("k3", serialize([Marker(str(marker)), np.zeros(200_000)]), entry(), "team")
    client = redis.Redis.from_url(redis_url)
    chunk = next(name for name in client.keys("ipycache:test:c:k3:*"))
    data = bytearray(client.get(chunk) or b"")
    data[len(data) // 2] ^= 1
    client.set(chunk, bytes(data))
    with pytest.warns(RuntimeWarning, match="does not verify"):
        assert bob.load("k3", "team") is None
    assert not marker.exists()
    assert client.exists(chunk) and client.exists("ipycache:test:m:k3")
    client.close()


def test_big_entries_are_chunked_with_the_ttl_on_every_chunk(tmp_path: Path, redis_url: str) -> None:
    alice = user(tmp_path, "alice", redis_url)
    assert alice.team is not None
    backend = alice.team.backend
    assert isinstance(backend, RedisBackend)
    backend.chunk_size = 1 << 20
    frame = np.random.default_rng(0).random(1_000_000)  # 8 MB: 8 chunks
    assert alice.save("k4", serialize(frame), entry(expires=time.time() + 120), "team")
    client = redis.Redis.from_url(redis_url)
    chunks = client.keys("ipycache:test:c:k4:*")
    assert len(chunks) >= 8
    ttls = [client.pttl(name) for name in [*chunks, b"ipycache:test:m:k4"]]
    assert all(100_000 < ttl <= 120_000 for ttl in ttls), ttls
    client.close()
    bob = user(tmp_path, "bob", redis_url, trusts=("alice",))
    found = bob.load("k4", "team")
    assert found is not None and np.array_equal(found.value.load(), frame)


def test_a_missing_chunk_is_a_miss_never_a_partial_entry(tmp_path: Path, redis_url: str) -> None:
    alice = user(tmp_path, "alice", redis_url)
    assert alice.team is not None
    alice.team.backend.chunk_size = 1 << 20  # type: ignore[attr-defined]
    assert alice.save("k5", serialize(np.ones(1_000_000)), entry(), "team")
    client = redis.Redis.from_url(redis_url)
    client.delete(sorted(client.keys("ipycache:test:c:k5:*"))[3])  # as the LRU policy might
    client.close()
    bob = user(tmp_path, "bob", redis_url, trusts=("alice",))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # quietly: eviction is not tampering
        assert bob.load("k5", "team") is None


def test_a_refresh_replaces_the_team_entry(tmp_path: Path, redis_url: str) -> None:
    alice = user(tmp_path, "alice", redis_url)
    bob = user(tmp_path, "bob", redis_url, trusts=("alice",))
    alice.save("k6", serialize("old"), entry(), "team")
    alice.save("k6", serialize("new"), entry(), "team")
    found = bob.load("k6", "team")
    assert found is not None and found.value.load() == "new"


def test_persist_disk_stays_local(tmp_path: Path, redis_url: str) -> None:
    alice = user(tmp_path, "alice", redis_url)
    assert alice.save("k7", serialize(1), entry(), "disk") == "disk"
    assert _team_keys(redis_url) == []
    assert alice.load("k7", "disk") is not None  # on alice's disk only
    alice.delete("k7")
    assert alice.load("k7", "team") is None


def test_a_shared_directory_has_the_same_trust_model(tmp_path: Path) -> None:
    url = f"file://{tmp_path}/team-cache"
    marker = tmp_path / "marker"
    alice = user(tmp_path, "alice", url)
    mallory = user(tmp_path, "mallory", url)
    bob = user(tmp_path, "bob", url, trusts=("alice",))
    assert alice.save("f1", serialize({"rows": 3}), entry(), "team")
    assert mallory.save("f2", serialize(Marker(str(marker))), entry(), "team")
    found = bob.load("f1", "team")
    assert found is not None and found.value.load() == {"rows": 3} and found.where == "team"
    with pytest.warns(RuntimeWarning, match="not in the trusted keys"):
        assert bob.load("f2", "team") is None
    assert not marker.exists()
    assert (tmp_path / "team-cache" / "test" / "f2.entry").exists()  # left for its author


def test_the_environment_configures_the_team_tier(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from ipycache_ext import CacheStore
    from ipycache_ext._persist import configure, ensure_persistence
    from ipycache_ext._signing import Ed25519Signer
    from ipycache_ext._team import TeamTier, team_settings

    alice_key = Ed25519Signer.load_or_create(tmp_path / "alice.pem").public_key
    monkeypatch.setenv("IPYCACHE_EXT_TEAM_STORE", f"file://{tmp_path}/team")
    monkeypatch.setenv("IPYCACHE_EXT_TEAM_NAMESPACE", "proj")
    monkeypatch.setenv("IPYCACHE_EXT_TEAM_TRUSTED_KEYS", f"alice {alice_key};{tmp_path / 'more-keys'}")
    (tmp_path / "more-keys").write_text(
        "# colleagues\ncarol " + Ed25519Signer.load_or_create(tmp_path / "c.pem").public_key + "\n"
    )
    monkeypatch.setenv("IPYCACHE_EXT_TEAM_KEY", str(tmp_path / "bob.pem"))
    settings = team_settings()
    assert settings is not None and settings.namespace == "proj" and len(settings.trusted_keys) == 2
    store = CacheStore()
    try:
        configure(
            store, tmp_path / "local"
        )  # the front ends configure the disk; the team comes from the environment
        assert ensure_persistence(store)
        tier = store.persistence.team  # type: ignore[union-attr]
        assert isinstance(tier, TeamTier)
        names = sorted(key.name for key in tier.cache.verifier.trusted.values())  # type: ignore[attr-defined]
        assert names == ["alice", "carol", "you"]
    finally:
        store.close()
    assert team_settings(environ={}) is None


def test_a_bad_trusted_key_turns_the_team_tier_off_with_one_warning(tmp_path: Path) -> None:
    from ipycache_ext._team import TeamSettings, open_team

    with pytest.warns(RuntimeWarning, match="team cache is off.*ed25519"):
        assert open_team(TeamSettings(url=f"file://{tmp_path}/t", trusted_keys=("alice ed25519:bad!",),
                                      key_path=tmp_path / "k.pem")) is None  # fmt: skip


def test_the_ttl_is_the_servers_expiry(tmp_path: Path, redis_url: str) -> None:
    alice = user(tmp_path, "alice", redis_url)
    assert alice.save("t1", serialize("short-lived"), entry(expires=time.time() + 1.0), "team")
    assert _team_keys(redis_url) != []
    time.sleep(1.3)
    assert _team_keys(redis_url) == []  # manifest and chunks expired on the server itself


def test_kernels_never_delete_team_entries(tmp_path: Path, redis_url: str) -> None:
    alice = user(tmp_path, "alice", redis_url)
    alice.save("d1", serialize(1), entry(), "team")
    before = _team_keys(redis_url)
    alice.delete("d1")
    assert alice.clear() == 0  # the local disk is empty already
    assert _team_keys(redis_url) == before
    found = alice.load("d1", "team")  # still a hit from the team
    assert found is not None and found.where == "team"


def _stored_version(url: str, key: str) -> int:
    client = redis.Redis.from_url(url)
    try:
        manifest = client.get(f"ipycache:test:m:{key}")
        assert manifest is not None
        generation = manifest.decode().split('"gen": "')[1].split('"')[0]
        first = client.get(f"ipycache:test:c:{key}:{generation}:0") or b""
        return int.from_bytes(first[8:10], "little")
    finally:
        client.close()


def test_team_entries_are_format_4_and_their_hits_map_the_landed_bytes(
    tmp_path: Path, redis_url: str
) -> None:
    alice = user(tmp_path, "alice", redis_url)
    bob = user(tmp_path, "bob", redis_url, trusts=("alice",))
    frame = np.arange(2_000_000, dtype=np.float64)
    assert alice.save("k20", serialize(frame), entry(), "team")
    assert _stored_version(redis_url, "k20") == 4  # BLAKE3 buffer digests under the Ed25519 signature
    found = bob.load("k20", "team")
    assert found is not None and found.value.mapped  # hits map the memory file it landed in
    first, second = found.value.load(), found.value.load()
    first[0] = -1.0
    assert second[0] == 0.0 and np.array_equal(second, frame)  # copy-on-write: independent hits


def test_a_team_entry_of_the_old_format_2_is_still_a_hit(tmp_path: Path, redis_url: str) -> None:
    from ipycache_ext._envelope import EntryHeader, seal

    alice = user(tmp_path, "alice", redis_url)
    bob = user(tmp_path, "bob", redis_url, trusts=("alice",))
    assert alice.team is not None
    meta, buffers = serialize(np.arange(100_000.0)).parts()
    header = EntryHeader(
        key="k21", kind="data", label="old", names=(), created=time.time(), expires=None, compute_seconds=1
    )
    sealed, size, pieces = seal(header, meta, buffers, alice.team.signer)  # format 2: signed over every byte
    alice.team.backend.put("k21", pieces, tag=sealed.generation, size=size)
    found = bob.load("k21", "team")
    assert found is not None and np.array_equal(found.value.load(), np.arange(100_000.0))


def test_a_format_3_entry_signed_by_a_colleague_is_refused(
    tmp_path: Path, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Format 3 guards its buffers with xxh3, which a forger can collide: never from a team store."""
    from ipycache_ext import _envelope

    marker = tmp_path / "marker"
    alice = user(tmp_path, "alice", redis_url)
    bob = user(tmp_path, "bob", redis_url, trusts=("alice",))
    with monkeypatch.context() as patch:
        patch.setattr(_envelope, "STRONG_VERSION", _envelope.MAPPED_VERSION)  # write a v3 under Ed25519
        assert alice.save("k22", serialize([Marker(str(marker)), np.zeros(100_000)]), entry(), "team")
    assert _stored_version(redis_url, "k22") == 3
    with pytest.warns(RuntimeWarning, match="format 3 entry not signed with a local key"):
        assert bob.load("k22", "team") is None
    assert not marker.exists()
    assert len(_team_keys(redis_url)) > 1  # left in the team store


def test_a_damaged_manifest_is_refused_once_and_left_alone(tmp_path: Path, redis_url: str) -> None:
    alice = user(tmp_path, "alice", redis_url)
    bob = user(tmp_path, "bob", redis_url, trusts=("alice",))
    assert alice.save("k23", serialize(np.arange(500_000.0)), entry(), "team")
    client = redis.Redis.from_url(redis_url)
    client.set("ipycache:test:m:k23", b"{not json")
    with pytest.warns(RuntimeWarning, match="refused the team entry for key k23"):
        assert bob.load("k23", "team") is None
    assert client.get("ipycache:test:m:k23") == b"{not json"  # never deleted by a reader
    client.close()


def test_a_shared_directory_entry_lands_verified_and_a_flipped_buffer_byte_is_refused(tmp_path: Path) -> None:
    url = f"file://{tmp_path}/team-cache"
    alice = user(tmp_path, "alice", url)
    bob = user(tmp_path, "bob", url, trusts=("alice",))
    array = np.arange(1_000_000, dtype=np.float64)
    assert alice.save("f3", serialize(array), entry(), "team")
    found = bob.load("f3", "team")
    assert found is not None and found.value.mapped and np.array_equal(found.value.load(), array)
    path = tmp_path / "team-cache" / "test" / "f3.entry"
    data = bytearray(path.read_bytes())
    data[-12345] ^= 0x40  # inside the array's buffer, not the signed header
    path.write_bytes(bytes(data))
    carol = user(tmp_path, "carol", url, trusts=("alice",))
    with pytest.warns(RuntimeWarning, match="buffer 0 .* does not verify"):
        assert carol.load("f3", "team") is None
    assert path.exists()  # a shared entry is never deleted by a reader


def test_a_kept_array_of_a_team_hit_holds_its_own_buffer_not_the_whole_entry(
    tmp_path: Path, redis_url: str
) -> None:
    """The memory file a team entry lands in is given back buffer by buffer, like the store's own."""
    import gc
    import os

    alice = user(tmp_path, "alice", redis_url)
    bob = user(tmp_path, "bob", redis_url, trusts=("alice",))
    bob.disk = None  # no local fill holding views of it
    column = 4_000_000
    value = serialize({f"c{i}": np.full(column // 8, i, dtype=np.int64) for i in range(8)})
    assert alice.save("k24", value, entry(), "team")
    found = bob.load("k24", "team")
    assert found is not None and found.value.memory_file is not None
    probe = os.dup(found.value.memory_file.fd)

    def allocated() -> int:
        return os.fstat(probe).st_blocks * 512

    try:
        hit = found.value.load()
        kept = hit["c3"]
        assert allocated() >= 8 * column
        del found, hit
        gc.collect()
        assert allocated() <= column + 64 * 1024  # the kept buffer (and the entry's first pages)
        assert int(kept.sum()) == 3 * (column // 8)
    finally:
        os.close(probe)
