"""While a slow cache miss computes, say so in the notebook: "Running f(...)".

Only the magics import IPython; this module is the agreed exception and keeps to it
narrowly: it looks at IPython only when IPython is already imported and a shell is
running, and imports ``IPython.display`` only then. Anywhere else it shows nothing.

The text appears only once the computation has taken ``DELAY`` seconds (a timer thread),
so fast misses don't flicker, and it is replaced by nothing when the computation ends.
With ``show_time`` (Streamlit's option of that name) it says how long it has been running,
to a tenth of a second, updated every ``TICK`` seconds: "Running f(...) (2.3 s)".
"""

from __future__ import annotations

import contextlib
import contextvars
import sys
import threading
import time
from typing import Any

DELAY = 0.5  # seconds a miss may take before the text appears
TICK = 0.1  # seconds between two updates of the elapsed time
_EMPTY = {"text/plain": "", "text/html": ""}


class Spinner:
    """``with Spinner("Running f(...)"):`` shows the text while the block runs, if it is slow."""

    def __init__(self, text: str, *, show_time: bool = False) -> None:
        self.text = text
        self.show_time = show_time
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._handle: Any = None
        self._done = threading.Event()
        self._started = 0.0

    def __enter__(self) -> Spinner:
        if _shell_running():
            self._started = time.perf_counter()
            # The thread starts with an empty context; the kernel keeps the running cell's
            # message header in a context variable, so output goes to the right cell.
            context = contextvars.copy_context()
            self._thread = threading.Thread(target=context.run, args=(self._run,), daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._thread is None:
            return
        with self._lock:
            self._done.set()
            handle, self._handle = self._handle, None
        if handle is not None:
            with contextlib.suppress(Exception):  # cosmetic: never fail the user's call for it
                handle.update(_EMPTY, raw=True)

    def _run(self) -> None:
        if self._done.wait(DELAY):
            return
        with self._lock, contextlib.suppress(Exception):
            if self._done.is_set():
                return
            from IPython.display import display

            self._handle = display({"text/plain": self._text()}, raw=True, display_id=True)  # type: ignore[no-untyped-call]
        while self.show_time and not self._done.wait(TICK):
            with self._lock, contextlib.suppress(Exception):
                if self._handle is None:
                    return
                self._handle.update({"text/plain": self._text()}, raw=True)

    def _text(self) -> str:
        if not self.show_time:
            return self.text
        return f"{self.text} ({time.perf_counter() - self._started:.1f} s)"


def _shell_running() -> bool:
    ipython = sys.modules.get("IPython")
    get_ipython = getattr(ipython, "get_ipython", None)
    return get_ipython is not None and get_ipython() is not None
