"""Persistence beyond the kernel: the local disk tier, the team tier, and the store's adapter.

- ``SignedCache`` signs, verifies, expires and budgets entries on any byte-level backend
  (``ipycache_ext.backends``): locally with this user's HMAC secret, on a team store with the
  user's Ed25519 key, verified against the trusted keys. An entry that does not verify, or
  whose generation is not the current one (an older file copied back), is refused: never
  unpickled, said once. A refused *local* file is deleted (only its user can have written it,
  or it is damage); a refused *shared* entry is left alone, since deleting would let anyone
  who can't sign erase colleagues' work and a key missing from one user's trusted list is no
  reason to destroy it for everyone.
- ``StorePersistence`` is the store's ``Persistence``: memory (the store) -> local disk ->
  team. A team hit fills the local disk; ``claim`` decides who computes a cold key.
- ``configure`` / ``ensure_persistence`` / ``open_if_present`` give a store its tiers.

Writes are atomic in every backend (temporary file + rename; Redis chunks first and the
manifest last), so a writer killed at any moment leaves the old entry or the new one. A full
disk, a read-only directory or an unreachable server costs one warning; the value stays in
memory.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
import warnings
import weakref
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

from ._claim import claim as _claim
from ._envelope import (
    FORMAT_VERSION,
    MAGIC,
    MAPPED_VERSION,
    EntryHeader,
    OtherVersion,
    Refused,
    damaged_buffer,
    open_mapped,
    open_sealed,
    pread_all,
    seal,
)
from ._serialize import SerializedValue
from ._signing import HmacSigner, Signer, Verifier, load_or_create_key, private_directory, whoami
from ._store import CacheStore, EntryInfo, Restored, Where
from .backends.base import Backend, BackendUnavailable, Leases
from .backends.files import FileBackend, NotARegularFile

__all__ = [
    "DEFAULT_DISK_BUDGET",
    "ENV_CACHE_DIR",
    "FORMAT_VERSION",
    "MAGIC",
    "DiskCache",
    "DiskRecord",
    "FileBackend",
    "SignedCache",
    "StorePersistence",
    "configure",
    "default_cache_dir",
    "ensure_persistence",
    "load_or_create_key",
    "open_if_present",
    "open_persistence",
    "private_directory",
]

ENV_CACHE_DIR = "IPYCACHE_EXT_CACHE_DIR"
DEFAULT_DISK_BUDGET = 10 * 1024**3
DiskRecord = EntryHeader  # the name the first version had


def default_cache_dir() -> Path:
    """``$IPYCACHE_EXT_CACHE_DIR``, else ``$XDG_CACHE_HOME/ipycache_ext``, else ``~/.cache/ipycache_ext``."""
    explicit = os.environ.get(ENV_CACHE_DIR)
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "ipycache_ext"


class SignedCache:
    """Signed, versioned, TTL-aware, budgeted entries on one backend."""

    def __init__(
        self,
        backend: Backend,
        signer: Signer | bytes,
        verifier: Verifier | None = None,
        *,
        shared: bool = False,
        budget: int = DEFAULT_DISK_BUDGET,
        timer: Callable[[], float] = time.time,
        name: str = "disk",
    ) -> None:
        if isinstance(signer, bytes):  # a local secret signs and verifies
            signer = HmacSigner(signer)
        self.backend = backend
        self.signer = signer
        self.verifier: Verifier = verifier if verifier is not None else signer  # type: ignore[assignment]
        self.shared = shared
        self.budget = budget
        self.name = name
        self._timer = timer
        self._reported: set[tuple[str, str]] = set()

    @classmethod
    def in_directory(
        cls,
        directory: Path | None = None,
        *,
        budget: int = DEFAULT_DISK_BUDGET,
        timer: Callable[[], float] = time.time,
    ) -> SignedCache:
        """The file-backed cache in ``directory`` (default: the per-user cache directory)."""
        directory = default_cache_dir() if directory is None else directory
        key = load_or_create_key(directory / "secret.key")
        return cls(FileBackend(directory), key, budget=budget, timer=timer)

    # writing
    def save(self, value: SerializedValue, header: EntryHeader) -> bool:
        """Persist ``value``; False (with one warning) when the disk can't take it."""
        meta, buffers = value.parts()
        return self.save_parts(meta, buffers, header)

    def save_parts(self, meta: bytes | memoryview, buffers: list[memoryview], header: EntryHeader) -> bool:
        """``save`` of a value given as its pickle stream and buffers (as ``load_parts`` returns them)."""
        # the local tier writes format 3 (its buffers are mapped on a restart), a team store format 2
        sealed, size, pieces = seal(header, meta, buffers, self.signer, mapped=not self.shared)
        ttl = None if sealed.expires is None else max(1.0, sealed.expires - self._timer())
        try:
            self.backend.put(sealed.key, pieces, tag=sealed.generation, size=size, ttl=ttl)
        except BackendUnavailable:
            raise  # the caller's breaker says it once
        except OSError as exc:
            warnings.warn(
                f"could not persist {sealed.label!r} to {self._where()} ({_reason(exc)}); "
                "it stays cached in memory for this kernel",
                RuntimeWarning,
                stacklevel=3,
            )
            return False
        if not self.shared:
            self.backend.trim(self.budget, keep=sealed.key)
        return True

    # reading
    def load(self, key: str) -> tuple[SerializedValue, EntryHeader] | None:
        """The verified value and header, or None (missing, expired, foreign, stale or refused).

        A format-3 file of a backend that can hand out its descriptor (``open_file``) is not
        read: its signed part is verified, its buffers mapped and checked against their
        signed digests, and hits map them copy-on-write from the file.
        """
        if not self.shared and hasattr(self.backend, "open_file"):
            with contextlib.suppress(_ReadWhole):
                return self._load_mapped(key)
        found = self.load_parts(key)
        if found is None:
            return None
        header, meta, buffers = found
        return SerializedValue.from_parts(bytes(meta), buffers), header

    def load_parts(self, key: str) -> tuple[EntryHeader, memoryview, list[memoryview]] | None:
        """``load``, but the pickle stream and buffers as views into the bytes read (nothing copied)."""
        try:
            blob = self.backend.get(key)
            if blob is None:
                return None
            try:
                header, meta, buffers = self._open(key, blob.data, blob.current)
            except Refused as first:
                reread = getattr(self.backend, "reread", None)  # raced a writer's rename?
                again = reread(key) if reread is not None and "older" in str(first) else None
                if again is None:
                    raise
                header, meta, buffers = self._open(key, again.data, again.current)
        except Refused as exc:
            self._refuse(key, str(exc))
            return None
        except OtherVersion:
            return None  # another version's entry: a miss, and it is replaced on save
        except BackendUnavailable:
            raise
        except OSError as exc:  # unreadable (permissions, a FIFO, a directory, I/O error)
            self._report(
                key,
                f"could not read the cached entry for key {key[:12]} ({_reason(exc)}); "
                "it is treated as a miss",
                unreadable=isinstance(exc, NotARegularFile),
            )
            return None
        if header.expires is not None and self._timer() >= header.expires:
            if not self.shared:
                self.delete(key)
            return None
        return header, meta, buffers

    def _load_mapped(self, key: str) -> tuple[SerializedValue, EntryHeader] | None:
        """``load`` of a format-3 file without reading its buffers; ``_ReadWhole`` for other files."""
        try:
            try:
                found = self._open_mapped(key, touch=True)
            except Refused as first:
                if "older" not in str(first):  # raced a writer's rename? once more, untouched
                    raise
                found = self._open_mapped(key, touch=False)
        except Refused as exc:
            self._refuse(key, str(exc))
            return None
        except BackendUnavailable:
            raise
        except OSError as exc:
            self._report(
                key,
                f"could not read the cached entry for key {key[:12]} ({_reason(exc)}); "
                "it is treated as a miss",
                unreadable=isinstance(exc, NotARegularFile),
            )
            return None
        if found is None:
            return None
        value, header = found
        if header.expires is not None and self._timer() >= header.expires:
            self.delete(key)
            return None
        return value, header

    def _open_mapped(self, key: str, *, touch: bool) -> tuple[SerializedValue, EntryHeader] | None:
        opened = self.backend.open_file(key, touch=touch)  # type: ignore[attr-defined]
        if opened is None:
            return None
        fd, current = opened
        try:
            size = os.fstat(fd).st_size
            if pread_all(fd, 8, 2) != MAPPED_VERSION.to_bytes(2, "little"):
                raise _ReadWhole  # format 2 (or not an entry at all): the reading path decides
            header, meta, spans, digests = open_mapped(
                lambda at, n: pread_all(fd, at, n), size, self.verifier
            )
            self._check(key, header, current)
            try:
                value = SerializedValue.from_file(bytes(meta), fd, spans, digests)
            except ValueError as damaged:
                raise Refused(damaged_buffer(int(str(damaged.args[0])))) from None
        finally:
            os.close(fd)
        return value, header

    def _check(self, key: str, header: EntryHeader, current: frozenset[str] | None) -> None:
        if header.key != key:
            raise Refused("it was stored under another key")
        if current is not None and header.generation not in current:
            raise Refused("it is older than the entry last written under this key (an old copy put back?)")

    def _open(
        self, key: str, data: Any, current: frozenset[str] | None
    ) -> tuple[EntryHeader, memoryview, list[memoryview]]:
        header, meta, buffers = open_sealed(data, self.verifier)
        self._check(key, header, current)
        return header, meta, buffers

    def _where(self) -> str:
        return "the team store" if self.shared else "disk"

    def _refuse(self, key: str, why: str) -> None:
        """Never unpickle it; say so once. A local file goes; a shared entry stays."""
        if self.shared:
            self._report(
                key,
                f"refused the team entry for key {key[:12]}: {why}. It was not loaded "
                "(and is left in the team store)",
            )
            return
        removed = self._remove(key)
        self._report(
            key,
            f"refused the cached file for key {key[:12]}: {why}. It was not loaded"
            + (" and has been removed." if removed else "."),
            once=False,
        )

    def _report(self, key: str, message: str, *, once: bool = True, unreadable: bool = False) -> None:
        if once:
            if (key, message) in self._reported:
                return
            self._reported.add((key, message))
        warnings.warn(message, RuntimeWarning, stacklevel=4)

    def _remove(self, key: str) -> bool:
        try:
            self.backend.delete(key)
        except OSError as exc:
            warnings.warn(
                f"could not remove the cached file for key {key[:12]} ({_reason(exc)}): other kernels "
                "will still find the old value until it is removed",
                RuntimeWarning,
                stacklevel=4,
            )
            return False
        return True

    # housekeeping
    def delete(self, key: str) -> None:
        self._remove(key)

    def clear(self) -> int:
        removed = 0
        for key in self.backend.keys():  # noqa: SIM118 (a backend, not a dict)
            removed += self._remove(key)
        return removed

    def usage(self) -> int:
        return self.backend.usage()

    def enforce_budget(self, keep: str | None = None) -> None:
        self.backend.trim(self.budget, keep=keep)


