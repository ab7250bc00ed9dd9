"""Making a loaded result live in the namespace it is bound into, as a real run's would.

cloudpickle carries functions and classes defined in the notebook by value; unpickled, a
function's ``__globals__`` is a private dictionary holding what it read when it was
stored: a later ``RATE = 10`` is not seen, its ``global`` writes go nowhere, and a helper
defined in a later cell is a ``NameError``. And an instance comes back as an instance of
the stored class, not of the class the namespace holds now (``isinstance`` fails after
the class cell ran again). ``Rehome`` walks the loaded objects once and fixes both:

- notebook functions are rebuilt with the namespace as their globals (same code, defaults,
  closure cells, attributes), and every reference the walk meets is re-pointed to them (a
  nested function of one of your modules, carried by value too, gets its module's globals);
- a notebook class that the namespace already holds under its name with the same code is
  replaced by that class (instances get it as their ``__class__``); any other has its
  methods rebuilt as above.

The same walk re-points other substitutions (``replace``): a changed input's loaded copy
by the namespace object its state was transplanted into. Nothing here imports IPython.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import sys
import types
from collections.abc import Mapping, MutableMapping
from typing import Any

__all__ = ["Rehome", "carries_code"]

_ATOMS = frozenset({int, float, complex, str, bytes, bool, type(None), range, bytearray, memoryview})
_OPAQUE_ROOTS = frozenset({"numpy", "pandas", "pyarrow", "polars", "torch", "scipy"})
_MAX_DEPTH = 400
_HEAPTYPE = 1 << 9  # Py_TPFLAGS_HEAPTYPE: a class made by a class statement
_WALKED_BUILTINS = frozenset(
    {list, tuple, dict, set, frozenset, type, types.FunctionType, types.MethodType, functools.partial,
     collections.OrderedDict, collections.defaultdict, collections.deque, types.SimpleNamespace}
)  # fmt: skip
_SKIP_CLASS_ATTRS = frozenset(
    {"__dict__", "__weakref__", "__module__", "__qualname__", "__doc__", "__slotnames__"}
)


def module_of(kind: type) -> str:
    """A class's module name; "" where it is no string (some C metatypes expose a descriptor)."""
    module = getattr(kind, "__module__", None)
    return module if isinstance(module, str) else ""


def carries_code(pickled: bytes) -> bool:
    """Whether a cloudpickle stream holds functions or classes by value (worth a walk)."""
    return b"cloudpickle" in pickled


