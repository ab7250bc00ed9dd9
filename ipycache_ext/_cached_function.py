"""A decorated function: turns a call into the engine's request, and presents the outcome.

The request and key of a call are ``_call_keys``'; a miss is ``_computing``'s, the misses
of an ``async def`` are ``_async_calls``', and the refresh of a stale value
(``refresh_mode="background"``) is ``_background``'s. A hit adds nothing here beyond
asking the engine: it must cost a fraction of Streamlit's.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Concatenate, Generic, ParamSpec, TypeVar, cast, overload

from ._async_calls import AsyncFlights
from ._background import BackgroundRefresher
from ._call_keys import CallKeys
from ._computing import Computation, Function, Superseded, release_unused
from ._decorator_options import DecoratorOptions
from ._engine import CacheEngine, Outcome, Plan, Request, engine_for
from ._replay import ArgumentChanges, fetch_with_argument_replay, served, unwrap, with_argument_changes
from ._store import CacheStore, get_store

if TYPE_CHECKING:
    from ._decorators import _CacheDecorator

__all__ = ["BoundCachedFunction", "CachedFunction"]

P = ParamSpec("P")
Q = ParamSpec("Q")
R = TypeVar("R")
S = TypeVar("S")


class CachedFunction(Generic[P, R]):
    """A function whose results live in the cache store; call it as you would the function.

    ``f.clear()`` drops every entry of the function, ``f.clear(*args, **kwargs)`` the one
    for those arguments; a computation in progress then keeps its result to itself. ``f.store``
    may name a store other than the decorator's.
    """

    store: CacheStore | None
    __wrapped__: Callable[P, R]

    def __init__(self, func: Callable[P, R], options: DecoratorOptions, decorator: _CacheDecorator) -> None:
        functools.update_wrapper(self, func)
        self._func = func
        self._options = options
        self._decorator = decorator
        self.store = None
        self._is_async = inspect.iscoroutinefunction(func)
        qualname = getattr(func, "__qualname__", None) or type(func).__qualname__
        self._name = qualname.rsplit("<locals>.", 1)[-1]  # as people would write it
        self._identity = f"{getattr(func, '__module__', None)}.{qualname}"
        self._keys = CallKeys(func, options, self._name, self._identity, decorator.name)
        self._last_engine: CacheEngine | None = None  # engine_for(store) of the last call
        self._generations = decorator.function_generations(self._identity)
        self._miss = Function(func, options, self._name, self._generations)
        self._flights = AsyncFlights()
        self._background = (
            BackgroundRefresher(self._name, options.ttl)
            if options.refresh_mode == "background" and options.ttl is not None
            else None
        )
        if self._is_async:
            _mark_coroutine_function(self)

    def __repr__(self) -> str:
        return f"<{self._decorator.name} {self._identity}>"

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        __tracebackhide__ = True
        if self._is_async:
            return cast(R, self._call_async(args, kwargs))
        engine = self._engine()
        request, plan = self._keys.plan(engine, args, kwargs)
        miss = Computation(self._miss, engine.store, plan.key, args, kwargs)
        compute = functools.partial(self._compute_recording, engine, request, plan, miss)
        try:  # (fetch_with_argument_replay, inlined: this is the hit path)
            outcome = engine.fetch(request, plan, compute, prepare=miss.keep)
        except Superseded as cleared:  # cleared while it computed: the caller's, not the store's
            return cast(R, unwrap(engine.load(request.kind, cleared.stored)))
        if isinstance(outcome.value, ArgumentChanges):  # a hit changes the caller's arguments too
            outcome = served(outcome, request, self._keys.var_keyword)
        if outcome.computed:
            miss.stored(outcome.entry)
            if self._background is not None:
                self._background.forget(plan.key)
            self._say_if_it_changes_what_it_reads(engine, request)
        elif self._background is not None and outcome.entry is not None:
            self._background.served(engine.store, outcome.entry, functools.partial(
                self._refresh, engine, request, plan, args, kwargs))  # fmt: skip
        return cast(R, outcome.value)

    def _compute_recording(self, engine: CacheEngine, request: Request, plan: Plan, miss: Computation) -> Any:
        """A miss: the value, with the arguments it changed in place (a hit replays them)."""
        __tracebackhide__ = True
        return with_argument_changes(engine, request, plan, miss.compute(), self._unreplayable)

    def clear(self, *args: Any, **kwargs: Any) -> None:
        """Drop this function's entries; with arguments, only the entry for those arguments."""
        engine = self._engine()
        if args or kwargs:
            key = self._keys.plan(engine, args, kwargs)[1].key
            self._generations.bump(key)
            engine.store.delete(key)
        else:
            self._generations.bump()
            group = self._keys.group
            engine.store.delete_where(lambda entry: entry.group == group, "cleared")

    @overload
    def __get__(self, instance: None, owner: type | None = None) -> CachedFunction[P, R]: ...
    @overload
    def __get__(
        self: CachedFunction[Concatenate[S, Q], R], instance: S, owner: type | None = None
    ) -> BoundCachedFunction[Q, R]: ...
    def __get__(self, instance: Any, owner: type | None = None) -> Any:
        """Methods: ``obj.f(x)`` is ``f(obj, x)``, and ``obj.f.clear(x)`` clears that entry."""
        return self if instance is None else BoundCachedFunction(self, instance)

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickle (and so hash, when another cached function reads this one) the function and
        its plain options; the hooks and ``hash_funcs`` are not carried along."""
        return (_unpickle, (), (self._func, self._options.plain()))

    def __setstate__(self, state: tuple[Any, DecoratorOptions]) -> None:
        from ._decorators import cache_data, cache_resource

        func, options = state
        decorator = cache_data if options.kind == "data" else cache_resource
        self.__init__(func, options, decorator)  # type: ignore[misc]

    # ------------------------------------------------------------------ requests
    def _engine(self) -> CacheEngine:
        # `is None`, never `or`: a store with no entries is falsy (it has a length)
        store = self.store
        if store is None:
            store = self._decorator.store
            if store is None:
                store = get_store()
        last = self._last_engine
        if last is not None and last.store is store:
            return last
        self._last_engine = engine = engine_for(store)
        return engine

    # ------------------------------------------------------------------ computing
    def _computation(self, engine: CacheEngine, plan: Plan, args: tuple[Any, ...], kwargs: dict[str, Any],
                     *, background: bool = False) -> Computation:  # fmt: skip
        return Computation(self._miss, engine.store, plan.key, args, kwargs, background)

    def _refresh(self, engine: CacheEngine, request: Request, plan: Plan, args: tuple[Any, ...],
                 kwargs: dict[str, Any]) -> Outcome | None:  # fmt: skip
        """Compute a stale entry again (on the background thread); it replaces the old one."""
        miss = self._computation(engine, plan, args, kwargs, background=True)
        try:
            outcome = fetch_with_argument_replay(
                engine, request, plan, miss.compute, refresh=True, prepare=miss.keep,
                var_keyword=self._keys.var_keyword,
            )  # fmt: skip
        except Superseded:
            return None  # cleared, evicted or expired meanwhile: it stays gone
        miss.stored(outcome.entry)
        return outcome

    def _say_if_it_changes_what_it_reads(self, engine: CacheEngine, request: Request) -> None:
        names = self._keys.changed_by_its_run(engine, request)
        if names:
            shown = ", ".join(f"`{n}`" for n in names)
            engine.warn_once(
                request.origin,
                "self-changing",
                f"{self._name}() changes {shown}, which it also reads, on every call, so it can never "
                f"be served from the cache. Pass it as a parameter named `_{names[0]}` (left out of "
                "the key), or change a copy of it.",
            )

    def _unreplayable(self, names: list[str]) -> None:
        """A cache_resource function changed arguments in place: a hit can't do that again."""
        if self._last_engine is None:
            return
        changed = ", ".join(f"`{name}`" for name in names)
        self._last_engine.warn_once(
            self._identity,
            "unreplayable",
            f"{self._name}() changed its argument {changed} in place; @cache_resource keeps only the "
            "returned object, so a hit leaves the argument as it is. Return what it computes instead "
            "(or change a copy), or use @cache_data, whose hits change the caller's arguments too.",
        )

    def refreshing(self, *args: Any, **kwargs: Any) -> bool:
        """Whether the entry for these arguments is being refreshed in the background now."""
        if self._background is None:
            return False
        return self._background.refreshing(self._keys.plan(self._engine(), args, kwargs)[1].key)

    # ------------------------------------------------------------------ async
    async def _call_async(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """Serve a hit at once; otherwise await the one computation of this key (any loop)."""
        __tracebackhide__ = True
        engine = self._engine()
        request, plan = self._keys.plan(engine, args, kwargs)
        start = functools.partial(self._compute_async, engine, request, plan, args, kwargs)
        return await self._flights.fetch(engine, request, plan, start, self._keys.var_keyword)

    async def _compute_async(
        self, engine: CacheEngine, request: Request, plan: Plan, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Outcome:
        __tracebackhide__ = True
        served = engine.peek(request, plan)  # stored since the caller looked
        if served is not None:
            return served
        miss = self._computation(engine, plan, args, kwargs)
        # what the coroutine reads is recorded while it is awaited, in this task's context
        # (other tasks keep theirs); process-wide state is not (other tasks draw and chdir too)
        with engine.recording(request, process_state=False) as recording:
            value = await miss.compute_async()
        kept = with_argument_changes(engine, request, plan, value, self._unreplayable)
        recorded = await asyncio.to_thread(recording.dependencies)  # hashes the files it read
        try:
            outcome = engine.fetch(
                request, plan, lambda: kept, prepare=miss.keep, copy_computed=False, recorded=recorded
            )
        except Superseded as cleared:  # cleared while it computed: for the awaiters only
            return Outcome(value, False, True, None, plan.key, None, cleared.stored)
        if outcome.computed:
            miss.stored(outcome.entry)
        if not outcome.computed and unwrap(outcome.value) is not value:
            release_unused(self._options, value, request.label)  # another decoration stored first
        return outcome


class BoundCachedFunction(Generic[P, R]):
    """A cached method bound to its instance: ``obj.f(x)`` calls ``f(obj, x)``."""

    __slots__ = ("_cached", "_instance")

    def __init__(self, cached: CachedFunction[..., R], instance: Any) -> None:
        self._cached = cached
        self._instance = instance

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        __tracebackhide__ = True
        return self._cached(self._instance, *args, **kwargs)

    def __repr__(self) -> str:
        return f"<bound {self._cached!r} of {self._instance!r}>"

    def clear(self, *args: Any, **kwargs: Any) -> None:
        """Without arguments, drop every entry of the method (as Streamlit does)."""
        if args or kwargs:
            self._cached.clear(self._instance, *args, **kwargs)
        else:
            self._cached.clear()


def _unpickle() -> CachedFunction[..., Any]:
    return CachedFunction.__new__(CachedFunction)


def _mark_coroutine_function(obj: Any) -> None:
    """Let ``inspect``/``asyncio.iscoroutinefunction`` see that calling ``obj`` gives a coroutine."""
    mark = getattr(inspect, "markcoroutinefunction", None)  # Python 3.12+
    if mark is not None:
        mark(obj)
    else:
        obj._is_coroutine = getattr(asyncio.coroutines, "_is_coroutine", None)
