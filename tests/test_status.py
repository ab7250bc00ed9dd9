"""The cell status, driven in Python without a kernel (ipywidgets falls back to a dummy comm).

Texts run on the fake clock; the board's ticker thread is checked with deadlines, never
fixed sleeps. tests/test_status_notebook.py runs the magics' real call in a real kernel,
and tests/test_browser.py clicks Recompute in real pages.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from IPython.core.interactiveshell import InteractiveShell

from ipycache_ext import CacheStore
from ipycache_ext._status import WIDGET_VIEW, CellStatus, _Board, publish_status
from ipycache_ext._status_text import StatusState, status_html, status_text

from .conftest import FakeClock


def put(store: CacheStore, key: str = "k", *, ttl: float | None = 3600, seconds: float = 0.0) -> Any:
    def create() -> tuple[Any, int]:
        return key, 10

    lookup = store.get_or_create(key, create, kind="data", label=f"cell {key}", names=("x",), ttl=ttl)
    return lookup.entry


def eventually(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"not true within {timeout}s: {condition}")
        time.sleep(0.01)


def count_subscriptions(store: CacheStore, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The number of live subscriptions made from now on, in a one-item list."""
    live = [0]
    original = store.subscribe

    def subscribe(callback: Any) -> Callable[[], None]:
        live[0] += 1
        unsubscribe = original(callback)

        def undo() -> None:
            live[0] -= 1
            unsubscribe()

        return undo

    monkeypatch.setattr(store, "subscribe", subscribe)
    return live


@pytest.fixture
def board() -> Iterator[_Board]:
    made = _Board(period=0.02)
    yield made
    for status in made.active():
        status.close()


def status_for(
    store: CacheStore, board: _Board, *, hit: bool = False, key: str = "k", recompute: Any = None
) -> CellStatus:
    entry = store.get(key)
    return CellStatus(store, key, hit=hit, entry=entry, compute_seconds=0.0, recompute=recompute, board=board)


# ----------------------------------------------------------------- the words
def test_a_miss_a_hit_and_an_entry_that_left(store: CacheStore, clock: FakeClock) -> None:
    entry = put(store)
    miss = StatusState("k", False, entry, 0.0)
    assert status_text(miss, clock()) == "cached · computed in 0ms · expires in 1h 00m"
    clock.advance(61)
    hit = StatusState("k", True, store.get("k"), 0.0)
    when = time.strftime("%H:%M", time.localtime(entry.created))
    assert status_text(hit, clock()) == f"from cache · computed {when} in 0ms · expires in 58m 59s"
    gone = StatusState("k", True, entry, 0.0, removed="expired", gone=True)
    assert status_text(gone, clock()) == f"expired · computed {when} in 0ms"
    never = StatusState("k", False, None, 2.5)
    assert status_text(never, clock()).startswith("computed in 2.5s · not cached")
    assert status_text(StatusState("k", False, entry, 0.0, recomputing=True), clock()) == "recomputing…"


def test_no_ttl_no_expiry_text_and_hits_counted(store: CacheStore, clock: FakeClock) -> None:
    put(store, ttl=None)
    put(store, ttl=None)
    put(store, ttl=None)
    state = StatusState("k", True, store.get("k"), 0.0)
    assert status_text(state, clock()).endswith("in 0ms · hit 2×")


def test_the_html_fallback_escapes_and_carries_the_css_class() -> None:
    markup = status_html("cached · <b>x</b>", "cached", "abc")
    assert "class='ipycache-status'" in markup
    assert "&lt;b&gt;x&lt;/b&gt;" in markup
    assert "<b>" not in markup


# ----------------------------------------------------------------- live updates
def test_the_status_counts_down_and_says_expired_when_the_entry_goes(
    store: CacheStore, clock: FakeClock, board: _Board
) -> None:
    put(store, ttl=100)
    status = status_for(store, board)
    assert status.plain().endswith("expires in 1m 40s")
    assert board.thread is not None  # a TTL to count down: the ticker runs
    clock.advance(5)
    eventually(lambda: "expires in 1m 35s" in status.text.value)
    clock.advance(95)
    eventually(lambda: "expired · computed" in status.text.value)
    eventually(lambda: board.thread is None)  # nothing left to count down: no thread


def test_deleted_cleared_and_hits_from_elsewhere_show_at_once(store: CacheStore, board: _Board) -> None:
    put(store, ttl=None)
    status = status_for(store, board)
    assert board.thread is None  # no TTL: nothing ticks until something happens
    put(store, ttl=None)  # a hit from another cell
    eventually(lambda: "hit 1×" in status.text.value)
    store.delete("k")
    eventually(lambda: "deleted · computed" in status.text.value)
    put(store, "j", ttl=None)
    other = status_for(store, board, key="j")
    store.clear()
    eventually(lambda: "cleared · computed" in other.text.value)
    eventually(lambda: board.thread is None)