DiskCache = SignedCache  # the name the first version had


class _ReadWhole(Exception):
    """A file the mapping path leaves to the reading path (format 2, or not an entry)."""


def _reason(exc: OSError) -> str:
    return exc.strerror or str(exc)


def _restored(value: SerializedValue, header: EntryHeader, where: str) -> Restored:
    return Restored(
        value,
        value.nbytes,
        header.created,
        header.expires,
        header.compute_seconds,
        dependencies=header.dependencies,
        computed_by=header.computed_by,
        where=where,
    )


def _header(key: str, entry: EntryInfo) -> EntryHeader:
    dependencies: tuple[Mapping[str, Any], ...] = tuple(getattr(entry, "dependencies", ()) or ())
    return EntryHeader(
        key=key,
        kind=entry.kind,
        label=entry.label,
        names=tuple(entry.names),
        created=entry.created,
        expires=entry.expires,
        compute_seconds=entry.compute_seconds,
        computed_by=getattr(entry, "computed_by", None) or whoami(),
        dependencies=dependencies,
    )


def print_notice(message: str) -> None:
    """Default for what waiting kernels are told: one line on stderr (shown under the cell)."""
    print(message, file=sys.stderr, flush=True)


class StorePersistence:
    """The store's ``Persistence``: the local disk tier, then (``where="team"``) the team tier."""

    def __init__(
        self, disk: SignedCache | None, team: Any = None, *, notice: Callable[[str], None] = print_notice
    ):
        self.disk = disk
        self.team = team  # a _team.TeamTier (kept untyped here: it imports the Redis client lazily)
        self.notice = notice
        self.lease_seconds = 30.0
        self.wait_seconds = 600.0
        self.fill_in_background_from = 16 << 20  # bytes
        self._fills: list[threading.Thread] = []

    @property
    def directory(self) -> Path | None:
        """The directory of a file-backed local cache (None for other backends)."""
        return getattr(self.disk.backend, "directory", None) if self.disk is not None else None

    def load(self, key: str, where: Where = "disk") -> Restored | None:
        local = self.disk.load(key) if self.disk is not None else None
        if local is not None:
            return _restored(*local, "disk")
        if where != "team" or self.team is None:
            return None
        shared = self.team.load(key)
        if shared is None:
            return None
        header, meta, buffers = shared
        value = SerializedValue.from_parts(bytes(meta), buffers)
        if self.disk is not None:
            self._fill(self.disk, header, meta, buffers)
        return _restored(value, header, "team")

    def _fill(
        self, disk: SignedCache, header: EntryHeader, meta: memoryview, buffers: list[memoryview]
    ) -> None:
        """A team hit fills the local tier (re-signed with our key): in a thread for big entries.

        The thread writes from the bytes read from the team store, which nobody else holds,
        so the hit doesn't wait for the disk; a kernel that stops mid-way leaves a temporary
        file the next write sweeps.
        """
        if header.size < self.fill_in_background_from:
            disk.save_parts(meta, buffers, header)
            return
        thread = threading.Thread(
            target=self._fill_quietly, args=(disk, header, meta, buffers), daemon=True, name="ipycache-fill"
        )
        self._fills = [t for t in self._fills if t.is_alive()] + [thread]
        thread.start()

    @staticmethod
    def _fill_quietly(
        disk: SignedCache, header: EntryHeader, meta: memoryview, buffers: list[memoryview]
    ) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a warning from a thread would land in a random cell
            with contextlib.suppress(Exception):
                disk.save_parts(meta, buffers, header)

    def flush(self, timeout: float | None = None) -> None:
        """Wait for local fills still being written (tests, and before a kernel exits)."""
        for thread in self._fills:
            thread.join(timeout)

    def save(self, key: str, value: Any, entry: EntryInfo, where: Where = "disk") -> bool:
        if not isinstance(value, SerializedValue):
            return False  # only serialized data can be written out
        header = _header(key, entry)
        saved = self.disk.save(value, header) if self.disk is not None else False
        if where == "team" and self.team is not None:
            saved = self.team.save(value, header) or saved
        return saved

    def claim(self, key: str, where: Where = "disk") -> AbstractContextManager[Restored | None]:
        if where == "team" and self.team is not None and self.team.leases() is not None:
            team = self.team
            return self._claim(team.leases(), key, where, present=lambda: team.contains(key))
        disk = self.disk
        if disk is not None and isinstance(disk.backend, Leases):  # several kernels of one user
            return self._claim(disk.backend, key, "disk", present=lambda: disk.backend.contains(key))
        return contextlib.nullcontext(None)

    @contextlib.contextmanager
    def _claim(
        self, leases: Leases, key: str, where: Where, present: Callable[[], bool]
    ) -> Iterator[Restored | None]:
        try:
            context = _claim(
                leases,
                key,
                who=whoami(),
                load=lambda: self.load(key, where),
                present=present,
                notice=self.notice,
                lease_seconds=self.lease_seconds,
                wait_seconds=self.wait_seconds,
            )
            found = context.__enter__()
        except (OSError, BackendUnavailable):  # no lease to be had: compute without one
            yield None
            return
        try:
            yield found
        except BaseException:
            if not context.__exit__(*sys.exc_info()):
                raise
        else:
            context.__exit__(None, None, None)

    def close(self) -> None:
        """Let go of the tiers' connections and descriptors (the store calls it when it closes)."""
        self.flush(timeout=30)
        for backend in (getattr(self.disk, "backend", None), getattr(self.team, "backend", None)):
            if backend is not None:
                backend.close()

    def delete(self, key: str) -> None:
        """Forget ``key`` locally. Team entries are never deleted by a kernel (TTL or the admin)."""
        if self.disk is not None:
            self.disk.delete(key)

    def clear(self) -> int:
        return self.disk.clear() if self.disk is not None else 0

    def usage(self) -> tuple[int, int]:
        """Bytes on disk (all kernels of this user, writes in flight included) and the disk budget."""
        if self.disk is None:
            return 0, 0
        try:
            return self.disk.usage(), self.disk.budget
        except OSError:
            return 0, self.disk.budget


