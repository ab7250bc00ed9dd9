"""A cached cell's hit, applied to the namespace so it ends as after a real run.

Order matters: functions and classes first (``_rehome``: globals are the namespace, classes
already held are reused), then inputs the cell changed in place (``_replay.transplant`` into
the namespace's own objects, every reference to the loaded copy re-pointed to them; where
that can't be done every alias of the old object is rebound to the copy), then the names
are bound and deleted, then the kernel effects (module and class attributes, working
directory, environment, ``sys.path``) are applied. Nothing here imports IPython.
"""

from __future__ import annotations

import dataclasses
import weakref
from collections.abc import MutableMapping
from typing import Any

from ._capture import CellResult
from ._effects import KernelEffects
from ._rehome import Rehome, carries_code
from ._replay import transplant
from ._serialize import SerializedValue

__all__ = ["serve", "unreproducible"]

_SHARED_ATOMS = (int, float, complex, str, bytes, bool, type(None), tuple, frozenset)


def unreproducible(result: CellResult, namespace: MutableMapping[str, Any]) -> list[str]:
    """What a hit of ``result`` can't do here (empty: it can do everything the run did)."""
    effects = getattr(result, "effects", None)
    return effects.problems(namespace) if isinstance(effects, KernelEffects) else []


def serve(result: CellResult, namespace: MutableMapping[str, Any], stored: Any) -> None:
    """Bind ``result`` into ``namespace`` and apply its effects, as the run left them.

    ``stored`` is what the store keeps: a pickle for data (``result`` is a fresh copy, ours
    to change), the result itself for a resource (the very objects, shared by every hit:
    nothing in them is rebuilt, and the stored bindings are not changed).
    """
    data = isinstance(stored, SerializedValue)
    if data and _carries_code(stored):
        _rehome(result, Rehome(namespace))
    bindings = result.bindings if data else dict(result.bindings)
    replace = _replay_changes(getattr(result, "changed", ()), bindings, namespace)
    if replace and data:  # other references to a changed copy (`view = df`, `pair = (df, 1)`)
        _rehome(result, Rehome(namespace, replace, code=False))
    namespace.update(bindings)
    for name in result.deleted:
        namespace.pop(name, None)
    effects = getattr(result, "effects", None)
    if isinstance(effects, KernelEffects):
        effects.apply(namespace)


_scanned: weakref.WeakKeyDictionary[SerializedValue, bool] = weakref.WeakKeyDictionary()


def _carries_code(stored: SerializedValue) -> bool:
    """Scanning a 100 MB pickle takes ~70 ms: once per stored value, not on every hit."""
    known = _scanned.get(stored)
    if known is None:
        known = _scanned[stored] = carries_code(stored.meta)
    return known


def _rehome(result: CellResult, walk: Rehome) -> None:
    walk.fix(result.bindings)
    result.value = walk.fix(result.value)
    effects = getattr(result, "effects", None)
    if isinstance(effects, KernelEffects) and effects.attributes:
        attributes = tuple(
            dataclasses.replace(e, value=walk.fix(e.value)) if not e.deleted else e
            for e in effects.attributes
        )
        result.effects = dataclasses.replace(effects, attributes=attributes)


def _replay_changes(changed: tuple[str, ...], bindings: dict[str, Any],
                    namespace: MutableMapping[str, Any]) -> dict[int, Any]:  # fmt: skip
    """Transplant each changed input into the namespace's object; the ids it now stands for."""
    replace: dict[int, Any] = {}
    for name in changed:
        if name not in bindings or name not in namespace:
            continue
        target, state = namespace[name], bindings[name]
        if transplant(target, state):
            replace[id(state)] = target
            bindings[name] = target
            continue
        if isinstance(target, _SHARED_ATOMS):
            continue  # immutable: never changed in place, and equal ones are shared objects
        for alias, value in list(namespace.items()):  # can't be changed in place: every alias moves
            if value is target and alias not in bindings:
                bindings[alias] = state
    return replace