def test_events_from_another_thread_reach_the_status(store: CacheStore, board: _Board) -> None:
    put(store, ttl=None)
    status = status_for(store, board)
    worker = threading.Thread(target=lambda: store.delete("k"))
    worker.start()
    worker.join(5)
    eventually(lambda: "deleted" in status.text.value)


def test_a_status_nobody_shows_stops_following_the_store(
    store: CacheStore, board: _Board, monkeypatch: pytest.MonkeyPatch
) -> None:
    live = count_subscriptions(store, monkeypatch)
    put(store, ttl=100)
    status = status_for(store, board)
    ticker = board.thread
    assert ticker is not None
    assert live == [1]
    status.box._view_count = 1  # the page shows it
    status.box._view_count = 0  # its cell ran again, or its output was cleared
    assert board.active() == []
    eventually(lambda: not ticker.is_alive())
    assert live == [0]
    store.delete("k")  # not seen while paused ...
    status.box._view_count = 1  # ... and caught up with when shown again
    assert "deleted" in status.text.value
    assert board.active() == [status]


def test_close_stops_everything_and_closes_the_widgets(store: CacheStore, board: _Board) -> None:
    put(store, ttl=100)
    status = status_for(store, board)
    status.close()
    assert board.active() == []
    assert all(w.comm is None for w in (status.box, status.text, status.button))
    status.close()  # twice is harmless


def test_statuses_share_one_thread_and_one_subscription(
    store: CacheStore, board: _Board, monkeypatch: pytest.MonkeyPatch
) -> None:
    live = count_subscriptions(store, monkeypatch)
    for i in range(20):
        put(store, f"k{i}", ttl=100)
        status_for(store, board, key=f"k{i}")
    assert live == [1]
    tickers = [t for t in threading.enumerate() if t.name == "ipycache_ext-status"]
    assert board.thread in tickers
    assert len(tickers) <= 2  # this board's, and perhaps the kernel-wide board's


# ----------------------------------------------------------------- the widget and Recompute
def test_the_bundle_has_a_widget_view_html_and_plain_text(store: CacheStore, board: _Board) -> None:
    put(store)
    status = status_for(store, board, hit=True)
    bundle = status.mimebundle()
    assert bundle[WIDGET_VIEW]["model_id"] == status.box.model_id
    assert bundle["text/plain"].startswith("from cache · computed ")
    assert "ipycache-status" in bundle["text/html"]
    assert "ipycache-status" in status.box._dom_classes
    assert "ipycache-recompute" in status.button._dom_classes


def test_recompute_runs_the_cell_and_the_status_follows_the_new_entry(
    store: CacheStore, clock: FakeClock, board: _Board
) -> None:
    put(store, ttl=60)
    calls: list[int] = []

    def recompute() -> int:
        calls.append(1)
        clock.advance(1)
        store.get_or_create("k", lambda: ("new", 10), kind="data", label="cell k", ttl=60, refresh=True)
        # what the magics do at the end of the re-run: update this status, publish nothing
        publish_status(None, store, "k", hit=False, entry=store.get("k"), compute_seconds=0.0, recompute=None)
        return 42

    status = status_for(store, board, hit=True, recompute=recompute)
    status.button.click()
    assert calls == [1]
    assert status.output is not None
    assert "ipycache-recompute-output" in status.output._dom_classes
    assert status.plain() == "cached · computed in 0ms · expires in 1m 00s"
    assert not status.button.disabled


def test_a_failing_recompute_keeps_the_old_status(store: CacheStore, board: _Board) -> None:
    put(store, ttl=None)
    calls: list[int] = []

    def recompute() -> None:
        calls.append(1)
        raise ValueError("boom")

    status = status_for(store, board, hit=True, recompute=recompute)
    before = status.plain()
    status.button.click()
    assert calls == [1] and status.output is not None  # it did run, and failed
    assert status.plain() == before
    assert not status.button.disabled


def test_publish_status_in_a_terminal_shows_nothing(
    shell: InteractiveShell, store: CacheStore, capsys: pytest.CaptureFixture[str]
) -> None:
    entry = put(store)
    publish_status(shell, store, "k", hit=False, entry=entry, compute_seconds=0.0, recompute=None)
    assert capsys.readouterr().out == ""  # the hit line says it there


def test_publish_status_publishes_through_the_display_publisher(store: CacheStore) -> None:
    """A stand-in kernel (no execute request running): published at once, as one output."""
    published: list[dict[str, Any]] = []

    class Publisher:
        def publish(self, data: dict[str, Any], metadata: dict[str, Any]) -> None:
            published.append(data)

    class Shell:
        kernel = object()
        display_pub = Publisher()

    entry = put(store)
    publish_status(Shell(), store, "k", hit=False, entry=entry, compute_seconds=0.0, recompute=None)
    assert len(published) == 1
    assert published[0]["text/plain"].startswith("cached · computed in")
    assert WIDGET_VIEW in published[0]
