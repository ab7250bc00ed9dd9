"""One miss of a decorated function: run it, check what it returned, decide what the store keeps.

Split from ``CachedFunction`` because a miss has rules a hit never meets: the spinner, a
sync function that hands back an awaitable (an error, nothing cached), a result that
must pickle, a ``clear()`` that landed while it ran (its result is not written: the
caller gets it, the store doesn't), and the function's byte budget (``max_size``).
"""

from __future__ import annotations

import contextvars
import inspect
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any

from ._decorator_options import DecoratorOptions
from ._errors import CacheError, UnserializableResultError, warn
from ._serialize import serialize
from ._spinner import Spinner
from ._store import CacheStore, EntryInfo

__all__ = [
    "AwaitableResultError",
    "Computation",
    "Function",
    "Generations",
    "Superseded",
    "enforce_max_size",
    "release_unused",
]

Token = tuple[int, int, int]

# Inside a cached function's computation, cached functions it calls show no spinner of their
# own: the outer one is showing already (Streamlit's rule, its issue 9951).
_computing: contextvars.ContextVar[bool] = contextvars.ContextVar("ipycache_computing", default=False)


class AwaitableResultError(CacheError, TypeError):
    """A function that is not ``async def`` returned something to await: there is no value to cache."""

    def __init__(self, decorator: str, name: str, value: object) -> None:
        self.value = value  # untouched: not awaited, not closed; it is still the caller's
        super().__init__(
            f"{name}() returned {type(value).__module__}.{type(value).__qualname__}, an awaitable, "
            f"so @{decorator} has nothing to cache (the value comes only once it is awaited). "
            f"Make {name} an `async def` function and `await` inside it; @{decorator} then caches "
            "the awaited result. Nothing was cached."
        )


class Superseded(Exception):
    """The function's entries were cleared while it computed: ``stored`` is handed out, not kept."""

    def __init__(self, stored: Any) -> None:
        super().__init__("cleared while computing")
        self.stored = stored


class Generations:
    """Counts clears, so that a computation started before one does not write its result after it.

    A token is taken when the computation starts; the result is kept only if no clear of
    the decorator's kind (``parent``), of the function, or of that key came in between.
    """

    def __init__(self, parent: Generations | None = None) -> None:
        self._parent = parent
        self._lock = threading.Lock()
        self._count = 0
        self._keys: dict[str, int] = {}

    def token(self, key: str) -> Token:
        parent = 0 if self._parent is None else self._parent._count
        return (parent, self._count, self._keys.get(key, 0))

    def bump(self, key: str | None = None) -> None:
        with self._lock:
            if key is None:
                self._count += 1
                self._keys.clear()  # older per-key counts are covered by the new count
            else:
                self._keys[key] = self._keys.get(key, 0) + 1


@dataclass(frozen=True)
class Function:
    """What every miss of one cached function shares: made once, when it is decorated."""

    func: Callable[..., Any]
    options: DecoratorOptions
    name: str
    generations: Generations