class Rehome:
    """One walk over loaded objects, re-pointing them into ``namespace``."""

    def __init__(self, namespace: MutableMapping[str, Any], replace: Mapping[int, Any] | None = None,
                 *, code: bool = True) -> None:  # fmt: skip
        self.namespace = namespace
        self.module = namespace.get("__name__", "__main__")
        self._code = code
        self._memo: dict[int, Any] = dict(replace or {})
        self._keep: list[Any] = []  # the originals, so their ids are not reused during the walk

    def fix(self, obj: Any, depth: int = 0) -> Any:
        """The object to use instead of ``obj`` (often ``obj`` itself, fixed in place)."""
        kind = type(obj)
        if kind in _ATOMS:
            return obj
        known = self._memo.get(id(obj), _NONE)
        if known is not _NONE:
            return known
        if depth > _MAX_DEPTH or (not kind.__flags__ & _HEAPTYPE and kind not in _WALKED_BUILTINS):
            return obj  # a C type (a Cython function, a library's object) holds no notebook code
        if module_of(kind).partition(".")[0] in _OPAQUE_ROOTS:
            return obj
        self._keep.append(obj)
        self._memo[id(obj)] = obj  # cycles meet the object itself until it is replaced
        depth += 1
        if kind is types.FunctionType:
            return self._function(obj, depth)
        if isinstance(obj, type):
            return self._class(obj, depth)
        if kind is list:
            for i, item in enumerate(obj):
                new = self.fix(item, depth)
                if new is not item:
                    obj[i] = new
            return obj
        if kind is tuple or kind is frozenset:
            items = [self.fix(item, depth) for item in obj]
            if any(new is not old for new, old in zip(items, obj, strict=True)):
                return self._remember(obj, kind(items))
            return obj
        if isinstance(obj, dict):
            self._dict(obj, depth)
            if isinstance(obj, collections.defaultdict) and obj.default_factory is not None:
                obj.default_factory = self.fix(obj.default_factory, depth)
        elif isinstance(obj, collections.deque):
            items = [self.fix(item, depth) for item in obj]
            if any(new is not old for new, old in zip(items, obj, strict=True)):
                obj.clear()
                obj.extend(items)
            return obj
        elif isinstance(obj, set):
            items = [self.fix(item, depth) for item in obj]
            if any(new is not old for new, old in zip(items, obj, strict=True)):
                obj.clear()
                obj.update(items)
        elif kind is types.MethodType:
            func, owner = self.fix(obj.__func__, depth), self.fix(obj.__self__, depth)
            if func is not obj.__func__ or owner is not obj.__self__:
                return self._remember(obj, types.MethodType(func, owner))
            return obj
        elif kind is functools.partial:
            return self._partial(obj, depth)
        elif kind is types.ModuleType or kind is types.CodeType:
            return obj
        self._instance(obj, depth)
        return obj

    # ------------------------------------------------------------------ kinds
    def _remember(self, old: Any, new: Any) -> Any:
        self._memo[id(old)] = new
        return new

    def _dict(self, obj: dict[Any, Any], depth: int) -> None:
        moved = []
        for key, value in obj.items():
            new_key = self.fix(key, depth)
            new = self.fix(value, depth)
            if new_key is not key:
                moved.append((key, new_key, new))
            elif new is not value:
                obj[key] = new
        for key, new_key, new in moved:
            del obj[key]
            obj[new_key] = new

    def _home(self, func: types.FunctionType) -> dict[str, Any] | None:
        """Where a function carried by value should live: the namespace for the notebook's,
        the module for a nested function of a local module; None when it lives there already."""
        if not self._code:
            return None
        scope = func.__globals__
        name = scope.get("__name__")
        home: Any
        if name == self.module:
            home = self.namespace
        else:
            module = sys.modules.get(name) if isinstance(name, str) else None
            home = getattr(module, "__dict__", None)
        return home if isinstance(home, dict) and home is not scope else None

    def _function(self, func: types.FunctionType, depth: int) -> Any:
        home = self._home(func)
        if home is None:
            self._parts(func, depth)
            return func
        new = types.FunctionType(func.__code__, home, func.__name__, func.__defaults__, func.__closure__)
        new.__qualname__ = func.__qualname__
        new.__module__ = func.__module__
        new.__doc__ = func.__doc__
        new.__kwdefaults__ = func.__kwdefaults__
        new.__annotations__ = func.__annotations__
        new.__dict__.update(func.__dict__)
        self._remember(func, new)
        self._parts(new, depth)
        return new

    def _parts(self, func: types.FunctionType, depth: int) -> None:
        if func.__defaults__:
            func.__defaults__ = self.fix(func.__defaults__, depth)
        if func.__kwdefaults__:
            self._dict(func.__kwdefaults__, depth)
        for cell in func.__closure__ or ():
            try:
                content = cell.cell_contents
            except ValueError:  # an empty cell: a name not bound yet
                continue
            new = self.fix(content, depth)
            if new is not content:
                cell.cell_contents = new
        if func.__dict__:
            self._dict(func.__dict__, depth)

    def _class(self, cls: type, depth: int) -> Any:
        if not self._code or module_of(cls) != self.module:
            return cls
        held = self.namespace.get(cls.__qualname__) if "." not in cls.__qualname__ else None
        if isinstance(held, type) and held is not cls and same_class(held, cls):
            return self._remember(cls, held)
        bases = tuple(self.fix(base, depth) for base in cls.__bases__)
        if bases != cls.__bases__:
            with contextlib.suppress(TypeError):  # a layout conflict: it keeps the stored bases
                cls.__bases__ = bases
        for name, attr in list(vars(cls).items()):
            if name in _SKIP_CLASS_ATTRS:
                continue
            new = self._class_attribute(attr, depth)
            if new is not attr:
                setattr(cls, name, new)
        return cls

    def _class_attribute(self, attr: Any, depth: int) -> Any:
        if isinstance(attr, (staticmethod, classmethod)):
            func = self.fix(attr.__func__, depth)
            return attr if func is attr.__func__ else type(attr)(func)
        if isinstance(attr, property):
            parts = [self.fix(f, depth) for f in (attr.fget, attr.fset, attr.fdel)]
            if all(new is old for new, old in zip(parts, (attr.fget, attr.fset, attr.fdel), strict=True)):
                return attr
            return type(attr)(parts[0], parts[1], parts[2], attr.__doc__)
        if isinstance(attr, functools.cached_property):
            attr.func = self.fix(attr.func, depth)
            return attr
        return self.fix(attr, depth)

    def _partial(self, obj: functools.partial[Any], depth: int) -> Any:
        func = self.fix(obj.func, depth)
        args = self.fix(obj.args, depth)
        keywords = dict(obj.keywords)
        self._dict(keywords, depth)
        if func is not obj.func or args is not obj.args or keywords != obj.keywords:
            obj.__setstate__((func, args, keywords, obj.__dict__ or None))  # type: ignore[attr-defined]
        return obj

    def _instance(self, obj: Any, depth: int) -> None:
        kind = type(obj)
        new_kind = self.fix(kind, depth)
        if new_kind is not kind:
            with contextlib.suppress(TypeError):  # another layout: it stays an instance of the stored class
                obj.__class__ = new_kind
        state = getattr(obj, "__dict__", None)
        if isinstance(state, dict):
            self._dict(state, depth)
        for cls in kind.__mro__:
            slots = vars(cls).get("__slots__", ())
            for slot in (slots,) if isinstance(slots, str) else slots:
                if slot in ("__dict__", "__weakref__") or not hasattr(obj, slot):
                    continue
                value = getattr(obj, slot)
                new = self.fix(value, depth)
                if new is not value:
                    object.__setattr__(obj, slot, new)


