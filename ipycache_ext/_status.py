"""A live status under every cached cell: where its results came from, until when, and Recompute.

``publish_status`` is called by the magics at the very end of a cached cell, after output
recording ended, so the status is never part of the cached entry (a hit shows a fresh one).
It is one display output: a widget view (live text and a **Recompute** button) with
``text/html`` and ``text/plain`` fallbacks, so pages without a widget manager, exported
HTML (nbconvert falls back when no widget state is saved) and PDF still say it.

Many statuses, one thread. Every status registers with one ``_Board``, which subscribes
once per store and keeps one ticker thread, only while some shown status counts a TTL
down or a store event waits to be shown; store events (from any thread) only mark the
affected statuses and wake the ticker, so a burst of hits is one update. Like the panel,
a status asks the page to count its views and drops out of the board while none shows it
(its cell ran again, its output was cleared): then it costs no thread and no callback.

Recompute runs ``recompute()`` (the cell again, with --refresh) from the button's click.
Output of a click has no cell of its own, so it goes to an ``Output`` widget inside the
status, made on the first click; the magics' own ``publish_status`` call during that run
updates this status ("cached · computed in …") instead of publishing a second one.
"""

from __future__ import annotations

import contextvars
import logging
import threading
import weakref
from collections.abc import Callable
from typing import Any

import ipywidgets as widgets
from ipywidgets.widgets.widget_string import HTMLStyle

from ._status_text import StatusState, status_html, status_markup, status_text, tone
from ._store import CacheStore, EntryInfo, StoreEvent

__all__ = ["CellStatus", "publish_status"]

_log = logging.getLogger(__name__)
_PERIOD = 1.0  # seconds between countdown ticks
_COALESCE_SECONDS = 0.05
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"

# The status whose Recompute button is running the cell right now (in this context).
_RECOMPUTING: contextvars.ContextVar[CellStatus | None] = contextvars.ContextVar(
    "ipycache_ext_recomputing", default=None
)


def publish_status(
    shell: Any,
    store: CacheStore,
    key: str | None,
    *,
    hit: bool,
    entry: EntryInfo | None,
    compute_seconds: float,
    recompute: Callable[[], Any] | None,
) -> None:
    """Show the status of the cached cell that just ran, under its output.

    In a terminal (no kernel, no widgets) nothing is shown: the hit line says it there.
    During a Recompute click the clicked status is updated in place instead.
    """
    target = _RECOMPUTING.get()
    if target is not None:
        target.recomputed(key, entry, compute_seconds)
        return
    if getattr(shell, "kernel", None) is None:
        return
    status = CellStatus(
        store, key, hit=hit, entry=entry, compute_seconds=compute_seconds, recompute=recompute
    )
    if _in_a_cell(shell):
        # After the cell's Out[n], not above it: the magic returns before the displayhook shows it.
        def publish_after_the_cell(*_args: Any) -> None:
            shell.events.unregister("post_run_cell", publish_after_the_cell)
            _publish(shell, status)

        shell.events.register("post_run_cell", publish_after_the_cell)
    else:
        _publish(shell, status)


def _publish(shell: Any, status: CellStatus) -> None:
    try:
        status.refresh()  # what it says when it appears (a hit in the same cell, say)
        shell.display_pub.publish(data=status.mimebundle(), metadata={})
    except Exception:  # the status is cosmetic: never an error under the user's cell for it
        _log.exception("ipycache_ext: the cell status could not be shown")
        status.close()


def _in_a_cell(shell: Any) -> bool:
    """True while the kernel runs an execute request (then post_run_cell follows in the same cell)."""
    get_parent = getattr(shell.kernel, "get_parent", None)
    try:
        parent = get_parent() if get_parent is not None else getattr(shell, "parent_header", None)
    except Exception:
        return False
    header = parent.get("header", {}) if isinstance(parent, dict) else {}
    return header.get("msg_type") == "execute_request" and hasattr(shell, "events")


class _Shared:
    """Layouts and styles shared by every status (each is a widget model of its own)."""

    _made: _Shared | None = None

    def __init__(self) -> None:
        self.box = widgets.Layout(flex_flow="row wrap", align_items="center", margin="2px 0px 0px 0px")
        self.text = widgets.Layout(margin="0px 8px 0px 0px")
        self.button = widgets.Layout(width="auto", height="22px", padding="0px 8px")
        self.output = widgets.Layout(width="100%")
        self.html_style = HTMLStyle()
        self.button_style = widgets.ButtonStyle(font_size="11px")

    @classmethod
    def get(cls) -> _Shared:
        if cls._made is None:
            cls._made = cls()
        return cls._made


