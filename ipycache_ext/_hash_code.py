"""Hashing code: functions, classes and modules, by what they will run.

- Installed and standard-library code is keyed by module name and distribution version.
- Code of your own (the notebook, and *local* modules: any file outside the interpreter's
  and site-packages' directories) is keyed by its **live** code objects, not its source
  file: an edited file that was not reloaded still runs its old code, and ``%autoreload``
  patches functions and methods in place. A function: its bytecode and constants (not
  its docstring, nor line numbers), defaults, closure values, the globals it reads
  (``LOAD_GLOBAL``/``LOAD_NAME`` only: ``self.conn`` reads no global ``conn``) and the
  modules it imports, transitively. A class: its bases and every attribute in its
  namespace. A local module: every attribute (functions, classes, submodules, the local
  modules it imported, and plain data such as ``config.THRESHOLD``); an attribute that
  can't be hashed (a lock) counts by its type only.
"""

from __future__ import annotations

import dis
import functools
import importlib
import importlib.metadata
import importlib.util
import os
import re
import site
import struct
import sys
import sysconfig
import time
import types
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import xxhash

from ._settle import settled

if TYPE_CHECKING:
    from ._hashing import Walker


# ------------------------------------------------------------------ library or local?
def _library_dirs() -> tuple[str, ...]:
    found = {p for name in ("stdlib", "platstdlib", "purelib", "platlib") if (p := sysconfig.get_path(name))}
    try:
        found.update(site.getsitepackages())
        found.add(site.getusersitepackages())
    except AttributeError:  # an embedded interpreter's site module can lack them
        pass
    return tuple(os.path.join(os.path.normpath(p), "") for p in found)


_LIBRARY_DIRS = _library_dirs()
_OWN_PACKAGE = __name__.partition(".")[0]  # this package: its code is pinned by its version too


def _path_is_library(path: str) -> bool:
    return os.path.normpath(path).startswith(_LIBRARY_DIRS)


_library_verdicts: dict[str, tuple[types.ModuleType, bool]] = {}


def is_library_module(module: types.ModuleType) -> bool:
    """True for installed, standard-library and built-in modules (pinned by a version)."""
    name = module.__name__
    known = _library_verdicts.get(name)
    if known is not None and known[0] is module:
        return known[1]
    verdict = _judge(module, name)
    _library_verdicts[name] = (module, verdict)
    return verdict


def _judge(module: types.ModuleType, name: str) -> bool:
    if name == "__main__":
        return False
    if name in sys.builtin_module_names or name.partition(".")[0] == _OWN_PACKAGE:
        return True
    path = getattr(module, "__file__", None)
    if isinstance(path, str):
        return _path_is_library(path)
    spec = getattr(module, "__spec__", None)
    if spec is not None and spec.origin in ("built-in", "frozen"):
        return True
    locations = list(getattr(module, "__path__", None) or ())  # a namespace package
    if locations:
        return all(isinstance(p, str) and _path_is_library(p) for p in locations)
    return False  # made at runtime (types.ModuleType("cfg")): its attributes are its content


def module_is_library(module_name: str) -> bool:
    """True for installed or standard-library modules, whose code is pinned by a version."""
    module = sys.modules.get(module_name)
    if module is None:
        return module_name == "builtins"
    return is_library_module(module)


def function_is_library(func: Any) -> bool:
    """True when ``func`` is installed code, judged by where it *lives*, not what it claims.

    A Python function's ``__module__`` is only a name (a notebook's ``exec`` namespace may be
    called ``notebook``, which is also an installed package): it is library code only when its
    globals are the globals of an installed module.
    """
    if not isinstance(func, types.FunctionType):
        return module_is_library(getattr(func, "__module__", None) or "")
    defined_in = func.__globals__.get("__name__")
    module = sys.modules.get(defined_in) if isinstance(defined_in, str) else None
    return module is not None and vars(module) is func.__globals__ and is_library_module(module)


def class_is_library(cls: type) -> bool:
    """True when ``cls`` is an installed class: its module is installed and holds it there.

    An extension type with no module name of its own (``__module__`` a descriptor) is
    compiled code that nothing in the process can change: installed, too."""
    if _type_module(cls) is None:
        return True
    if not module_is_library(cls.__module__):
        return False
    if cls.__module__ == "builtins" or "<locals>" in cls.__qualname__:
        return True
    found: Any = sys.modules.get(cls.__module__)
    for part in cls.__qualname__.split("."):
        found = getattr(found, part, None)
    return found is cls  # else hashed by its code: a class merely named after an installed module


