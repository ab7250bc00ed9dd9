"""Side effects of a computation on the kernel beyond the names it binds, recorded and replayed.

A later cell can observe more than the namespace: ``conf.MODE = "fast"`` on a local module,
``Cfg.threshold = 0.5`` on a notebook class, ``sys.path.append``. ``EffectRecorder``
snapshots these before the computation and diffs after it; the resulting ``KernelEffects``
travel with the result and ``apply`` them on a hit. What can't be carried (an attribute set
to something that can't be pickled, on an owner that is gone) is a *problem*: the front end
says so and runs instead of serving. The global random state, ``os.environ`` writes and the
working directory are the dependency layer's (``_deps`` records and replays them). Not
recorded (see the README's limits): state inside installed libraries that is not a public
module attribute (``pd.set_option``, ``matplotlib.rcParams``), threads started, files
written, logging configuration. Nothing here imports IPython.
"""

from __future__ import annotations

import sys
import types
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass
from typing import Any

__all__ = ["AttributeEffect", "EffectRecorder", "KernelEffects"]

_ATOMS = (int, float, complex, str, bytes, bool, type(None))
_DELETED = "<deleted>"


def _is_library(module: types.ModuleType) -> bool:
    from ._hash_code import is_library_module  # KEYS' one notion of "installed"

    return is_library_module(module)


_local: tuple[int, list[tuple[str, types.ModuleType]]] = (-1, [])


def _local_modules() -> list[tuple[str, types.ModuleType]]:
    """Your own modules among ``sys.modules`` (judged again only when modules come or go)."""
    global _local
    count, found = _local
    if count != len(sys.modules) or any(sys.modules.get(n) is not m for n, m in found):
        found = [
            (name, module)
            for name, module in list(sys.modules.items())
            if isinstance(module, types.ModuleType) and not _is_library(module)
        ]
        _local = (len(sys.modules), found)
    return found


def _dunder(name: str) -> bool:
    return name.startswith("__") and name.endswith("__")


class _Unreplayable:
    """What an attribute effect becomes when its value can't be pickled."""

    def __init__(self, reason: str) -> None:
        self.reason = reason

    def __reduce__(self) -> tuple[Any, ...]:
        return (_Unreplayable, (self.reason,))


@dataclass(frozen=True)
class AttributeEffect:
    """``owner.name = value`` (or ``del owner.name`` when ``deleted``)."""

    owner: tuple[str, str]  # ("module", "conf"): sys.modules; ("name", "Cfg"): the namespace
    name: str
    value: Any = None
    deleted: bool = False

    @property
    def label(self) -> str:
        return f"`{self.owner[1]}.{self.name}`"

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickled with the result; a value that can't be pickled becomes a stated problem."""
        if not self.deleted and not isinstance(self.value, _ATOMS):
            import cloudpickle

            try:
                cloudpickle.dumps(self.value)
            except Exception as exc:  # pickling raises anything
                reason = f"{self.label} is set to a {type(self.value).__name__} that can't be pickled ({exc})"
                return (AttributeEffect, (self.owner, self.name, _Unreplayable(reason), False))
        return (AttributeEffect, (self.owner, self.name, self.value, self.deleted))


@dataclass(frozen=True)
class KernelEffects:
    """What the computation changed outside its namespace bindings."""

    attributes: tuple[AttributeEffect, ...] = ()
    path_added: tuple[tuple[int, str], ...] = ()  # sys.path entries added, with their position
    path_removed: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.attributes or self.path_added or self.path_removed)

    def problems(self, namespace: Mapping[str, Any]) -> list[str]:
        """Why a hit could not reproduce these effects here (empty: it can)."""
        found = []
        for effect in self.attributes:
            if isinstance(effect.value, _Unreplayable):
                found.append(effect.value.reason)
            elif _owner(effect.owner, namespace) is None:
                found.append(f"{effect.label}: `{effect.owner[1]}` is not there to set it on")
        return found

    def apply(self, namespace: Mapping[str, Any]) -> None:
        """Leave the kernel as the computation did (call ``problems`` first)."""
        for effect in self.attributes:
            owner = _owner(effect.owner, namespace)
            if owner is None:
                continue
            if effect.deleted:
                if hasattr(owner, effect.name):
                    delattr(owner, effect.name)
            else:
                setattr(owner, effect.name, effect.value)
        for entry in self.path_removed:
            while entry in sys.path:
                sys.path.remove(entry)
        for position, entry in self.path_added:
            if entry not in sys.path:
                sys.path.insert(min(position, len(sys.path)), entry)


