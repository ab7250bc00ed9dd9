"""Disk persistence that survives kernel restarts and can't be turned against the user.

Two layers:

- a ``Backend`` keeps *signed* entries and their metadata by key (``put``, ``get``,
  ``delete``, ``list``, ``touch``). ``FileBackend`` is one file per entry in a per-user
  directory; a shared backend (Redis for a team's JupyterHub) implements the same five
  methods and nothing else changes.
- ``DiskCache`` signs, verifies, expires and budgets. Every entry is
  ``MAGIC | format version | header length | header (JSON) | payload | HMAC-SHA256``; the
  HMAC covers everything before it and is keyed with a per-user secret created on first
  use with owner-only permissions. An entry whose signature does not verify (tampered,
  truncated, written by someone else, another key) is **never unpickled**: it is a miss,
  one warning line, and it is deleted. An entry of another format version is a miss.

Writes go to a temporary file in the same directory, are fsync'ed and then
``os.replace``d into place, so a writer killed at any moment leaves the old entry or the
new one, never half of one; concurrent writers of one key leave one valid entry.
A full disk or a read-only directory costs one warning; the value stays cached in memory.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import os
import secrets
import stat
import struct
import tempfile
import time
import warnings
import weakref
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from ._serialize import SerializedValue
from ._store import CacheStore, EntryInfo, Restored

FORMAT_VERSION = 1
MAGIC = b"IPYCACHE"
_PREFIX = struct.Struct("<8sHI")  # magic, format version, header length
_MAC_SIZE = 32
ENV_CACHE_DIR = "IPYCACHE_EXT_CACHE_DIR"
DEFAULT_DISK_BUDGET = 10 * 1024**3


def default_cache_dir() -> Path:
    """``$IPYCACHE_EXT_CACHE_DIR``, else ``$XDG_CACHE_HOME/ipycache_ext``, else ``~/.cache/ipycache_ext``."""
    explicit = os.environ.get(ENV_CACHE_DIR)
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "ipycache_ext"


@dataclass(frozen=True)
class DiskRecord:
    """What is known of a persisted entry without unpickling it."""

    key: str
    kind: str
    label: str
    names: tuple[str, ...]
    created: float
    expires: float | None
    compute_seconds: float
    size: int = 0
    layout: tuple[int, ...] = field(default=())  # length of the pickle stream, then each buffer

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), sort_keys=True).encode()

    @classmethod
    def from_json(cls, data: bytes) -> DiskRecord:
        raw = json.loads(data)
        raw["names"] = tuple(raw["names"])
        raw["layout"] = tuple(raw["layout"])
        return cls(**raw)


@dataclass(frozen=True)
class StoredEntry:
    """A backend's listing row: key, bytes on disk, last use (for LRU), and its record."""

    key: str
    nbytes: int
    last_used: float
    record: DiskRecord | None  # None when the header can't be read (another version, damage)


class Backend(Protocol):
    """Where signed entries live. Implementations never unpickle and never verify."""

    def put(self, key: str, chunks: Iterable[bytes | memoryview]) -> None:
        """Store the signed entry atomically (a reader sees the old one or the new one)."""

    def get(self, key: str) -> bytes | None:
        """The whole signed entry, or None."""

    def delete(self, key: str) -> None:
        """Remove the entry if it is there."""

    def list(self) -> list[StoredEntry]:
        """Every entry with its size, last use and (unverified) record."""

    def touch(self, key: str) -> None:
        """Mark the entry as used now (for least-recently-used eviction)."""