@functools.lru_cache(maxsize=1)
def _distributions_of() -> Mapping[str, list[str]]:
    try:
        return importlib.metadata.packages_distributions()
    except Exception:  # a broken distribution's metadata must not break every key
        return {}


def _own_distribution(top: str) -> str | None:
    """``name==version`` when a distribution named like the package ships it as a regular
    package (numpy, pandas...): then no other distribution can provide it. None otherwise
    (namespace packages, modules shipped under another name): the full scan decides."""
    try:
        dist = _distribution_beside(top) or importlib.metadata.distribution(top)
        shipped = any(Path(str(dist.locate_file(f"{top}{end}"))).is_file() for end in ("/__init__.py", ".py"))
        name, version = _name_and_version(dist) if shipped else (None, None)
    except Exception:  # not installed under that name, or broken metadata
        return None
    return f"{name}=={version}" if shipped and name and version else None


def _distribution_beside(top: str) -> importlib.metadata.Distribution | None:
    """The distribution named ``top`` in the directory an imported ``top`` was loaded from.

    One listing of that ``sys.path`` entry, matched by the normalized name as
    ``importlib.metadata`` matches it, instead of its search of every entry (the standard
    library's directories are the largest): 0.1 ms instead of 2 ms in a new process. None
    when ``top`` is not imported from a file, or not exactly one such distribution sits beside it.
    """
    origin = getattr(sys.modules.get(top), "__file__", None)
    if not isinstance(origin, str):
        return None
    path = Path(origin)
    root = path.parent.parent if path.name == "__init__.py" else path.parent
    wanted = _normalized(top)
    try:
        entries = os.listdir(root)
    except OSError:
        return None
    initial = wanted[:1]
    found = sorted(
        entry
        for entry in entries
        if entry[:1].lower() == initial  # a cheap first cut: normalizing keeps the first letter
        and entry.lower().endswith((".dist-info", ".egg-info"))
        and _normalized(entry.lower().rpartition(".")[0].partition("-")[0]) == wanted
    )
    # two of them (a leftover of an interrupted upgrade): importlib.metadata's own order decides
    return importlib.metadata.PathDistribution(root / found[0]) if len(found) == 1 else None


_SEPARATORS = re.compile(r"[-_.]+")


def _normalized(name: str) -> str:
    """A distribution name as PEP 503 compares it (``Foo.Bar``, ``foo-bar``: ``foo_bar``)."""
    return _SEPARATORS.sub("_", name).lower()


def _name_and_version(dist: importlib.metadata.Distribution) -> tuple[str | None, str | None]:
    """``Name`` and ``Version`` from the metadata's header lines, as ``dist.metadata`` has them.

    Both are one-line fields near the top; reading them directly spares the email parser
    (and its imports), which is most of the first key in a new process that reads a library.
    Anything unusual (a folded line, a missing field) falls back to the parser.
    """
    text = dist.read_text("METADATA") or dist.read_text("PKG-INFO")
    fields: dict[str, str] = {}
    for line in (text or "").splitlines():
        if not line.strip():
            break  # the headers end at the first blank line; the description follows
        if line[0] in " \t":
            continue  # a folded continuation of a long field (never Name or Version)
        field, colon, value = line.partition(":")
        if colon and field in ("Name", "Version") and field not in fields:
            fields[field] = value.strip()
    if fields.get("Name") and fields.get("Version"):
        return fields["Name"], fields["Version"]
    return dist.metadata["Name"], dist.version


@functools.lru_cache(maxsize=1024)
def module_version(module_name: str) -> str:
    """The version of the distribution(s) providing a top-level package, or ''.

    Looked up in the installed metadata first, so a module has the same version whether
    or not it is imported yet (``import x`` inside a cached cell is keyed before it runs).
    """
    top = module_name.partition(".")[0]
    own = _own_distribution(top)
    if own is not None:  # the common case, without scanning every installed package (~0.9 s)
        return own
    versions: list[str] = []
    # the standard library (copyreg, whose functions rebuild many pickled objects): no
    # distribution ships it, so scanning them all for one (~0.2-0.9 s) would only find none
    stdlib = top in getattr(sys, "stdlib_module_names", ())
    for dist in () if stdlib else sorted(set(_distributions_of().get(top, ()))):
        try:
            versions.append(f"{dist}=={importlib.metadata.version(dist)}")
        except (importlib.metadata.PackageNotFoundError, ValueError):
            continue
    if versions:
        return ";".join(versions)
    version = getattr(sys.modules.get(top), "__version__", None)
    return version if isinstance(version, str) else ""


