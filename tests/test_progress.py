"""Progress of long work: nothing for fast work, throttled updates for slow work, never an error.

The core side runs on a fake clock; the timer path and the notebook display use real
(short) delays with deadlines.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from ipycache_ext import _progress
from ipycache_ext._progress import Progress, progress, set_reporter
from ipycache_ext._progress_view import DisplayReporter

from .conftest import FakeClock


class Recorder:
    def __init__(self, task: str, log: list[tuple[Any, ...]]) -> None:
        self.task = task
        self.log = log

    def update(self, done: int, total: int | None) -> None:
        self.log.append(("update", self.task, done, total))

    def close(self) -> None:
        self.log.append(("close", self.task))


@pytest.fixture
def log() -> Iterator[list[tuple[Any, ...]]]:
    seen: list[tuple[Any, ...]] = []
    previous = set_reporter(lambda task: Recorder(task, seen))
    yield seen
    set_reporter(previous)


def test_fast_work_shows_nothing(log: list[tuple[Any, ...]]) -> None:
    with progress("loading `df` from disk", total=100) as step:
        step.advance(100)
    assert log == []


def test_slow_work_is_shown_throttled_then_removed(clock: FakeClock) -> None:
    seen: list[tuple[Any, ...]] = []
    step = Progress(
        "hashing `frame`", 1000, factory=lambda t: Recorder(t, seen), delay=0, interval=0.2, clock=clock
    )
    step.advance(100)  # past the delay already: shown
    for _ in range(5):  # within the interval: not shown again
        step.advance(10)
    clock.advance(0.25)
    step.advance(10)
    step.finish()
    assert seen == [
        ("update", "hashing `frame`", 100, 1000),
        ("update", "hashing `frame`", 160, 1000),
        ("close", "hashing `frame`"),
    ]


def test_work_without_steps_still_shows_after_the_delay(log: list[tuple[Any, ...]]) -> None:
    with progress("loading `model` from the team store", delay=0.05) as step:
        deadline = time.monotonic() + 5
        while not step.shown:
            assert time.monotonic() < deadline, "never shown"
            time.sleep(0.01)
    assert log == [
        ("update", "loading `model` from the team store", 0, None),
        ("close", "loading `model` from the team store"),
    ]


def test_a_failing_reporter_never_fails_the_work(clock: FakeClock) -> None:
    def broken(task: str) -> Any:
        raise RuntimeError("no display")

    step = Progress("loading", 10, factory=broken, delay=0, clock=clock)
    step.advance(5)
    clock.advance(1)
    step.advance(5)  # no longer tries
    step.finish()


def test_without_a_reporter_nothing_happens() -> None:
    previous = set_reporter(None)
    try:
        with progress("loading", total=10, delay=0) as step:
            step.advance(10)
        assert not step.shown
    finally:
        set_reporter(previous)
    assert _progress._factory is previous


def test_the_notebook_display_has_a_bar_and_a_text_fallback() -> None:
    reporter = DisplayReporter("loading `df` from disk", shell=None)
    bundle = reporter.bundle(512 * 2**20, 2**30)
    assert bundle["text/plain"] == "[ipycache_ext] loading `df` from disk: 50% (512.0 MiB of 1.0 GiB)"
    assert "<progress value=" in bundle["text/html"]
    assert "ipycache-progress" in bundle["text/html"]
    assert reporter.bundle(0, None)["text/plain"].endswith(": …")


@pytest.mark.slow
def test_in_a_real_kernel_the_bar_appears_and_is_removed() -> None:
    """jupyter_client against a real ipykernel: the messages the page gets, in order."""
    jupyter_client = pytest.importorskip("jupyter_client")
    manager, client = jupyter_client.manager.start_new_kernel(kernel_name="python3")
    try:
        code = (
            "import time\n"
            "from ipycache_ext import _progress, _progress_view\n"
            "_progress_view.install(get_ipython())\n"
            "with _progress.progress('loading `df` from disk', total=10, delay=0.1, interval=0) as step:\n"
            "    deadline = time.monotonic() + 10\n"
            "    while not step.shown and time.monotonic() < deadline:  # the timer shows it first\n"
            "        time.sleep(0.01)\n"
            "    step.advance(5)\n"
            "    time.sleep(0.1)\n"
        )
        seen: list[tuple[str, str]] = []

        def hook(msg: dict[str, Any]) -> None:
            if msg["msg_type"] in ("display_data", "update_display_data"):
                seen.append((msg["msg_type"], msg["content"]["data"]["text/plain"]))
            if msg["msg_type"] == "error":
                seen.append(("error", msg["content"]["evalue"]))

        client.execute_interactive(code, output_hook=hook, timeout=60)
    finally:
        client.stop_channels()
        manager.shutdown_kernel(now=True)
    assert seen[0] == ("display_data", "[ipycache_ext] loading `df` from disk: 0% (0 B of 10 B)")
    assert ("update_display_data", "[ipycache_ext] loading `df` from disk: 50% (5 B of 10 B)") in seen
    assert seen[-1] == ("update_display_data", "")


def test_a_terminal_shell_gets_no_progress_display(shell: Any) -> None:
    from ipycache_ext import _progress_view

    before = _progress._factory
    _progress_view.install(shell)  # a plain InteractiveShell: no kernel
    assert _progress._factory is before


def test_nested_progress_shares_the_outer_display(log: list[tuple[Any, ...]]) -> None:
    with (
        progress("loading `df` from the team store", delay=0) as outer,
        progress("reading chunks", total=100, delay=0) as inner,
    ):
        assert inner is outer
        inner.advance(40)
    assert [entry[0] for entry in log].count("close") == 1
    assert all(entry[1] == "loading `df` from the team store" for entry in log)
    assert ("update", "loading `df` from the team store", 40, 100) in log


def test_a_slow_load_from_a_tier_and_hashing_a_huge_input_are_shown(
    log: list[tuple[Any, ...]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The call sites: the store's tier load (a slow disk or team store) and the engine's hash."""
    import time
    from contextlib import nullcontext

    import numpy as np

    from ipycache_ext import CacheStore
    from ipycache_ext._engine import CacheEngine

    class SlowTier:
        def load(self, key: str, where: str) -> None:
            deadline = time.monotonic() + 10
            while not log and time.monotonic() < deadline:  # past the 1 s after which progress shows
                time.sleep(0.01)

        def save(self, *args: Any) -> bool:
            return True

        def claim(self, key: str, where: str) -> Any:
            return nullcontext(None)

        def delete(self, key: str, *, expired: bool = False) -> None: ...

        def clear(self) -> int:
            return 0

        def usage(self) -> tuple[int, int]:
            return (0, 0)

    store = CacheStore()
    try:
        store.persistence = SlowTier()  # type: ignore[assignment]
        store.get_or_create("k" * 16, lambda: (b"x", 1), kind="data", label="l", persist=True)
        assert any(event[1].startswith("loading the cached entry kkkk") for event in log)
        from ipycache_ext import _engine

        tasks: list[str] = []
        real = _engine.progress
        monkeypatch.setattr(_engine, "progress", lambda task, *a, **k: (tasks.append(task), real(task))[1])
        engine = CacheEngine(store)
        engine.digest_outside("small", np.zeros(1 << 20, dtype=np.uint8))
        engine.digest_outside("big", np.zeros(300 << 20, dtype=np.uint8))  # noted (shown if > 1 s)
        assert tasks == ["hashing `big` (300.0 MiB)"]
    finally:
        store.close()