class CellStatus:
    """One cell's status widget: the live text, the Recompute button and (after a click) its output."""

    def __init__(
        self,
        store: CacheStore,
        key: str | None,
        *,
        hit: bool,
        entry: EntryInfo | None,
        compute_seconds: float,
        recompute: Callable[[], Any] | None,
        board: _Board | None = None,
    ) -> None:
        shared = _Shared.get()
        self.store = store
        self._recompute = recompute
        self._lock = threading.RLock()
        self._state = StatusState(key, hit, entry, compute_seconds)
        self._board = board or _BOARD
        self.closed = False
        self.text = widgets.HTML(layout=shared.text, style=shared.html_style)
        self.button = widgets.Button(
            description="Recompute",
            icon="refresh",
            tooltip="Run this cell again now and replace its cache entry",
            layout=shared.button,
            style=shared.button_style,
            disabled=recompute is None,
        )
        self.button.add_class("ipycache-recompute")
        self.button.on_click(self._on_click)
        self.output: widgets.Output | None = None  # made on the first Recompute
        self.box = widgets.HBox([self.text, self.button], layout=shared.box, _view_count=0)
        self.box.add_class("ipycache-status")
        self._show()
        self.box.observe(self._on_views, names="_view_count")
        if self.box.comm is not None:
            self.box.comm.on_close(lambda _msg: self.close())
        self._board.add(self)  # at once: not every page reports views

    # ------------------------------------------------------------------ reading
    @property
    def key(self) -> str | None:
        return self._state.key

    @property
    def state(self) -> StatusState:
        return self._state

    def plain(self) -> str:
        """The text the status shows now."""
        with self._lock:
            return status_text(self._state, self.store.now())

    def mimebundle(self) -> dict[str, Any]:
        """The widget view, with HTML and plain-text fallbacks of the status as it is now."""
        text = self.plain()
        return {
            "text/plain": text,
            "text/html": status_html(text, tone(self._state), self._state.key),
            WIDGET_VIEW: {"version_major": 2, "version_minor": 0, "model_id": self.box.model_id},
        }

    def _repr_mimebundle_(self, **_kwargs: Any) -> dict[str, Any]:
        return self.mimebundle()

    def counts_down(self) -> bool:
        """True while the text changes with time alone (an entry with a TTL is cached)."""
        state = self._state
        return not state.gone and state.entry is not None and state.entry.expires is not None

    # ------------------------------------------------------------------ updating
    def refresh(self) -> None:
        """Bring the text up to date with the store: hits, TTL left, or why the entry left."""
        with self._lock:
            if self.closed or self._state.recomputing or self._state.key is None:
                return
            state = self._state
            if state.entry is None and not state.gone:
                return  # never cached: nothing to follow
            current = self.store.get(state.key)  # type: ignore[arg-type]  # key is not None here
            if current is not None:
                self._state = StatusState(state.key, state.hit, current, state.compute_seconds)
            elif not state.gone:
                removed = self.store.removal_reason(state.key)  # type: ignore[arg-type]
                self._state = StatusState(
                    state.key, state.hit, state.entry, state.compute_seconds, removed=removed, gone=True
                )
            self._show()

    def _show(self) -> None:
        markup = status_markup(status_text(self._state, self.store.now()), tone(self._state))
        if self.text.value != markup:
            self.text.value = markup

    def recomputed(self, key: str | None, entry: EntryInfo | None, compute_seconds: float) -> None:
        """The cell ran again from this status's button: show its new entry ("cached · …")."""
        with self._lock:
            self._state = StatusState(key, False, entry, compute_seconds, recomputing=True)
        self._board.moved(self)

    def _on_click(self, _button: Any) -> None:
        if self._recompute is None or self.closed:
            return
        from IPython.display import display

        with self._lock:
            before = self._state
            self._state = StatusState(
                before.key, before.hit, before.entry, before.compute_seconds, recomputing=True
            )
            self._show()
        self.button.disabled = True
        if self.output is None:
            self.output = widgets.Output(layout=_Shared.get().output)
            self.output.add_class("ipycache-recompute-output")
            self.box.children = (self.text, self.button, self.output)
        token = _RECOMPUTING.set(self)
        try:
            self.output.clear_output()
            with self.output:
                try:
                    value = self._recompute()
                except Exception:
                    _show_traceback()
                    value = None
                    with self._lock:
                        self._state = before  # the old entry stays when the cell fails
                else:
                    if value is not None:
                        display(value)  # type: ignore[no-untyped-call]
        finally:
            _RECOMPUTING.reset(token)
            with self._lock:
                state = self._state
                self._state = StatusState(
                    state.key, state.hit, state.entry, state.compute_seconds, state.removed, state.gone
                )
            self.button.disabled = False
            self.refresh()
            self._show()
            self._board.wake(self)

    def _on_views(self, change: dict[str, Any]) -> None:
        """Pause when the last view goes (cell re-run, output cleared), resume when one comes back."""
        old, new = change["old"] or 0, change["new"] or 0
        if new == 0 and old > 0:
            self._board.remove(self)
        elif new > 0 and old == 0:
            self.refresh()
            self._board.add(self)

    def close(self) -> None:
        """Stop following the store and close the status's widgets."""
        with self._lock:
            if self.closed:
                return
            self.closed = True
        self._board.remove(self)
        for widget in (self.box, self.text, self.button, self.output):
            if widget is not None:
                widget.close()


