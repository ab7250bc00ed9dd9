"""``@cache_data`` and ``@cache_resource``: Streamlit's caching decorators on the kernel-wide store.

Porting Streamlit code is a one-line change: ``from ipycache_ext import cache_data,
cache_resource``. Entries land in the same store as the cell magics' (``%cache_info`` and
the panel list them). Where Streamlit is weak we do better:

- the key is the function's name, its code *and the helpers and globals it reads* (hashed
  like a cell's inputs), plus the arguments bound to the signature with defaults applied:
  ``f(1)``, ``f(x=1)`` and ``f(1, 2)`` with default 2 are one entry;
- ``cache_data`` hands out a fresh copy on every call, the first one included;
- ``cache_resource`` computes once under concurrency, never caches a failure and passes
  every value it drops to ``on_release``;
- ``async def`` functions share one computation per key without blocking the event loop.

A hit must cost a fraction of Streamlit's (~35 µs), and the store's own bookkeeping takes
most of that budget, so the hot path skips re-hashing what cannot have changed: the
function's digest is reused while every object it reads is still the same immutable object
(``_FunctionDigest``), and the keys of calls whose arguments are plain scalars are remembered.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import reprlib
import threading
import types
import warnings
import weakref
from collections.abc import Callable, Hashable, Mapping
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Concatenate, Generic, NamedTuple, ParamSpec, TypeVar, cast, overload

from ._errors import UnhashableInputError, UnserializableResultError
from ._explain import KeyRecord, MissExplainer, describe_miss
from ._hashing import HashFuncs, Unhashable, _module_is_library, combine, digest, global_names
from ._persist import ensure_persistence, open_if_present
from ._serialize import SerializedValue, serialize
from ._spinner import Spinner
from ._store import CacheStore, Kind, Lookup, get_store
from ._ttl import parse_ttl

__all__ = ["BoundCachedFunction", "CachedFunction", "cache_data", "cache_resource"]

P = ParamSpec("P")
Q = ParamSpec("Q")
R = TypeVar("R")
S = TypeVar("S")

TTL = float | int | str | timedelta | None
Persist = bool | str | None

_KEY_MEMORY = 256  # remembered keys per function (calls with plain scalar arguments)
_PLAIN = frozenset({int, str, bytes, bool, type(None)})  # never 1.0: -0.0 == 0.0 but hash apart
_IMMUTABLE = frozenset({int, float, complex, str, bytes, bool, type(None), range})
_ABSENT = object()  # a global that is not defined
_NOT_FOUND = object()


class _Call(NamedTuple):
    """What one set of arguments maps to: the store key, a label, and the digest of each argument."""

    key: str
    label: str
    inputs: Mapping[str, str]


@dataclass(frozen=True)
class _Options:
    kind: Kind
    ttl: float | None
    max_entries: int | None
    show_spinner: bool | str
    validate: Callable[[Any], Any] | None
    on_release: Callable[[Any], Any] | None
    hash_funcs: HashFuncs | None
    persist: bool = False


class _NotCached(Exception):
    """Raised by the probe that asks the store for a hit without computing (async path)."""


def _not_cached() -> tuple[Any, int | None]:
    raise _NotCached


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
        self._group = f"{options.kind}:{self._identity}"
        self._code = _FunctionDigest(func, options.hash_funcs)
        self._calls: dict[Hashable, _Call] = {}
        self._immutables: weakref.WeakKeyDictionary[SerializedValue, Any] = weakref.WeakKeyDictionary()
        self._tasks: dict[tuple[asyncio.AbstractEventLoop, str], asyncio.Task[Lookup]] = {}
        self._tasks_lock = threading.Lock()
        self._explainer = MissExplainer()
        self._reasons = threading.local()  # the reason of the miss computing on this thread
        every = {
            "kind": options.kind,
            "group": self._group,
            "ttl": options.ttl,
            "max_entries": options.max_entries,
            "on_release": options.on_release,
            "validate": options.validate,
            "persist": options.persist or None,
            "miss_reason": self._take_reason,
        }
        # Only the options that are set: every keyword passed costs on the hot path.
        self._store_options: dict[str, Any] = {k: v for k, v in every.items() if v is not None}
        if self._is_async:
            _mark_coroutine_function(self)

    def __repr__(self) -> str:
        return f"<{self._decorator.name} {self._identity}>"

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        __tracebackhide__ = True
        if self._is_async:
            return cast(R, self._call_async(args, kwargs))
        call = self._prepare(args, kwargs)
        store = self._resolve_store()
        lookup = store.get_or_create(
            call.key,
            lambda: self._create(args, kwargs, call),
            label=call.label,
            inputs=call.inputs,
            **self._store_options,
        )
        try:
            return cast(R, self._result(lookup))
        except Exception as exc:  # a stored value that no longer loads (its class moved, say)
            if self._options.kind != "data" or not lookup.hit:
                raise
            _dropped_unloadable(store, call.key, call.label, exc)
            lookup = store.get_or_create(
                call.key,
                lambda: self._create(args, kwargs, call),
                label=call.label,
                inputs=call.inputs,
                **self._store_options,
            )
            return cast(R, self._result(lookup))

    def clear(self, *args: Any, **kwargs: Any) -> None:
        """Drop this function's entries; with arguments, only the entry for those arguments."""
        store = self._resolve_store()
        if args or kwargs:
            store.delete(self._prepare(args, kwargs).key)
        else:
            store.delete_where(lambda entry: entry.group == self._group, "cleared")

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

    # ------------------------------------------------------------------ keys
    def _prepare(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> _Call:
        """The key, label and argument digests of a call; remembered for plain scalar arguments."""
        code = self._code.current()
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
                known = self._calls.get(memo)
                if known is not None:
                    return known
        call = self._build(code, args, kwargs)
        if memo is not None:
            if len(self._calls) >= _KEY_MEMORY:
                self._calls.clear()
            self._calls[memo] = call
        return call

    def _build(self, code: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> _Call:
        bound = self._signature.bind(*args, **kwargs)
        bound.apply_defaults()
        inputs: dict[str, str] = {}
        for name, value in bound.arguments.items():
            if name.startswith("_"):
                continue
            try:
                inputs[name] = digest(value, hash_funcs=self._options.hash_funcs)
            except Unhashable as exc:
                raise self._unhashable_argument(name, value, exc) from None
        key = combine(
            [
                ("kind", self._options.kind),
                ("function", self._identity),
                ("code", code),
                *((f"arg:{name}", part) for name, part in inputs.items()),
            ]
        )
        return _Call(key, f"{self._name}({_preview(bound.arguments)})", inputs)

    def _unhashable_argument(self, name: str, value: Any, exc: Unhashable) -> UnhashableInputError:
        type_name = _type_name(type(value))
        return UnhashableInputError(
            name,
            type(value),
            f"{exc.value_type.__qualname__}: {exc.reason}",
            f"If it does not change the result, rename the parameter to `_{name}` and it is left "
            f"out of the key; otherwise say what identifies it with "
            f"@{self._decorator.name}(hash_funcs={{{type_name}: lambda value: ...}}).",
        )

    # ------------------------------------------------------------------ computing
    def _resolve_store(self) -> CacheStore:
        # `is None`, never `or`: a store with no entries is falsy (it has a length)
        store = self.store if self.store is not None else self._decorator.store
        store = get_store() if store is None else store
        if self._options.persist and store.persistence is None:
            ensure_persistence(store)  # on first need: creates the per-user directory and key
        return store

    def _create(self, args: tuple[Any, ...], kwargs: dict[str, Any], call: _Call) -> tuple[Any, int | None]:
        __tracebackhide__ = True
        self._explain(call)
        with self._spinner():
            value = self._func(*args, **kwargs)
        return self._prepared(value)

    def _explain(self, call: _Call) -> None:
        """Why this call computes, next to the last call that did (for %cache_info --explain)."""
        record = KeyRecord(call.key, self._code.current(), call.inputs)
        previous = self._explainer.remember("last", record)
        removed = self._resolve_store().removal_reason(previous.key) if previous else None
        self._reasons.value = describe_miss(previous, record, removed)

    def _take_reason(self) -> str | None:
        return getattr(self._reasons, "value", None)

    def _spinner(self) -> AbstractContextManager[object]:
        shown = self._options.show_spinner
        if shown is False:
            return nullcontext()
        return Spinner(shown if isinstance(shown, str) else f"Running {self._name}(...)")

    def _prepared(self, value: Any) -> tuple[Any, int | None]:
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

    def _result(self, lookup: Lookup) -> Any:
        """What the caller gets: the resource itself, or a fresh copy of the data.

        Immutable results (numbers, strings, tuples of them) can't be corrupted by the
        caller, so their one unpickled copy is reused while the entry lives.
        """
        value = lookup.value
        if self._options.kind == "resource":
            return value
        known = self._immutables.get(value, _NOT_FOUND)
        if known is not _NOT_FOUND:
            return known
        loaded = value.load()
        if _is_immutable(loaded):
            self._immutables[value] = loaded
        return loaded

    # ------------------------------------------------------------------ async
    async def _call_async(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """Serve a hit at once; otherwise await the one computation of this key in this loop.

        The store's single flight blocks a thread, which would block the event loop: so the
        coroutine runs as a task of the loop, shared by every awaiter of the key, and only
        its finished value is handed to the store.
        """
        __tracebackhide__ = True
        call = self._prepare(args, kwargs)
        store = self._resolve_store()
        if store.get(call.key) is not None:
            try:
                lookup = store.get_or_create(
                    call.key, _not_cached, label=call.label, inputs=call.inputs, **self._store_options
                )
                return self._result(lookup)
            except _NotCached:  # removed meanwhile, or validate said no: compute it
                pass
        loop = asyncio.get_running_loop()
        flight = (loop, call.key)
        with self._tasks_lock:
            task = self._tasks.get(flight)
            if task is None:
                task = loop.create_task(self._compute_async(store, call, args, kwargs))
                self._tasks[flight] = task
                task.add_done_callback(functools.partial(self._landed, flight))
        # shield: one awaiter cancelled must not cancel the computation the others wait for
        return self._result(await asyncio.shield(task))

    async def _compute_async(
        self, store: CacheStore, call: _Call, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Lookup:
        __tracebackhide__ = True
        self._explain(call)
        with self._spinner():
            value = await cast(Callable[..., Any], self._func)(*args, **kwargs)
        prepared = self._prepared(value)
        while True:
            try:
                lookup = store.get_or_create(
                    call.key, lambda: prepared, label=call.label, inputs=call.inputs, **self._store_options
                )
                break
            except _NotCached:  # another loop's hit probe was in flight for this key
                continue
        release = self._options.on_release
        if lookup.hit and release is not None and lookup.value is not value:
            # Another loop stored its value first: ours belongs to no one, so free it; a hook
            # that raises is reported, not raised, as the store does with its own releases.
            try:
                release(value)
            except Exception as exc:
                warnings.warn(
                    f"on_release for {call.label!r} raised {type(exc).__name__}: {exc}",
                    RuntimeWarning,
                    stacklevel=2,
                )
        return lookup

    def _landed(self, flight: tuple[asyncio.AbstractEventLoop, str], task: asyncio.Task[Lookup]) -> None:
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


# ---------------------------------------------------------------------- the function's digest
class _FunctionDigest:
    """``digest(func)``, computed again only when something the function reads was rebound.

    Hashing a function walks its code, defaults, closure and every global it reads,
    transitively: ~15 µs for a one-liner, far more with helpers. Between two calls these
    are nearly always the very same objects, and for immutable objects (numbers, strings,
    tuples, code, functions, modules) being the same object means having the same content.
    So we keep what the digest read and reuse the digest while each object is still in
    place (one ``is`` per object). When something mutable is in reach (a list, a frame, an
    instance) it can change without being rebound, and every call hashes afresh.
    """

    def __init__(self, func: Callable[..., Any], hash_funcs: HashFuncs | None) -> None:
        self._func = func
        self._hash_funcs = hash_funcs
        # (digest, the reads to check, or None when the digest can't be reused)
        self._state: tuple[str, list[tuple[Callable[[], Any], Any]] | None] | None = None

    def current(self) -> str:
        state = self._state
        if state is not None and state[1] is not None:
            for read, seen in state[1]:
                if read() is not seen:
                    break
            else:
                return state[0]
        return self._refresh()

    def _refresh(self) -> str:
        reads: list[tuple[Callable[[], Any], Any]] = []
        reusable = self._watch_function(self._func, reads, set())  # before hashing: errs on recomputing
        try:
            value = digest(self._func, hash_funcs=self._hash_funcs)
        except Unhashable as exc:
            raise self._unhashable(exc) from None
        self._state = (value, reads if reusable else None)
        return value

    def _watch_function(self, func: Any, reads: list[tuple[Callable[[], Any], Any]], seen: set[int]) -> bool:
        """Record what ``digest`` reads of ``func``; False when something can change in place."""
        if id(func) in seen or _module_is_library(getattr(func, "__module__", None) or ""):
            return True  # library functions are hashed by name and version
        if not isinstance(func, types.FunctionType):
            return False  # a callable object: hashed by content, which can change in place
        seen.add(id(func))
        for attribute in ("__code__", "__defaults__", "__kwdefaults__"):
            reads.append((functools.partial(getattr, func, attribute), getattr(func, attribute)))
        if not self._watch_value(func.__defaults__, reads, seen):
            return False
        kwdefaults = func.__kwdefaults__ or {}
        reads.append((functools.partial(len, kwdefaults), len(kwdefaults)))
        for name, value in kwdefaults.items():
            reads.append((functools.partial(kwdefaults.get, name, _ABSENT), value))
            if not self._watch_value(value, reads, seen):
                return False
        for cell in func.__closure__ or ():
            value = _cell_contents(cell)
            reads.append((functools.partial(_cell_contents, cell), value))
            if not self._watch_value(value, reads, seen):
                return False
        namespace = func.__globals__
        for name in global_names(func.__code__):
            value = namespace.get(name, _ABSENT)
            reads.append((functools.partial(namespace.get, name, _ABSENT), value))
            if value is not _ABSENT and not self._watch_value(value, reads, seen):
                return False
        return True

    def _watch_value(self, value: Any, reads: list[tuple[Callable[[], Any], Any]], seen: set[int]) -> bool:
        if type(value) in _IMMUTABLE or value is Ellipsis:
            return True
        if isinstance(value, types.ModuleType):
            return _module_is_library(value.__name__)  # a local module's source can change
        if isinstance(value, types.BuiltinFunctionType):  # len: by name; {}.get: by its dict
            return value.__self__ is None or isinstance(value.__self__, types.ModuleType)
        if isinstance(value, types.FunctionType):
            return self._watch_function(value, reads, seen)
        if isinstance(value, CachedFunction):
            return self._watch_function(value._func, reads, seen)
        if type(value) in (tuple, frozenset):
            return all(self._watch_value(item, reads, seen) for item in value)
        if isinstance(value, type):
            return _module_is_library(value.__module__)  # a notebook class can be changed in place
        return False

    def _unhashable(self, exc: Unhashable) -> UnhashableInputError:
        """Name the global (or closure variable) the function reads that can't be hashed."""
        func = self._func
        name = getattr(func, "__qualname__", repr(func)).rsplit("<locals>.", 1)[-1]
        suspects: list[tuple[str, Any]] = []
        if isinstance(func, types.FunctionType):
            namespace, code = func.__globals__, func.__code__
            suspects += [(n, namespace[n]) for n in global_names(code) if n in namespace]
            cells = zip(code.co_freevars, func.__closure__ or (), strict=False)
            suspects += [(n, _cell_contents(c)) for n, c in cells]
        for variable, value in suspects:
            try:
                digest(value, hash_funcs=self._hash_funcs)
            except Unhashable:
                return UnhashableInputError(
                    variable,
                    type(value),
                    f"{exc.value_type.__qualname__}: {exc.reason}",
                    f"{name} reads `{variable}`, so its value is part of the key. Pass it as a "
                    f"parameter named `_{variable}` to leave it out, or say what identifies it "
                    f"with hash_funcs={{{_type_name(type(value))}: lambda value: ...}}.",
                )
        return UnhashableInputError(
            name,
            type(func),
            f"{exc.value_type.__qualname__}: {exc.reason}",
            "Its defaults or the values it reads can't be hashed: pass them as parameters named "
            "with a leading underscore, or give hash_funcs for their type.",
        )


def _dropped_unloadable(store: CacheStore, key: str, label: str, exc: Exception) -> None:
    """Drop an entry whose value can't be unpickled any more (and its file), and say so."""
    store.delete_where(lambda entry: entry.key == key, "invalid")
    warnings.warn(
        f"the cached result of {label} could not be loaded ({type(exc).__name__}: {exc}); "
        "it was dropped and computed again",
        RuntimeWarning,
        stacklevel=3,
    )


def _cell_contents(cell: types.CellType) -> Any:
    try:
        return cell.cell_contents
    except ValueError:  # not bound yet
        return _ABSENT


# ---------------------------------------------------------------------- small helpers
def _is_immutable(value: Any, depth: int = 0) -> bool:
    if type(value) in _IMMUTABLE:
        return True
    if type(value) in (tuple, frozenset) and depth < 3:
        return all(_is_immutable(item, depth + 1) for item in value)
    return False


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


def _type_name(cls: type) -> str:
    return (
        cls.__qualname__
        if cls.__module__ in ("builtins", "__main__")
        else f"{cls.__module__}.{cls.__qualname__}"
    )


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
