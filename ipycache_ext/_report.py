"""Text views of the store: the `%cache_info` table and the one-line hit message.

Plain strings, no IPython: the magics print them, and the panel falls back to them in a
terminal.
"""

from __future__ import annotations

import time

from ._format import format_duration, format_size
from ._store import CacheStore, EntryInfo

PREFIX = "[ipycache_ext]"


def hit_line(entry: EntryInfo) -> str:
    """``[ipycache_ext] cache hit: computed at 14:02:11 in 3.2s (hit 2×)``; the date if not today."""
    when = time.localtime(entry.created)
    today = time.localtime()
    fmt = "%H:%M:%S" if when[:3] == today[:3] else "%Y-%m-%d %H:%M"
    where = ", on disk" if entry.persisted else ""
    return (
        f"{PREFIX} cache hit: computed at {time.strftime(fmt, when)} in "
        f"{format_duration(entry.compute_seconds)} (hit {entry.hits}×{where})"
    )


def render_info(store: CacheStore, *, explain: bool = False) -> str:
    """The ``%cache_info`` table."""
    entries = store.entries()
    stats = store.stats()
    now = store.now()
    header = (
        f"{stats.entries} entries · data {format_size(stats.data_bytes)} of "
        f"{format_size(stats.memory_budget)} · {stats.hits} hits / {stats.misses} misses · "
        f"{format_duration(stats.time_saved)} saved"
    )
    if stats.disk_budget:
        header += f" · disk {format_size(stats.disk_bytes)} of {format_size(stats.disk_budget)}"
    if not entries:
        return header + "\n(the cache is empty)"
    if explain:
        columns = ["key", "label", "kind", "why it was computed"]
        rows = [[e.key[:12], e.label, e.kind, e.miss_reason or "first run"] for e in entries]
    else:
        columns = ["key", "label", "kind", "names", "size", "age", "TTL left", "hits"]
        rows = [
            [
                e.key[:12],
                e.label,
                e.kind + (" · disk" if e.persisted else ""),
                ", ".join(e.names) or "-",
                format_size(e.size),
                format_duration(now - e.created),
                "no expiry" if e.expires is None else format_duration(e.ttl_left(now) or 0.0),
                str(e.hits),
            ]
            for e in entries
        ]
    widths = [max(len(str(c)), *(len(r[i]) for r in rows)) for i, c in enumerate(columns)]
    lines = [header, "  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)) for row in rows]
    return "\n".join(lines)
