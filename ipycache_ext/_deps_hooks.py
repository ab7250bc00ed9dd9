"""Stand-ins for the dynamic-dependency layer until ``_deps`` lands: nothing is recorded."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any


class Recording:
    """What a computation read while it ran (nothing, here)."""

    def dependencies(self) -> tuple[dict[str, Any], ...]:
        return ()


@contextmanager
def recording(*, declared: Sequence[str] = (), cwd: str | None = None) -> Iterator[Recording]:
    yield Recording()


def first_change(dependencies: Sequence[Mapping[str, Any]]) -> str | None:
    return None


def replay_effects(dependencies: Sequence[Mapping[str, Any]]) -> None:
    return None
