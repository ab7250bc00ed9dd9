"""The options of ``@cache_data``/``@cache_resource``, checked once, when the function is decorated.

Streamlit 1.67's keywords, with its rules: ``max_size`` is a byte budget (an int, or a
string with a binary unit: ``"500MB"``, ``"1.5GiB"``; KB/MB/GB/TB are powers of 1024 as in
Streamlit); ``refresh_mode="background"`` needs a ``ttl``, can't be persisted and can't be
used on an ``async def``; ``scope`` is ``"global"`` or ``"session"`` (here: this kernel).
Every error names the option at fault and what to write instead.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Literal

from ._hashing import HashFuncs
from ._store import Kind
from ._ttl import parse_ttl

__all__ = ["BACKGROUND_HARD_EXPIRY", "DecoratorOptions", "check_options", "parse_byte_size"]

TTL = float | int | str | timedelta | None
Persist = bool | str | None
Scope = Literal["global", "session"]
RefreshMode = Literal["foreground", "background"]

# Streamlit's default runner.cacheBackgroundRefreshTTLMultiplier: a stale value may be
# served for one more ttl while it refreshes; after that the next call waits for a new one.
BACKGROUND_HARD_EXPIRY = 2.0

_BYTE_SIZE = re.compile(
    r"(?P<value>(?:\d+(?:\.\d*)?|\.\d+)) ?(?P<unit>b|ki?b|mi?b|gi?b|ti?b)", re.ASCII | re.IGNORECASE
)
_UNITS = {"b": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}
_MAX_DIGITS = 100  # as Streamlit: no unbounded integer conversion of a pathological string


@dataclass(frozen=True)
class DecoratorOptions:
    """Everything a decorated function was given, validated; ``ttl`` is the freshness in seconds."""

    kind: Kind
    ttl: float | None = None
    max_entries: int | None = None
    show_spinner: bool | str = True
    validate: Callable[[Any], Any] | None = None
    on_release: Callable[[Any], Any] | None = None
    hash_funcs: HashFuncs | None = None
    persist: bool | str = False  # False, "disk" or "team"
    max_size: int | None = None  # bytes of this function's pickled entries (cache_data only)
    show_time: bool = False
    scope: Scope = "global"
    refresh_mode: RefreshMode = "foreground"
    depends_on: tuple[str, ...] = ()  # files or globs it depends on that can't be seen being read

    @property
    def store_ttl(self) -> float | None:
        """How long the store keeps an entry: the hard expiry when stale values are served."""
        if self.ttl is None or self.refresh_mode == "foreground":
            return self.ttl
        return self.ttl * BACKGROUND_HARD_EXPIRY

    def plain(self) -> DecoratorOptions:
        """The options without the functions (hooks, hash_funcs): what a pickle carries."""
        return DecoratorOptions(
            self.kind, self.ttl, self.max_entries, self.show_spinner, None, None, None, self.persist,
            self.max_size, self.show_time, self.scope, self.refresh_mode, self.depends_on,
        )  # fmt: skip


def parse_byte_size(name: str, value: object) -> int | None:
    """``max_size`` in bytes: an int, or a string with a binary unit ("500MB", "1.5GiB")."""
    if value is None:
        return None
    way_out = 'give an int number of bytes or a size with its unit, such as "500MB" or "1.5GiB"'
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise TypeError(f"{name}(max_size=...) must be an int or a str, not {value!r}: {way_out}")
    if isinstance(value, str):
        match = _BYTE_SIZE.fullmatch(value.strip())
        if match is None:
            raise ValueError(f"{name}(max_size={value!r}) is not a byte size: {way_out}")
        whole, _, fraction = match.group("value").partition(".")
        digits = f"{whole or '0'}{fraction}"
        if len(digits) > _MAX_DIGITS:
            raise ValueError(f"{name}(max_size=...) has more than {_MAX_DIGITS} digits: {way_out}")
        size: int = int(digits) * _UNITS[match.group("unit")[0].lower()] // 10 ** len(fraction)
    else:
        size = int(value)
    if size <= 0:
        raise ValueError(f"{name}(max_size={value!r}) must be a positive byte size: {way_out}")
    return size


def check_options(
    name: str,
    kind: Kind,
    *,
    ttl: TTL = None,
    max_entries: int | None = None,
    max_size: int | str | None = None,
    show_spinner: bool | str = True,
    show_time: bool = False,
    persist: Persist = None,
    hash_funcs: HashFuncs | None = None,
    validate: Callable[[Any], Any] | None = None,
    on_release: Callable[[Any], Any] | None = None,
    scope: str = "global",
    refresh_mode: str = "foreground",
    depends_on: Sequence[str] | str | None = None,
) -> DecoratorOptions:
    """The options of a decorator call, or the error naming the one at fault."""
    try:
        seconds = parse_ttl(ttl)
    except ValueError as exc:
        raise ValueError(f"{name}(ttl=...): {exc}") from None
    if max_entries is not None and (isinstance(max_entries, bool) or not isinstance(max_entries, int)):
        raise TypeError(f"{name}(max_entries=...) must be a positive integer or None, not {max_entries!r}")
    if max_entries is not None and max_entries <= 0:
        raise ValueError(f"{name}(max_entries=...) must be a positive integer or None, not {max_entries}")
    if not isinstance(show_spinner, (bool, str)):
        raise TypeError(
            f"{name}(show_spinner=...) must be True, False or the text to show, not {show_spinner!r}"
        )
    if not isinstance(show_time, bool):
        raise TypeError(f"{name}(show_time=...) must be True or False, not {show_time!r}")
    for hook, value in (("validate", validate), ("on_release", on_release)):
        if value is not None and not callable(value):
            raise TypeError(f"{name}({hook}=...) must be a function of the cached value, not {value!r}")
    _check_hash_funcs(name, hash_funcs)
    if persist not in (None, False, True, "disk", "team") or type(persist) not in (type(None), bool, str):
        raise ValueError(
            f"{name}(persist=...) must be None, False, True, 'disk' or 'team' (also the shared team "
            f"store), not {persist!r}"
        )
    declared = (depends_on,) if isinstance(depends_on, str) else tuple(depends_on or ())
    if not all(isinstance(item, str) and item for item in declared):
        raise TypeError(f"{name}(depends_on=...) must be paths or globs (strings), not {depends_on!r}")
    if scope not in ("global", "session"):
        raise ValueError(f"{name}(scope=...) must be 'global' or 'session', not {scope!r}")
    if refresh_mode not in ("foreground", "background"):
        raise ValueError(
            f"{name}(refresh_mode=...) must be 'foreground' or 'background', not {refresh_mode!r}"
        )
    if refresh_mode == "background" and seconds is None:
        raise ValueError(
            f"{name}(refresh_mode='background') needs a ttl: the value is refreshed once it is "
            "that old. Add ttl='1h' (say), or use refresh_mode='foreground'."
        )
    on_disk: bool | str = "team" if persist == "team" else persist in (True, "disk")
    if refresh_mode == "background" and on_disk:
        raise ValueError(
            f"{name}(refresh_mode='background', persist={persist!r}): a persisted entry is found "
            "again after a restart, whatever its age, so it can't be refreshed in the background. "
            "Use persist=None with refresh_mode='background', or refresh_mode='foreground'."
        )
    return DecoratorOptions(
        kind=kind,
        ttl=seconds,
        max_entries=max_entries,
        show_spinner=show_spinner,
        validate=validate,
        on_release=on_release,
        hash_funcs=hash_funcs,
        persist=on_disk,
        max_size=parse_byte_size(name, max_size),
        show_time=show_time,
        scope="session" if scope == "session" else "global",
        refresh_mode="background" if refresh_mode == "background" else "foreground",
        depends_on=declared,
    )


def _check_hash_funcs(name: str, hash_funcs: object) -> None:
    if hash_funcs is None:
        return
    if not isinstance(hash_funcs, Mapping):
        raise TypeError(f"{name}(hash_funcs=...) must be a dict {{type: function}}, not {hash_funcs!r}")
    for target, func in hash_funcs.items():
        if not isinstance(target, (type, str)) or not callable(func):
            raise TypeError(
                f"{name}(hash_funcs=...): each item must map a type (or its qualified name, "
                f"'module.Class') to a function of the value, not {target!r}: {func!r}"
            )
