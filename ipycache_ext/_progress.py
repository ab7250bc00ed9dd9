"""Progress of long work — loading a large entry from disk or the team store, hashing a huge input.

The core calls it; a front end shows it. Core modules (engine, hashing, persistence) import
neither IPython nor ipywidgets, so they only say *what* is happening and how far it is:

    with progress("loading `df` from disk", total=nbytes) as step:
        for chunk in chunks:
            ...
            step.advance(len(chunk))

Nothing is shown unless a front end installed a reporter (``set_reporter``; the notebook
side is ``_progress_view``), and nothing appears for work that ends within ``delay``
seconds (1 s): fast loads don't flicker. Until then ``advance`` costs an addition and a
clock read; afterwards the reporter hears at most every ``interval`` seconds. Work that
never calls ``advance`` (one long C call) still shows its text after ``delay``, from a
timer thread, without a percentage. Nested calls share the outermost display (a store
saying what it loads around a backend counting bytes). The reporter's errors never reach
the work.
"""

from __future__ import annotations

import contextlib
import contextvars
import threading
import time
from collections.abc import Callable, Iterator
from typing import Protocol

__all__ = ["Progress", "Reporter", "progress", "set_reporter"]

DELAY = 1.0  # seconds of work before anything is shown
INTERVAL = 0.2  # seconds between two updates shown


class Reporter(Protocol):
    """What a front end gives to show one piece of long work."""

    def update(self, done: int, total: int | None) -> None:
        """Show how far it is (``total`` None: unknown); called at most every INTERVAL seconds."""

    def close(self) -> None:
        """The work ended (or failed): remove what was shown."""


ReporterFactory = Callable[[str], Reporter]  # called with the task's text when it first needs showing
_factory: ReporterFactory | None = None


def set_reporter(factory: ReporterFactory | None) -> ReporterFactory | None:
    """Install how progress is shown (None: not at all); returns the previous one."""
    global _factory
    previous, _factory = _factory, factory
    return previous


class Progress:
    """One piece of work: ``advance(n)`` as it goes; shown once it takes longer than ``delay``."""

    def __init__(
        self,
        task: str,
        total: int | None,
        *,
        factory: ReporterFactory | None,
        delay: float = DELAY,
        interval: float = INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.task = task
        self.total = total
        self.done = 0
        self._factory = factory
        self._clock = clock
        self._interval = interval
        self._show_at = clock() + delay
        self._next = self._show_at
        self._lock = threading.Lock()
        self._reporter: Reporter | None = None
        self._finished = False
        self._timer: threading.Timer | None = None
        if factory is not None and delay > 0:
            # The timer runs in a copy of this context: a kernel routes output by context.
            context = contextvars.copy_context()
            self._timer = threading.Timer(delay, context.run, args=(self._report,))
            self._timer.daemon = True
            self._timer.start()

    @property
    def shown(self) -> bool:
        """True once a reporter shows this work."""
        return self._reporter is not None

    def advance(self, amount: int) -> None:
        """``amount`` more units done (bytes, items)."""
        self.done += amount
        if self._factory is not None and self._clock() >= self._next:
            self._report()

    def _report(self) -> None:
        with self._lock:
            if self._finished or self._factory is None:
                return
            try:
                if self._reporter is None:
                    self._reporter = self._factory(self.task)
                self._reporter.update(self.done, self.total)
            except Exception:  # showing progress is cosmetic: never fail the work for it
                self._factory = None
            self._next = self._clock() + self._interval

    def finish(self) -> None:
        """The work ended: stop the timer and remove what was shown."""
        if self._timer is not None:
            self._timer.cancel()
        with self._lock:
            self._finished = True
            reporter, self._reporter = self._reporter, None
        if reporter is not None:
            with contextlib.suppress(Exception):
                reporter.close()


@contextlib.contextmanager
def progress(
    task: str, total: int | None = None, *, delay: float = DELAY, interval: float = INTERVAL
) -> Iterator[Progress]:
    """Report the progress of the block's work, if it takes longer than ``delay`` seconds.

    ``task`` says what is being done, without naming a front end ("loading `df` from disk",
    "hashing `frame` (2.0 GiB)"); ``total`` is in the units given to ``advance`` (None if unknown).
    """
    outer = _active.get()
    if outer is not None:
        # Nested (the store's "loading ... from disk" around a backend's byte count): one
        # display, the outer one, which takes the inner total if it had none.
        if total is not None and outer.total is None:
            outer.total, outer.done = total, 0
        yield outer
        return
    step = Progress(task, total, factory=_factory, delay=delay, interval=interval)
    token = _active.set(step)
    try:
        yield step
    finally:
        _active.reset(token)
        step.finish()


_active: contextvars.ContextVar[Progress | None] = contextvars.ContextVar(
    "ipycache_ext_progress", default=None
)
