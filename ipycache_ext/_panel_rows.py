"""One entry's row in the cache panel: an aligned grid line, and the details it expands to.

Alignment: the header and every row are grids with *the same* column template, and they
are all as wide as the panel, so a column starts at the same x in the header and in each
row whatever the labels say and whatever the page width (a flex row sizes its boxes by
their content, which is how headers drifted 40 px off their values). The flexible columns
are ``minmax(0, …fr)``, so a long label is cut with an ellipsis (full text in its tooltip)
instead of pushing the next column away.
"""

from __future__ import annotations

import html
import re
import sys
import time
import types
from collections.abc import Callable, Mapping
from typing import Any

import ipywidgets as widgets
from ipywidgets.widgets.widget_string import HTMLStyle, LabelStyle

from ._format import format_duration, format_size, where_text
from ._report import COLUMNS, entry_texts, why_text
from ._store import EntryInfo

__all__ = [
    "GRID_COLUMNS",
    "PANEL_CSS",
    "PanelRow",
    "SharedLayouts",
    "details_html",
    "header_grid",
    "user_module_test",
]

# expand toggle, then the COLUMNS (label, kind, names, size, age, ttl, hits), then delete.
GRID_COLUMNS = "24px minmax(0, 2.2fr) 88px minmax(0, 1fr) 68px 56px 68px 40px 32px"
_GRID_GAP = "0px 6px"
# Narrower panels (a 900 px page with the file browser open leaves ~460 px) drop the age,
# then the kind column, instead of squeezing the label to nothing. Container queries on the
# panel itself, so it is the panel's width that counts, not the window's; header and rows
# take the same rules, so they stay aligned. ``!important`` beats the layout's inline style.
PANEL_CSS = """<style>
.ipycache-panel { container-type: inline-size; }
.ipycache-panel .ipycache-grid .widget-html-content { min-width: 0; flex: 1 1 0; overflow: hidden; }
.ipycache-panel .ipycache-cut { width: 100%; }
.ipycache-panel .ipycache-details-table th, .ipycache-panel .ipycache-details-table td {
  padding: 1px 12px 1px 0; line-height: 1.4; vertical-align: top; text-align: left; }
.ipycache-panel .ipycache-inputs { margin: 0; padding-left: 0; list-style: none; }
@container (max-width: 720px) {
  .ipycache-panel .ipycache-grid { grid-template-columns: 24px minmax(0, 2fr) 80px minmax(0, 1fr) 64px
    64px 36px 32px !important; }
  .ipycache-panel .ipycache-col-age { display: none !important; }
}
@container (max-width: 540px) {
  .ipycache-panel .ipycache-grid { grid-template-columns: 24px minmax(0, 2fr) minmax(0, 1fr) 60px 60px
    32px 28px !important; }
  .ipycache-panel .ipycache-col-age, .ipycache-panel .ipycache-col-kind { display: none !important; }
}
</style>"""


class SharedLayouts:
    """Layouts and styles are widgets too (a comm each): every row shares these."""

    def __init__(self) -> None:
        self.grid = widgets.Layout(
            display="grid",
            grid_template_columns=GRID_COLUMNS,
            grid_gap=_GRID_GAP,
            align_items="center",
            width="100%",
        )
        self.cell = widgets.Layout(width="auto", min_width="0px")
        self.cut = widgets.Layout(width="auto", min_width="0px", overflow="hidden")
        self.html_style = HTMLStyle()
        self.button = widgets.Layout(width="28px", height="24px", padding="0px")
        self.details = widgets.Layout(margin="0px 0px 6px 36px")
        self.row = widgets.Layout(width="100%")
        self.label_style = LabelStyle()
        self.button_style = widgets.ButtonStyle()

    def all(self) -> list[Any]:
        return [
            self.grid, self.cell, self.cut, self.button, self.details, self.row,
            self.label_style, self.html_style, self.button_style,
        ]  # fmt: skip


