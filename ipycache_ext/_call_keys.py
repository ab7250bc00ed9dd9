"""The request and key of each call of a cached function.

The key is the function's identity and code digest (with what it reads: ``FunctionDigest``)
and its arguments bound to the signature with defaults applied (``f(1)``, ``f(x=1)`` and
``f(1, 2)`` with default 2 are one entry), ``**kwargs`` sorted, ``_private`` ones left out
(also inside ``**kwargs``). A hit must cost a fraction of Streamlit's, so the plans of calls
whose arguments are plain scalars are remembered while the function's digest is the same.
"""

from __future__ import annotations

import dataclasses
import inspect
import reprlib
import types
from collections.abc import Callable, Hashable, Mapping
from typing import Any

from ._decorator_options import DecoratorOptions
from ._deps import dynamic_reads
from ._engine import CacheEngine, Plan, Request
from ._errors import UnhashableInputError
from ._funcdigest import FunctionDigest, type_name
from ._hashing import IMMUTABLE_TYPES, Unhashable, global_names

__all__ = ["CallKeys"]

_KEY_MEMORY = 256  # remembered plans per function (calls with plain scalar arguments)
_PLAIN = frozenset({int, str, bytes, bool, type(None)})  # never 1.0: -0.0 == 0.0 but hash apart
_IMMUTABLE = IMMUTABLE_TYPES


