"""Turn the ways users write a time-to-live into seconds.

Accepted: a number of seconds (``3600``, ``0.5``, ``"90"``), a ``datetime.timedelta``, a
short duration (``"90s"``, ``"10m"``, ``"1h"``, ``"1d"``, ``"250ms"``) or anything
``pandas.Timedelta`` parses (``"1 hour 30 min"``). A bare number string means seconds,
never nanoseconds as ``pandas.Timedelta("10")`` would read it.
"""

from __future__ import annotations

import math
import re
from datetime import timedelta

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_SHORT = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*(ms|s|m|h|d|w)\s*$", re.IGNORECASE)

TTLLike = float | int | str | timedelta | None


def parse_ttl(value: TTLLike) -> float | None:
    """Return the TTL in seconds, or None for "no expiry".

    Raises ValueError naming the value when it is not a positive, finite duration.
    """
    if value is None:
        return None
    if isinstance(value, bool):
        raise ValueError(f"invalid TTL {value!r}: give seconds (3600) or a duration ('10m', '1h')")
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, (int, float)):
        seconds = float(value)
    elif isinstance(value, str):
        seconds = _parse_text(value)
    else:
        raise ValueError(
            f"invalid TTL {value!r} of type {type(value).__name__}: "
            "give seconds (3600) or a duration string ('90s', '10m', '1h', '1d')"
        )
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"invalid TTL {value!r}: it must be a positive, finite duration")
    return seconds


def _parse_text(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        pass
    match = _SHORT.match(text)
    if match:
        return float(match.group(1)) * _UNITS[match.group(2).lower()]
    try:
        import pandas as pd  # deferred: pandas costs ~0.3 s to import

        return float(pd.Timedelta(text).total_seconds())
    except (ValueError, TypeError) as exc:
        raise ValueError(
            f"invalid TTL {text!r}: give seconds (3600, 0.5) or a duration such as "
            "'90s', '10m', '1h', '1d' or '1 hour 30 min'"
        ) from exc
