"""The words of a cached cell's status line, as a pure function of what is known about its entry.

"cached · computed in 5.7s" after a miss; "from cache · computed 14:02 in 5.7s · expires in
59m 12s · hit 3×" after a hit; "expired · computed 14:02 in 5.7s" once the entry left.
The same vocabulary as the panel and ``%cache_info`` (``_format``). No widgets here, so the
texts are tested with a fake clock alone.
"""

from __future__ import annotations

import html
from dataclasses import dataclass

from ._format import format_clock, format_duration, removed_text
from ._signing import whoami
from ._store import EntryInfo

__all__ = ["StatusState", "status_html", "status_markup", "status_text", "tone"]


@dataclass(frozen=True)
class StatusState:
    """What the status knows: the entry as last seen, or why it is gone."""

    key: str | None
    hit: bool  # the cell's results came from the cache (else: computed by this run)
    entry: EntryInfo | None  # None: not cached (too large), or gone (see ``removed``)
    compute_seconds: float
    removed: str | None = None  # the store's removal reason once the entry left
    gone: bool = False
    recomputing: bool = False


def _me() -> str:
    try:
        return whoami()  # what this kernel records as computed_by ($IPYCACHE_EXT_USER honoured)
    except Exception:  # no user name (some containers): then nobody is "me"
        return ""


ME = _me()


def status_text(state: StatusState, now: float) -> str:
    """The status line's text at time ``now``."""
    if state.recomputing:
        return "recomputing…"
    entry = state.entry
    if entry is None or state.gone:
        took = format_duration(entry.compute_seconds if entry is not None else state.compute_seconds)
        if state.gone and entry is not None:
            return f"{removed_text(state.removed)} · computed {format_clock(entry.created, now)} in {took}"
        if state.gone:
            return f"{removed_text(state.removed)} · computed in {took}"
        return f"computed in {took} · not cached (larger than the memory budget, or it could not be kept)"
    took = format_duration(entry.compute_seconds)
    by = getattr(entry, "computed_by", None)
    by_text = f" by {by}" if by and by != ME else ""
    if state.hit:
        text = f"from cache · computed {format_clock(entry.created, now)}{by_text} in {took}"
    else:
        text = f"cached · computed{by_text} in {took}"
    ttl = entry.ttl_left(now)
    if ttl is not None:
        text += f" · expires in {format_duration(ttl)}"
    if entry.hits:
        text += f" · hit {entry.hits}×"
    if getattr(entry, "shared", False):
        text += " · team"
    elif entry.persisted:
        text += " · on disk"
    return text


_STYLE = (
    "font-size:12px;color:var(--jp-ui-font-color2,#616161);font-family:var(--jp-ui-font-family,sans-serif)"
)
_TONES = {"hit": "#2e7d32", "cached": "#1565c0", "gone": "#9e9e9e"}


def tone(state: StatusState) -> str:
    """The dot's colour: green from cache, blue just cached, grey no longer cached."""
    if state.gone or state.entry is None:
        return "gone"
    return "hit" if state.hit else "cached"


def status_markup(text: str, tone_name: str) -> str:
    """The inner HTML of the status line: a coloured dot and the text."""
    color = _TONES.get(tone_name, _TONES["gone"])
    return (
        f"<span class='ipycache-status-text' data-tone='{tone_name}' style='{_STYLE}'>"
        f"<span style='color:{color}'>●</span> {html.escape(text)}</span>"
    )


def status_html(text: str, tone_name: str, key: str | None) -> str:
    """The status as plain HTML: what exported notebooks and pages without widgets show."""
    title = f" title='key {html.escape(key)}'" if key else ""
    return f"<div class='ipycache-status'{title}>{status_markup(text, tone_name)}</div>"