_NONE = object()


def same_class(held: type, stored: type) -> bool:
    """Same name, bases and attributes, functions compared by their code (not their globals)."""
    if held.__qualname__ != stored.__qualname__ or len(held.__bases__) != len(stored.__bases__):
        return False
    if not all(a is b or (a.__qualname__ == b.__qualname__ and same_class(a, b))
               for a, b in zip(held.__bases__, stored.__bases__, strict=True)):  # fmt: skip
        return False
    ours, theirs = _attributes(held), _attributes(stored)
    return ours.keys() == theirs.keys() and all(_same(ours[k], theirs[k]) for k in ours)


def _attributes(cls: type) -> dict[str, Any]:
    return {k: v for k, v in vars(cls).items() if k not in _SKIP_CLASS_ATTRS}


def _same(a: Any, b: Any) -> bool:
    if a is b:
        return True
    if type(a) is not type(b):
        return False
    if isinstance(a, types.FunctionType):
        return bool(a.__code__ == b.__code__ and _equal(a.__defaults__, b.__defaults__))
    if isinstance(a, (staticmethod, classmethod)):
        return _same(a.__func__, b.__func__)
    if isinstance(a, property):
        pairs = zip((a.fget, a.fset, a.fdel), (b.fget, b.fset, b.fdel), strict=True)
        return all(_same(x, y) for x, y in pairs)
    if isinstance(a, functools.cached_property):
        return _same(a.func, b.func)
    if isinstance(a, type):
        return a.__qualname__ == b.__qualname__ and same_class(a, b)
    return _equal(a, b)


def _equal(a: Any, b: Any) -> bool:
    try:
        return bool(a == b)
    except Exception:  # an array's ambiguous truth, a raising __eq__
        return False