class Computation:
    """One miss of ``func(*args, **kwargs)`` for ``key``: ``compute`` then ``keep`` (engine's prepare).

    Made on every call, hits included (the engine takes ``compute``/``keep`` up front), so
    it only stores its arguments.
    """

    __slots__ = ("_args", "_background", "_function", "_kwargs", "_store", "key", "token")

    def __init__(  # noqa: PLR0917
        self,
        function: Function,
        store: CacheStore,
        key: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        background: bool = False,
    ) -> None:
        self._function, self._store, self.key, self._args, self._kwargs = function, store, key, args, kwargs
        self._background = background
        self.token: Token | None = None

    @property
    def _func(self) -> Callable[..., Any]:
        return self._function.func

    @property
    def _options(self) -> DecoratorOptions:
        return self._function.options

    @property
    def _name(self) -> str:
        return self._function.name

    @property
    def _generations(self) -> Generations:
        return self._function.generations

    @property
    def decorator(self) -> str:
        return "cache_data" if self._options.kind == "data" else "cache_resource"

    def start(self) -> None:
        """Take the clear-generation token: called when the computation starts."""
        self.token = self._generations.token(self.key)

    def compute(self) -> Any:
        """Run the function (the engine records what it reads); an awaitable result is an error."""
        __tracebackhide__ = True
        self.start()
        with self.spinner():
            inside = _computing.set(True)
            try:
                value = self._func(*self._args, **self._kwargs)
            finally:
                _computing.reset(inside)
        if inspect.isawaitable(value):
            raise AwaitableResultError(self.decorator, self._name, value)
        return value

    async def compute_async(self) -> Any:
        """Await the ``async def`` function; the engine is handed the value afterwards."""
        __tracebackhide__ = True
        self.start()
        with self.spinner():
            inside = _computing.set(True)
            try:
                return await self._func(*self._args, **self._kwargs)
            finally:
                _computing.reset(inside)

    def spinner(self) -> AbstractContextManager[object]:
        shown = self._options.show_spinner
        if shown is False or self._background or _computing.get():
            return nullcontext()
        text = shown if isinstance(shown, str) else f"Running {self._name}(...)"
        return Spinner(text, show_time=self._options.show_time)

    def current(self) -> bool:
        """No clear came in since the computation started."""
        return self.token is None or self.token == self._generations.token(self.key)

    def keep(self, value: Any) -> tuple[Any, int | None]:
        """What the store keeps: the object for a resource, its pickle for data.

        Raises ``Superseded`` (carrying that) instead when a clear came in meanwhile, or
        when a background refresh finds its entry gone (evicted, expired, deleted).
        """
        stored, size = self._prepare(value)
        if not self.current() or (self._background and self._store.get(self.key) is None):
            raise Superseded(stored)
        return stored, size

    def _prepare(self, value: Any) -> tuple[Any, int | None]:
        if self._options.kind == "resource":
            return value, None
        try:
            payload = serialize(value, f"the result of {self._name}()")
        except UnserializableResultError as exc:
            raise UnserializableResultError(
                exc.what,
                exc.reason,
                f"cache_data returns a copy of the result on every call, so it must pickle. "
                f"Decorate {self._name} with @cache_resource instead to keep and share the object "
                "itself (connections, models, clients), or return only data that pickles.",
            ) from exc.__cause__
        return payload, payload.nbytes

    def stored(self, entry: EntryInfo | None) -> None:
        """After the store kept the result: undo it if a clear slipped in, apply ``max_size``."""
        if entry is None:
            return
        if not self.current():  # the clear came between keep() and the store's write
            self._store.delete_where(lambda e: e.key == entry.key and e.created == entry.created, "cleared")
            return
        if self._options.max_size is not None:
            enforce_max_size(self._store, entry, self._options.max_size, self._name)


def enforce_max_size(store: CacheStore, kept: EntryInfo, max_size: int, name: str) -> int:
    """Evict the group's least recently used entries until its pickled bytes fit ``max_size``.

    The entry just kept always stays: alone larger than the budget, it is kept, every
    other entry of the function goes, and a warning says so (as Streamlit does). Returns
    how many entries were evicted.
    """
    group = [e for e in store.entries() if e.group == kept.group and e.size is not None]
    total = sum(e.size or 0 for e in group)
    if total <= max_size:
        return 0
    doomed: set[str] = set()
    for entry in sorted(group, key=lambda e: e.last_used):
        if total <= max_size:
            break
        if entry.key != kept.key:
            doomed.add(entry.key)
            total -= entry.size or 0
    if (kept.size or 0) > max_size:
        warn(
            f"the result of {name}() takes {kept.size} bytes, more than its max_size of {max_size} "
            "bytes: it is kept alone (the function's other entries were dropped) until the next "
            "result replaces it. Raise max_size to keep more.",
        )
    return store.delete_where(lambda e: e.key in doomed, "evicted") if doomed else 0


def release_unused(options: DecoratorOptions, value: Any, label: str) -> None:
    """Free a resource nobody got: another computation of its key was stored first.

    A hook that raises is reported, not raised, as the store does with its own releases.
    """
    if options.on_release is None:
        return
    try:
        options.on_release(value)
    except Exception as exc:
        warn(
            f"on_release for {label!r} raised {type(exc).__name__}: {exc}",
        )