def open_persistence(
    directory: Path | None = None,
    budget: int = DEFAULT_DISK_BUDGET,
    timer: Callable[[], float] = time.time,
    team: Any = None,
) -> StorePersistence | None:
    """The per-user disk cache (and the team tier, if configured), or None (one warning)."""
    try:
        disk = SignedCache.in_directory(directory, budget=budget, timer=timer)
    except OSError as exc:
        warnings.warn(
            f"persistence is off: {exc}. Entries stay in memory; choose a directory you own with "
            f"{ENV_CACHE_DIR} or the cache_dir setting",
            RuntimeWarning,
            stacklevel=3,
        )
        return None
    return StorePersistence(disk, _open_team(team, timer))


def _open_team(settings: Any, timer: Callable[[], float]) -> Any:
    if settings is None:
        return None
    from ._team import open_team

    return open_team(settings, timer=timer)


def configure(
    store: CacheStore, directory: Path | None = None, budget: int | None = None, team: Any = None
) -> None:
    """Where ``store`` keeps persisted entries, for every front end (magics and decorators).

    ``team`` is a ``_team.TeamSettings`` (build it with ``_team.team_settings(url,
    namespace, trusted_keys)``); None means "from the environment" (``IPYCACHE_EXT_TEAM_*``;
    no team tier when ``IPYCACHE_EXT_TEAM_STORE`` is unset). A different directory or team
    closes the open tiers, so the next persisted entry opens the new ones; a different
    budget applies at once.
    """
    settings = (directory, DEFAULT_DISK_BUDGET if budget is None else budget, team)
    previous = _settings.get(store)
    _settings[store] = settings
    _unavailable.pop(store, None)
    current = store.persistence
    if isinstance(current, StorePersistence):
        same_team = previous is not None and previous[2] == team
        if current.directory != (directory or default_cache_dir()) or not same_team:
            store.persistence = None
        elif current.disk is not None:
            current.disk.budget = settings[1]


def ensure_persistence(store: CacheStore) -> bool:
    """Give ``store`` its tiers on first need; False if they can't be had (said once)."""
    if store.persistence is None and not _unavailable.get(store):
        directory, budget, team = _settings.get(store, (None, DEFAULT_DISK_BUDGET, None))
        team = team if team is not None else _env_team()
        store.persistence = open_persistence(directory, budget, timer=store.now, team=team)  # one clock
        if store.persistence is None:
            _unavailable[store] = True
    return store.persistence is not None


def _env_team() -> Any:
    from ._team import team_settings

    return team_settings()


def open_if_present(store: CacheStore) -> bool:
    """Open the disk cache only if one was made before (to clear it), never create one."""
    if store.persistence is None:
        directory = _settings.get(store, (None, 0, None))[0] or default_cache_dir()
        if (directory / "secret.key").exists():
            return ensure_persistence(store)
    return store.persistence is not None


# per store, weakly (stores come and go in tests): its settings, and whether opening failed
_settings: weakref.WeakKeyDictionary[CacheStore, tuple[Path | None, int, Any]] = weakref.WeakKeyDictionary()
_unavailable: weakref.WeakKeyDictionary[CacheStore, bool] = weakref.WeakKeyDictionary()