def header_grid(shared: SharedLayouts) -> widgets.GridBox:
    """The column titles, in the same grid as the rows (the words of ``%cache_info``)."""
    titles = ["", *COLUMNS.values(), ""]
    cells = [widgets.Label(t, layout=shared.cell, style={"font_weight": "bold"}) for t in titles]
    grid = widgets.GridBox(cells, layout=shared.grid)
    grid.add_class("ipycache-columns")
    grid.add_class("ipycache-grid")
    for cell, name in zip(cells, ["expand", *COLUMNS, "delete"], strict=True):
        cell.add_class(f"ipycache-col-{name}")
    return grid


def user_module_test() -> Callable[[str], bool] | None:
    """True for names bound to a module in the running IPython's namespace (``np``, ``time``).

    Imported modules are bound by the cell but are not what it computes, so the names
    column leaves them out. Without a running shell every name is shown.
    """
    ipython = sys.modules.get("IPython")
    get_ipython = getattr(ipython, "get_ipython", None)
    shell = get_ipython() if get_ipython is not None else None
    namespace = getattr(shell, "user_ns", None)
    if not isinstance(namespace, Mapping):
        return None
    return lambda name: isinstance(namespace.get(name), types.ModuleType)


class PanelRow:
    """The widgets of one entry's row, kept while the entry lives so a tick only sends changed text."""

    def __init__(self, key: str, shared: SharedLayouts, on_delete: Callable[[str], None]) -> None:
        self.key = key
        self.expanded = False
        self._shared = shared
        # Columns an ellipsis may cut are HTML, for a tooltip on the text itself (a Label's
        # tooltip goes to its hidden description); the others are plain Labels.
        self.cells: dict[str, Any] = {
            name: widgets.HTML(layout=shared.cut, style=shared.html_style)
            if name in _CUT
            else widgets.Label(layout=shared.cell, style=shared.label_style)
            for name in COLUMNS
        }
        self._texts: dict[str, str] = dict.fromkeys(COLUMNS, "")
        for name, cell in self.cells.items():
            cell.add_class(f"ipycache-col-{name}")
        self.cells["ttl"].add_class("ipycache-ttl")
        self.expand_button = widgets.Button(
            description="▸",
            tooltip="Show inputs, why it was computed and where it lives",
            layout=shared.button,
            style=shared.button_style,
        )
        self.expand_button.add_class("ipycache-expand")
        self.expand_button.add_class("ipycache-col-expand")
        self.expand_button.on_click(lambda _button: self.toggle())
        self.delete_button = widgets.Button(
            icon="trash", tooltip="Delete this entry", layout=shared.button, style=shared.button_style
        )
        self.delete_button.add_class("ipycache-delete")
        self.delete_button.add_class("ipycache-col-delete")
        self.delete_button.on_click(lambda _button: on_delete(key))
        self.grid = widgets.GridBox(
            [self.expand_button, *self.cells.values(), self.delete_button], layout=shared.grid
        )
        self.grid.add_class("ipycache-grid")
        self.details: widgets.HTML | None = None  # made on the first expand: most rows never are
        self.box = widgets.VBox([self.grid], layout=shared.row)
        self.box.add_class("ipycache-entry")
        self._entry: EntryInfo | None = None
        self._now = 0.0

    @property
    def texts(self) -> dict[str, str]:
        """What the row shows now, column by column."""
        return dict(self._texts)

    @property
    def ttl(self) -> str:
        """The TTL text (e.g. ``'1m 59s'`` or ``'no expiry'``)."""
        return self._texts["ttl"]

    def show(self, entry: EntryInfo, now: float, is_module: Callable[[str], bool] | None = None) -> None:
        """Assign only the texts that changed: each assignment is a message to the page."""
        self._entry, self._now = entry, now
        texts = entry_texts(entry, now, is_module)
        for name, text in texts.items():
            if self._texts[name] == text:
                continue
            self._texts[name] = text
            self.cells[name].value = _cut(text) if name in _CUT else text
        if self.expanded and self.details is not None:
            markup = details_html(entry, now)
            if self.details.value != markup:
                self.details.value = markup

    def toggle(self) -> None:
        """Expand to the entry's details, or fold them away (the details leave the row's children)."""
        self.expanded = not self.expanded
        self.expand_button.description = "▾" if self.expanded else "▸"
        if self.expanded:
            if self.details is None:
                self.details = widgets.HTML(layout=self._shared.details)
                self.details.add_class("ipycache-details")
            if self._entry is not None:
                self.details.value = details_html(self._entry, self._now)
            self.box.children = (self.grid, self.details)
        else:
            self.box.children = (self.grid,)

    def close(self) -> None:
        """Close this row's widgets; the panel closes the shared layouts and styles."""
        for widget in (self.box, self.grid, self.expand_button, self.delete_button, *self.cells.values()):
            widget.close()
        if self.details is not None:
            self.details.close()


