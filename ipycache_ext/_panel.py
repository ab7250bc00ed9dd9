"""The live cache panel (`%cache_panel`, ``CachePanel()``): what is cached, how big, until when.

It reads the store's snapshots and subscribes to its events; it never looks inside
entries. The rows (one grid shared by header and rows, expandable details) are in
``_panel_rows``, the memory chart in ``_panel_chart``, and the words in ``_report``, which
``%cache_info`` uses too. Three things shape it:

- Store events arrive on whatever thread changed the store (a cell, the expiry thread, a
  user's worker thread). The event callback only sets a flag; one ticker thread refreshes,
  so a burst of a thousand hits costs one refresh, not a thousand.
- The same ticker counts the TTL down about once a second. Time is read only through
  ``store.now()``, so tests drive the countdown with a fake clock and call ``refresh()``.
- Hundreds of entries must not freeze the page: a row's widgets live as long as its entry
  and a refresh only assigns text that changed (ipywidgets sends nothing for an unchanged
  trait); at most ``page_size`` rows (50) are shown until the user asks for more; rows
  share their layouts and styles, so a row costs 11 widget models (12 once expanded).

``close()`` stops the ticker, unsubscribes and closes every widget of the panel. Pages do
not close a widget when its output is cleared or its cell re-runs, so the panel also asks
the page to count its views (``_view_count``) and pauses (unsubscribed, no thread) while
nobody sees it: re-running ``%cache_panel`` leaves no thread behind.
"""

from __future__ import annotations

import html
import logging
import threading
import weakref
from collections.abc import Callable
from typing import Any

import ipywidgets as widgets

from ._format import plural
from ._panel_chart import chart_html
from ._panel_rows import PANEL_CSS, PanelRow, SharedLayouts, header_grid, user_module_test
from ._report import EMPTY, summary_line
from ._store import CacheStats, CacheStore, EntryInfo, Kind, StoreEvent, get_store

__all__ = ["CachePanel", "PanelRow"]

_log = logging.getLogger(__name__)

FILTERS: tuple[str, ...] = ("all", "data", "resource")
# sort value -> (label in the dropdown, sort key, largest first?)
_SORTS: dict[str, tuple[str, Callable[[EntryInfo], Any], bool]] = {
    "age": ("oldest first", lambda e: (e.created, e.key), False),
    "size": ("largest first", lambda e: (-1 if e.size is None else e.size, e.created, e.key), True),
    "hits": ("most hits first", lambda e: (e.hits, e.created, e.key), True),
    "ttl": ("expiring first", lambda e: (e.expires is None, e.expires or 0.0, e.key), False),
}
_COALESCE_SECONDS = 0.05  # after a store event, wait this long so a burst becomes one refresh


def header_text(stats: CacheStats, entries: int, shown: int, matching: int) -> str:
    """The summary line (as ``%cache_info`` says it); says when the filter or the page size hides entries."""
    text = summary_line(stats)
    if shown < matching:
        text += f" · showing {shown} of {matching}"
    if matching < entries:
        text += f" · {plural(entries - matching, 'entry', 'entries')} hidden by the filter"
    return text


def empty_text(kind: Kind | None, entries: int, query: str = "") -> str:
    """What the list says when it shows no row: an empty cache, or filters that hide every entry."""
    if entries == 0:
        return EMPTY
    what = f"{kind} entries" if kind is not None else "entries"
    hidden = plural(entries, "entry", "entries")
    if query:
        return f"No {what} match “{query}”: {hidden} hidden by the filter."
    return f"No {what}: {hidden} hidden by the kind filter."


def matches(entry: EntryInfo, query: str) -> bool:
    """The text filter: a case-blind part of the label or of a name (``conn``, ``[12]``, ``fetch(``)."""
    needle = query.strip().lower()
    return not needle or needle in entry.label.lower() or any(needle in n.lower() for n in entry.names)


