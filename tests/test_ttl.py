"""TTL parsing and the human formats."""

from __future__ import annotations

from datetime import timedelta

import pytest

from ipycache_ext._format import format_duration, format_size
from ipycache_ext._ttl import parse_ttl


@pytest.mark.parametrize(
    ("given", "seconds"),
    [
        (None, None),
        (3600, 3600.0),
        (0.5, 0.5),
        ("3600", 3600.0),
        ("0.5", 0.5),
        ("90s", 90.0),
        ("10m", 600.0),
        ("1h", 3600.0),
        ("1d", 86400.0),
        ("250ms", 0.25),
        ("1 hour 30 min", 5400.0),
        (timedelta(minutes=2), 120.0),
    ],
)
def test_valid_ttls(given: object, seconds: float | None) -> None:
    assert parse_ttl(given) == seconds  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", [0, -1, "0", "-5", "abc", "nan", "inf", float("inf"), True, [1], "10x"])
def test_invalid_ttls_name_the_value(bad: object) -> None:
    with pytest.raises(ValueError, match="invalid TTL"):
        parse_ttl(bad)  # type: ignore[arg-type]


def test_formats() -> None:
    assert format_duration(3.25) == "3.2s"
    assert format_duration(42) == "42s"
    assert format_duration(185) == "3m 05s"
    assert format_duration(7800) == "2h 10m"
    assert format_duration(3 * 86400 + 4 * 3600) == "3d 4h"
    assert format_size(None) == "?"
    assert format_size(512) == "512 B"
    assert format_size(1536) == "1.5 KiB"
    assert format_size(2 * 1024**3) == "2.0 GiB"
