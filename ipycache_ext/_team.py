"""The team tier: entries shared through a team store, signed per user, trusted by a list.

Configured outside the notebook (``ipython_config.py`` traits, or the environment):

- ``IPYCACHE_EXT_TEAM_STORE``: ``redis://host:6379/0`` or ``file:///srv/team-cache``
- ``IPYCACHE_EXT_TEAM_NAMESPACE``: one per team or project (default ``default``)
- ``IPYCACHE_EXT_TEAM_TRUSTED_KEYS``: public keys (``[name] ed25519:...``) or files of them,
  separated by ``;`` or newlines
- ``IPYCACHE_EXT_TEAM_KEY``: this user's private key file (default
  ``~/.config/ipycache_ext/team_ed25519.pem``, made on first use)

When the store can't be reached the tier says so once, is skipped for ``retry_after``
seconds (so no cell waits on a dead server twice in a row), then tried again: it reconnects
by itself. Every call into the backend is bounded by the socket timeout.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from ._envelope import EntryHeader
from ._errors import warn
from ._persist import SignedCache
from ._serialize import SerializedValue
from ._signing import Ed25519Signer, TrustedSigners, read_trusted
from .backends import open_backend, redacted
from .backends.base import Backend, BackendUnavailable, Lease, Leases

ENV_TEAM_STORE = "IPYCACHE_EXT_TEAM_STORE"
ENV_TEAM_NAMESPACE = "IPYCACHE_EXT_TEAM_NAMESPACE"
ENV_TEAM_TRUSTED_KEYS = "IPYCACHE_EXT_TEAM_TRUSTED_KEYS"


@dataclass(frozen=True)
class TeamSettings:
    """Everything the team tier needs; built from traits or ``team_settings()`` (environment)."""

    url: str
    namespace: str = "default"
    trusted_keys: tuple[str, ...] = ()
    key_path: Path | None = None
    socket_timeout: float = 2.0  # seconds any one server call may take
    retry_after: float = 10.0  # seconds the store is skipped after it failed
    lease_seconds: float = 30.0
    wait_seconds: float = 600.0  # a waiter computes itself after this


def team_settings(
    url: str | None = None,
    namespace: str | None = None,
    trusted_keys: tuple[str, ...] | list[str] | None = None,
    environ: Mapping[str, str] = os.environ,
) -> TeamSettings | None:
    """Settings from explicit values (traits), else the environment; None when no store is set."""
    url = url or environ.get(ENV_TEAM_STORE) or None
    if not url:
        return None
    keys = tuple(trusted_keys or ())
    if not keys and environ.get(ENV_TEAM_TRUSTED_KEYS):
        text = environ[ENV_TEAM_TRUSTED_KEYS].replace("\n", ";")
        keys = tuple(item.strip() for item in text.split(";") if item.strip())
    return TeamSettings(
        url=url,
        namespace=namespace or environ.get(ENV_TEAM_NAMESPACE) or "default",
        trusted_keys=keys,
    )


class TeamTier:
    """A ``SignedCache`` on the team backend, behind a breaker that makes a dead server cheap."""

    def __init__(
        self,
        backend: Backend,
        signer: Ed25519Signer,
        trusted: TrustedSigners,
        *,
        settings: TeamSettings,
        timer: Callable[[], float] = time.time,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.backend = backend
        self.signer = signer
        self.settings = settings
        self.cache = SignedCache(backend, signer, trusted, shared=True, timer=timer, name="team")
        self._clock = clock
        self._down_until = 0.0
        self._said_down = False

    @property
    def available(self) -> bool:
        return self._clock() >= self._down_until

    def _failed(self, exc: Exception) -> None:
        self._down_until = self._clock() + self.settings.retry_after
        if not self._said_down:
            self._said_down = True
            warn(
                f"the team cache at {redacted(self.settings.url)} can't be reached ({exc}); working from "
                f"memory and the local disk, trying again every {self.settings.retry_after:.0f} s",
            )

    def _ok(self) -> None:
        self._said_down = False  # the next outage is said again

    def load(self, key: str) -> tuple[SerializedValue, EntryHeader] | None:
        """The verified value (its buffers mapped from the memory file it was received into)."""
        if not self.available:
            return None
        try:
            found = self.cache.load(key)
        except (BackendUnavailable, OSError) as exc:
            self._failed(exc)
            return None
        self._ok()
        return found

    def save(self, value: SerializedValue, header: EntryHeader) -> bool:
        if not self.available:
            return False
        try:
            saved = self.cache.save(value, header)
        except BackendUnavailable as exc:
            self._failed(exc)
            return False
        self._ok()
        return saved

    def contains(self, key: str) -> bool:
        try:
            return self.backend.contains(key)
        except (BackendUnavailable, OSError) as exc:
            self._failed(exc)
            raise BackendUnavailable(str(exc)) from exc

    def leases(self) -> Leases | None:
        """The backend's leases, each call tripping the breaker when the server fails."""
        if not self.available or not isinstance(self.backend, Leases):
            return None
        return _GuardedLeases(self, self.backend)


class _GuardedLeases:
    def __init__(self, tier: TeamTier, leases: Leases) -> None:
        self._tier, self._leases = tier, leases

    def acquire(self, key: str, holder: str, ttl: float) -> Lease | None:
        try:
            return self._leases.acquire(key, holder, ttl)
        except BackendUnavailable as exc:
            self._tier._failed(exc)
            raise

    def holder(self, key: str) -> str | None:
        try:
            return self._leases.holder(key)
        except BackendUnavailable as exc:
            self._tier._failed(exc)
            raise


def open_team(settings: TeamSettings, *, timer: Callable[[], float] = time.time) -> TeamTier | None:
    """The team tier for ``settings``, or None with one warning (bad URL, key or trusted list)."""
    try:
        signer = Ed25519Signer.load_or_create(settings.key_path)
        trusted = read_trusted(settings.trusted_keys)
        own = read_trusted([f"{'you'} {signer.public_key}"])
        trusted = {**own, **trusted}  # your own entries are always yours to trust
        backend = open_backend(
            settings.url, namespace=settings.namespace, socket_timeout=settings.socket_timeout
        )
    except (OSError, ValueError, ImportError) as exc:
        warn(
            f"the team cache is off: {exc}. Entries stay in memory and on the local disk",
        )
        return None
    return TeamTier(backend, signer, TrustedSigners(trusted), settings=settings, timer=timer)
