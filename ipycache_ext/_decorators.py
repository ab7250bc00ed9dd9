"""``@cache_data`` and ``@cache_resource``: Streamlit's caching decorators on the kernel-wide store.

Porting Streamlit code is a one-line change: ``from ipycache_ext import cache_data,
cache_resource``. Entries land in the same store as the cell magics' (``%cache_info`` and
the panel list them), through the same engine, so both front ends key, explain, keep and
serve alike. The signatures are Streamlit 1.67's; this module checks the options
(``_decorator_options``) and wraps the function in a ``CachedFunction``.
"""

from __future__ import annotations

import inspect
import threading
from collections.abc import Callable, Sequence
from typing import Any, ParamSpec, TypeVar, overload

from ._cached_function import BoundCachedFunction, CachedFunction
from ._computing import AwaitableResultError, Generations
from ._decorator_options import TTL, DecoratorOptions, Persist, RefreshMode, Scope, check_options
from ._hashing import HashFuncs
from ._persist import open_if_present
from ._store import CacheStore, Kind, get_store

__all__ = ["AwaitableResultError", "BoundCachedFunction", "CachedFunction", "cache_data", "cache_resource"]

P = ParamSpec("P")
R = TypeVar("R")


# ---------------------------------------------------------------------- the decorators
def _check_function(name: str, func: object, options: DecoratorOptions) -> None:
    if not callable(func):
        raise TypeError(
            f"{name} takes the function to cache, and options by keyword only: "
            f"@{name} or @{name}(ttl='1h'), not {name}({func!r})"
        )
    if inspect.isgeneratorfunction(func) or inspect.isasyncgenfunction(func):
        raise TypeError(
            f"{name} can't cache a generator function ({func!r}): a generator runs once. "
            "Return a list instead."
        )
    if options.refresh_mode == "background" and inspect.iscoroutinefunction(func):
        raise ValueError(
            f"{name}(refresh_mode='background') can't refresh an async def function "
            f"({getattr(func, '__qualname__', func)}): the refresh runs on a thread with no event "
            "loop. Use refresh_mode='foreground' (the default)."
        )


class _CacheDecorator:
    """What ``cache_data`` and ``cache_resource`` share: their kind, store and ``clear``."""

    kind: Kind
    name: str

    def __init__(self) -> None:
        self.store: CacheStore | None = None  # None: get_store(); tests and embedders set one
        self.generations = Generations()  # clear() while a function computes: it keeps its result
        self._functions: dict[str, Generations] = {}
        self._functions_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"<ipycache_ext.{self.name}>"

    def function_generations(self, identity: str) -> Generations:
        """The clears of one function, shared by every decoration of it (a cell run again)."""
        with self._functions_lock:
            found = self._functions.get(identity)
            if found is None:
                found = self._functions[identity] = Generations(self.generations)
            return found

    def clear(self) -> None:
        """Drop every entry of this kind in the store (the cell magics' ones too, and on disk)."""
        self.generations.bump()
        store = get_store() if self.store is None else self.store
        if self.kind == "data":
            open_if_present(store)  # after a restart: persisted entries go too
        store.clear(self.kind)

    def _decorate(
        self, func: Callable[P, R] | None, options: DecoratorOptions
    ) -> CachedFunction[P, R] | Callable[[Callable[P, R]], CachedFunction[P, R]]:
        def decorate(function: Callable[P, R]) -> CachedFunction[P, R]:
            _check_function(self.name, function, options)
            return CachedFunction(function, options, self)

        return decorate if func is None else decorate(func)