class FileBackend:
    """One file per entry in a directory only the user can read or write."""

    SUFFIX = ".entry"

    def __init__(self, directory: Path, *, stale_after: float = 600.0) -> None:
        self.directory = directory
        private_directory(directory)
        self._remove_stale_temporaries(stale_after)

    def _remove_stale_temporaries(self, older_than: float) -> None:
        """A writer killed mid-write leaves its temporary file behind; nobody else will."""
        cutoff = time.time() - older_than
        for path in self.directory.glob(f".tmp-*{self.SUFFIX}"):
            with contextlib.suppress(OSError):
                if path.stat().st_mtime <= cutoff:
                    path.unlink()

    def _path(self, key: str) -> Path:
        if not key.isalnum():
            raise ValueError(f"cache keys are hex digests, not {key!r}")
        return self.directory / f"{key}{self.SUFFIX}"

    def put(self, key: str, chunks: Iterable[bytes | memoryview]) -> None:
        fd, temporary = tempfile.mkstemp(prefix=".tmp-", suffix=self.SUFFIX, dir=self.directory)
        try:
            with os.fdopen(fd, "wb") as handle:
                for chunk in chunks:
                    handle.write(chunk)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temporary, self._path(key))
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise
        with contextlib.suppress(OSError):  # make the rename itself durable
            directory_fd = os.open(self.directory, os.O_RDONLY)
            try:
                os.fsync(directory_fd)
            finally:
                os.close(directory_fd)

    def get(self, key: str) -> bytes | None:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            return None

    def delete(self, key: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self._path(key).unlink()

    def touch(self, key: str) -> None:
        with contextlib.suppress(OSError):
            os.utime(self._path(key))

    def list(self) -> list[StoredEntry]:
        found = []
        for path in self.directory.glob(f"*{self.SUFFIX}"):
            if path.name.startswith(".tmp-"):
                continue
            try:
                stat = path.stat()
                with path.open("rb") as handle:
                    record = _read_record(handle.read(64 * 1024))
            except OSError:
                continue
            found.append(StoredEntry(path.name[: -len(self.SUFFIX)], stat.st_size, stat.st_mtime, record))
        return found


def _read_record(head: bytes) -> DiskRecord | None:
    """The header of an entry (unverified: for listing only, never for loading)."""
    if len(head) < _PREFIX.size:
        return None
    magic, version, header_length = _PREFIX.unpack_from(head)
    if magic != MAGIC or version != FORMAT_VERSION or len(head) < _PREFIX.size + header_length:
        return None
    try:
        return DiskRecord.from_json(head[_PREFIX.size : _PREFIX.size + header_length])
    except (ValueError, TypeError, KeyError):
        return None


def private_directory(directory: Path) -> None:
    """Create ``directory`` owner-only, or refuse one that others could write into.

    Anyone who can write into the directory could plant entries or swap the key file, so a
    directory that is not ours, or that group or others may write to, turns persistence off.
    """
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    info = os.lstat(directory)
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
        raise PermissionError(f"the cache directory {directory} must be a directory that belongs to you")
    if info.st_mode & 0o077:
        try:
            os.chmod(directory, 0o700)
        except OSError as exc:
            if info.st_mode & 0o022:
                raise PermissionError(
                    f"others can write into the cache directory {directory} (chmod 700 it)"
                ) from exc


def load_or_create_key(path: Path) -> bytes:
    """The per-user signing key: 32 random bytes in an owner-only file, made on first use.

    Opened with O_NOFOLLOW and checked on the open descriptor: a symlink to some other file
    of ours (whose content others may know) is refused, not used as the key.
    """
    private_directory(path.parent)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except FileExistsError:
        pass
    else:
        with os.fdopen(fd, "wb") as handle:
            handle.write(secrets.token_bytes(32))
            handle.flush()
            os.fsync(handle.fileno())
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError as exc:  # ELOOP: a symlink
        raise PermissionError(f"the signing key {path} must be a regular file, not a link") from exc
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(handle.fileno())
        if not stat.S_ISREG(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & 0o077:
            raise PermissionError(
                f"the signing key {path} must be a file that belongs to you and is readable by you only "
                f"(chmod 600 {path}); persistence is off until then"
            )
        key = handle.read()
    if len(key) < 32:  # a crash between create and write: make a new one
        path.unlink()
        return load_or_create_key(path)
    return key


class DiskCache:
    """Signed, versioned, TTL-aware, budgeted persistence of serialized values."""

    def __init__(
        self,
        backend: Backend,
        secret: bytes,
        *,
        budget: int = DEFAULT_DISK_BUDGET,
        timer: Any = time.time,
    ) -> None:
        self.backend = backend
        self._secret = secret
        self.budget = budget
        self._timer = timer

    @classmethod
    def in_directory(
        cls, directory: Path | None = None, *, budget: int = DEFAULT_DISK_BUDGET, timer: Any = time.time
    ) -> DiskCache:
        """The file-backed cache in ``directory`` (default: the per-user cache directory)."""
        directory = default_cache_dir() if directory is None else directory
        key = load_or_create_key(directory / "secret.key")
        return cls(FileBackend(directory), key, budget=budget, timer=timer)

    # writing
    def save(self, value: SerializedValue, record: DiskRecord) -> bool:
        """Persist ``value``; False (with one warning) when the disk can't take it."""
        meta, buffers = value.parts()
        layout = (len(meta), *(b.nbytes for b in buffers))
        record = DiskRecord(**{**asdict(record), "layout": layout, "size": sum(layout)})
        header = record.to_json()
        mac = hmac.new(self._secret, digestmod=hashlib.sha256)

        def signed() -> Iterator[bytes | memoryview]:
            chunks: list[bytes | memoryview] = [
                _PREFIX.pack(MAGIC, FORMAT_VERSION, len(header)),
                header,
                meta,
            ]
            for chunk in [*chunks, *buffers]:
                mac.update(chunk)
                yield chunk
            yield mac.digest()

        try:
            self.backend.put(record.key, signed())
        except OSError as exc:
            warnings.warn(
                f"could not persist {record.label!r} to disk ({exc.strerror or exc}); "
                "it stays cached in memory for this kernel",
                RuntimeWarning,
                stacklevel=3,
            )
            return False
        self.enforce_budget(keep=record.key)
        return True

    # reading
    def load(self, key: str) -> tuple[SerializedValue, DiskRecord] | None:
        """The verified value and record, or None (missing, expired, foreign, or refused)."""
        try:
            blob = self.backend.get(key)
        except OSError:
            return None
        if blob is None:
            return None
        view = memoryview(blob)
        if len(blob) < _PREFIX.size + _MAC_SIZE:
            self._refuse(key, "it is truncated")
            return None
        magic, version, header_length = _PREFIX.unpack_from(blob)
        if magic != MAGIC:
            self._refuse(key, "it is not an ipycache_ext entry")
            return None
        if version != FORMAT_VERSION:
            return None  # another version's entry: a miss, and it is replaced on save
        expected = hmac.new(self._secret, view[:-_MAC_SIZE], hashlib.sha256).digest()
        if not hmac.compare_digest(expected, view[-_MAC_SIZE:]):
            self._refuse(key, "its signature does not match this user's key")
            return None
        start = _PREFIX.size + header_length
        record = DiskRecord.from_json(bytes(view[_PREFIX.size : start]))
        if record.key != key:
            self._refuse(key, "it was stored under another key")
            return None
        if record.expires is not None and self._timer() >= record.expires:
            self.backend.delete(key)
            return None
        pieces: list[memoryview] = []
        for length in record.layout:
            pieces.append(view[start : start + length])
            start += length
        value = SerializedValue.from_parts(bytes(pieces[0]), pieces[1:])
        self.backend.touch(key)
        return value, record

    def _refuse(self, key: str, why: str) -> None:
        """Never unpickle it: say so once, and remove it."""
        warnings.warn(
            f"refused the cached file for key {key[:12]}: {why}. It was not loaded and has been removed.",
            RuntimeWarning,
            stacklevel=3,
        )
        with contextlib.suppress(OSError):
            self.backend.delete(key)

    # housekeeping
    def delete(self, key: str) -> None:
        with contextlib.suppress(OSError):
            self.backend.delete(key)

    def clear(self) -> int:
        entries = self.backend.list()
        for entry in entries:
            self.delete(entry.key)
        return len(entries)

    def entries(self) -> list[StoredEntry]:
        return self.backend.list()

    def enforce_budget(self, keep: str | None = None) -> None:
        """Delete least recently used entries until the disk budget holds."""
        entries = sorted(self.backend.list(), key=lambda e: e.last_used)
        total = sum(e.nbytes for e in entries)
        for entry in entries:
            if total <= self.budget:
                break
            if entry.key == keep:
                continue
            self.delete(entry.key)
            total -= entry.nbytes


class StorePersistence:
    """Adapts a ``DiskCache`` to the store's ``Persistence`` protocol (data entries only)."""

    _USAGE_MAX_AGE = 10.0  # seconds a disk-usage figure may be reused (the panel asks each second)

    def __init__(self, disk: DiskCache) -> None:
        self.disk = disk
        self._usage: tuple[float, int] | None = None

    @property
    def directory(self) -> Path | None:
        """The directory of a file-backed cache (None for other backends)."""
        return getattr(self.disk.backend, "directory", None)

    def load(self, key: str) -> Restored | None:
        found = self.disk.load(key)
        if found is None:
            return None
        value, record = found
        return Restored(value, value.nbytes, record.created, record.expires, record.compute_seconds)

    def save(self, key: str, value: Any, entry: EntryInfo) -> bool:
        if not isinstance(value, SerializedValue):
            return False  # only serialized data can be written out
        record = DiskRecord(
            key=key,
            kind=entry.kind,
            label=entry.label,
            names=tuple(entry.names),
            created=entry.created,
            expires=entry.expires,
            compute_seconds=entry.compute_seconds,
        )
        self._usage = None
        return self.disk.save(value, record)

    def delete(self, key: str) -> None:
        self._usage = None
        self.disk.delete(key)

    def clear(self) -> int:
        self._usage = None
        return self.disk.clear()

    def usage(self) -> tuple[int, int]:
        """Bytes on disk (all kernels of this user) and the disk budget."""
        now = time.monotonic()
        if self._usage is None or now - self._usage[0] > self._USAGE_MAX_AGE:
            self._usage = (now, sum(e.nbytes for e in self.disk.entries()))
        return self._usage[1], self.disk.budget


def open_persistence(
    directory: Path | None = None, budget: int = DEFAULT_DISK_BUDGET, timer: Any = time.time
) -> StorePersistence | None:
    """The per-user disk cache, or None (with one warning) when it can't be opened."""
    try:
        return StorePersistence(DiskCache.in_directory(directory, budget=budget, timer=timer))
    except OSError as exc:
        warnings.warn(
            f"persistence is off: {exc}. Entries stay in memory; choose a directory you own with "
            "IPYCACHE_EXT_CACHE_DIR or %config CacheMagics.cache_dir = '...'",
            RuntimeWarning,
            stacklevel=3,
        )
        return None


def configure(store: CacheStore, directory: Path | None = None, budget: int | None = None) -> None:
    """Where ``store`` keeps persisted entries, for every front end (magics and decorators).

    A different directory closes the open disk cache, so the next persisted entry opens the
    new one; a different budget applies at once.
    """
    settings = (directory, DEFAULT_DISK_BUDGET if budget is None else budget)
    _settings[store] = settings
    _unavailable.pop(store, None)
    current = store.persistence
    if isinstance(current, StorePersistence):
        if current.directory != (directory or default_cache_dir()):
            store.persistence = None
        else:
            current.disk.budget = settings[1]


def ensure_persistence(store: CacheStore) -> bool:
    """Give ``store`` its disk cache on first need; False if it can't be had.

    A failure is said once (one warning), not on every persisted entry after it.
    """
    if store.persistence is None and not _unavailable.get(store):
        directory, budget = _settings.get(store, (None, DEFAULT_DISK_BUDGET))
        store.persistence = open_persistence(directory, budget, timer=store.now)  # one clock: the store's
        if store.persistence is None:
            _unavailable[store] = True
    return store.persistence is not None


def open_if_present(store: CacheStore) -> bool:
    """Open the disk cache only if one was made before (to clear it), never create one."""
    if store.persistence is None:
        directory = _settings.get(store, (None, 0))[0] or default_cache_dir()
        if (directory / "secret.key").exists():
            return ensure_persistence(store)
    return store.persistence is not None


# per store, weakly (stores come and go in tests): its settings, and whether opening failed
_settings: weakref.WeakKeyDictionary[CacheStore, tuple[Path | None, int]] = weakref.WeakKeyDictionary()
_unavailable: weakref.WeakKeyDictionary[CacheStore, bool] = weakref.WeakKeyDictionary()