def _owner(owner: tuple[str, str], namespace: Mapping[str, Any]) -> Any:
    where, name = owner
    if where == "name":
        return namespace.get(name)
    module = sys.modules.get(name)
    if module is None:
        try:
            import importlib

            module = importlib.import_module(name)
        except Exception:  # gone, or fails to import now
            return None
    return module


class EffectRecorder:
    """Snapshots before a computation; ``finish()`` diffs after it."""

    def __init__(self, namespace: Mapping[str, Any], hidden: Mapping[str, Any] | None = None) -> None:
        self._namespace = namespace
        hidden = hidden or {}
        main = namespace.get("__name__", "__main__")
        self._targets: dict[tuple[str, str], tuple[Any, dict[str, Any], bool]] = {}
        for name, value in list(namespace.items()):
            if name in hidden and hidden[name] is value:
                continue
            if isinstance(value, types.ModuleType):
                self._module(value, name)
            elif isinstance(value, type) and getattr(value, "__module__", None) == main:
                self._targets[("name", name)] = (value, dict(vars(value)), False)
        for module_name, module in _local_modules():
            if module_name != main:
                self._targets.setdefault(("module", module_name), (module, dict(vars(module)), False))
        self._path = list(sys.path)

    def _module(self, module: types.ModuleType, bound_as: str) -> None:
        name = module.__name__
        if name == self._namespace.get("__name__", "__main__"):
            return
        library = _is_library(module)
        key = ("module", name) if sys.modules.get(name) is module else ("name", bound_as)
        self._targets.setdefault(key, (module, dict(vars(module)), library))

    def finish(self) -> KernelEffects:
        attributes: list[AttributeEffect] = []
        for owner, (target, before, library) in self._targets.items():
            if owner[0] == "name" and self._namespace.get(owner[1]) is not target:
                continue  # rebound by the computation: the binding is the result, not an effect
            attributes.extend(_diff(owner, before, vars(target), library))
        added = tuple((i, p) for i, p in enumerate(sys.path) if p not in self._path)
        removed = tuple(p for p in self._path if p not in sys.path)
        return KernelEffects(
            attributes=tuple(attributes),
            path_added=added,
            path_removed=removed,
        )


def _diff(owner: tuple[str, str], before: Mapping[str, Any], after: Mapping[str, Any],
          library: bool) -> list[AttributeEffect]:  # fmt: skip
    """Attributes set or deleted; in an installed module only public non-module ones."""
    found = []
    for name, value in after.items():
        if before.get(name, _ABSENT) is value:  # first: nearly every attribute is unchanged
            continue
        if _dunder(name) or (library and (name.startswith("_") or isinstance(value, types.ModuleType))):
            continue
        found.append(AttributeEffect(owner, name, value))
    for name in before.keys() - after.keys():
        if not _dunder(name) and not (library and name.startswith("_")):
            found.append(AttributeEffect(owner, name, None, deleted=True))
    return found


_ABSENT = object()


def namespace_changes(before: Mapping[str, Any], after: MutableMapping[str, Any],
                      skip: frozenset[str]) -> tuple[dict[str, Any], tuple[str, ...]]:  # fmt: skip
    """Names bound (or rebound) and deleted between two snapshots, leaving out ``skip``."""
    bound = {
        name: value
        for name, value in after.items()
        if name not in skip and (name not in before or before[name] is not value)
    }
    deleted = tuple(name for name in before if name not in after and name not in skip)
    return bound, deleted