# ------------------------------------------------------------------ reading bytecode
_GLOBAL_READS = frozenset({"LOAD_GLOBAL", "LOAD_NAME", "LOAD_FROM_DICT_OR_GLOBALS", "DELETE_GLOBAL"})


def _codes(code: types.CodeType) -> list[types.CodeType]:
    found, stack = [], [code]
    while stack:
        current = stack.pop()
        found.append(current)
        stack.extend(c for c in current.co_consts if isinstance(c, types.CodeType))
    return found


@functools.lru_cache(maxsize=4096)
def _global_names(code: types.CodeType) -> tuple[str, ...]:
    names: set[str] = set()
    for current in _codes(code):
        for instruction in dis.get_instructions(current):
            if instruction.opname in _GLOBAL_READS and isinstance(instruction.argval, str):
                names.add(instruction.argval)
    return tuple(sorted(names))


def global_names(code: types.CodeType) -> list[str]:
    """Names a code object (and the code nested in it) reads as globals, sorted.

    By opcode, not ``co_names``: that tuple also holds attribute names, so ``self.conn``
    would make an unrelated global ``conn`` an input. ``LOAD_GLOBAL`` (functions),
    ``LOAD_NAME`` (class bodies, module code) and ``LOAD_FROM_DICT_OR_GLOBALS`` (3.12+) read
    globals; ``LOAD_ATTR``/``LOAD_METHOD`` read attributes; ``dis`` decodes each Python's
    argument encoding (3.11's LOAD_GLOBAL null bit, 3.12's LOAD_ATTR method bit).
    """
    return list(_global_names(code))


_IMPORT_NAME = dis.opmap["IMPORT_NAME"]


@functools.lru_cache(maxsize=4096)
def imported_names(code: types.CodeType) -> tuple[tuple[str, tuple[str, ...], int], ...]:
    """The ``import`` statements in a code object: (module, fromlist, level), in order."""
    found: list[tuple[str, tuple[str, ...], int]] = []
    for current in _codes(code):
        if _IMPORT_NAME not in current.co_code[::2]:
            continue  # every even byte is an opcode (or a cache entry's 0): no import here
        constants: list[Any] = []
        for instruction in dis.get_instructions(current):
            if instruction.opname == "IMPORT_NAME":
                level = constants[-2] if len(constants) >= 2 and isinstance(constants[-2], int) else 0
                fromlist = constants[-1] if constants and isinstance(constants[-1], tuple) else ()
                found.append((str(instruction.argval), tuple(str(n) for n in fromlist), level))
                constants.clear()
            elif instruction.opname in ("LOAD_CONST", "LOAD_SMALL_INT"):
                constants.append(instruction.argval)
            else:
                constants.clear()
    return tuple(dict.fromkeys(found))


# ------------------------------------------------------------------ imports as inputs
@dataclass(frozen=True)
class ModuleName:
    """An installed module not imported yet: hashed exactly as the loaded module would be."""

    name: str


@dataclass(frozen=True)
class ImportProblem:
    """What an import that can't succeed will do: fail (the cell or call fails too)."""

    name: str
    problem: str


