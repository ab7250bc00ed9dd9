"""Keys for values that can't be hashed by content: cached resources and live handles.

Two kinds of value read from outside a computation can't be turned into a content digest,
and both are common in notebooks (a database connection, a model holding a lock):

- a value that a ``cache_resource`` entry produced (a cell or a decorated function) is keyed
  by *which* resource it is: the resource entry's key, which is deterministic, so a query
  cached on disk is found again after a restart once the connection is made again;
- any other value that can't be hashed is keyed by its *identity* for the life of the
  object: a token drawn from a counter, never from ``id()`` alone, so an object that dies
  and whose address is reused by a new object can never be mistaken for the old one.
"""

from __future__ import annotations

import functools
import itertools
import os
import threading
import types
import weakref
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

from ._hashing import combine
from ._store import StoreEvent

# Objects of these types are plain data or code, never "a resource": they hash by content.
_PLAIN = (int, float, complex, str, bytes, bool, type(None), frozenset, type, tuple,
          types.ModuleType, types.FunctionType)  # fmt: skip
_STRONG_MEMORY = 4096  # objects that refuse weak references, kept alive to keep their token


class ResourceIndex:
    """Which live objects came from which ``cache_resource`` entry (cells and functions).

    The index lives as long as the store (not the extension), so ``%unload_ext`` and
    ``%load_ext`` don't forget that a connection is a cached resource.
    """

    def __init__(self) -> None:
        self._by_id: dict[int, tuple[str, Any]] = {}  # id -> (token, the object itself)
        self._by_key: dict[str, list[int]] = {}
        self._lock = threading.Lock()

    def add(self, key: str, objects: Mapping[str | None, Any]) -> None:
        """Register what the resource entry ``key`` holds: ``{name: object}`` for a cell's
        bindings, ``{None: value}`` for a decorated function's value."""
        with self._lock:
            ids = self._by_key.setdefault(key, [])
            for name, obj in objects.items():
                if isinstance(obj, _PLAIN):
                    continue
                parts = [("resource", key)] if name is None else [("resource", key), ("name", name)]
                if id(obj) not in self._by_id:
                    ids.append(id(obj))
                self._by_id[id(obj)] = (combine(parts), obj)

    def token(self, value: Any) -> str | None:
        """The resource token of ``value``, or None when no resource entry holds it."""
        found = self._by_id.get(id(value))
        if found is None or found[1] is not value:
            return None
        return found[0]

    def on_event(self, event: StoreEvent) -> None:
        """A resource entry left the store: its objects are no longer cached resources."""
        if event.action == "removed" and event.kind == "resource":
            with self._lock:
                for ident in self._by_key.pop(event.key, ()):
                    self._by_id.pop(ident, None)


class IdentityTokens:
    """A token per live object, for inputs keyed by identity.

    Weakly referenced objects drop their token when they die; objects that refuse weak
    references are kept alive (the most recent few thousand) so that their address can't
    be reused while the token is known. Forgetting one only costs a needless miss.
    """

    def __init__(self) -> None:
        self._counter = itertools.count()
        self._run = os.urandom(8).hex()  # tokens of two kernels never meet (they aren't found again)
        self._weak: dict[int, tuple[weakref.ref[Any], str]] = {}
        self._strong: OrderedDict[int, tuple[Any, str]] = OrderedDict()
        self._lock = threading.Lock()

    def token(self, value: Any) -> str:
        ident = id(value)
        with self._lock:
            weak = self._weak.get(ident)
            if weak is not None and weak[0]() is value:
                return weak[1]
            strong = self._strong.get(ident)
            if strong is not None and strong[0] is value:
                self._strong.move_to_end(ident)
                return strong[1]
            token = f"identity:{self._run}:{next(self._counter)}"
            try:
                ref: weakref.ref[Any] = weakref.ref(value, functools.partial(self._forget, ident))
            except TypeError:
                self._strong[ident] = (value, token)
                while len(self._strong) > _STRONG_MEMORY:
                    self._strong.popitem(last=False)
            else:
                self._weak[ident] = (ref, token)
            return token

    def _forget(self, ident: int, ref: weakref.ref[Any]) -> None:
        with self._lock:
            found = self._weak.get(ident)
            if found is not None and found[0] is ref:
                del self._weak[ident]


def is_identity_token(token: str) -> bool:
    """True for a digest that stands for an object's identity (it can't be found after a restart)."""
    return token.startswith("identity:")