class CallKeys:
    """Turns ``f(*args, **kwargs)`` into the engine's ``Request`` and ``Plan``."""

    def __init__(
        self, func: Callable[..., Any], options: DecoratorOptions, name: str, identity: str, decorator: str
    ) -> None:
        self._signature = inspect.signature(func)
        # the **kwargs parameter: its dict is new on every call (argument replay needs its name)
        self.var_keyword = next(
            (p.name for p in self._signature.parameters.values() if p.kind is inspect.Parameter.VAR_KEYWORD),
            None,
        )
        self._name = name
        self._decorator = decorator
        self._func = func
        self._code = FunctionDigest(func, options.hash_funcs)
        self._after_self_change: dict[str, str] | None = None  # what it read, after it last changed it
        self._plans: dict[Hashable, tuple[Request, Plan]] = {}
        self._base = Request(
            kind=options.kind,
            origin=identity,
            label=name,
            code="",
            group=f"{options.kind}:{identity}",
            scope=identity,
            hash_funcs=options.hash_funcs,
            unhashable_argument=self._unhashable_argument,
            ttl=options.store_ttl,
            max_entries=options.max_entries,
            validate=options.validate,
            on_release=options.on_release,
            persist=options.persist,
            depends_on=options.depends_on,
            dynamic=_dynamic_global_reads(func),
            namespace=getattr(func, "__globals__", None),
            narrow_hint="Pass what it reads as arguments instead.",
            identity_hint=f"Say what identifies it with @{decorator}(hash_funcs=...), or make it a "
            "cached resource, to find it again.",
        )

    @property
    def group(self) -> str:
        """The store group of the function's entries (what ``clear()`` and ``max_size`` cover)."""
        return self._base.group

    def plan(
        self, engine: CacheEngine, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[Request, Plan]:
        """The request and key of a call; remembered for plain scalar arguments."""
        code = self._code.current(engine)
        if not kwargs and len(args) == 1 and type(args[0]) in _PLAIN:  # f(x): the common call
            memo: Hashable = (code, args[0], type(args[0]))
            known = self._plans.get(memo)
            if known is not None and known[0].code == code:
                return known
            return self._planned(engine, code, args, kwargs, memo)
        arg_types = tuple(map(type, args))
        memo = None
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
        return self._planned(engine, code, args, kwargs, memo)

    def _planned(self, engine: CacheEngine, code: str, args: tuple[Any, ...], kwargs: dict[str, Any],
                 memo: Hashable) -> tuple[Request, Plan]:  # fmt: skip
        """Bind the call and plan its key; remember it under ``memo`` (None: don't)."""
        try:
            bound = self._signature.bind(*args, **kwargs)
        except TypeError as wrong:  # as Python says it: "f() missing a required argument: 'x'"
            raise TypeError(f"{self._name}() {wrong}") from None
        bound.apply_defaults()
        request = dataclasses.replace(
            self._base,
            label=f"{self._name}({_preview(bound.arguments)})",
            code=code,
            arguments=hashed_arguments(self._signature, bound.arguments),
        )
        plan = engine.plan(request)
        if self._code.by_identity:
            plan = dataclasses.replace(plan, by_identity=plan.by_identity + self._code.by_identity)
        if memo is not None:
            if len(self._plans) >= _KEY_MEMORY:
                self._plans.clear()
            self._plans[memo] = (request, plan)
        return request, plan

    def changed_by_its_run(self, engine: CacheEngine, request: Request) -> list[str]:
        """After a miss: the values the function changed while it ran *and* the run before,
        which it also reads (a counter list, a log dict) — so it can never hit. Empty when its
        digest is what it was before the run (the common case: one digest, no more)."""
        if self._code.current(engine) == request.code:
            self._after_self_change = None
            return []
        namespace = getattr(self._func, "__globals__", {})
        code = getattr(self._func, "__code__", None)
        now = {
            name: engine.digest_outside(name, namespace[name])
            for name in (global_names(code) if code is not None else ())
            if name in namespace and not isinstance(namespace[name], (types.ModuleType, types.FunctionType))
        }
        before, self._after_self_change = self._after_self_change, now
        if before is None:
            return []  # the first time: it may have been an edit between the calls
        return [name for name, value in now.items() if before.get(name) != value]

    def _unhashable_argument(self, name: str, value: Any, exc: Unhashable) -> UnhashableInputError:
        type_text = type_name(exc.value_type)  # the part that can't be hashed: a lock in a list
        hash_func = getattr(exc, "func", None)  # a HashFuncError: the user's hash function raised
        if hash_func is not None:
            func_name = getattr(hash_func, "__qualname__", None) or repr(hash_func)
            return UnhashableInputError(
                name,
                type(value),
                exc.reason,
                f"{self._name}() takes it as parameter `{name}`, and @{self._decorator}(hash_funcs=...) "
                f"of {self._name} maps {type_name(exc.value_type)} to {func_name}, which raised on it: "
                "fix that function (it is called with the value and must return something hashable), "
                f"or rename the parameter to `_{name}` to leave it out of the key.",
            )
        return UnhashableInputError(
            name,
            type(value),
            f"{exc.value_type.__qualname__}: {exc.reason}",
            f"{self._name}() takes it as parameter `{name}`. If it does not change the result, "
            f"rename the parameter to `_{name}` and it is left out of the key; otherwise say what "
            f"identifies it with @{self._decorator}(hash_funcs={{{type_text}: lambda value: ...}}).",
        )


def hashed_arguments(signature: inspect.Signature, arguments: Mapping[str, Any]) -> dict[str, Any]:
    """The arguments that are part of the key: not ``_private`` ones, also inside ``**kwargs``.

    ``**kwargs`` are sorted by name: ``f(a=1, b=2)`` and ``f(b=2, a=1)`` are one call.
    """
    hashed: dict[str, Any] = {}
    for name, value in arguments.items():
        if name.startswith("_"):
            continue
        parameter = signature.parameters.get(name)
        if parameter is not None and parameter.kind is inspect.Parameter.VAR_KEYWORD:
            hashed[name] = {k: value[k] for k in sorted(value) if not k.startswith("_")}
        else:
            hashed[name] = value
    return hashed


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


def _dynamic_global_reads(func: Callable[..., Any]) -> str | None:
    """How the function may read its module's variables by name (``globals()``, ``eval``...).

    Inside a function ``locals()`` and ``vars()`` are its own local variables (and pytest's
    assertion rewriting adds ``locals()`` calls), so they are not reads of the namespace.
    """
    found = dynamic_reads(func)
    if found is None or found in ("`locals()`", "`vars()`"):
        return None
    builtin = _BUILTIN_READS.get(found)
    code = getattr(func, "__code__", None)
    if builtin is not None and code is not None and builtin not in global_names(code):
        return None  # `model.eval()`: an attribute named like the builtin, not the builtin
    return found


_BUILTIN_READS = {
    "`eval`": "eval", "`exec`": "exec", "`globals()`": "globals", "`get_ipython()`": "get_ipython",
}  # fmt: skip
