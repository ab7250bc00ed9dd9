"""Replaying in-place changes onto the objects the caller holds.

A cell that does ``df["b"] = ...`` (or a function that appends to the list it was given)
changes an object other names may share (``raw = df``). A hit must leave *that* object
changed, not bind a changed copy under one name: so the stored post-run state is
*transplanted* into the object the namespace (or the caller) holds now — which, the key
says, has the content the computation started from. ``transplant`` knows the containers,
numpy arrays, pandas objects and pure-Python instances; anything else can't be changed in
place from outside, and the front end falls back to rebinding every alias.

For decorated functions, ``fetch_with_argument_replay`` wraps ``CacheEngine.fetch``: a miss
records the arguments the call changed in place (their digests before and after), a hit
transplants the recorded states into the arguments of this call. Nothing here imports
IPython.
"""

from __future__ import annotations

import collections
import dataclasses
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ._engine import CacheEngine, Outcome, Plan, Request
from ._hashing import IMMUTABLE_TYPES, Unhashable

__all__ = [
    "ArgumentChanges",
    "changed_arguments",
    "fetch_with_argument_replay",
    "replay_arguments",
    "served",
    "transplant",
    "unwrap",
    "with_argument_changes",
]

_HEAPTYPE = 1 << 9  # Py_TPFLAGS_HEAPTYPE: a class made by a class statement
_IMMUTABLE = IMMUTABLE_TYPES


# ------------------------------------------------------------------ transplant
def transplant(target: Any, source: Any) -> bool:
    """Make ``target`` hold ``source``'s state, in place; False when that can't be done.

    The change is shallow: ``target``'s items or attributes become ``source``'s (a list
    element changed inside the list is the changed copy afterwards). Tuples are the one
    exception: immutable, their items are transplanted one by one (position is identity).
    """
    if target is source:
        return True
    kind = type(target)
    if kind is not type(source):
        return False
    if kind is tuple:
        return len(target) == len(source) and all(map(transplant, target, source))
    handler = _handler(kind)
    if handler is None:
        return False
    try:
        return handler(target, source)
    except Exception:  # a read-only array, a frozen instance: can't be done here
        return False


def _handler(kind: type) -> Callable[[Any, Any], bool] | None:
    for base, handler in _HANDLERS:
        if issubclass(kind, base):
            return handler
    module = getattr(kind, "__module__", None)
    root = module.partition(".")[0] if isinstance(module, str) else ""
    if root == "numpy" and _is_ndarray(kind):
        return _ndarray
    if root == "pandas" and hasattr(kind, "_update_inplace") and hasattr(kind, "_mgr"):
        return _pandas
    if _pure_python(kind):
        return _instance
    return None


def _list(target: list[Any], source: list[Any]) -> bool:
    target[:] = source
    return _attributes(target, source)


def _dict(target: dict[Any, Any], source: dict[Any, Any]) -> bool:
    if isinstance(target, collections.defaultdict):
        target.default_factory = source.default_factory  # type: ignore[attr-defined]
    target.clear()
    target.update(source)
    return _attributes(target, source)


def _set(target: set[Any], source: set[Any]) -> bool:
    target.clear()
    target.update(source)
    return _attributes(target, source)


def _bytearray(target: bytearray, source: bytearray) -> bool:
    target[:] = source
    return True


def _deque(target: collections.deque[Any], source: collections.deque[Any]) -> bool:
    if target.maxlen != source.maxlen:
        return False
    target.clear()
    target.extend(source)
    return _attributes(target, source)


_HANDLERS: tuple[tuple[type, Callable[[Any, Any], bool]], ...] = (
    (list, _list),
    (dict, _dict),
    (set, _set),
    (bytearray, _bytearray),
    (collections.deque, _deque),
)


def _attributes(target: Any, source: Any) -> bool:
    """A subclass instance of a container may carry attributes too."""
    if hasattr(target, "__dict__") and type(target).__flags__ & _HEAPTYPE:
        return _instance(target, source)
    return True


def _is_ndarray(kind: type) -> bool:
    numpy = sys.modules.get("numpy")
    return numpy is not None and issubclass(kind, numpy.ndarray)


def _ndarray(target: Any, source: Any) -> bool:
    if target.shape != source.shape or target.dtype != source.dtype or not target.flags.writeable:
        return False  # resized or retyped: only a new array can hold it
    target[...] = source
    return True


def _pandas(target: Any, source: Any) -> bool:
    """A pandas object takes over a shallow copy's internals (copy-on-write keeps them apart)."""
    target._update_inplace(source.copy(deep=False))
    for name in getattr(type(target), "_metadata", ()):  # a Series' name, subclasses' extras
        setattr(target, name, getattr(source, name, None))
    target.attrs = dict(source.attrs)
    target.flags.allows_duplicate_labels = source.flags.allows_duplicate_labels
    return True