class CachePanel(widgets.VBox):  # type: ignore[misc]  # ipywidgets is untyped
    """A live view of a ``CacheStore``: header, one row per entry, delete and clear buttons.

    ``auto_refresh`` is the ticker period in seconds (``True``: 1 s); ``False`` or ``0``
    starts no thread, and the owner calls ``refresh()`` itself (unit tests do).
    """

    def __init__(
        self,
        store: CacheStore | None = None,
        *,
        auto_refresh: bool | float = 1.0,
        page_size: int = 50,
        **kwargs: Any,
    ) -> None:
        if page_size <= 0:
            raise ValueError(f"page_size must be a positive number of rows, not {page_size!r}")
        period = 1.0 if auto_refresh is True else float(auto_refresh)
        if period < 0:
            raise ValueError(f"auto_refresh must be False, True or a period in seconds, not {auto_refresh!r}")
        self._store = get_store() if store is None else store
        self._lock = threading.RLock()  # the ticker and button clicks (kernel thread) both refresh
        self._closed = False
        self._rows: dict[str, PanelRow] = {}  # every entry that has had a row and still lives
        self._shown: list[str] = []  # the keys of the rows on the page, in order
        self._matching: list[str] = []  # the keys the filters let through, shown or not
        self._page_size = page_size
        self._limit = page_size
        self._period = period
        self._wake = threading.Event()
        self._stop = threading.Event()  # a new one for each run of the ticker
        self._ticker: threading.Thread | None = None
        self._unsubscribe: Callable[[], None] | None = None  # None: paused or closed
        self._ready = False  # close() from __del__ of a half-built panel has nothing of ours to stop

        self._shared = SharedLayouts()  # layouts and styles are widgets too: rows share them
        self.header = widgets.HTML()  # HTML, not Label: the summary wraps on a narrow page
        self.header.add_class("ipycache-header")
        control = widgets.Layout(width="auto")
        self.kind_filter = widgets.Dropdown(
            options=FILTERS,
            value="all",
            description="kind",
            layout=control,
            style={"description_width": "auto"},
        )
        self.kind_filter.add_class("ipycache-filter")
        self.sort_by = widgets.Dropdown(
            options=[(label, value) for value, (label, _, _) in _SORTS.items()],
            value="age",
            description="sort",
            layout=control,
            style={"description_width": "auto"},
        )
        self.sort_by.add_class("ipycache-sort")
        self.search = widgets.Text(
            placeholder="filter: label or name", continuous_update=True, layout=widgets.Layout(width="180px")
        )
        self.search.add_class("ipycache-search")
        self.clear_button = widgets.Button(
            description="Clear all", icon="trash", button_style="danger", layout=widgets.Layout(width="auto")
        )
        self.clear_button.add_class("ipycache-clear-all")
        self.more_button = widgets.Button(description=f"Show {page_size} more")
        self.more_button.add_class("ipycache-more")
        self.more_button.layout.display = "none"
        self._empty = widgets.Label(EMPTY)
        self._empty.add_class("ipycache-empty")
        self._columns = header_grid(self._shared)
        self.chart = widgets.HTML()
        self.chart.add_class("ipycache-chart")
        self._list = widgets.VBox([self._empty], layout=widgets.Layout(width="100%"))
        self._list.add_class("ipycache-entries")
        self._controls = widgets.HBox(
            [self.kind_filter, self.search, self.sort_by, self.clear_button],
            layout=widgets.Layout(flex_flow="row wrap", grid_gap="4px 12px", align_items="center"),
        )
        self._style = widgets.HTML(PANEL_CSS, layout=widgets.Layout(display="none"))

        kwargs.setdefault("layout", widgets.Layout(padding="4px", width="100%"))
        kwargs["_view_count"] = 0  # 0, not None: the page then reports how many views show us
        super().__init__(
            [
                self._style,
                self.header,
                self.chart,
                self._controls,
                self._columns,
                self._list,
                self.more_button,
            ],
            **kwargs,
        )
        self.add_class("ipycache-panel")

        self.kind_filter.observe(self._on_view_change, names="value")
        self.search.observe(self._on_view_change, names="value")
        self.sort_by.observe(self._on_view_change, names="value")
        self.clear_button.on_click(self._on_clear)
        self.more_button.on_click(self._on_more)
        self.observe(self._on_views, names="_view_count")
        if self.comm is not None:  # the page closed our comm: stop like close() would
            self.comm.on_close(lambda _msg: self.close())
        self._ready = True
        self._resume()  # at once: not every frontend reports views

    # ----------------------------------------------------------------- reading the panel
    @property
    def store(self) -> CacheStore:
        """The store this panel shows."""
        return self._store

    @property
    def rows(self) -> dict[str, PanelRow]:
        """The rows on the page now, by entry key, in display order."""
        with self._lock:
            return {key: self._rows[key] for key in self._shown}

    @property
    def ticker(self) -> threading.Thread | None:
        """The refresh thread; None when ``auto_refresh`` is off, the panel paused or closed."""
        return self._ticker

    @property
    def closed(self) -> bool:
        """True once ``close()`` ran (or the page closed the widget): the panel no longer updates."""
        return self._closed

    # ----------------------------------------------------------------- updating
    def refresh(self) -> None:
        """Bring the panel up to date with the store now: rows, TTL countdown, header.

        The ticker calls this about once a second and after store events; tests call it
        directly after advancing a fake clock. Expired entries are purged first, so an
        entry never shows a TTL of zero for long.
        """
        with self._lock:
            if self._closed:
                return
            self._store.purge_expired()
            now = self._store.now()
            everything = self._store.entries()
            stats = self._store.stats()
            kind = self._kind()
            query = str(self.search.value).strip()
            matching = [e for e in everything if kind in (None, e.kind) and matches(e, query)]
            _, sort_key, largest_first = _SORTS[self.sort_by.value]
            matching.sort(key=sort_key, reverse=largest_first)
            visible = matching[: self._limit]
            is_module = user_module_test()

            boxes = []
            for entry in visible:
                row = self._rows.get(entry.key)
                if row is None:
                    row = self._rows[entry.key] = PanelRow(entry.key, self._shared, self._on_delete)
                row.show(entry, now, is_module)
                boxes.append(row.box)
            self._shown = [entry.key for entry in visible]
            children = tuple(boxes) if boxes else (self._empty,)
            if tuple(self._list.children) != children:
                self._list.children = children
            # Close rows of entries that left the store only once no container shows them.
            live = {e.key for e in everything}
            for key in [k for k in self._rows if k not in live]:
                self._rows.pop(key).close()

            header = html.escape(header_text(stats, len(everything), len(visible), len(matching)))
            if self.header.value != header:
                self.header.value = header
            if not matching:
                self._empty.value = empty_text(kind, len(everything), query)
            chart = chart_html(everything, stats.memory_budget)
            if self.chart.value != chart:
                self.chart.value = chart
            hidden = len(matching) - len(visible)
            self.more_button.layout.display = None if hidden > 0 else "none"
            if query:
                self.clear_button.description = f"Clear {plural(len(matching), 'match', 'matches')}"
            else:
                self.clear_button.description = {None: "Clear all", "data": "Clear all data"}.get(
                    kind, "Clear all resources"
                )
            self._matching = [e.key for e in matching]
            self.clear_button.disabled = not matching

    def _kind(self) -> Kind | None:
        value = self.kind_filter.value
        return None if value == "all" else value

    def _on_views(self, change: dict[str, Any]) -> None:
        """The page's view count: pause when the last view goes, resume when one comes back."""
        old, new = change["old"] or 0, change["new"] or 0
        if new == 0 and old > 0:
            self._pause()
        elif new > 0 and old == 0:
            self._resume()

    def _resume(self) -> None:
        """Subscribe, catch up and start the ticker (no-op when running or closed)."""
        with self._lock:
            if self._closed or self._unsubscribe is not None:
                return
            self._unsubscribe = self._store.subscribe(self._on_event)
            if self._period > 0:
                self._stop = threading.Event()
                self._ticker = threading.Thread(
                    target=_tick,
                    args=(weakref.ref(self), self._period, self._wake, self._stop),
                    name="ipycache_ext-panel",
                    daemon=True,
                )
            ticker = self._ticker
        self.refresh()
        if ticker is not None:
            ticker.start()

    def _pause(self) -> None:
        """Unsubscribe and stop the ticker, waiting for it (unless called on it)."""
        with self._lock:
            unsubscribe, self._unsubscribe = self._unsubscribe, None
            ticker, self._ticker = self._ticker, None
            self._stop.set()
            self._wake.set()
        if unsubscribe is not None:
            unsubscribe()
        if ticker is not None and ticker is not threading.current_thread():
            ticker.join(timeout=5)

    def _on_event(self, event: StoreEvent) -> None:
        """Any thread: only flag the change; the ticker refreshes once per burst."""
        self._wake.set()

    def _on_view_change(self, change: dict[str, Any]) -> None:
        self._limit = self._page_size
        self.refresh()

    def _on_delete(self, key: str) -> None:
        self._store.delete(key)
        self.refresh()  # at once: the click should feel instant, not wait for the ticker

    def _on_clear(self, _button: Any) -> None:
        """Clear what the filters show: a kind (memory and disk), or the entries the text matches."""
        if str(self.search.value).strip():
            keys = set(self._matching)
            self._store.delete_where(lambda e: e.key in keys, "cleared")
        else:
            self._store.clear(self._kind())
        self.refresh()

    def _on_more(self, _button: Any) -> None:
        self._limit += self._page_size
        self.refresh()

    # ----------------------------------------------------------------- closing
    def close(self) -> None:
        """Stop updating (ticker thread, store subscription) and close every widget of the panel.

        The panel goes first, so the page never shows a box whose children are gone.
        """
        if not getattr(self, "_ready", False):  # __del__ of a half-built panel: nothing of ours
            super().close()
            return
        with self._lock:
            already, self._closed = self._closed, True
        if already:
            return
        self._pause()
        parts = self._parts()
        super().close()
        for row in self._rows.values():
            row.close()
        self._rows.clear()
        self._shown = []
        for part in parts:
            part.close()

    def _parts(self) -> list[Any]:
        """Every widget the panel made apart from the rows, with their own layouts and styles."""
        made: list[Any] = [*self.children, *self._controls.children, *self._columns.children]
        made += [self._empty, self._list.layout, self.layout, *self._shared.all()]
        parts: list[Any] = []
        for widget in made:
            for part in (widget, getattr(widget, "layout", None), getattr(widget, "style", None)):
                if part is not None and all(part is not seen for seen in parts):
                    parts.append(part)
        return parts


def _tick(
    panel_ref: weakref.ref[CachePanel], period: float, wake: threading.Event, stop: threading.Event
) -> None:
    """The ticker: refresh every ``period`` seconds, or soon after a store event, until stopped.

    It holds the panel only weakly between ticks, so a panel nobody can reach any more
    does not keep a thread alive.
    """
    while not stop.is_set():
        if wake.wait(period):
            stop.wait(_COALESCE_SECONDS)  # let the rest of a burst of events land
            wake.clear()  # before the refresh: an event after this wakes us again
        if stop.is_set():
            return
        panel = panel_ref()
        if panel is None:
            return
        try:
            panel.refresh()
        except Exception:  # a failing refresh must not kill the countdown for good
            _log.exception("ipycache_ext: the cache panel could not refresh")
        del panel
