"""Disk persistence: signed, atomic, versioned, budgeted; refused files are never unpickled."""

from __future__ import annotations

import os
import pickle
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ipycache_ext._persist import (
    FORMAT_VERSION,
    DiskCache,
    DiskRecord,
    FileBackend,
    load_or_create_key,
)
from ipycache_ext._serialize import serialize

from .conftest import FakeClock

ROOT = Path(__file__).resolve().parent.parent


def record(key: str, *, expires: float | None = None, created: float = 1_700_000_000.0) -> DiskRecord:
    return DiskRecord(
        key=key,
        kind="data",
        label=f"cell {key}",
        names=("x",),
        created=created,
        expires=expires,
        compute_seconds=1.5,
    )


@pytest.fixture
def disk(tmp_path: Path, clock: FakeClock) -> DiskCache:
    directory = tmp_path / "cache"
    return DiskCache(FileBackend(directory), load_or_create_key(directory / "secret.key"), timer=clock)


class Marker:
    """Unpickling this creates a file: proof that a refused entry was never loaded."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (Path.write_text, (Path(self.path), "pwned"))  # type: ignore[return-value]


def test_round_trip_keeps_value_and_record(disk: DiskCache) -> None:
    value = {"a": np.arange(1_000_000), "b": "text"}
    assert disk.save(serialize(value), record("abc123"))
    loaded = disk.load("abc123")
    assert loaded is not None
    stored, saved = loaded
    result = stored.load()
    assert result["b"] == "text" and np.array_equal(result["a"], value["a"])
    assert (saved.label, saved.names, saved.compute_seconds) == ("cell abc123", ("x",), 1.5)


def test_directory_and_key_are_owner_only(tmp_path: Path, disk: DiskCache) -> None:
    directory = tmp_path / "cache"
    assert directory.stat().st_mode & 0o777 == 0o700
    assert (directory / "secret.key").stat().st_mode & 0o777 == 0o600
    os.chmod(directory / "secret.key", 0o644)
    with pytest.raises(PermissionError, match="chmod 600"):
        load_or_create_key(directory / "secret.key")


def test_a_key_that_is_a_link_is_refused(tmp_path: Path) -> None:
    known = tmp_path / "public-but-0600"  # e.g. ~/.ssh/authorized_keys: ours, 0600, content known
    known.write_bytes(b"everybody knows this text, 32+ bytes long......")
    known.chmod(0o600)
    directory = tmp_path / "cache"
    directory.mkdir(mode=0o700)
    (directory / "secret.key").symlink_to(known)
    with pytest.raises(PermissionError, match="not a link"):
        load_or_create_key(directory / "secret.key")


def test_a_directory_others_can_write_into_is_made_private(tmp_path: Path) -> None:
    directory = tmp_path / "shared"
    directory.mkdir()
    directory.chmod(0o777)
    load_or_create_key(directory / "secret.key")
    assert directory.stat().st_mode & 0o777 == 0o700


def test_ttl_is_honoured_on_disk(disk: DiskCache, clock: FakeClock) -> None:
    disk.save(serialize(1), record("k1", expires=clock.now + 60))
    clock.advance(59)
    assert disk.load("k1") is not None
    clock.advance(2)
    assert disk.load("k1") is None
    assert disk.backend.keys() == []  # and the expired file is gone


def _entry_path(disk: DiskCache, key: str) -> Path:
    return disk.backend.directory / f"{key}.entry"  # type: ignore[attr-defined]


@pytest.mark.parametrize("damage", ["flip", "truncate", "foreign-key", "swap-key"])
def test_tampered_files_are_refused_never_unpickled(tmp_path: Path, disk: DiskCache, damage: str) -> None:
    marker = tmp_path / "marker"
    evil = serialize(Marker(str(marker)))  # what an attacker would like us to load
    assert not marker.exists()
    if damage == "foreign-key":  # signed with somebody else's key
        other = DiskCache(FileBackend(tmp_path / "other"), b"x" * 32)
        other.save(evil, record("k2"))
        _entry_path(disk, "k2").write_bytes(_entry_path(other, "k2").read_bytes())
    else:
        disk.save(evil, record("k2"))
        path = _entry_path(disk, "k2")
        data = bytearray(path.read_bytes())
        if damage == "flip":
            data[len(data) // 2] ^= 0x01
        elif damage == "truncate":
            data = data[: len(data) - 10]
        else:  # a valid entry copied under another key
            disk.save(serialize(1), record("k3"))
            data = bytearray(_entry_path(disk, "k3").read_bytes())
        path.write_bytes(bytes(data))
    with pytest.warns(RuntimeWarning, match="refused the cached file"):
        assert disk.load("k2") is None
    assert not marker.exists()
    assert not _entry_path(disk, "k2").exists()


def test_a_raw_pickle_dropped_into_the_directory_is_refused(tmp_path: Path, disk: DiskCache) -> None:
    marker = tmp_path / "marker"
    _entry_path(disk, "k4").write_bytes(pickle.dumps(Marker(str(marker))))
    with pytest.warns(RuntimeWarning, match="not an ipycache_ext entry") as caught:
        assert disk.load("k4") is None
    assert not marker.exists()
    assert str(_entry_path(disk, "k4")) in str(caught[0].message)  # which file, not only its key


@pytest.mark.parametrize(("content", "why"), [(b"", "it is empty"), (b"IPYCACHE\x03", "it is truncated")])
def test_an_empty_or_cut_short_file_is_refused_with_its_own_reason(
    disk: DiskCache, content: bytes, why: str
) -> None:
    _entry_path(disk, "k4").write_bytes(content)
    with pytest.warns(RuntimeWarning, match=f"refused the cached file .*: {why}. It was not loaded"):
        assert disk.load("k4") is None
    assert not _entry_path(disk, "k4").exists()


def test_another_format_version_is_a_quiet_miss(disk: DiskCache) -> None:
    disk.save(serialize(1), record("k5"))
    path = _entry_path(disk, "k5")
    data = bytearray(path.read_bytes())
    data[8:10] = (999).to_bytes(2, "little")  # a version this code does not know
    path.write_bytes(bytes(data))
    assert disk.load("k5") is None


def test_disk_full_is_one_warning_and_no_crash(tmp_path: Path) -> None:
    class FullDisk(FileBackend):
        def put(self, key: str, chunks: object, **_: object) -> None:
            with open("/dev/full", "wb") as device:  # the kernel's own "no space left"
                for chunk in chunks:  # type: ignore[attr-defined]
                    device.write(chunk)
                device.flush()

    cache = DiskCache(FullDisk(tmp_path / "full"), b"k" * 32)
    with pytest.warns(RuntimeWarning, match="stays cached in memory"):
        assert cache.save(serialize(np.zeros(100_000)), record("k6")) is False


def test_disk_budget_evicts_least_recently_used(disk: DiskCache) -> None:
    payload = np.zeros(300_000, dtype=np.uint8)
    disk.budget = 700_000
    for key in ("aa", "bb"):
        disk.save(serialize(payload), record(key))
        time.sleep(0.02)
    assert disk.load("aa") is not None  # aa is now the most recently used
    time.sleep(0.02)
    disk.save(serialize(payload), record("cc"))
    assert disk.backend.keys() == ["aa", "cc"]


WRITER = textwrap.dedent(
    """
    import sys
    import numpy as np
    from pathlib import Path
    from ipycache_ext._persist import DiskCache, DiskRecord, FileBackend, load_or_create_key
    from ipycache_ext._serialize import serialize

    directory = Path(sys.argv[1])
    cache = DiskCache(FileBackend(directory), load_or_create_key(directory / "secret.key"))
    record = DiskRecord(key="shared", kind="data", label="w", names=(), created=0.0, expires=None,
                        compute_seconds=0.0)
    values = [serialize(np.full(2_000_000, fill, dtype=np.uint8)) for fill in (1, 2)]
    print("ready", flush=True)
    i = 0
    while True:
        cache.save(values[i % 2], record)
        i += 1
    """
)


def _writer(directory: Path) -> subprocess.Popen[str]:
    process = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(directory)], stdout=subprocess.PIPE, text=True, cwd=ROOT
    )
    assert process.stdout is not None and process.stdout.readline().strip() == "ready"
    return process


def _check_valid(cache: DiskCache) -> None:
    loaded = cache.load("shared")
    if loaded is not None:
        array = loaded[0].load()
        assert array.shape == (2_000_000,) and array[0] in (1, 2) and (array == array[0]).all()


@pytest.mark.slow
def test_a_writer_killed_at_random_moments_never_leaves_a_broken_entry(tmp_path: Path) -> None:
    directory = tmp_path / "cache"
    cache = DiskCache(FileBackend(directory), load_or_create_key(directory / "secret.key"))
    rng = random.Random(1234)
    for _ in range(12):
        process = _writer(directory)
        time.sleep(rng.uniform(0.0, 0.15))
        process.send_signal(signal.SIGKILL)
        process.wait(10)
        _check_valid(cache)  # any "refused" warning would fail the test (warnings are errors)
    assert cache.load("shared") is not None
    FileBackend(directory, stale_after=0)  # the next kernel to open the cache sweeps what killed writers left
    assert list(directory.glob(".tmp-*")) == []


@pytest.mark.slow
def test_two_processes_writing_and_reading_one_key(tmp_path: Path) -> None:
    directory = tmp_path / "cache"
    cache = DiskCache(FileBackend(directory), load_or_create_key(directory / "secret.key"))
    writers = [_writer(directory), _writer(directory)]
    try:
        deadline = time.monotonic() + 2.0
        reads = 0
        while time.monotonic() < deadline:
            _check_valid(cache)
            reads += 1
    finally:
        for process in writers:
            process.kill()
            process.wait(10)
    assert reads > 5
    assert cache.backend.keys() == ["shared"]
    _check_valid(cache)


def test_an_older_file_copied_back_after_a_refresh_is_refused(tmp_path: Path, disk: DiskCache) -> None:
    disk.save(serialize("old value"), record("kr"))
    old = _entry_path(disk, "kr").read_bytes()
    disk.save(serialize("new value"), record("kr"))  # a --refresh writes the key again
    _entry_path(disk, "kr").write_bytes(old)  # and someone puts the old file back
    with pytest.warns(RuntimeWarning, match="older than the entry last written"):
        assert disk.load("kr") is None
    assert not _entry_path(disk, "kr").exists()


def test_an_old_file_put_back_after_a_delete_is_refused(disk: DiskCache) -> None:
    disk.save(serialize(1), record("kd"))
    old = _entry_path(disk, "kd").read_bytes()
    disk.delete("kd")
    _entry_path(disk, "kd").write_bytes(old)
    with pytest.warns(RuntimeWarning, match="older than"):
        assert disk.load("kd") is None


def test_a_deeply_nested_signed_header_is_a_refusal_not_a_recursion_error(tmp_path: Path) -> None:
    from ipycache_ext._envelope import MAGIC, PREFIX
    from ipycache_ext._signing import HmacSigner

    directory = tmp_path / "cache"
    secret = load_or_create_key(directory / "secret.key")
    cache = DiskCache(FileBackend(directory), secret)
    header = b"[" * 60_000 + b"]" * 60_000  # what even the owner's key must not make us choke on
    body = PREFIX.pack(MAGIC, FORMAT_VERSION, 1, bytes(32), len(header)) + header + b"payload"
    signature = HmacSigner(secret).start()
    signature.update(body)
    _entry_path(cache, "deep").write_bytes(body + signature.finish())
    with pytest.warns(RuntimeWarning, match="header can't be read"):
        assert cache.load("deep") is None


@pytest.mark.parametrize("make", [os.mkfifo, os.mkdir])
def test_a_fifo_or_directory_named_like_an_entry_is_one_warning_naming_it_and_a_miss(
    disk: DiskCache, make: Any
) -> None:
    path = _entry_path(disk, "kf")
    make(path)
    with pytest.warns(RuntimeWarning, match="never read as a cached entry.*until you remove it") as caught:
        assert disk.load("kf") is None
        assert disk.load("kf") is None  # said once
        disk.delete("kf")  # can't remove a directory: nothing more to say (no "old value")
    assert len(caught) == 1 and str(path) in str(caught[0].message)


def test_when_a_file_cannot_be_removed_other_kernels_are_said_to_see_it(
    disk: DiskCache, monkeypatch: pytest.MonkeyPatch
) -> None:
    disk.save(serialize(1), record("ro"))

    def read_only(self: Path, missing_ok: bool = False) -> None:
        raise OSError(30, "Read-only file system", str(self))

    monkeypatch.setattr(Path, "unlink", read_only)
    with pytest.warns(RuntimeWarning, match="other kernels will still find the old value"):
        disk.delete("ro")


KEY_MAKER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from ipycache_ext._signing import load_or_create_key
    start = float(sys.argv[2])
    while time.time() < start:
        pass
    print(load_or_create_key(Path(sys.argv[1]) / "secret.key").hex(), flush=True)
    """
)


