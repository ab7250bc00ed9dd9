"""The panel's memory chart: one bar as wide as the memory budget, a segment per data entry.

People would rather look than read: which entries take the memory, and how close the
cache is to evicting. Plain HTML and inline CSS (no plotting library, no JavaScript), so
it renders wherever the widget does; each segment's tooltip names the entry and its size.
Resources are not copied and do not count against the budget, so they are not drawn.
"""

from __future__ import annotations

import html
from collections.abc import Sequence

from ._format import format_size, plural
from ._store import EntryInfo

__all__ = ["chart_html"]

MAX_SEGMENTS = 12  # the largest entries get their own segment; the rest share one
_COLORS = (
    "#4e79a7",
    "#f28e2b",
    "#59a14f",
    "#e15759",
    "#76b7b2",
    "#edc948",
    "#b07aa1",
    "#ff9da7",
    "#9c755f",
    "#bab0ac",
    "#86bcb6",
    "#d37295",
)
_OTHERS = "#8c8c8c"


def chart_html(entries: Sequence[EntryInfo], memory_budget: int) -> str:
    """The bar and its caption for the data entries of ``entries`` (sizes against ``memory_budget``)."""
    data = sorted((e for e in entries if e.kind == "data" and e.size), key=lambda e: -(e.size or 0))
    used = sum(e.size or 0 for e in data)
    budget = max(memory_budget, 1)
    segments = []
    for i, entry in enumerate(data[:MAX_SEGMENTS]):
        size = entry.size or 0
        title = f"{entry.label}: {format_size(size)}"
        segments.append(_segment(size / budget, _COLORS[i % len(_COLORS)], title))
    rest = data[MAX_SEGMENTS:]
    if rest:
        size = sum(e.size or 0 for e in rest)
        segments.append(
            _segment(
                size / budget,
                _OTHERS,
                f"{plural(len(rest), 'other entry', 'other entries')}: {format_size(size)}",
            )
        )
    percent = 100 * used / budget
    caption = f"memory {format_size(used)} of {format_size(memory_budget)} ({percent:.0f}%)" + (
        f" · largest: {html.escape(data[0].label)} {format_size(data[0].size)}" if data else ""
    )
    return (
        "<div class='ipycache-chart-bar' style='display:flex;width:100%;height:12px;"
        "background:var(--jp-layout-color3,#e0e0e0);border-radius:3px;overflow:hidden' "
        f"title='memory used by cached data against the budget'>{''.join(segments)}</div>"
        "<div class='ipycache-chart-caption' style='font-size:11px;"
        f"color:var(--jp-ui-font-color2,#616161)'>{caption}</div>"
    )


def _segment(share: float, color: str, title: str) -> str:
    # At least a sliver, so a small entry can still be hovered; never more than the bar.
    width = min(100.0, max(share * 100, 0.4))
    return (
        f"<div class='ipycache-chart-segment' title='{html.escape(title)}' "
        f"style='flex:0 0 auto;width:{width:.2f}%;background:{color};border-right:1px solid white'></div>"
    )
