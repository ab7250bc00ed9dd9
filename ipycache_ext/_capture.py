"""Record what a cell shows while it runs, and show it again on a hit.

On a miss the output must appear live (a slow cell that prints progress should not look
frozen) *and* be kept, so the recorder tees rather than captures: ``sys.stdout``,
``sys.stderr`` and the shell's display publisher are wrapped for the duration of the run,
forwarding everything and keeping an ordered list of events. Logging handlers configured
before the cell hold the real streams, not ``sys.stdout`` as it is during the run: those
writing to the real stdout/stderr are pointed at the tees for the run too, so log lines
are replayed in order with the rest. Output written straight to file descriptors 1 and 2
(``os.system``, C extensions) is recorded where the kernel forwards it: ipykernel reads
those descriptors on a watcher thread and writes what it reads into its stream objects,
so for the run that thread's writes are recorded too. A replayed widget view whose model is not alive in
this kernel (after a restart, or closed) is shown in its text form, not as a broken widget.
Nothing here imports IPython: the shell is any object with a ``display_pub`` that has
``publish`` and ``clear_output``.
"""

from __future__ import annotations

import array
import ctypes
import logging
import sys
import threading
import time
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, TextIO

# ("stdout", text) | ("stderr", text) | ("display", data, metadata, transient, update) | ("clear", wait)
OutputEvent = tuple[Any, ...]


@dataclass
class CellResult:
    """Everything a cached cell produced: bindings, deletions, last value and output."""

    bindings: dict[str, Any]
    deleted: tuple[str, ...] = ()
    value: Any = None
    outputs: list[OutputEvent] = field(default_factory=list)
    # Plain defaults (class attributes too), so entries persisted before these existed load.
    changed: tuple[str, ...] = ()  # inputs changed in place: replayed onto the namespace's objects
    effects: Any = None  # KernelEffects: module/class attributes, cwd, environment, sys.path


class _Tee:
    """A text stream that forwards to the real one and records what was written."""

    def __init__(self, target: TextIO, name: str, events: list[OutputEvent]) -> None:
        self._target = target
        self._name = name
        self._events = events

    def write(self, text: str) -> int:
        if text:
            self._events.append((self._name, text))
        return self._target.write(text)

    def writelines(self, lines: list[str]) -> None:
        for line in lines:
            self.write(line)

    def __getattr__(self, attr: str) -> Any:
        return getattr(self._target, attr)


class _TeePublisher:
    """Stands in for the shell's display publisher: forwards and records rich output."""

    def __init__(self, target: Any, events: list[OutputEvent]) -> None:
        self._target = target
        self._events = events

    def publish(
        self,
        data: dict[str, Any],
        metadata: dict[str, Any] | None = None,
        source: Any = None,
        *,
        transient: dict[str, Any] | None = None,
        update: bool = False,
        **kwargs: Any,
    ) -> None:
        self._events.append(("display", data, metadata, transient, update))
        self._target.publish(data, metadata=metadata, transient=transient, update=update, **kwargs)

    def clear_output(self, wait: bool = False) -> None:
        self._events.append(("clear", wait))
        self._target.clear_output(wait=wait)

    def __getattr__(self, attr: str) -> Any:
        return getattr(self._target, attr)


class OutputRecorder:
    """Context manager that tees stdout, stderr and rich displays into ``events``."""

    _lock = threading.Lock()

    def __init__(self, shell: Any) -> None:
        self._shell = shell
        self.events: list[OutputEvent] = []
        self._saved: tuple[Any, Any, Any] | None = None
        self._handlers: list[tuple[logging.StreamHandler[Any], Any, _Tee]] = []
        self._forwarded: list[_FdForward] = []

    def __enter__(self) -> OutputRecorder:
        with self._lock:
            self._saved = (sys.stdout, sys.stderr, self._shell.display_pub)
            out = sys.stdout = _Tee(sys.stdout, "stdout", self.events)
            err = sys.stderr = _Tee(sys.stderr, "stderr", self.events)
            self._shell.display_pub = _TeePublisher(self._shell.display_pub, self.events)
            self._handlers = _point_handlers({id(self._saved[0]): out, id(self._saved[1]): err})
            self._forwarded = [
                _FdForward(stream, name, self.events)
                for stream, name in ((_untee(self._saved[0]), "stdout"), (_untee(self._saved[1]), "stderr"))
                if _FdForward.applies(stream)
            ]
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._saved is not None
        if self._forwarded:
            _drain(self._forwarded)
        with self._lock:
            for forward in self._forwarded:
                forward.stop()
            sys.stdout, sys.stderr, self._shell.display_pub = self._saved
            for handler, stream, tee in self._handlers:
                if handler.stream is tee:  # not re-pointed by the cell itself meanwhile
                    handler.setStream(stream)


def _untee(stream: Any) -> Any:
    """The stream under an enclosing recorder's tees (a cached cell run inside another)."""
    while isinstance(stream, _Tee):
        stream = stream._target
    return stream


