"""``@cache_data`` and ``@cache_resource``: Streamlit's caching decorators on the kernel-wide store.

Porting Streamlit code is a one-line change: ``from ipycache_ext import cache_data,
cache_resource``. Entries land in the same store as the cell magics' (``%cache_info`` and
the panel list them), through the same engine, so both front ends key, explain, keep and
serve alike. This module only turns a call into a request: the function's identity and
code digest (with what it reads), its arguments bound to the signature with defaults
applied (``f(1)``, ``f(x=1)`` and ``f(1, 2)`` with default 2 are one entry), and options.

A hit must cost a fraction of Streamlit's (~35 µs): the function's digest is reused while
everything it reads is still in place (``FunctionDigest``), and the plans of calls whose
arguments are plain scalars are remembered.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import inspect
import reprlib
import threading
import warnings
from collections.abc import Callable, Hashable, Mapping
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Concatenate, Generic, ParamSpec, TypeVar, cast, overload

from ._engine import CacheEngine, Outcome, Plan, Request, engine_for
from ._errors import UnhashableInputError, UnserializableResultError
from ._funcdigest import FunctionDigest, type_name
from ._hashing import HashFuncs, Unhashable
from ._persist import open_if_present
from ._serialize import serialize
from ._spinner import Spinner
from ._store import CacheStore, Kind, get_store
from ._ttl import parse_ttl

__all__ = ["BoundCachedFunction", "CachedFunction", "cache_data", "cache_resource"]

P = ParamSpec("P")
Q = ParamSpec("Q")
R = TypeVar("R")
S = TypeVar("S")

TTL = float | int | str | timedelta | None
Persist = bool | str | None

_KEY_MEMORY = 256  # remembered plans per function (calls with plain scalar arguments)
_PLAIN = frozenset({int, str, bytes, bool, type(None)})  # never 1.0: -0.0 == 0.0 but hash apart
_IMMUTABLE = frozenset({int, float, complex, str, bytes, bool, type(None), range})


@dataclass(frozen=True)
class _Options:
    kind: Kind
    ttl: float | None
    max_entries: int | None
    show_spinner: bool | str
    validate: Callable[[Any], Any] | None
    on_release: Callable[[Any], Any] | None
    hash_funcs: HashFuncs | None
    persist: bool | str = False


class CachedFunction(Generic[P, R]):
    """A function whose results live in the cache store; call it as you would the function.

    ``f.clear()`` drops every entry of the function, ``f.clear(*args, **kwargs)`` the one
    for those arguments. ``f.store`` may name a store other than the decorator's.
    """

    store: CacheStore | None
    __wrapped__: Callable[P, R]

    def __init__(self, func: Callable[P, R], options: _Options, decorator: _CacheDecorator) -> None:
        functools.update_wrapper(self, func)
        self._func = func
        self._options = options
        self._decorator = decorator
        self.store = None
        self._is_async = inspect.iscoroutinefunction(func)
        self._signature = inspect.signature(func)
        qualname = getattr(func, "__qualname__", None) or type(func).__qualname__
        self._name = qualname.rsplit("<locals>.", 1)[-1]  # as people would write it
        self._identity = f"{getattr(func, '__module__', None)}.{qualname}"
        self._code = FunctionDigest(func, options.hash_funcs)
        self._plans: dict[Hashable, tuple[Request, Plan]] = {}
        self._tasks: dict[tuple[asyncio.AbstractEventLoop, str], asyncio.Task[Outcome]] = {}
        self._tasks_lock = threading.Lock()
        self._base = Request(
            kind=options.kind,
            origin=self._identity,
            label=self._name,
            code="",
            group=f"{options.kind}:{self._identity}",
            scope=self._identity,
            hash_funcs=options.hash_funcs,
            unhashable_argument=self._unhashable_argument,
            ttl=options.ttl,
            max_entries=options.max_entries,
            validate=options.validate,
            on_release=options.on_release,
            persist=options.persist,
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
        request, plan = self._plan(engine, args, kwargs)
        outcome = engine.fetch(request, plan, lambda: self._compute(args, kwargs), prepare=self._keep)
        return cast(R, outcome.value)

    def clear(self, *args: Any, **kwargs: Any) -> None:
        """Drop this function's entries; with arguments, only the entry for those arguments."""
        engine = self._engine()
        if args or kwargs:
            engine.store.delete(self._plan(engine, args, kwargs)[1].key)
        else:
            group = self._base.group
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
        options = self._options
        plain = (options.kind, options.ttl, options.max_entries, options.show_spinner)
        return (_unpickle, (), (self._func, plain))

    def __setstate__(self, state: tuple[Any, tuple[Any, ...]]) -> None:
        func, (kind, ttl, max_entries, show_spinner) = state
        decorator = cache_data if kind == "data" else cache_resource
        options = _Options(kind, ttl, max_entries, show_spinner, None, None, None)
        self.__init__(func, options, decorator)  # type: ignore[misc]

    # ------------------------------------------------------------------ requests
    def _engine(self) -> CacheEngine:
        # `is None`, never `or`: a store with no entries is falsy (it has a length)
        store = self.store if self.store is not None else self._decorator.store
        return engine_for(get_store() if store is None else store)

    def _plan(self, engine: CacheEngine, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Request, Plan]:
        """The request and key of a call; remembered for plain scalar arguments."""
        code = self._code.current(engine)
        arg_types = tuple(map(type, args))
        memo: Hashable = None
        if _PLAIN.issuperset(arg_types):
            if not kwargs:
                memo = (code, args, arg_types)
            else:
                kw_types = tuple(map(type, kwargs.values()))
                if _PLAIN.issuperset(kw_types):
                    memo = (code, args, arg_types, tuple(kwargs.items()), kw_types)
            if memo is not None:
                known = self._plans.get(memo)
                if known is not None and known[0].code == code:
                    return known
        bound = self._signature.bind(*args, **kwargs)
        bound.apply_defaults()
        request = dataclasses.replace(
            self._base,
            label=f"{self._name}({_preview(bound.arguments)})",
            code=code,
            arguments=_hashed_arguments(self._signature, bound.arguments),
        )
        plan = engine.plan(request)
        if self._code.by_identity:
            plan = dataclasses.replace(plan, by_identity=plan.by_identity + self._code.by_identity)
        if memo is not None:
            if len(self._plans) >= _KEY_MEMORY:
                self._plans.clear()
            self._plans[memo] = (request, plan)
        return request, plan

    def _unhashable_argument(self, name: str, value: Any, exc: Unhashable) -> UnhashableInputError:
        type_text = type_name(type(value))
        return UnhashableInputError(
            name,
            type(value),
            f"{exc.value_type.__qualname__}: {exc.reason}",
            f"{self._name}() takes it as parameter `{name}`. If it does not change the result, "
            f"rename the parameter to `_{name}` and it is left out of the key; otherwise say what "
            f"identifies it with @{self._decorator.name}(hash_funcs={{{type_text}: lambda value: ...}}).",
        )

    # ------------------------------------------------------------------ computing
    def _compute(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        __tracebackhide__ = True
        with self._spinner():
            return self._func(*args, **kwargs)

    def _spinner(self) -> AbstractContextManager[object]:
        shown = self._options.show_spinner
        if shown is False:
            return nullcontext()
        return Spinner(shown if isinstance(shown, str) else f"Running {self._name}(...)")

    def _keep(self, value: Any) -> tuple[Any, int | None]:
        """What the store keeps: the object itself for a resource, its pickle for data."""
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

    # ------------------------------------------------------------------ async
    async def _call_async(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """Serve a hit at once; otherwise await the one computation of this key in this loop.

        The store's single flight blocks a thread, which would block the event loop: so the
        coroutine runs as a task of the loop, shared by every awaiter of the key, and only
        its finished value is handed to the engine.
        """
        __tracebackhide__ = True
        engine = self._engine()
        request, plan = self._plan(engine, args, kwargs)
        served = engine.peek(request, plan)
        if served is not None:
            return served.value
        loop = asyncio.get_running_loop()
        flight = (loop, plan.key)
        with self._tasks_lock:
            task = self._tasks.get(flight)
            if task is None:
                task = loop.create_task(self._compute_async(engine, request, plan, args, kwargs))
                self._tasks[flight] = task
                task.add_done_callback(functools.partial(self._landed, flight))
        # shield: one awaiter cancelled must not cancel the computation the others wait for
        outcome = await asyncio.shield(task)
        return engine.load(request.kind, outcome.stored)  # data: a copy for every awaiter

    async def _compute_async(
        self, engine: CacheEngine, request: Request, plan: Plan, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Outcome:
        __tracebackhide__ = True
        with self._spinner():
            value = await cast(Callable[..., Any], self._func)(*args, **kwargs)
        outcome = engine.fetch(request, plan, lambda: value, prepare=self._keep, copy_computed=False)
        release = self._options.on_release
        if not outcome.computed and release is not None and outcome.value is not value:
            # Another loop stored its value first: ours belongs to no one, so free it; a hook
            # that raises is reported, not raised, as the store does with its own releases.
            try:
                release(value)
            except Exception as exc:
                warnings.warn(
                    f"on_release for {request.label!r} raised {type(exc).__name__}: {exc}",
                    RuntimeWarning,
                    stacklevel=2,
                )
        return outcome

    def _landed(self, flight: tuple[asyncio.AbstractEventLoop, str], task: asyncio.Task[Outcome]) -> None:
        with self._tasks_lock:
            if self._tasks.get(flight) is task:
                del self._tasks[flight]
        if not task.cancelled():
            task.exception()  # retrieved: no "never retrieved" warning when every awaiter left


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


def _hashed_arguments(signature: inspect.Signature, arguments: Mapping[str, Any]) -> dict[str, Any]:
    """The arguments that are part of the key: not ``_private`` ones, also inside ``**kwargs``."""
    hashed: dict[str, Any] = {}
    for name, value in arguments.items():
        if name.startswith("_"):
            continue
        parameter = signature.parameters.get(name)
        if parameter is not None and parameter.kind is inspect.Parameter.VAR_KEYWORD:
            value = {k: v for k, v in value.items() if not k.startswith("_")}
        hashed[name] = value
    return hashed


# ---------------------------------------------------------------------- small helpers
_repr = reprlib.Repr()
_repr.maxstring = 24
_repr.maxother = 24


def _preview(arguments: Mapping[str, Any]) -> str:
    """The arguments, short, for the entry's label: ``city='Paris', df=<DataFrame>``."""
    parts = []
    for name, value in arguments.items():
        if name.startswith("_") or name in ("self", "cls"):
            continue
        shown = _repr.repr(value) if type(value) in _IMMUTABLE else f"<{type(value).__name__}>"
        parts.append(f"{name}={shown}")
    text = ", ".join(parts)
    return text if len(text) <= 60 else text[:57] + "..."


# ---------------------------------------------------------------------- the decorators
def _check_options(
    name: str,
    *,
    ttl: TTL,
    max_entries: int | None,
    show_spinner: bool | str,
    hash_funcs: HashFuncs | None,
    hooks: Mapping[str, object],
) -> float | None:
    try:
        seconds = parse_ttl(ttl)
    except ValueError as exc:
        raise ValueError(f"{name}(ttl=...): {exc}") from None
    if max_entries is not None and (isinstance(max_entries, bool) or not isinstance(max_entries, int)):
        raise TypeError(f"{name}(max_entries=...) must be a positive integer or None, not {max_entries!r}")
    if max_entries is not None and max_entries <= 0:
        raise ValueError(f"{name}(max_entries=...) must be a positive integer or None, not {max_entries}")
    if not isinstance(show_spinner, (bool, str)):
        raise TypeError(
            f"{name}(show_spinner=...) must be True, False or the text to show, not {show_spinner!r}"
        )
    for hook, value in hooks.items():
        if value is not None and not callable(value):
            raise TypeError(f"{name}({hook}=...) must be a function of the cached value, not {value!r}")
    if hash_funcs is not None:
        if not isinstance(hash_funcs, Mapping):
            raise TypeError(f"{name}(hash_funcs=...) must be a dict {{type: function}}, not {hash_funcs!r}")
        for target, func in hash_funcs.items():
            if not isinstance(target, (type, str)) or not callable(func):
                raise TypeError(
                    f"{name}(hash_funcs=...): each item must map a type (or its qualified name, "
                    f"'module.Class') to a function of the value, not {target!r}: {func!r}"
                )
    return seconds


def _check_function(name: str, func: object) -> None:
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


class _CacheDecorator:
    """What ``cache_data`` and ``cache_resource`` share: their kind, store and ``clear``."""

    kind: Kind
    name: str

    def __init__(self) -> None:
        self.store: CacheStore | None = None  # None: get_store(); tests and embedders set one

    def __repr__(self) -> str:
        return f"<ipycache_ext.{self.name}>"

    def clear(self) -> None:
        """Drop every entry of this kind in the store (the cell magics' ones too, and on disk)."""
        store = get_store() if self.store is None else self.store
        if self.kind == "data":
            open_if_present(store)  # after a restart: persisted entries go too
        store.clear(self.kind)

    def _decorate(
        self, func: Callable[P, R] | None, options: _Options
    ) -> CachedFunction[P, R] | Callable[[Callable[P, R]], CachedFunction[P, R]]:
        def decorate(function: Callable[P, R]) -> CachedFunction[P, R]:
            _check_function(self.name, function)
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
        show_spinner: bool | str = True,
        persist: Persist = None,
        hash_funcs: HashFuncs | None = None,
    ) -> CachedFunction[P, R]: ...
    @overload
    def __call__(
        self,
        func: None = None,
        *,
        ttl: TTL = None,
        max_entries: int | None = None,
        show_spinner: bool | str = True,
        persist: Persist = None,
        hash_funcs: HashFuncs | None = None,
    ) -> Callable[[Callable[P, R]], CachedFunction[P, R]]: ...
    def __call__(
        self,
        func: Callable[P, R] | None = None,
        *,
        ttl: TTL = None,
        max_entries: int | None = None,
        show_spinner: bool | str = True,
        persist: Persist = None,
        hash_funcs: HashFuncs | None = None,
    ) -> CachedFunction[P, R] | Callable[[Callable[P, R]], CachedFunction[P, R]]:
        """Cache the function's results by its code and arguments; return a copy on every call.

        ``ttl``: seconds, a timedelta or '10m'/'1h'; ``max_entries``: keep this many results of
        the function (least recently used go); ``show_spinner``: False, or the text to show
        while a slow call computes; ``hash_funcs``: ``{type: function}`` whose result is
        hashed instead of an argument of that type (or a subclass).
        """
        seconds = _check_options(
            self.name, ttl=ttl, max_entries=max_entries, show_spinner=show_spinner,
            hash_funcs=hash_funcs, hooks={},
        )  # fmt: skip
        if persist not in (None, False, True, "disk"):
            raise ValueError(f"cache_data(persist=...) must be None, False, True or 'disk', not {persist!r}")
        on_disk = persist in (True, "disk")
        options = _Options("data", seconds, max_entries, show_spinner, None, None, hash_funcs, on_disk)
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
        validate: Callable[[R], Any] | None = None,
        on_release: Callable[[R], Any] | None = None,
        hash_funcs: HashFuncs | None = None,
    ) -> CachedFunction[P, R]: ...
    @overload
    def __call__(
        self,
        func: None = None,
        *,
        ttl: TTL = None,
        max_entries: int | None = None,
        show_spinner: bool | str = True,
        validate: Callable[[Any], Any] | None = None,
        on_release: Callable[[Any], Any] | None = None,
        hash_funcs: HashFuncs | None = None,
    ) -> Callable[[Callable[P, R]], CachedFunction[P, R]]: ...
    def __call__(
        self,
        func: Callable[P, R] | None = None,
        *,
        ttl: TTL = None,
        max_entries: int | None = None,
        show_spinner: bool | str = True,
        validate: Callable[[Any], Any] | None = None,
        on_release: Callable[[Any], Any] | None = None,
        hash_funcs: HashFuncs | None = None,
    ) -> CachedFunction[P, R] | Callable[[Callable[P, R]], CachedFunction[P, R]]:
        """Cache one object per arguments and hand the same one to every caller.

        Concurrent first calls compute it once. ``validate(value)`` runs on every hit: falsy
        or raising releases the value and computes it again. ``on_release(value)`` runs
        whenever a value leaves the cache: expiry, eviction, clear, validate, kernel exit.
        """
        seconds = _check_options(
            self.name, ttl=ttl, max_entries=max_entries, show_spinner=show_spinner,
            hash_funcs=hash_funcs, hooks={"validate": validate, "on_release": on_release},
        )  # fmt: skip
        options = _Options("resource", seconds, max_entries, show_spinner, validate, on_release, hash_funcs)
        return self._decorate(func, options)


cache_data = CacheDataDecorator()
cache_resource = CacheResourceDecorator()
