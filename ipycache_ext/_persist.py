"""Persistence beyond the kernel: the local disk tier, the team tier, and the store's adapter.

- ``SignedCache`` (``_signed_cache``) signs, verifies, expires and budgets entries on any
  byte-level backend (``ipycache_ext.backends``).
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
from ._envelope import FORMAT_VERSION, MAGIC, EntryHeader
from ._errors import warn
from ._serialize import SerializedValue
from ._signed_cache import DEFAULT_DISK_BUDGET, ENV_CACHE_DIR, SignedCache, default_cache_dir
from ._signing import load_or_create_key, private_directory, whoami
from ._store import CacheStore, EntryInfo, Restored, Where
from .backends.base import BackendUnavailable, Leases
from .backends.files import FileBackend

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

DiskCache = SignedCache  # the name the first version had
DiskRecord = EntryHeader  # the name the first version had


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
        self,
        disk: SignedCache | None,
        team: Any = None,
        *,
        notice: Callable[[str], None] = print_notice,
        team_configured: bool | None = None,
    ):
        self.disk = disk
        self.team = team  # a _team.TeamTier (kept untyped here: it imports the Redis client lazily)
        # whether one was set up, even when it could not be opened (said then); default: team given
        self.team_configured = team is not None if team_configured is None else team_configured
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
        value, header = shared
        if self.disk is not None:
            self._fill(self.disk, header, value)
        return _restored(value, header, "team")

    def _fill(self, disk: SignedCache, header: EntryHeader, value: SerializedValue) -> None:
        """A team hit fills the local tier (re-signed with our key): in a thread for big entries.

        The thread writes from the value's memory file, which nobody else can change, so the
        hit doesn't wait for the disk; a kernel that stops mid-way leaves a temporary file
        the next write sweeps.
        """
        if header.size < self.fill_in_background_from:
            disk.save(value, header)
            return
        thread = threading.Thread(
            target=self._fill_quietly, args=(disk, header, value), daemon=True, name="ipycache-fill"
        )
        self._fills = [t for t in self._fills if t.is_alive()] + [thread]
        thread.start()

    @staticmethod
    def _fill_quietly(disk: SignedCache, header: EntryHeader, value: SerializedValue) -> None:
        with contextlib.suppress(AttributeError, OSError):  # background work: the next cell first
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)  # this thread only (Linux)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a warning from a thread would land in a random cell
            with contextlib.suppress(Exception):
                disk.save(value, header)

    def flush(self, timeout: float | None = None) -> None:
        """Wait for local fills still being written (tests, and before a kernel exits)."""
        for thread in self._fills:
            thread.join(timeout)

    def save(self, key: str, value: Any, entry: EntryInfo, where: Where = "disk") -> Where | None:
        """Where ``value`` was written: the team store (and the disk), the disk only, or None."""
        if not isinstance(value, SerializedValue):
            return None  # only serialized data can be written out
        header = _header(key, entry)
        on_disk = self.disk.save(value, header) if self.disk is not None else False
        if where == "team" and self.team is not None and self.team.save(value, header):
            return "team"
        return "disk" if on_disk else None

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

    def delete(self, key: str, *, expired: bool = False) -> None:
        """Forget ``key`` locally. Team entries are never deleted by a kernel (TTL or the admin)."""
        if self.disk is not None:
            self.disk.delete(key, expired=expired)

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
        warn(
            f"persistence is off: {exc}. Entries stay in memory; choose a directory you own with "
            f"{ENV_CACHE_DIR} or the cache_dir setting",
        )
        return None
    return StorePersistence(disk, _open_team(team, timer), team_configured=team is not None)


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
