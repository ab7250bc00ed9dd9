"""Which computation is recording, and what it has been seen to touch so far.

A recording is scoped by a context variable, not a global: the audit hook and the reader
wrappers run in every thread, but only code running in the recording's own context (the
computation, and asyncio tasks it creates, which copy the context) finds an active
``Observations``. Threads started inside the computation start with an empty context and
are not recorded (documented). ``LIVE`` counts open recordings in any thread, so the hook
returns after one list lookup while nothing records.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import site
import stat
import sys
import sysconfig
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

StatKey = tuple[int, int, int]  # size, mtime_ns, ctime_ns

LIVE = [0]  # open recordings, all threads: the fast "nothing to do" test of every hook
_live_lock = threading.Lock()
CURRENT: contextvars.ContextVar[Observations | None] = contextvars.ContextVar(
    "ipycache_ext_recording", default=None
)


@dataclass
class Observations:
    """The raw facts of one recording; turned into dependency records when it ends."""

    cwd: str  # the working directory when the computation started
    parent: Observations | None = None
    reads: dict[str, tuple[str, StatKey | None]] = field(default_factory=dict)  # path -> (role, stat)
    written: set[str] = field(default_factory=set)  # outputs: opened for writing, removed, renamed
    listings: dict[str, None] = field(default_factory=dict)
    globs: dict[tuple[Any, ...], None] = field(default_factory=dict)
    patterns: dict[str, None] = field(default_factory=dict)  # globs whose matches are read too
    trees: dict[str, None] = field(default_factory=dict)  # directories read whole (a dataset)
    env_read: dict[str, str | None] = field(default_factory=dict)  # value at first read
    env_written: dict[str, str | None] = field(default_factory=dict)  # value at the end (None: unset)
    rng_before: dict[str, Any] = field(default_factory=dict)  # rng name -> raw state at the start
    rng_decided: set[str] = field(default_factory=set)  # a seed/setstate call has been judged
    rng_seeded: set[str] = field(default_factory=set)  # ...and came before any draw
    noted: list[dict[str, Any]] = field(default_factory=list)  # records of nested hits
    relative: bool = False  # some path was resolved against the working directory
    errors: list[str] = field(default_factory=list)  # reads that could not be noted
    quiet: int = 0  # inside a glob: its own directory scans are not listings

    def note_read(self, path: Any, role: str = "read", cwd: str | None = None) -> None:
        resolved = self.resolve(path, cwd)
        if resolved is None or resolved in self.reads or ignored(resolved):
            return
        self.reads[resolved] = (role, stat_key(resolved))

    def note_write(self, path: Any, cwd: str | None = None) -> None:
        resolved = self.resolve(path, cwd)
        if resolved is not None:
            self.written.add(resolved)

    def note_listing(self, path: Any) -> None:
        if self.quiet:
            return
        resolved = self.resolve("." if path is None else path)
        if resolved is not None and not ignored(resolved):
            self.listings.setdefault(resolved)

    def note_env(self, name: str, value: str | None) -> None:
        if name not in self.env_written and name not in self.env_read:
            self.env_read[name] = value

    def resolve(self, path: Any, cwd: str | None = None) -> str | None:
        """An absolute path, against the working directory *now* (so ``%cd`` is a change)."""
        if isinstance(path, int):
            return None  # a file descriptor: whatever opened it was seen (or not) then
        text = os.fsdecode(os.fspath(path))
        if not text:
            return None
        if not os.path.isabs(text):
            self.relative = True
            text = os.path.join(cwd or os.getcwd(), text)
        return os.path.normpath(text)

    def absorb(self, child: Observations) -> None:
        """A nested recording ended: what it read, this computation read too."""
        for path, seen in child.reads.items():
            self.reads.setdefault(path, seen)
        self.written |= child.written
        for name in ("listings", "globs", "patterns", "trees"):
            getattr(self, name).update(getattr(child, name))
        for env, value in child.env_read.items():
            self.note_env(env, value)
        self.env_written.update(child.env_written)
        self.noted.extend(child.noted)
        self.relative = self.relative or child.relative
        self.errors.extend(child.errors)


def current() -> Observations | None:
    return CURRENT.get() if LIVE[0] else None


def begin(observations: Observations) -> contextvars.Token[Observations | None]:
    with _live_lock:
        LIVE[0] += 1
    return CURRENT.set(observations)


def end(token: contextvars.Token[Observations | None], observations: Observations) -> None:
    try:
        CURRENT.reset(token)
    except ValueError:  # ended in another context than it began (a thread hop): unwind this one
        if CURRENT.get() is observations:
            CURRENT.set(observations.parent)
    finally:
        with _live_lock:
            LIVE[0] -= 1


@contextmanager
def suspended() -> Iterator[None]:
    """Our own reads (hashing a file, re-running a glob) are not the computation's."""
    token = CURRENT.set(None)
    try:
        yield
    finally:
        CURRENT.reset(token)


def stat_key(path: str) -> StatKey | None:
    """Size, mtime_ns and ctime_ns of a regular file; None when there is none (or not a file)."""
    try:
        st = os.stat(path)
    except (OSError, ValueError):
        return None
    if not stat.S_ISREG(st.st_mode):
        return None
    return (st.st_size, st.st_mtime_ns, st.st_ctime_ns if os.name == "posix" else 0)


def _ignored_roots() -> tuple[str, ...]:
    """Installed software (keyed by version elsewhere), the time zone database, kernel pseudo-files."""
    roots = {"/proc", "/sys", "/dev"}
    paths = sysconfig.get_paths()
    roots.update(paths[name] for name in ("stdlib", "platstdlib", "purelib", "platlib") if name in paths)
    with contextlib.suppress(AttributeError):  # an old virtualenv's site.py has none
        roots.update(site.getsitepackages())
    user_site = getattr(site, "getusersitepackages", lambda: None)()
    if isinstance(user_site, str):
        roots.add(user_site)
    if sys.prefix != sys.base_prefix:
        roots.add(sys.prefix)
    try:  # the time zone database: system software, like the interpreter's own files
        import zoneinfo

        roots.update(zoneinfo.TZPATH)
    except ImportError:  # pragma: no cover - a Python built without it
        pass
    return tuple(os.path.normpath(root) + os.sep for root in roots if root)


_IGNORED = _ignored_roots()


def ignored(path: str) -> bool:
    return path.startswith(_IGNORED) or f"{os.sep}__pycache__{os.sep}" in path
