"""The audit hook: files opened, directories listed, databases connected, paths removed.

``sys.addaudithook`` can't be undone, so the hook is installed once, on the first
recording, and costs one call plus a list lookup per audit event from then on while nothing
records (``benchmarks/bench_deps.py`` measures it). Events raised by the import system
(FileFinder listing ``sys.path``, loaders reading ``.pyc`` files) are not the computation's
data: modules are keyed by the hashing layer.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Any

from ._state import LIVE, Observations, current

_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_TRUNC
_FRAMED = frozenset({"open", "os.listdir", "os.scandir"})  # may come from the import system


def _open(obs: Observations, args: tuple[Any, ...]) -> None:
    path, _mode, flags = args
    if flags & _WRITE_FLAGS:
        obs.note_write(path)
    else:
        obs.note_read(path)


def _listing(obs: Observations, args: tuple[Any, ...]) -> None:
    obs.note_listing(args[0])


def _database(obs: Observations, args: tuple[Any, ...]) -> None:
    """sqlite3.connect: the database file and its write-ahead log are inputs (or outputs)."""
    database = args[0]
    if isinstance(database, bytes):
        database = os.fsdecode(database)
    database = os.fspath(database)
    if not database or database == ":memory:":
        return
    if database.startswith("file:") and not os.path.exists(database):
        database = database[5:].split("?", 1)[0]  # a URI: file:shop.db?mode=ro
        if not database or database == ":memory:":
            return
    obs.note_read(database, "connect")
    obs.note_read(f"{database}-wal", "connect")


def _made_directory(obs: Observations, args: tuple[Any, ...]) -> None:
    """A directory the computation makes is its output (``makedirs(exist_ok=True)`` of one there isn't)."""
    if isinstance(args[0], int) or not os.path.isdir(args[0]):
        obs.note_write(args[0])


def _written(*positions: int) -> Callable[[Observations, tuple[Any, ...]], None]:
    def handler(obs: Observations, args: tuple[Any, ...]) -> None:
        for position in positions:
            obs.note_write(args[position])

    return handler


_HANDLERS: dict[str, Callable[[Observations, tuple[Any, ...]], None]] = {
    "open": _open,
    "os.listdir": _listing,
    "os.scandir": _listing,
    "sqlite3.connect": _database,
    "os.remove": _written(0),
    "os.rename": _written(0, 1),  # os.replace too
    "os.mkdir": _made_directory,
    "os.rmdir": _written(0),
    "os.truncate": _written(0),
    "os.utime": _written(0),
    "os.chmod": _written(0),
    "os.chown": _written(0),
    "os.link": _written(1),
    "os.symlink": _written(1),
}


def _hook(event: str, args: tuple[Any, ...], _live: list[int] = LIVE) -> None:
    if not _live[0]:
        return
    handler = _HANDLERS.get(event)
    if handler is None:
        return
    obs = current()
    if obs is None:
        return
    if event in _FRAMED and sys._getframe(1).f_code.co_filename.startswith(
        ("<frozen importlib", "<frozen zipimport")
    ):
        return
    try:
        handler(obs, args)
    except Exception as exc:  # never break the user's open(); the entry just won't be trusted
        obs.errors.append(f"{event}: {type(exc).__name__}: {exc}")


_installed = False


def install() -> None:
    global _installed
    if not _installed:
        _installed = True
        sys.addaudithook(_hook)
