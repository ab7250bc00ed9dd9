"""``os.environ`` lookups by name (``os.environ[...]``, ``.get``, ``os.getenv``, ``in``).

The ``os._Environ`` class is patched once, on the first recording, so every reference to
``os.environ`` (and ``os.environb``) is seen, also one bound before. Outside a recording a
lookup costs one extra Python call. Copying the environment (``dict(os.environ)``,
``.copy()``, ``.items()``) reads every variable by name, so each becomes a dependency (and an
entry persisted by such code misses after a restart in an environment that differs).
Iterating over the names alone (``for k in os.environ``, ``len``) and C code calling
``getenv()`` are not recorded (documented).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from typing import Any

from ._state import LIVE, current

_MARK = "__ipycache_deps_original__"


def _name(key: Any) -> str:
    return os.fsdecode(key) if isinstance(key, bytes) else str(key)


def _value(value: Any) -> str:
    return os.fsdecode(value) if isinstance(value, bytes) else str(value)


def _getitem(func: Callable[[Any, Any], Any]) -> Callable[[Any, Any], Any]:
    @functools.wraps(func)
    def __getitem__(self: Any, key: Any) -> Any:
        obs = current() if LIVE[0] else None
        if obs is None:
            return func(self, key)
        try:
            value = func(self, key)
        except KeyError:
            obs.note_env(_name(key), None)
            raise
        obs.note_env(_name(key), _value(value))
        return value

    return __getitem__


def _setitem(func: Callable[[Any, Any, Any], None]) -> Callable[[Any, Any, Any], None]:
    @functools.wraps(func)
    def __setitem__(self: Any, key: Any, value: Any) -> None:
        func(self, key, value)
        obs = current() if LIVE[0] else None
        if obs is not None:
            obs.env_written[_name(key)] = _value(value)

    return __setitem__


def _delitem(func: Callable[[Any, Any], None]) -> Callable[[Any, Any], None]:
    @functools.wraps(func)
    def __delitem__(self: Any, key: Any) -> None:
        func(self, key)
        obs = current() if LIVE[0] else None
        if obs is not None:
            obs.env_written[_name(key)] = None

    return __delitem__


_installed = False


def install() -> None:
    global _installed
    if _installed:
        return
    _installed = True
    cls: Any = type(os.environ)
    for name, make in (("__getitem__", _getitem), ("__setitem__", _setitem), ("__delitem__", _delitem)):
        func = cls.__dict__.get(name)
        if func is not None and not hasattr(func, _MARK):
            wrapped = make(func)
            setattr(wrapped, _MARK, func)
            setattr(cls, name, wrapped)
