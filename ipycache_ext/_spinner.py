"""While a slow cache miss computes, say so in the notebook: "Running f(...)".

Only the magics import IPython; this module is the agreed exception and keeps to it
narrowly: it looks at IPython only when IPython is already imported and a shell is
running, and imports ``IPython.display`` only then. Anywhere else it shows nothing.

The text appears only once the computation has taken ``DELAY`` seconds (a timer thread),
so fast misses don't flicker, and it is replaced by nothing when the computation ends.
"""

from __future__ import annotations

import contextlib
import contextvars
import sys
import threading
from typing import Any

DELAY = 0.5  # seconds a miss may take before the text appears
_EMPTY = {"text/plain": "", "text/html": ""}


class Spinner:
    """``with Spinner("Running f(...)"):`` shows the text while the block runs, if it is slow."""

    def __init__(self, text: str) -> None:
        self.text = text
        self._lock = threading.Lock()
        self._timer: threading.Timer | None = None
        self._handle: Any = None
        self._done = False

    def __enter__(self) -> Spinner:
        if _shell_running():
            # The timer thread starts with an empty context; the kernel keeps the running
            # cell's message header in a context variable, so output goes to the right cell.
            context = contextvars.copy_context()
            self._timer = threading.Timer(DELAY, context.run, args=(self._show,))
            self._timer.daemon = True
            self._timer.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._timer is None:
            return
        self._timer.cancel()
        with self._lock:
            self._done = True
            handle, self._handle = self._handle, None
        if handle is not None:
            with contextlib.suppress(Exception):  # cosmetic: never fail the user's call for it
                handle.update(_EMPTY, raw=True)

    def _show(self) -> None:
        with self._lock, contextlib.suppress(Exception):
            if self._done:
                return
            from IPython.display import display

            self._handle = display({"text/plain": self.text}, raw=True, display_id=True)  # type: ignore[no-untyped-call]


def _shell_running() -> bool:
    ipython = sys.modules.get("IPython")
    get_ipython = getattr(ipython, "get_ipython", None)
    return get_ipython is not None and get_ipython() is not None