def import_target(
    name: str, fromlist: tuple[str, ...] = (), level: int = 0, package: str | None = None
) -> Any:
    """The module an import statement binds, as a value to hash.

    A local module that is not imported yet is imported now (what the statement itself
    will do), so keys before and after the first run agree; an installed one is keyed by
    name and version without importing it.
    """
    if level:
        try:
            name = importlib.util.resolve_name("." * level + name, package)
        except (ImportError, ValueError) as exc:
            return ImportProblem(name, type(exc).__name__)
    module = sys.modules.get(name)
    if module is None:
        top = name.partition(".")[0]
        try:
            spec = sys.modules[top].__spec__ if top in sys.modules else importlib.util.find_spec(top)
        except (ImportError, ValueError, AttributeError) as exc:
            return ImportProblem(name, type(exc).__name__)
        if spec is None:
            return ImportProblem(name, "ModuleNotFoundError")
        origin = spec.origin if spec.origin not in (None, "built-in", "frozen") else None
        locations = list(spec.submodule_search_locations or ())
        if spec.origin in ("built-in", "frozen") or (
            (origin is None or _path_is_library(origin))
            and all(_path_is_library(p) for p in locations)
            and (origin is not None or locations)
        ):
            return ModuleName(name)
    if module is None or (fromlist and not is_library_module(module)):
        try:
            importlib.__import__(name, {}, {}, list(fromlist), 0)
            module = sys.modules[name]
        except Exception as exc:  # the cell or function will fail on it too
            return ImportProblem(name, type(exc).__name__)
    return module


def imports_are_pinned(func: types.FunctionType) -> bool:
    """True when every module ``func``'s body imports is installed (keyed by version), so a
    digest of ``func`` can be reused while its globals are the same objects; False when it
    imports a local module, whose code or attributes can change without a rebinding."""
    package = func.__globals__.get("__package__")
    for name, fromlist, level in imported_names(func.__code__):
        target = import_target(name, fromlist, level, package if isinstance(package, str) else None)
        pinned = isinstance(target, ModuleName) or (
            isinstance(target, types.ModuleType) and is_library_module(target)
        )
        if not pinned:
            return False
    return True


# ------------------------------------------------------------------ source files
def source_digest(path: Any) -> bytes:
    """The digest of a module's file, read again whenever its inode, size, mtime or ctime
    moved (ctime can't be set back by ``os.utime``, so an edit that keeps size and mtime
    is still seen). A digest is remembered for a stat only once that stat is settled: an
    edit within one tick of the filesystem's clock after the read would not move it."""
    if not isinstance(path, str):
        return b""
    try:
        info = os.stat(path)
    except OSError:
        return b"gone"
    stat = (info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns)
    known = _source_digests.get(path)
    if known is not None and known[0] == stat:
        return known[1]
    started = time.time_ns()
    try:
        with open(path, "rb") as handle:
            digest = xxhash.xxh3_128_digest(handle.read())
    except OSError:
        return b"unreadable"
    if settled(info.st_mtime_ns, info.st_ctime_ns, read_from_ns=started):
        _source_digests[path] = (stat, digest)
        if len(_source_digests) > 1024:
            del _source_digests[next(iter(_source_digests))]
    return digest


_source_digests: dict[str, tuple[tuple[int, int, int, int], bytes]] = {}


def _first(pair: tuple[str, Any]) -> str:
    return pair[0]


# ------------------------------------------------------------------ walking code
_DOCSTRING_FLAG = 0x4000000  # CO_HAS_DOCSTRING, Python 3.14+
_MODULE_SKIP = frozenset(
    {
        "__builtins__",
        "__cached__",
        "__file__",
        "__loader__",
        "__spec__",
        "__doc__",
        "__name__",
        "__package__",
        "__path__",
        "__warningregistry__",
    }
)
_CYTHON_FUNCTIONS = frozenset({"cython_function_or_method", "fused_cython_function"})
_CLASS_SKIP = frozenset(
    {
        "__dict__",
        "__weakref__",
        "__module__",
        "__doc__",
        "__qualname__",
        "__firstlineno__",
        "_abc_impl",
        "__slotnames__",
    }  # copyreg caches __slotnames__ on the class when an instance is first pickled
)


def is_code_bearing(value: Any) -> bool:
    return isinstance(value, (types.FunctionType, type, types.ModuleType, ModuleName))


def cached_property_names(cls: type) -> frozenset[str]:
    """Instance attributes that only hold a ``functools.cached_property``'s value."""
    try:
        return _cached_property_names(cls)
    except TypeError:  # an unhashable metaclass instance
        return frozenset()


@functools.lru_cache(maxsize=512)
def _cached_property_names(cls: type) -> frozenset[str]:
    """Instance attributes that only hold a ``functools.cached_property``'s value."""
    return frozenset(
        attr.attrname or name
        for klass in cls.__mro__
        for name, attr in vars(klass).items()
        if isinstance(attr, functools.cached_property)
    )