def _show_traceback() -> None:
    import sys

    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None
    if shell is not None:
        shell.showtraceback()
    else:  # pragma: no cover - a status exists only in a kernel
        import traceback

        traceback.print_exc()


class _Board:
    """Every status that is shown: one store subscription per store, one ticker thread at most."""

    def __init__(self, period: float = _PERIOD) -> None:
        self._lock = threading.Lock()
        self._period = period
        self._active: dict[int, CellStatus] = {}
        self._by_key: dict[tuple[int, str], set[int]] = {}
        self._stores: dict[int, tuple[weakref.ref[CacheStore], Callable[[], None], int]] = {}
        self._dirty: set[int] = set()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def thread(self) -> threading.Thread | None:
        """The ticker; None while nothing counts down and no event waits."""
        return self._thread

    def active(self) -> list[CellStatus]:
        with self._lock:
            return list(self._active.values())

    def add(self, status: CellStatus) -> None:
        store_id = id(status.store)
        with self._lock:
            if status.closed or id(status) in self._active:
                return
            if store_id in self._stores:
                self._activate(status, None)
                return
        # Subscribe outside our lock: a store that calls listeners under its own lock must
        # not meet a thread that holds ours and waits for it.
        fresh = status.store.subscribe(self._on_event)
        with self._lock:
            gone = status.closed or id(status) in self._active  # closed, or added by another thread
            extra = fresh if gone else self._activate(status, fresh)
        if extra is not None:
            extra()

    def _activate(self, status: CellStatus, fresh: Callable[[], None] | None) -> Callable[[], None] | None:
        """Holding the lock: count the status in; returns a subscription that turned out one too many."""
        store_id = id(status.store)
        self._active[id(status)] = status
        self._index(status)
        extra = None
        if store_id in self._stores:
            ref, unsubscribe, count = self._stores[store_id]
            self._stores[store_id] = (ref, unsubscribe, count + 1)
            extra = fresh  # another thread subscribed first
        else:
            assert fresh is not None
            self._stores[store_id] = (weakref.ref(status.store), fresh, 1)
        if status.counts_down():
            self._ensure_ticker()
        return extra

    def remove(self, status: CellStatus) -> None:
        unsubscribe = None
        with self._lock:
            if self._active.pop(id(status), None) is None:
                return
            self._unindex(status)
            self._dirty.discard(id(status))
            store_id = id(status.store)
            ref, unsub, count = self._stores[store_id]
            if count <= 1:
                del self._stores[store_id]
                unsubscribe = unsub
            else:
                self._stores[store_id] = (ref, unsub, count - 1)
            self._wake.set()  # the ticker may have nothing left to do
        if unsubscribe is not None:
            unsubscribe()

    def moved(self, status: CellStatus) -> None:
        """The status now follows another key (a Recompute with changed inputs)."""
        with self._lock:
            if id(status) in self._active:
                for keys in self._by_key.values():
                    keys.discard(id(status))
                self._index(status)

    def wake(self, status: CellStatus) -> None:
        with self._lock:
            if id(status) in self._active and status.counts_down():
                self._ensure_ticker()

    def _index(self, status: CellStatus) -> None:
        if status.key is not None:
            self._by_key.setdefault((id(status.store), status.key), set()).add(id(status))

    def _unindex(self, status: CellStatus) -> None:
        for ids in self._by_key.values():
            ids.discard(id(status))
        for empty in [k for k, v in self._by_key.items() if not v]:
            del self._by_key[empty]

    def _on_event(self, event: StoreEvent) -> None:
        """Any thread: mark the statuses of that key and wake the ticker; no widget work here."""
        with self._lock:
            hit = False
            for (_store, key), ids in self._by_key.items():
                if key == event.key:
                    self._dirty |= ids
                    hit = True
            if hit:
                self._ensure_ticker()
                self._wake.set()

    def _ensure_ticker(self) -> None:  # holding self._lock
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="ipycache_ext-status", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while True:
            if self._wake.wait(self._period):
                self._wake.wait(_COALESCE_SECONDS)
                self._wake.clear()
            with self._lock:
                dirty = [self._active[i] for i in self._dirty if i in self._active]
                self._dirty.clear()
                ticking = [s for s in self._active.values() if s.counts_down()]
            for status in {id(s): s for s in [*dirty, *ticking]}.values():
                try:
                    status.refresh()
                except Exception:  # a status that can't refresh must not stop the others
                    _log.exception("ipycache_ext: a cell status could not refresh")
            with self._lock:
                if not self._dirty and not any(s.counts_down() for s in self._active.values()):
                    self._thread = None  # nothing to count down: no thread until an event or a TTL
                    return


_BOARD = _Board()
