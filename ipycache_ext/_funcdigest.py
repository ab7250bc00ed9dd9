"""A decorated function's code digest, computed again only when something it reads was rebound.

A cached function is keyed by its code *and everything it reads* (helpers, globals,
closures, defaults), hashed transitively. Doing that on every call would cost more than
the hit itself, so the digest is reused while each object it read is still in place.
"""

from __future__ import annotations

import functools
import operator
import types
from collections.abc import Callable
from typing import Any

from ._engine import CacheEngine
from ._errors import UnhashableInputError
from ._hash_code import class_is_library, dispatch_registry, function_is_library, imports_are_pinned
from ._hashing import IMMUTABLE_TYPES, HashFuncs, Unhashable, _module_is_library, digest, global_names

_IMMUTABLE = IMMUTABLE_TYPES
_ABSENT = object()  # a global that is not defined


class FunctionDigest:
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
        self._engine: CacheEngine | None = None
        self.by_identity: tuple[str, ...] = ()  # globals keyed by identity (they can't be hashed)

    def current(self, engine: CacheEngine) -> str:
        state = self._state
        if engine is not self._engine:
            state = None  # another store: resource tokens and identities are its own
        if state is not None and state[1] is not None:
            for read, seen in state[1]:
                if read() is not seen:
                    break
            else:
                return state[0]
        return self._refresh(engine)

    def _refresh(self, engine: CacheEngine) -> str:
        reads: list[tuple[Callable[[], Any], Any]] = []
        reusable = self._watch_function(self._func, reads, set())  # before hashing: errs on recomputing
        by_identity: list[str] = []
        try:
            value = engine.code_digest(self._func, self._hash_funcs, by_identity)
        except Unhashable as exc:
            raise self._unhashable(exc) from None
        self._engine = engine
        self.by_identity = tuple(dict.fromkeys(by_identity))
        self._state = (value, reads if reusable else None)
        return value

    def _watch_function(self, func: Any, reads: list[tuple[Callable[[], Any], Any]], seen: set[int]) -> bool:
        """Record what ``digest`` reads of ``func``; False when something can change in place."""
        if id(func) in seen:
            return True
        if function_is_library(func):  # hashed by name and version, and what it runs of yours
            if not isinstance(func, types.FunctionType):
                return True
            seen.add(id(func))
            if dispatch_registry(func) is not None:
                return False  # register() changes it in place
            return self._watch_attributes(func, reads, seen)
        if not isinstance(func, types.FunctionType):
            return False  # a callable object: hashed by content, which can change in place
        seen.add(id(func))
        if not self._watch_attributes(func, reads, seen):
            return False
        if not imports_are_pinned(func):
            return False  # it imports a local module in its body: that module can change under it
        # one read for the three (each is an audited attribute: with an audit hook installed,
        # as the dependency layer does, every read of them calls it)
        parts = _function_parts(func)
        reads.append((functools.partial(_same_parts, func, parts), True))
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
        if hasattr(value, "__wrapped__") and hasattr(value, "_identity"):
            return self._watch_function(value.__wrapped__, reads, seen)
        if type(value) in (tuple, frozenset):
            return all(self._watch_value(item, reads, seen) for item in value)
        if isinstance(value, type):
            return class_is_library(value)  # a notebook class can be changed in place
        return False

    def _watch_attributes(
        self, func: Any, reads: list[tuple[Callable[[], Any], Any]], seen: set[int]
    ) -> bool:
        """A function's attributes (``f.factor = 2``; ``__wrapped__`` from functools.wraps)."""
        attributes = func.__dict__
        reads.append((functools.partial(len, attributes), len(attributes)))
        for name, value in attributes.items():
            reads.append((functools.partial(attributes.get, name, _ABSENT), value))
            if not self._watch_value(value, reads, seen):
                return False
        return True

    def _unhashable(self, exc: Unhashable) -> UnhashableInputError:
        """Name the default, global or closure variable of the function that can't be hashed."""
        func = self._func
        name = getattr(func, "__qualname__", repr(func)).rsplit("<locals>.", 1)[-1]
        reason = f"{exc.value_type.__qualname__}: {exc.reason}"
        defaults: list[tuple[str, Any]] = []
        suspects: list[tuple[str, Any]] = []
        if isinstance(func, types.FunctionType):
            code = func.__code__
            positional = code.co_varnames[: code.co_argcount]
            defaults += list(zip(positional[len(positional) - len(func.__defaults__ or ()) :],
                                 func.__defaults__ or (), strict=True))  # fmt: skip
            defaults += list((func.__kwdefaults__ or {}).items())
            namespace = func.__globals__
            suspects += [(n, namespace[n]) for n in global_names(code) if n in namespace]
            cells = zip(code.co_freevars, func.__closure__ or (), strict=False)
            suspects += [(n, _cell_contents(c)) for n, c in cells]
        for parameter, value in defaults:
            if not self._hashes(value):
                return UnhashableInputError(
                    parameter,
                    type(value),
                    reason,
                    f"It is the default of {name}()'s parameter `{parameter}`: defaults are part of the "
                    "function's code, so of its key, even for a `_`-named parameter. Pass it at each "
                    "call instead (a `_`-named argument is not hashed), default to None and make it "
                    f"inside, or say what identifies it with hash_funcs={{{type_name(type(value))}: "
                    "lambda value: ...}.",
                )
        for variable, value in suspects:
            if not self._hashes(value):
                return UnhashableInputError(
                    variable,
                    type(value),
                    reason,
                    f"{name} reads `{variable}`, so its value is part of the key. Pass it as a "
                    f"parameter named `_{variable}` to leave it out, or say what identifies it "
                    f"with hash_funcs={{{type_name(type(value))}: lambda value: ...}}.",
                )
        return UnhashableInputError(
            name,
            type(func),
            reason,
            "Its defaults or the values it reads can't be hashed: pass them as parameters named "
            "with a leading underscore, or give hash_funcs for their type.",
        )

    def _hashes(self, value: Any) -> bool:
        try:
            digest(value, hash_funcs=self._hash_funcs)
        except Unhashable:
            return False
        return True


_function_parts = operator.attrgetter("__code__", "__defaults__", "__kwdefaults__")


def _same_parts(func: types.FunctionType, seen: tuple[Any, Any, Any]) -> bool:
    """True while ``func``'s code, defaults and keyword defaults are the objects ``seen``."""
    code, defaults, kwdefaults = _function_parts(func)
    return code is seen[0] and defaults is seen[1] and kwdefaults is seen[2]


def _cell_contents(cell: types.CellType) -> Any:
    try:
        return cell.cell_contents
    except ValueError:  # not bound yet
        return _ABSENT


def type_name(cls: type) -> str:
    return (
        cls.__qualname__
        if cls.__module__ in ("builtins", "__main__")
        else f"{cls.__module__}.{cls.__qualname__}"
    )