def walk_code(w: Walker, value: Any) -> bool:
    """Hash ``value`` if it is code (function, class, module, code object); False otherwise."""
    if isinstance(value, (types.FunctionType, types.MethodType, types.BuiltinFunctionType)):
        _function(w, value)
    elif type(value).__name__ in _CYTHON_FUNCTIONS:
        _compiled_function(w, value)
    elif isinstance(value, type):
        _class(w, value)
    elif isinstance(value, types.ModuleType):
        _module(w, value)
    elif isinstance(value, ModuleName):
        _library(w, b"libmodule", value.name, value.name)
    elif isinstance(value, types.CodeType):
        _code(w, value)
    elif (
        callable(value)
        and getattr(value, "__wrapped__", None) is not None
        and not isinstance(getattr(type(value), "__wrapped__", None), property)
        and class_is_library(type(value))
    ):
        # functools.cache / lru_cache-style wrappers: the code is the wrapped function's. A
        # notebook class's wrapper is an object like any other: its state counts too.
        w.tag(b"wrapper")
        w.walk(type(value))
        w.walk(value.__wrapped__)
    else:
        return False
    return True


def _library(w: Walker, tag: bytes, module: str, qualname: str) -> None:
    w.tag(tag)
    w.text(module)
    w.text(qualname)
    w.text(module_version(module))


def _function(w: Walker, func: Any) -> None:
    if isinstance(func, types.MethodType):
        w.tag(b"method")
        w.walk(func.__self__)
        w.walk(func.__func__)
        return
    owner = getattr(func, "__self__", None)
    if isinstance(func, types.BuiltinFunctionType) and not isinstance(owner, (types.ModuleType, type(None))):
        w.tag(b"builtin_method")  # {"a": 1}.get: what it does depends on its dict
        w.text(func.__name__)
        w.walk(owner)
        return
    module = getattr(func, "__module__", None) or ""
    if not isinstance(func, types.FunctionType) or function_is_library(func):
        _library(w, b"libfunc", module, getattr(func, "__qualname__", repr(func)))
        if isinstance(func, types.FunctionType):
            _wrapped_code(w, func)
        return
    w.tag(b"func")
    w.text(func.__qualname__)
    _code(w, func.__code__)
    w.walk(func.__defaults__)
    w.walk(func.__kwdefaults__)
    cells = func.__closure__ or ()
    w.u64(len(cells))
    for name, cell in zip(func.__code__.co_freevars, cells, strict=False):
        try:
            contents = cell.cell_contents
        except ValueError:  # an empty cell: the variable is not bound yet
            w.tag(b"empty_cell")
            continue
        w.guarded(name, contents)
    namespace = func.__globals__
    for name in global_names(func.__code__):
        if name in namespace:
            w.text(name)
            w.guarded(name, namespace[name])
    attributes = getattr(func, "__dict__", None)
    if attributes:  # f.factor = 2, and what functools.wraps copied (__wrapped__ among them)
        w.tag(b"attributes")
        w.u64(len(attributes))
        for name, value in sorted(attributes.items(), key=_first):
            w.text(name)
            w.guarded(name, value)
    package = namespace.get("__package__")
    for name, fromlist, level in imported_names(func.__code__):
        w.tag(b"import")
        w.text(name)
        w.walk(import_target(name, fromlist, level, package if isinstance(package, str) else None))


def dispatch_registry(func: Any) -> Any:
    """A ``functools.singledispatch`` function's registry (a read-only view), or None."""
    registry = getattr(func, "registry", None)
    if isinstance(registry, types.MappingProxyType) and callable(getattr(func, "dispatch", None)):
        return registry
    return None


def _wrapped_code(w: Walker, func: types.FunctionType) -> None:
    """What an installed function runs of yours: ``contextlib.contextmanager``, an installed
    decorator built with ``functools.wraps`` (``__wrapped__``), and the implementations
    ``functools.singledispatch`` has registered. Its own code is pinned by its version."""
    wrapped = getattr(func, "__wrapped__", None)
    if wrapped is not None and wrapped is not func:
        w.tag(b"wraps")
        w.walk(wrapped)
    registry = dispatch_registry(func)
    if registry is not None:
        w.tag(b"dispatch")
        w.walk(dict(registry))


