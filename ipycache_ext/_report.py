"""Text views of the store: the `%cache_info` table, the summary line and the one-line hit message.

Plain strings, no IPython: the magics print them, and the panel shows the same summary line
and the same column titles (one vocabulary: what the panel calls "TTL left" or "shared",
`%cache_info` calls so too), and falls back to the table in a terminal.
"""

from __future__ import annotations

import time
import types
from collections.abc import Callable, Mapping
from typing import Any

from ._format import (
    format_duration,
    format_size,
    kind_text,
    names_text,
    plural,
    shown_names,
    size_text,
    ttl_text,
    where_text,
)
from ._status_text import ME
from ._store import CacheStats, CacheStore, EntryInfo

PREFIX = "[ipycache_ext]"
# Rows of `%cache_info` before it says how many more there are (the panel pages by as many).
DEFAULT_LIMIT = 50
# The column titles, shared with the panel's header.
COLUMNS: dict[str, str] = {
    "label": "entry",
    "kind": "kind",
    "names": "names",
    "size": "size",
    "age": "age",
    "ttl": "TTL left",
    "hits": "hits",
}
EMPTY = "The cache is empty: cached cells and functions appear here when they run."


def hit_line(entry: EntryInfo) -> str:
    """``[ipycache_ext] cache hit: computed at 14:02:11 in 3.2s (hit 2×)``; the date if not today."""
    when = time.localtime(entry.created)
    today = time.localtime()
    fmt = "%H:%M:%S" if when[:3] == today[:3] else "%Y-%m-%d %H:%M"
    where = ", team" if getattr(entry, "shared", False) else ", on disk" if entry.persisted else ""
    by = getattr(entry, "computed_by", None)
    by = None if by == ME else by
    return (
        f"{PREFIX} cache hit: computed at {time.strftime(fmt, when)}{f' by {by}' if by else ''} in "
        f"{format_duration(entry.compute_seconds)} (hit {entry.hits}×{where})"
    )


def summary_line(stats: CacheStats) -> str:
    """``3 entries · memory 2.0 KiB of 64.0 MiB · 1 hit / 2 misses · 3.2s saved · disk ... of ...``."""
    text = (
        f"{plural(stats.entries, 'entry', 'entries')} · memory {format_size(stats.data_bytes)} of "
        f"{format_size(stats.memory_budget)} · {plural(stats.hits, 'hit')} / "
        f"{plural(stats.misses, 'miss', 'misses')} · {format_duration(stats.time_saved)} saved"
    )
    held = getattr(stats, "held_by_live_results", 0)
    if held:  # buffers of entries that left, still mapped by results alive in the kernel
        text = text.replace(" of ", f" (+{format_size(held)} held by live results) of ", 1)
    if stats.disk_budget:
        text += f" · disk {format_size(stats.disk_bytes)} of {format_size(stats.disk_budget)}"
    return text


def entry_texts(
    entry: EntryInfo, now: float, is_module: Callable[[str], bool] | None = None
) -> dict[str, str]:
    """The text of each column (``COLUMNS``) for one entry at time ``now``: panel and table alike."""
    shared = bool(getattr(entry, "shared", False))
    return {
        "label": entry.label,
        "kind": kind_text(entry.kind, entry.persisted, shared),
        "names": names_text(shown_names(tuple(entry.names), is_module)),
        "size": size_text(entry.kind, entry.size),
        "age": format_duration(now - entry.created),
        "ttl": ttl_text(entry.ttl_left(now)),
        "hits": str(entry.hits),
    }


def why_text(entry: EntryInfo) -> str:
    """Why the entry was computed (its miss reason), ``'first run'`` when nothing ran before."""
    return entry.miss_reason or "first run"


def render_info(
    store: CacheStore,
    *,
    explain: bool = False,
    limit: int | None = DEFAULT_LIMIT,
    is_module: Callable[[str], bool] | None = None,
    more_hint: str = "%cache_info --all lists every one",
) -> str:
    """The ``%cache_info`` table: the summary line, then up to ``limit`` rows (None: all), oldest first.

    ``is_module(name)`` hides imported modules from the names column, as the panel does;
    ``more_hint`` is what the last line says to see the rows left out.
    """
    entries = store.entries()
    header = summary_line(store.stats())
    now = store.now()
    if not entries:
        return f"{header}\n{EMPTY}"
    shown = entries if limit is None else entries[:limit]
    if explain:
        columns = ["key", COLUMNS["label"], "kind", "where", "computed by", "why it was computed"]
        rows = [
            [
                e.key[:12],
                e.label,
                e.kind,
                where_text(e.persisted, bool(getattr(e, "shared", False))),
                getattr(e, "computed_by", None) or "this kernel",
                why_text(e),
            ]
            for e in shown
        ]
    else:
        columns = ["key", *COLUMNS.values()]
        rows = [[e.key[:12], *entry_texts(e, now, is_module).values()] for e in shown]
    widths = [max(len(str(c)), *(len(r[i]) for r in rows)) for i, c in enumerate(columns)]
    lines = [header, "  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    if len(shown) < len(entries):
        lines.append(f"showing {len(shown)} of {plural(len(entries), 'entry', 'entries')} · {more_hint}")
    return "\n".join(lines)


def module_test(namespace: Mapping[str, Any]) -> Callable[[str], bool]:
    """``is_module`` for a user namespace: true for the names bound to an imported module (``np``)."""
    return lambda name: isinstance(namespace.get(name), types.ModuleType)