class _FdForward:
    """Records what ipykernel's watcher thread forwards from a file descriptor into ``stream``.

    Only the watcher thread's writes are recorded here: everything else written to the
    stream came through ``sys.stdout``/``sys.stderr``, whose tees record it already.
    """

    def __init__(self, stream: Any, name: str, events: list[OutputEvent]) -> None:
        self.stream = stream
        self.pipe: int = stream._fid
        self.watcher: threading.Thread = stream.watch_fd_thread
        watcher = self.watcher
        self._previous = stream.__dict__.get("write")  # an enclosing recorder's, when nested
        original = stream.write

        def write(text: str) -> Any:
            if text and threading.current_thread() is watcher:
                events.append((name, text))
            return original(text)

        stream.write = write

    @staticmethod
    def applies(stream: Any) -> bool:
        watcher = getattr(stream, "watch_fd_thread", None)
        return (
            isinstance(getattr(stream, "_fid", None), int)
            and isinstance(watcher, threading.Thread)
            and watcher.is_alive()
            and hasattr(stream, "__dict__")
        )

    def stop(self) -> None:
        if self._previous is None:
            self.stream.__dict__.pop("write", None)
        else:
            self.stream.write = self._previous


def _drain(forwards: list[_FdForward], timeout: float = 1.0) -> None:
    """Wait until each watcher thread has forwarded everything the run wrote to its descriptor.

    An empty pipe is not enough: the watcher may have read the last chunk and not yet written
    it. Where Linux shows what a thread is blocked in, the wait lasts until the watcher sits in
    ``read`` on its pipe again, which it only does after writing what it read; elsewhere a
    short grace is all there is.
    """
    libc = _libc()
    if libc is not None:
        libc.fflush(None)  # C-level stdio buffers of this process (a C extension's printf)
    deadline = time.monotonic() + timeout
    waiting, blind = list(forwards), False
    while waiting and time.monotonic() < deadline:
        still = []
        for forward in waiting:
            reading = _reading(forward.watcher, forward.pipe)
            blind = blind or reading is None
            if _pending(forward.pipe) or reading is False:
                still.append(forward)
        waiting = still
        if waiting:
            time.sleep(0.001)
    if blind:
        time.sleep(0.002)  # can't see the watcher: the last chunk read, on its way into write()


def _reading(thread: threading.Thread, pipe: int) -> bool | None:
    """Whether ``thread`` is blocked in a system call on ``pipe`` (None: this OS doesn't say).

    ``/proc/<pid>/task/<tid>/syscall`` gives the call's number and arguments, the first
    being the descriptor for ``read``; it says ``running`` while the thread runs.
    """
    if thread.native_id is None:
        return None
    try:
        with open(f"/proc/self/task/{thread.native_id}/syscall", encoding="ascii") as status:
            words = status.read().split()
    except OSError:
        return None
    if words[:1] == ["running"]:
        return False
    if len(words) < 2:
        return None
    try:
        return int(words[1], 16) == pipe
    except ValueError:
        return None


def _pending(pipe: int) -> int:
    try:
        import fcntl
        import termios

        buffer = array.array("i", [0])
        fcntl.ioctl(pipe, termios.FIONREAD, buffer, True)
        return buffer[0]
    except (ImportError, OSError):  # not a POSIX pipe: nothing to wait for
        return 0


def _libc() -> Any:
    try:
        return ctypes.CDLL(None)
    except (OSError, TypeError):  # no C library to flush (Windows takes no None)
        return None


def _point_handlers(tees: dict[int, _Tee]) -> list[tuple[logging.StreamHandler[Any], Any, _Tee]]:
    """Point every logging handler that writes to a teed stream at its tee (for the run)."""
    pointed = []
    loggers: list[Any] = [logging.getLogger()]
    loggers.extend(logging.Logger.manager.loggerDict.values())
    seen: set[int] = set()
    for logger in loggers:
        for handler in getattr(logger, "handlers", ()):
            if id(handler) in seen or not isinstance(handler, logging.StreamHandler):
                continue
            seen.add(id(handler))
            stream = handler.__dict__.get("stream")  # lastResort's is a property: sys.stderr already
            tee = tees.get(id(stream))
            if tee is not None:
                handler.setStream(tee)
                pointed.append((handler, stream, tee))
    return pointed


def replay(events: list[OutputEvent], shell: Any) -> None:
    """Show recorded output again, in its original order."""
    for event in events:
        kind = event[0]
        if kind == "stdout":
            sys.stdout.write(event[1])
        elif kind == "stderr":
            sys.stderr.write(event[1])
        elif kind == "display":
            _, data, metadata, transient, update = event
            data = _without_dead_widget(data)
            shell.display_pub.publish(data, metadata=metadata, transient=transient, update=update)
        elif kind == "clear":
            shell.display_pub.clear_output(wait=event[1])
    sys.stdout.flush()
    sys.stderr.flush()


_WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


def _without_dead_widget(data: dict[str, Any]) -> dict[str, Any]:
    """A widget view whose model this kernel does not have: its text form instead."""
    view = data.get(_WIDGET_VIEW)
    if not isinstance(view, dict) or _widget_alive(view.get("model_id")):
        return data
    shown = {k: v for k, v in data.items() if k != _WIDGET_VIEW}
    text = shown.get("text/plain") or "a widget"
    shown["text/plain"] = f"{text} (widget from the cached run; not live in this kernel)"
    return shown


def _widget_alive(model_id: Any) -> bool:
    module = sys.modules.get("ipywidgets.widgets.widget")
    if module is None or not isinstance(model_id, str):
        return False  # no widget was ever made in this kernel
    instances = getattr(module, "_instances", None)
    if instances is None:  # ipywidgets 7
        instances = getattr(getattr(module, "Widget", None), "widgets", {})
    return model_id in instances
