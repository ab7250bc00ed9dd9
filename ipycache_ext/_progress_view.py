"""The notebook side of ``_progress``: a progress bar in the running cell's output while long work runs.

One display output with a display id, updated in place and emptied when the work ends
(like the decorators' spinner), with ``text/html`` (a ``<progress>`` bar) and a
``text/plain`` fallback, so it needs no widget manager: it shows in JupyterLab, Notebook 7
and VS Code. A terminal IPython can't update an output in place, so there it shows nothing.
``install(shell)`` is called when the extension loads; ``uninstall()`` when it unloads.
"""

from __future__ import annotations

import html
import threading
from typing import Any

from . import _progress
from ._format import format_size

__all__ = ["DisplayReporter", "install", "uninstall"]

_EMPTY = {"text/plain": "", "text/html": ""}


class DisplayReporter:
    """Shows one piece of work as an updatable display output."""

    def __init__(self, task: str, shell: Any) -> None:
        self.task = task
        self._shell = shell
        self._handle: Any = None
        self._lock = threading.Lock()

    def bundle(self, done: int, total: int | None) -> dict[str, str]:
        """``loading `df` from disk: 45% (450.0 MiB of 1.0 GiB)``, as text and as a bar."""
        if total:
            share = min(1.0, done / total)
            amount = f"{share:.0%} ({format_size(done)} of {format_size(total)})"
            bar = f"<progress value='{done}' max='{total}' style='width:16em'></progress>"
        else:
            amount = format_size(done) if done else "…"
            bar = "<progress style='width:16em'></progress>"
        text = f"{self.task}: {amount}"
        markup = (
            f"<div class='ipycache-progress' style='font-size:12px'>{bar} "
            f"<span>{html.escape(text)}</span></div>"
        )
        return {"text/plain": f"[ipycache_ext] {text}", "text/html": markup}

    def update(self, done: int, total: int | None) -> None:
        from IPython.display import display

        data = self.bundle(done, total)
        with self._lock:
            if self._handle is None:
                self._handle = display(data, raw=True, display_id=True)  # type: ignore[no-untyped-call]
            else:
                self._handle.update(data, raw=True)

    def close(self) -> None:
        with self._lock:
            handle, self._handle = self._handle, None
        if handle is not None:
            handle.update(_EMPTY, raw=True)


_installed: dict[str, Any] = {}


def install(shell: Any) -> None:
    """Show the core's progress reports in this shell's output (a kernel's; a terminal can't
    update an output in place, so there every update would be a new line: nothing is shown)."""
    if getattr(shell, "kernel", None) is None:
        return
    previous = _progress.set_reporter(lambda task: DisplayReporter(task, shell))
    _installed.setdefault("previous", previous)


def uninstall() -> None:
    """Stop showing progress (the extension is unloaded)."""
    _progress.set_reporter(_installed.pop("previous", None))