class CacheDataDecorator(_CacheDecorator):
    """``@cache_data``: cache what a function returns; every call gets a fresh copy."""

    kind: Kind = "data"
    name = "cache_data"

    @overload
    def __call__(
        self,
        func: Callable[P, R],
        *,
        ttl: TTL = None,
        max_entries: int | None = None,
        max_size: int | str | None = None,
        show_spinner: bool | str = True,
        show_time: bool = False,
        persist: Persist = None,
        hash_funcs: HashFuncs | None = None,
        scope: Scope = "global",
        refresh_mode: RefreshMode = "foreground",
        depends_on: Sequence[str] | str | None = None,
    ) -> CachedFunction[P, R]: ...
    @overload
    def __call__(
        self,
        func: None = None,
        *,
        ttl: TTL = None,
        max_entries: int | None = None,
        max_size: int | str | None = None,
        show_spinner: bool | str = True,
        show_time: bool = False,
        persist: Persist = None,
        hash_funcs: HashFuncs | None = None,
        scope: Scope = "global",
        refresh_mode: RefreshMode = "foreground",
        depends_on: Sequence[str] | str | None = None,
    ) -> Callable[[Callable[P, R]], CachedFunction[P, R]]: ...
    def __call__(
        self,
        func: Callable[P, R] | None = None,
        *,
        ttl: TTL = None,
        max_entries: int | None = None,
        max_size: int | str | None = None,
        show_spinner: bool | str = True,
        show_time: bool = False,
        persist: Persist = None,
        hash_funcs: HashFuncs | None = None,
        scope: Scope = "global",
        refresh_mode: RefreshMode = "foreground",
        depends_on: Sequence[str] | str | None = None,
    ) -> CachedFunction[P, R] | Callable[[Callable[P, R]], CachedFunction[P, R]]:
        """Cache the function's results by its code and arguments; return a copy on every call.

        ``ttl``: seconds, a timedelta or '10m'/'1h'; ``max_entries``: keep this many results of
        the function (least recently used go); ``max_size``: keep at most these many pickled
        bytes of them (an int or "500MB"); ``show_spinner``: False, or the text to show while a
        slow call computes (``show_time``: with the time it has taken); ``persist="disk"``: keep
        results across restarts; ``hash_funcs``: ``{type: function}`` whose result is hashed
        instead of an argument of that type (or a subclass); ``scope``: "global" or "session"
        (the same here: the kernel is the session); ``refresh_mode="background"``: past the ttl,
        serve the stale value at once and refresh it on a thread, until 2 x ttl;
        ``depends_on``: files (or globs) the result depends on that can't be seen being read
        (a subprocess's input): their content is checked on every call, as for files it opens.
        """
        options = check_options(
            self.name, "data", ttl=ttl, max_entries=max_entries, max_size=max_size,
            show_spinner=show_spinner, show_time=show_time, persist=persist, hash_funcs=hash_funcs,
            scope=scope, refresh_mode=refresh_mode, depends_on=depends_on,
        )  # fmt: skip
        return self._decorate(func, options)


class CacheResourceDecorator(_CacheDecorator):
    """``@cache_resource``: cache one shared object per arguments (connections, models, clients)."""

    kind: Kind = "resource"
    name = "cache_resource"

    @overload
    def __call__(
        self,
        func: Callable[P, R],
        *,
        ttl: TTL = None,
        max_entries: int | None = None,
        show_spinner: bool | str = True,
        show_time: bool = False,
        validate: Callable[[R], Any] | None = None,
        hash_funcs: HashFuncs | None = None,
        on_release: Callable[[R], Any] | None = None,
        scope: Scope = "global",
        refresh_mode: RefreshMode = "foreground",
    ) -> CachedFunction[P, R]: ...
    @overload
    def __call__(
        self,
        func: None = None,
        *,
        ttl: TTL = None,
        max_entries: int | None = None,
        show_spinner: bool | str = True,
        show_time: bool = False,
        validate: Callable[[Any], Any] | None = None,
        hash_funcs: HashFuncs | None = None,
        on_release: Callable[[Any], Any] | None = None,
        scope: Scope = "global",
        refresh_mode: RefreshMode = "foreground",
    ) -> Callable[[Callable[P, R]], CachedFunction[P, R]]: ...
    def __call__(
        self,
        func: Callable[P, R] | None = None,
        *,
        ttl: TTL = None,
        max_entries: int | None = None,
        show_spinner: bool | str = True,
        show_time: bool = False,
        validate: Callable[[Any], Any] | None = None,
        hash_funcs: HashFuncs | None = None,
        on_release: Callable[[Any], Any] | None = None,
        scope: Scope = "global",
        refresh_mode: RefreshMode = "foreground",
    ) -> CachedFunction[P, R] | Callable[[Callable[P, R]], CachedFunction[P, R]]:
        """Cache one object per arguments and hand the same one to every caller.

        Concurrent first calls compute it once. ``validate(value)`` runs on every hit: falsy
        or raising releases the value and computes it again. ``on_release(value)`` runs
        whenever a value leaves the cache: expiry, eviction, clear, validate, kernel exit.
        ``show_time``, ``scope`` and ``refresh_mode`` are as for ``cache_data``.
        """
        options = check_options(
            self.name, "resource", ttl=ttl, max_entries=max_entries, show_spinner=show_spinner,
            show_time=show_time, hash_funcs=hash_funcs, validate=validate, on_release=on_release,
            scope=scope, refresh_mode=refresh_mode,
        )  # fmt: skip
        return self._decorate(func, options)


cache_data = CacheDataDecorator()
cache_resource = CacheResourceDecorator()