def _compiled_function(w: Walker, func: Any) -> None:
    """A Cython function (pandas' and pyarrow's own, or yours from ``%%cython``): keyed by
    its module's version when that module is installed, else by the compiled file's digest."""
    module = getattr(func, "__module__", None)
    module = module if isinstance(module, str) else ""
    qualname = getattr(func, "__qualname__", None)
    qualname = qualname if isinstance(qualname, str) else repr(func)
    if module_is_library(module):
        _library(w, b"libfunc", module, qualname)
        return
    w.tag(b"compiled")
    w.text(module)
    w.text(qualname)
    w.blob(source_digest(getattr(sys.modules.get(module), "__file__", None)))


def _type_module(cls: type) -> str | None:
    """``cls.__module__``, or None for an extension type whose ``__module__`` is a descriptor
    for its instances (Cython's shared function and metaclass types)."""
    module = cls.__module__
    return module if isinstance(module, str) else None


def _docstring_slot(code: types.CodeType) -> bool:
    """Whether the first constant is a function's docstring slot: a docstring edit is no change."""
    if sys.version_info >= (3, 14):
        return bool(code.co_flags & _DOCSTRING_FLAG)
    # Up to 3.13 a function's first constant is its docstring or None (lambdas and
    # comprehensions, named "<...>", have none; CO_OPTIMIZED marks a function body).
    return bool(code.co_flags & 0x1) and not code.co_name.startswith("<") and bool(code.co_consts)


def _code(w: Walker, code: types.CodeType) -> None:
    w.tag(b"code")
    w.blob(code.co_code)
    w.blob(getattr(code, "co_exceptiontable", b""))
    for names in (code.co_names, code.co_varnames, code.co_freevars, code.co_cellvars):
        w.text("\x00".join(names))
    constants = code.co_consts[1:] if _docstring_slot(code) else code.co_consts
    w.h.update(
        struct.pack(
            "<5Q",
            code.co_argcount,
            code.co_posonlyargcount,
            code.co_kwonlyargcount,
            code.co_flags & ~_DOCSTRING_FLAG,
            len(constants),
        )
    )
    for const in constants:
        if isinstance(const, types.CodeType):
            _code(w, const)
        else:
            w.walk(const)


def _class(w: Walker, cls: type) -> None:
    if class_is_library(cls):
        _library(w, b"libclass", _type_module(cls) or type.__repr__(cls), cls.__qualname__)
        return
    w.tag(b"class")
    w.text(cls.__module__)
    w.text(cls.__qualname__)
    w.walk(cls.__bases__)
    w.walk(type(cls))  # the metaclass
    attrs = sorted(((k, v) for k, v in vars(cls).items() if k not in _CLASS_SKIP), key=_first)
    w.u64(len(attrs))
    for name, attr in attrs:
        w.text(name)
        if isinstance(attr, (staticmethod, classmethod)):
            w.tag(type(attr).__name__.encode())
            w.walk(attr.__func__)
        elif isinstance(attr, property):
            w.tag(b"property")
            w.walk((attr.fget, attr.fset, attr.fdel))
        elif isinstance(attr, functools.cached_property):
            w.tag(b"cached_property")  # its lock (3.11) is no part of what it computes
            w.walk(attr.func)
        else:
            w.walk(attr)


def _module(w: Walker, module: types.ModuleType) -> None:
    name = module.__name__
    if is_library_module(module):
        _library(w, b"libmodule", name, name)
        return
    if name == "__main__":  # the notebook's own namespace: its names are inputs one by one
        w.tag(b"main")
        return
    w.tag(b"module")
    w.text(name)
    # The file too: a cell that reloads the module itself (importlib.reload) runs what it says.
    w.blob(source_digest(getattr(module, "__file__", None)))
    from ._hashing import HashFuncError, Unhashable

    entries = sorted(((k, v) for k, v in vars(module).items() if k not in _MODULE_SKIP), key=_first)
    w.u64(len(entries))
    for key, attribute in entries:
        w.text(key)
        try:
            part = w.sub_digest(attribute)
        except HashFuncError:
            raise
        except Unhashable:  # a lock, a connection: by type, so a restart still hits
            w.tag(b"opaque")
            w.text(f"{type(attribute).__module__}.{type(attribute).__qualname__}")
            continue
        w.h.update(part)