@pytest.mark.slow
def test_many_processes_creating_the_key_at_once_get_one_key(tmp_path: Path) -> None:
    for trial in range(4):
        directory = tmp_path / f"cache{trial}"
        start = time.time() + 1.5  # all of them spin until the same moment
        processes = [
            subprocess.Popen(
                [sys.executable, "-c", KEY_MAKER, str(directory), str(start)],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                cwd=ROOT,
            )
            for _ in range(10)
        ]
        results = [process.communicate(timeout=60) for process in processes]
        errors = [err for _, err in results if err.strip()]
        assert errors == []
        keys = {out.strip() for out, _ in results}
        assert len(keys) == 1 and len(next(iter(keys))) == 64
        assert sorted(p.name for p in directory.iterdir() if "secret" in p.name) == ["secret.key"]


def test_two_kernels_of_one_user_compute_a_cold_persisted_key_once(tmp_path: Path) -> None:
    import threading
    from types import SimpleNamespace

    from ipycache_ext._persist import StorePersistence

    first = StorePersistence(DiskCache.in_directory(tmp_path / "cache"))
    second = StorePersistence(DiskCache.in_directory(tmp_path / "cache"))
    notices: list[str] = []
    second.notice = notices.append
    holding = threading.Event()

    def compute() -> None:
        with first.claim("cold", "disk") as found:
            assert found is None
            holding.set()
            time.sleep(0.5)
            info = SimpleNamespace(kind="data", label="c", names=(), created=time.time(), expires=None,
                                   compute_seconds=0.5, dependencies=(), computed_by=None)  # fmt: skip
            first.save("cold", serialize("computed once"), info, "disk")  # type: ignore[arg-type]

    worker = threading.Thread(target=compute)
    worker.start()
    assert holding.wait(10)
    with second.claim("cold", "disk") as found:
        assert found is not None and found.value.load() == "computed once"
    worker.join(10)
    assert len(notices) == 1 and "being computed by" in notices[0]


def test_a_cache_directory_that_is_a_file_is_said_so(tmp_path: Path) -> None:
    from ipycache_ext._persist import open_persistence

    afile = tmp_path / "cache"
    afile.write_text("not a directory")
    said = f"persistence is off: the cache directory {afile} is a file, not a directory"
    with pytest.warns(RuntimeWarning, match=said):
        assert open_persistence(afile) is None


def test_a_key_file_that_cannot_be_opened_says_why_and_the_way_out(tmp_path: Path) -> None:
    from ipycache_ext._signing import load_or_create_key

    path = tmp_path / ("k" * 300)  # too long a name: open() fails, and it is not a link
    with pytest.raises(PermissionError, match=r"can't be opened \(File name too long\).*chmod 600") as raised:
        load_or_create_key(path)
    assert "not a link" not in str(raised.value)
