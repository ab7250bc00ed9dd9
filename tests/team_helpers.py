"""Users of a team store in tests: each with a local cache directory and an Ed25519 key."""

from __future__ import annotations

import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from ipycache_ext._persist import SignedCache, StorePersistence
from ipycache_ext._signing import Ed25519Signer
from ipycache_ext._team import TeamSettings, TeamTier, open_team


def public_key(tmp_path: Path, name: str) -> str:
    return Ed25519Signer.load_or_create(tmp_path / "keys" / f"{name}.pem").public_key


def user(
    tmp_path: Path, name: str, url: str, *, trusts: tuple[str, ...] = (), **settings: Any
) -> StorePersistence:
    """``name``'s tiers: their own disk, the team store at ``url`` trusting ``trusts`` (names)."""
    trusted = tuple(f"{other} {public_key(tmp_path, other)}" for other in trusts)
    options: dict[str, Any] = {"socket_timeout": 0.5, "retry_after": 0.5, **settings}
    team = open_team(
        TeamSettings(
            url=url,
            namespace="test",
            trusted_keys=trusted,
            key_path=tmp_path / "keys" / f"{name}.pem",
            **options,
        )
    )
    assert isinstance(team, TeamTier)
    disk = SignedCache.in_directory(tmp_path / f"{name}-cache")
    tiers = StorePersistence(disk, team)
    tiers.notices = []  # type: ignore[attr-defined]
    tiers.notice = tiers.notices.append  # type: ignore[attr-defined]
    return tiers


def entry(label: str = "slow cell", *, expires: float | None = None, by: str | None = None) -> Any:
    """What the store hands a tier on save (an ``EntryInfo``'s fields that tiers read)."""
    return SimpleNamespace(
        kind="data",
        label=label,
        names=("frame",),
        created=time.time(),
        expires=expires,
        compute_seconds=2.5,
        dependencies=({"kind": "file", "path": "data.csv"},),
        computed_by=by,
    )
