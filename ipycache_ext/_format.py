"""Human-readable sizes and durations for `%cache_info`, hit lines and the panel."""

from __future__ import annotations


def format_duration(seconds: float) -> str:
    """Short human form of a duration: ``'42s'``, ``'3m 05s'``, ``'2h 10m'``, ``'3d 4h'``."""
    seconds = max(0.0, seconds)
    if seconds < 10:
        return f"{seconds:.1f}s"
    whole = int(seconds)
    if whole < 60:
        return f"{whole}s"
    minutes, secs = divmod(whole, 60)
    if minutes < 60:
        return f"{minutes}m {secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h {minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d {hours}h"


def format_size(size: int | None) -> str:
    """Bytes in binary units: ``'512 B'``, ``'1.5 KiB'``, ``'2.0 GiB'``; ``'?'`` when unknown."""
    if size is None:
        return "?"
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{int(value)} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")