_CUT = ("label", "kind", "names")  # columns whose text may be cut: the full text is the tooltip


def _cut(text: str) -> str:
    """One line, cut with an ellipsis where the column ends, the whole text on hover."""
    escaped = html.escape(text)
    return (
        f"<div class='ipycache-cut' title='{escaped}' style='overflow:hidden;text-overflow:ellipsis;"
        f"white-space:nowrap'>{escaped}</div>"
    )


_CODE = re.compile(r"`([^`]+)`")


def _inline(text: str) -> str:
    """Escape, and show Markdown-ish backticks (``"`n` changed"``) as code."""
    return _CODE.sub(r"<code>\1</code>", html.escape(text))


def details_html(entry: EntryInfo, now: float) -> str:
    """What an expanded row shows: how and why it was computed, where it lives, its inputs and key."""
    shared = bool(getattr(entry, "shared", False))
    by = getattr(entry, "computed_by", None)
    computed = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(entry.created))
    rows = [
        (
            "computed",
            f"{computed} in {format_duration(entry.compute_seconds)}"
            f" · by {by or 'this kernel'} · last used {format_duration(now - entry.last_used)} ago",
        ),
        ("why", why_text(entry)),
        ("lives in", where_text(entry.persisted, shared)),
        ("names", ", ".join(entry.names) or "return value"),
        (
            "size",
            "not measured (kept as the object itself)"
            if entry.size is None
            else f"{format_size(entry.size)} ({entry.size:,} bytes)",
        ),
    ]
    body = "".join(f"<tr><th>{html.escape(name)}</th><td>{_inline(value)}</td></tr>" for name, value in rows)
    inputs = dict(entry.inputs)
    if inputs:
        listed = "".join(
            f"<li><code>{html.escape(name)}</code> <span title='{html.escape(digest)}'>"
            f"{html.escape(digest[:16])}</span></li>"
            for name, digest in sorted(inputs.items())
        )
        body += f"<tr><th>inputs</th><td><ul class='ipycache-inputs'>{listed}</ul></td></tr>"
    else:
        body += "<tr><th>inputs</th><td>none (only its code)</td></tr>"
    dependencies = tuple(getattr(entry, "dependencies", ()) or ())
    if dependencies:
        described = ", ".join(html.escape(_dependency(d)) for d in dependencies[:20])
        more = f" and {len(dependencies) - 20} more" if len(dependencies) > 20 else ""
        body += f"<tr><th>also read</th><td>{described}{more}</td></tr>"
    body += f"<tr><th>key</th><td><code>{html.escape(entry.key)}</code></td></tr>"
    return (
        "<table class='ipycache-details-table' style='font-size:12px;border-collapse:collapse;"
        f"text-align:left'>{body}</table>"
    )


def _dependency(record: Mapping[str, Any]) -> str:
    """A recorded dependency in a few words: ``file data.csv``, ``env HOME``."""
    kind = str(record.get("kind", "") or "")
    for field in ("path", "name", "variable", "module"):
        value = record.get(field)
        if value:
            return f"{kind} {value}".strip()
    return kind or "?"
