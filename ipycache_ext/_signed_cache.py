"""Signed, versioned, TTL-aware, budgeted entries on one byte-level backend.

Locally with this user's HMAC secret, on a team store with the user's Ed25519 key,
verified against the trusted keys. An entry that does not verify, or whose generation is
not the current one (an older file copied back), is refused: never unpickled, said once. A
refused *local* file is deleted (only its user can have written it, or it is damage); a
refused *shared* entry is left alone, since deleting would let anyone who can't sign erase
colleagues' work.

How an entry is read depends on where it lives, never on what it claims to be:

- a local format-3 file is mapped: its signed part is verified, its buffers checked against
  their signed digests, and hits map it copy-on-write (``_load_mapped``);
- a shared entry lands in a memory file (``backend.get_into``; a Redis reply is spliced
  there without a Python buffer), is verified in it the same way (format 4: BLAKE3 digests)
  and its hits map it: the bytes are copied once, by the kernel (``_load_landed``);
- anything else (format 2, no memory files) is read whole, verified, then copied.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from ._envelope import (
    MAPPED_VERSION,
    STRONG_VERSION,
    EntryHeader,
    OtherVersion,
    Refused,
    damaged_buffer,
    open_mapped,
    open_sealed,
    seal,
)
from ._errors import warn
from ._landing import Landing
from ._serialize import SerializedValue, pread_all
from ._signing import HmacSigner, Signer, Verifier, load_or_create_key
from .backends.base import Backend, BackendUnavailable
from .backends.files import FileBackend, NotARegularFile

ENV_CACHE_DIR = "IPYCACHE_EXT_CACHE_DIR"
DEFAULT_DISK_BUDGET = 10 * 1024**3
_OLDER = "it is older than the entry last written under this key (an old copy put back?)"
_MAPPED = {version.to_bytes(2, "little") for version in (MAPPED_VERSION, STRONG_VERSION)}

T = TypeVar("T")
Loaded = tuple[SerializedValue, EntryHeader]


def default_cache_dir() -> Path:
    """``$IPYCACHE_EXT_CACHE_DIR``, else ``$XDG_CACHE_HOME/ipycache_ext``, else ``~/.cache/ipycache_ext``."""
    explicit = os.environ.get(ENV_CACHE_DIR)
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "ipycache_ext"


class SignedCache:
    """Signed, versioned, TTL-aware, budgeted entries on one backend (see the module docstring)."""

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
        # key -> generation this process last wrote or read: what an expiry here may remove
        self._held: dict[str, str] = {}

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
        # page-aligned buffers (mapped on a hit): format 3 under the local HMAC, 4 under Ed25519
        sealed, size, pieces = seal(header, meta, buffers, self.signer, mapped=True)
        ttl = None if sealed.expires is None else max(1.0, sealed.expires - self._timer())
        try:
            self.backend.put(sealed.key, pieces, tag=sealed.generation, size=size, ttl=ttl)
        except BackendUnavailable:
            raise  # the caller's breaker says it once
        except OSError as exc:
            warn(
                f"could not persist {sealed.label!r} to {self._where()} ({_reason(exc)}); "
                "it stays cached in memory for this kernel",
            )
            return False
        self._held[sealed.key] = sealed.generation
        if not self.shared:
            self.backend.trim(self.budget, keep=sealed.key)
        return True

    # reading
    def load(self, key: str) -> Loaded | None:
        """The verified value and header, or None (missing, expired, foreign, stale or refused)."""
        if self.shared and Landing.possible():
            return self._live(key, self._guarded(key, lambda first: self._load_landed(key)))
        if not self.shared and hasattr(self.backend, "open_file"):
            try:
                return self._live(key, self._guarded(key, lambda first: self._load_mapped(key, first)))
            except _ReadWhole:
                pass
        found = self.load_parts(key)
        if found is None:
            return None
        header, meta, buffers = found
        self._held[key] = header.generation
        return SerializedValue.from_parts(bytes(meta), buffers), header

    def load_parts(self, key: str) -> tuple[EntryHeader, memoryview, list[memoryview]] | None:
        """``load``, but the pickle stream and buffers as views into the bytes read (nothing copied)."""

        def attempt(first: bool) -> tuple[EntryHeader, memoryview, list[memoryview]] | None:
            if not first and not hasattr(self.backend, "reread"):
                raise Refused(_OLDER)
            blob = self.backend.get(key) if first else self.backend.reread(key)  # type: ignore[attr-defined]
            if blob is None:
                return None
            header, meta, buffers = open_sealed(blob.data, self.verifier)
            self._check(key, header, blob.current)
            return header, meta, buffers

        found = self._guarded(key, attempt)
        if found is not None and self._expired(key, found[0]):
            return None
        return found

    def _guarded(self, key: str, attempt: Callable[[bool], T | None]) -> T | None:
        """``attempt(True)``, once more (``attempt(False)``) if it raced a writer's rename;
        a refused, foreign or unreadable entry is a miss (said once), never an exception."""
        try:
            try:
                return attempt(True)
            except Refused as first:
                if "older" not in str(first):
                    raise
                return attempt(False)
        except Refused as exc:
            self._refuse(key, str(exc))
        except OtherVersion:
            pass  # another version's entry: a miss, and it is replaced on save
        except (BackendUnavailable, _ReadWhole):
            raise
        except NotARegularFile as exc:  # a directory, FIFO, device or link where an entry belongs
            self._report(
                key,
                f"{exc.filename or 'the entry for key ' + key[:12]} {exc.strerror}: it is never read as "
                "a cached entry, and this entry can't be persisted there until you remove it",
                unreadable=True,
            )
        except OSError as exc:  # unreadable (permissions, I/O error)
            self._report(
                key,
                f"could not read the cached entry for key {key[:12]} ({_reason(exc)}); "
                "it is treated as a miss",
            )
        return None

    def _load_mapped(self, key: str, touch: bool) -> Loaded | None:
        """A local entry file mapped, not read; ``_ReadWhole`` for other formats."""
        opened = self.backend.open_file(key, touch=touch)  # type: ignore[attr-defined]
        if opened is None:
            return None
        fd, current = opened
        try:
            return self._from_descriptor(key, fd, os.fstat(fd).st_size, current)
        finally:
            os.close(fd)

    def _load_landed(self, key: str) -> Loaded | None:
        """A shared entry received into a memory file, verified there and mapped by its hits."""
        with Landing() as landing:
            landed = self.backend.get_into(key, landing.open)
            if landed is None:
                return None
            try:
                return self._from_descriptor(key, landing.fd, landed.size, landed.current, private=True)
            except _ReadWhole:  # format 2: verified over every byte, then copied
                header, meta, buffers = open_sealed(pread_all(landing.fd, 0, landed.size), self.verifier)
                self._check(key, header, landed.current)
                return SerializedValue.from_parts(bytes(meta), buffers), header

    def _from_descriptor(
        self, key: str, fd: int, size: int, current: frozenset[str] | None, *, private: bool = False
    ) -> Loaded:
        """Verify a format 3/4 entry in ``fd`` and map its buffers; ``_ReadWhole`` for others.

        ``private``: ``fd`` is a landing memory file (its pages are given back buffer by buffer)."""
        version = pread_all(fd, 8, 2)
        if version not in _MAPPED:
            raise _ReadWhole
        entry = open_mapped(lambda at, n: pread_all(fd, at, n), size, self.verifier)
        self._check(key, entry.header, current)
        # format 3's digests are from_file's own (xxh3 pieces); format 4's are BLAKE3
        strong = None if version == MAPPED_VERSION.to_bytes(2, "little") else entry.digest
        try:
            meta, spans, digests = bytes(entry.meta), entry.spans, entry.digests
            value = SerializedValue.from_file(meta, fd, spans, digests, check=strong, private=private)
        except ValueError as damaged:
            raise Refused(damaged_buffer(int(str(damaged.args[0])))) from None
        return value, entry.header

    def _live(self, key: str, found: Loaded | None) -> Loaded | None:
        """``found`` unless it has expired; its generation is then the one this process holds."""
        if found is None or self._expired(key, found[1]):
            return None
        self._held[key] = found[1].generation
        return found

    def _expired(self, key: str, header: EntryHeader) -> bool:
        if header.expires is None or self._timer() < header.expires:
            return False
        if not self.shared:
            self._remove(key, header.generation)  # that file, not one written since
        return True

    def _check(self, key: str, header: EntryHeader, current: frozenset[str] | None) -> None:
        if header.key != key:
            raise Refused("it was stored under another key")
        if current is not None and header.generation not in current:
            raise Refused(_OLDER)

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
        path = getattr(self.backend, "path", None)
        where = f" {path(key)}" if callable(path) else f" for key {key[:12]}"
        removed = self._remove(key)
        self._report(
            key,
            f"refused the cached file{where}: {why}. It was not loaded"
            + (" and has been removed; the result is computed again." if removed else "."),
            once=False,
        )

    def _report(self, key: str, message: str, *, once: bool = True, unreadable: bool = False) -> None:
        if once:
            if (key, message) in self._reported:
                return
            self._reported.add((key, message))
        warn(message)

    def _remove(self, key: str, tag: str | None = None) -> bool:
        self._held.pop(key, None)
        try:
            self.backend.delete(key, tag)
        except IsADirectoryError:
            return False  # said when it was found (a directory is never read as an entry)
        except OSError as exc:
            warn(
                f"could not remove the cached file for key {key[:12]} ({_reason(exc)}): other kernels "
                "will still find the old value until it is removed",
            )
            return False
        return True

    # housekeeping
    def delete(self, key: str, *, expired: bool = False) -> None:
        """Remove ``key``'s entry; ``expired``: only the generation this process wrote or read
        (another kernel may have written a newer one since, which is not due)."""
        if not expired:
            self._remove(key)
        elif key in self._held:
            self._remove(key, self._held[key])

    def clear(self) -> int:
        removed = 0
        for key in self.backend.keys():  # noqa: SIM118 (a backend, not a dict)
            removed += self._remove(key)
        return removed

    def usage(self) -> int:
        return self.backend.usage()

    def enforce_budget(self, keep: str | None = None) -> None:
        self.backend.trim(self.budget, keep=keep)


class _ReadWhole(Exception):
    """A file the mapping path leaves to the reading path (format 2, or not an entry)."""


def _reason(exc: OSError) -> str:
    return exc.strerror or str(exc)
