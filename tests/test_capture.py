"""Recording and replaying a cell's output: log handlers, widget views (``_capture``)."""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from IPython.core.displaypub import DisplayPublisher
from IPython.core.interactiveshell import InteractiveShell

from ipycache_ext import CacheStore
from ipycache_ext._capture import OutputRecorder, replay

from .conftest import run

VIEW = "application/vnd.jupyter.widget-view+json"


class _Publisher:
    """The shell's display publisher, recording what is published."""

    def __init__(self) -> None:
        self.published: list[dict[str, Any]] = []

    def publish(self, data: dict[str, Any], metadata: Any = None, **kwargs: Any) -> None:
        self.published.append(data)

    def clear_output(self, wait: bool = False) -> None:
        pass


class _Shell:
    def __init__(self) -> None:
        self.display_pub = _Publisher()


class _RecordingPublisher(DisplayPublisher):
    """IPython's own publisher (what the shell needs of it), recording what is published."""

    def __init__(self) -> None:
        super().__init__()
        self.published: list[dict[str, Any]] = []

    def publish(self, data: dict[str, Any], metadata: Any = None, *args: Any, **kwargs: Any) -> None:
        self.published.append(data)


@contextlib.contextmanager
def _handler() -> Iterator[logging.StreamHandler[Any]]:
    """A handler made before the cell (inside the test: pytest swaps the streams per phase)."""
    logger = logging.getLogger("ipycache_ext.tests.capture")
    made = logging.StreamHandler(sys.stdout)
    logger.addHandler(made)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        yield made
    finally:
        logger.removeHandler(made)


def test_log_records_are_recorded_in_order_and_the_handler_restored(
    capsys: pytest.CaptureFixture[str],
) -> None:
    logger = logging.getLogger("ipycache_ext.tests.capture")
    with _handler() as handler:
        stream = handler.stream
        with OutputRecorder(_Shell()) as recorder:
            print("one")
            logger.info("two")
            print("three")
        assert handler.stream is stream
    assert [e[1] for e in recorder.events] == ["one", "\n", "two\n", "three", "\n"]
    assert capsys.readouterr().out == "one\ntwo\nthree\n"  # shown live too


def test_a_failing_run_restores_the_handler_and_one_the_run_repointed_is_kept() -> None:
    with _handler() as handler:
        stream = handler.stream
        with pytest.raises(ValueError), OutputRecorder(_Shell()):
            raise ValueError
        assert handler.stream is stream
    other = logging.StreamHandler(sys.stdout)
    logging.getLogger("ipycache_ext.tests.capture").addHandler(other)
    try:
        with OutputRecorder(_Shell()):
            other.setStream(sys.__stderr__)  # the cell's own choice
        assert other.stream is sys.__stderr__
    finally:
        logging.getLogger("ipycache_ext.tests.capture").removeHandler(other)


def test_a_dead_widget_view_is_replayed_as_its_text_form() -> None:
    ipywidgets = pytest.importorskip("ipywidgets")
    live = ipywidgets.IntSlider(value=1)
    gone = ipywidgets.IntSlider(value=2)
    gone_view = {"text/plain": "IntSlider(value=2)", VIEW: {"model_id": gone.model_id, "version_major": 2}}
    gone.close()
    live_view = {"text/plain": "IntSlider(value=1)", VIEW: {"model_id": live.model_id, "version_major": 2}}
    shell = _Shell()
    replay([("display", live_view, {}, None, False), ("display", gone_view, {}, None, False)], shell)
    kept, text = shell.display_pub.published
    assert kept == live_view
    assert text == {"text/plain": "IntSlider(value=2) (widget from the cached run; not live in this kernel)"}
    live.close()


def test_a_hit_in_the_same_kernel_shows_a_widget_that_is_still_alive(
    shell: InteractiveShell, store: CacheStore
) -> None:
    pytest.importorskip("ipywidgets")
    publisher = _RecordingPublisher()
    real = shell.display_pub
    shell.display_pub = publisher
    try:
        run(shell, "import ipywidgets\nslider = ipywidgets.IntSlider(value=5)")
        cell = "%%cache_data --ignore slider\ndisplay(slider)\nk = 1"
        run(shell, cell)
        run(shell, cell)  # hit: the model is alive, the view is live
        assert store.stats().hits == 1
        assert [VIEW in d for d in publisher.published] == [True, True]
        run(shell, "slider.close()")
        run(shell, cell)  # hit: the model is gone
        assert VIEW not in publisher.published[-1]
        assert "not live in this kernel" in publisher.published[-1]["text/plain"]
    finally:
        shell.display_pub = real


def test_descriptor_output_forwarded_by_the_kernel_is_recorded_once() -> None:
    """ipykernel's OutStream: a watcher thread writes what it reads from the descriptor."""
    import os
    import threading
    import time

    class _OutStream:
        def __init__(self) -> None:
            self.written: list[str] = []
            self._fid, self._pipe_in = os.pipe()
            self.watch_fd_thread = threading.Thread(target=self._watch, daemon=True)
            self.watch_fd_thread.start()

        def _watch(self) -> None:
            while chunk := os.read(self._fid, 1000):
                time.sleep(0.05)  # preempted between its read and its write, as on a busy machine
                self.write(chunk.decode())

        def write(self, text: str) -> int:
            self.written.append(text)
            return len(text)

        def flush(self) -> None:
            pass

    stream = _OutStream()
    saved = sys.stdout
    sys.stdout = stream  # type: ignore[assignment]
    try:
        with OutputRecorder(_Shell()) as outer:
            print("python")
            with OutputRecorder(_Shell()) as inner:  # nested: the outer keeps recording after
                os.write(stream._pipe_in, b"inner-fd\n")
            os.write(stream._pipe_in, b"outer-fd\n")
    finally:
        sys.stdout = saved
        os.close(stream._pipe_in)
    assert "".join(e[1] for e in inner.events) == "inner-fd\n"
    assert "".join(e[1] for e in outer.events) == "python\ninner-fd\nouter-fd\n"  # each text once
    assert "write" not in vars(stream)  # the stream's own write again