def _pure_python(kind: type) -> bool:
    """Every class of its MRO but ``object`` is a class statement: its state is its attributes."""
    return all(c is object or c.__flags__ & _HEAPTYPE for c in kind.__mro__) and (
        "__dict__" in dir(kind) or any("__slots__" in vars(c) for c in kind.__mro__)
    )


def _instance(target: Any, source: Any) -> bool:
    for cls in type(target).__mro__:  # slots first, then the instance dictionary
        slots = vars(cls).get("__slots__", ())
        for slot in (slots,) if isinstance(slots, str) else slots:
            if slot in ("__dict__", "__weakref__"):
                continue
            if hasattr(source, slot):
                object.__setattr__(target, slot, getattr(source, slot))
            elif hasattr(target, slot):
                object.__delattr__(target, slot)
    state = getattr(target, "__dict__", None)
    if state is not None:
        state.clear()
        state.update(vars(source))
    return True


# ------------------------------------------------------------------ decorated functions
@dataclass
class ArgumentChanges:
    """A function's value, with the post-call state of the arguments it changed in place."""

    value: Any
    changed: dict[str, Any]


def unwrap(value: Any) -> Any:
    """The function's own value out of what the store keeps (with or without changes)."""
    return value.value if isinstance(value, ArgumentChanges) else value


def changed_arguments(engine: CacheEngine, request: Request, plan: Plan) -> list[str]:
    """The arguments whose content the computation changed (hashed as the key hashed them)."""
    if not any(type(v) not in _IMMUTABLE for v in request.arguments.values()):
        return []
    try:
        after = engine.plan(request).digests
    except Unhashable:
        return []  # hashable before the call: it can't be compared now either
    return [
        name
        for name, value in request.arguments.items()
        if type(value) not in _IMMUTABLE
        and engine.resources.token(value) is None  # a shared resource's state is not the result
        and after.get(name) != plan.digests.get(name)
    ]


def fetch_with_argument_replay(
    engine: CacheEngine,
    request: Request,
    plan: Plan,
    compute: Callable[[], Any],
    *,
    var_keyword: str | None = None,
    on_unreplayable: Callable[[list[str]], None] | None = None,
    **fetch_options: Any,
) -> Outcome:
    """``engine.fetch``, for a call that may change its arguments in place.

    On a miss the arguments whose digest changed are kept with the value (data only: a
    resource is kept as it is, and ``on_unreplayable(names)`` is told instead). On a hit
    their recorded states are transplanted into this call's arguments; the outcome's value
    is the function's own value, with a returned argument being the caller's object.
    ``var_keyword`` names the ``**kwargs`` parameter: its dict is made anew for every call,
    so its values are replayed one by one onto the caller's objects.
    """

    def recording() -> Any:
        __tracebackhide__ = True
        return with_argument_changes(engine, request, plan, compute(), on_unreplayable)

    return served(engine.fetch(request, plan, recording, **fetch_options), request, var_keyword)


def with_argument_changes(engine: CacheEngine, request: Request, plan: Plan, value: Any,
                          on_unreplayable: Callable[[list[str]], None] | None = None) -> Any:  # fmt: skip
    """What to keep for a computed ``value``: it alone, or with the arguments it changed.

    For a front end that computes outside ``fetch`` (an awaited coroutine): call this on
    the value before handing it to ``fetch``, and ``served`` on the outcome.
    """
    changed = changed_arguments(engine, request, plan)
    if not changed:
        return value
    if request.kind != "data":
        if on_unreplayable is not None:
            on_unreplayable(changed)
        return value
    return ArgumentChanges(value, {name: request.arguments[name] for name in changed})


def served(outcome: Outcome, request: Request, var_keyword: str | None = None) -> Outcome:
    """The outcome with the function's own value; on a hit, argument changes replayed first."""
    loaded = outcome.value
    if not isinstance(loaded, ArgumentChanges):
        return outcome
    value = replay_arguments(request.arguments, loaded, var_keyword) if outcome.hit else loaded.value
    return dataclasses.replace(outcome, value=value)


def replay_arguments(
    arguments: Mapping[str, Any], loaded: ArgumentChanges, var_keyword: str | None = None
) -> Any:
    """Transplant the recorded argument states into ``arguments``; the value, re-pointed."""
    value = loaded.value
    for name, state in loaded.changed.items():
        target = arguments.get(name)
        if name == var_keyword and isinstance(target, dict) and isinstance(state, dict):
            done = _transplant_items(target, state)
        else:
            done = transplant(target, state)
        if done and value is state:
            value = target  # ``return df``: the caller's object, as a real call gives
    return value


def _transplant_items(target: dict[str, Any], state: dict[str, Any]) -> bool:
    """A ``**kwargs`` dict is new on every call: its values are the caller's objects."""
    if target.keys() != state.keys():
        return transplant(target, state)
    return all(transplant(target[k], state[k]) for k in state)
