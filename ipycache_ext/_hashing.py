"""Content hashing of input values: the one place that decides what a key is made of.

Every value is fed to a streaming xxh3-128 hasher as a *frame*: a type tag, then its
fields, each with its length. Framing makes the encoding unambiguous: ``("ab", "c")`` and
``("a", "bc")``, ``1`` and ``"1"``, a list and a tuple never produce the same bytes. Data
is hashed in full, never sampled: a change anywhere in an input changes its digest.

Supported by content: None, bool, int, float, complex, str, bytes, containers
(recursively, with cycle protection; dicts and sets independent of insertion order,
exactly where Python's equality is), numpy arrays and scalars (dtype, shape, all bytes),
pandas Index/Series/DataFrame (type, names, dtypes, index, all values), functions
defined in the notebook (code, defaults, closure values and the globals they read,
transitively), classes defined in the notebook (their methods and attributes), modules
(name and version), and anything else through its cloudpickle stream, whose large
buffers are hashed in place.

xxh3-128 is not a cryptographic hash: keys guard against accidents, not adversaries
(anything persisted to disk is signed separately).
"""

from __future__ import annotations

import functools
import importlib.metadata
import math
import os
import pickle
import struct
import sys
import sysconfig
import types
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import cloudpickle
import xxhash

HashFuncs = Mapping[type | str, Callable[[Any], Any]]


class _Missing:
    """Marks an input name that is not defined in the namespace when the key is built."""

    _instance: _Missing | None = None

    def __new__(cls) -> _Missing:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()


class Unhashable(Exception):
    """Raised inside hashing; front ends turn it into UnhashableInputError with a name."""

    def __init__(self, value_type: type, reason: str) -> None:
        super().__init__(reason)
        self.value_type = value_type
        self.reason = reason


def digest(value: Any, *, hash_funcs: HashFuncs | None = None) -> str:
    """The hex digest (32 characters) of ``value``'s content. Raises Unhashable."""
    walker = _Walker(hash_funcs)
    try:
        walker.walk(value)
    except RecursionError:
        raise Unhashable(type(value), "it is nested deeper than Python's recursion limit") from None
    return walker.hexdigest()


def combine(parts: Iterable[tuple[str, str | bytes]]) -> str:
    """A key from named parts (each framed with its name and length), order preserved."""
    h = xxhash.xxh3_128()
    for name, part in parts:
        data = part.encode("utf-8", "surrogatepass") if isinstance(part, str) else part
        encoded = name.encode()
        h.update(struct.pack("<Q", len(encoded)))
        h.update(encoded)
        h.update(struct.pack("<Q", len(data)))
        h.update(data)
    return h.hexdigest()


# --------------------------------------------------------------------------- helpers
_LIBRARY_DIRS = tuple(
    {p for name in ("stdlib", "platstdlib", "purelib", "platlib") if (p := sysconfig.get_path(name))}
)


@functools.lru_cache(maxsize=1024)
def _module_is_library(module_name: str) -> bool:
    """True for installed or standard-library modules, whose code is pinned by a version."""
    module = sys.modules.get(module_name)
    if module is None or module_name in ("__main__", "builtins"):
        return module_name == "builtins"
    path = getattr(module, "__file__", None)
    if path is None:
        return True  # built into the interpreter
    return any(path.startswith(d) for d in _LIBRARY_DIRS)


@functools.lru_cache(maxsize=1024)
def module_version(module_name: str) -> str:
    """The distribution version of a top-level package, or '' when there is none."""
    top = module_name.partition(".")[0]
    module = sys.modules.get(top)
    version = getattr(module, "__version__", None)
    if isinstance(version, str):
        return version
    try:
        return importlib.metadata.version(top)
    except (importlib.metadata.PackageNotFoundError, ValueError):
        return ""


def _source_digest(path: str | None) -> bytes:
    """The digest of a module's source file, re-read only when the file changes."""
    if not path:
        return b""
    try:
        info = os.stat(path)
    except OSError:
        return b""
    return _file_digest(path, info.st_mtime_ns, info.st_size)


@functools.lru_cache(maxsize=256)
def _file_digest(path: str, mtime_ns: int, size: int) -> bytes:
    try:
        with open(path, "rb") as handle:
            return xxhash.xxh3_128_digest(handle.read())
    except OSError:
        return b""


def global_names(code: types.CodeType) -> list[str]:
    """Names a code object (and the code nested in it) may read as globals, sorted."""
    names: set[str] = set()
    stack = [code]
    while stack:
        current = stack.pop()
        names.update(current.co_names)
        stack.extend(c for c in current.co_consts if isinstance(c, types.CodeType))
    return sorted(names)


_F64 = struct.Struct("<d")
_U64 = struct.Struct("<Q")
_PLAIN_ATTRS = frozenset({"__dict__", "__weakref__", "__module__", "__doc__", "__qualname__"})


class _Walker:
    """One hashing pass; keeps the stack of containers being walked to cut cycles."""

    def __init__(self, hash_funcs: HashFuncs | None) -> None:
        self._h = xxhash.xxh3_128()
        self._stack: dict[int, int] = {}
        self._by_type: dict[type, Callable[[Any], Any]] = {}
        self._by_name: dict[str, Callable[[Any], Any]] = {}
        for target, func in (hash_funcs or {}).items():
            if isinstance(target, str):
                self._by_name[target] = func
            else:
                self._by_type[target] = func
        self._custom_active: set[int] = set()

    def hexdigest(self) -> str:
        return self._h.hexdigest()

    # framing primitives
    def _tag(self, tag: bytes) -> None:
        self._h.update(bytes((len(tag),)))
        self._h.update(tag)

    def _blob(self, data: bytes | memoryview) -> None:
        self._h.update(_U64.pack(memoryview(data).nbytes))
        self._h.update(data)

    def _text(self, text: str) -> None:
        self._blob(text.encode("utf-8", "surrogatepass"))

    def _sub_digest(self, value: Any) -> bytes:
        saved, self._h = self._h, xxhash.xxh3_128()
        try:
            self.walk(value)
            return self._h.digest()
        finally:
            self._h = saved

    # dispatch
    def walk(self, value: Any) -> None:
        if self._by_type or self._by_name:
            custom = self._custom(value)
            if custom is not None:
                self._tag(b"hash_func")
                self._custom_active.add(id(value))
                try:
                    self.walk(custom(value))
                finally:
                    self._custom_active.discard(id(value))
                return
        handler = _EXACT.get(type(value))
        if handler is not None:
            handler(self, value)
            return
        marker = id(value)
        if marker in self._stack:
            self._tag(b"cycle")
            self._h.update(_U64.pack(len(self._stack) - self._stack[marker]))
            return
        self._stack[marker] = len(self._stack)
        try:
            self._walk_other(value)
        finally:
            del self._stack[marker]

    def _custom(self, value: Any) -> Callable[[Any], Any] | None:
        if id(value) in self._custom_active:
            return None
        for cls in type(value).__mro__:
            func = self._by_type.get(cls) or self._by_name.get(f"{cls.__module__}.{cls.__qualname__}")
            if func is not None:
                return func
        return None

    def _walk_other(self, value: Any) -> None:
        if value is MISSING:
            self._tag(b"missing")
        elif isinstance(value, (list, tuple)):
            self._sequence(value)
        elif isinstance(value, dict) and type(value) not in (dict, OrderedDict):
            # A subclass behaves differently (defaultdict(int) vs (list), Counter): say which.
            cls = type(value)
            self._tag(b"dict_subclass")
            self._text(f"{cls.__module__}.{cls.__qualname__}")
            self.walk(getattr(value, "default_factory", None))
            self.walk(dict(value))
        elif isinstance(value, OrderedDict):
            self._tag(b"odict")
            self._h.update(_U64.pack(len(value)))
            for k, v in value.items():
                self.walk(k)
                self.walk(v)
        elif isinstance(value, dict):
            self._unordered(b"dict", (self._sub_digest((k, v)) for k, v in value.items()))
        elif isinstance(value, (set, frozenset)):
            self._unordered(b"set", (self._sub_digest(v) for v in value))
        elif isinstance(value, (types.FunctionType, types.MethodType, types.BuiltinFunctionType)):
            self._function(value)
        elif isinstance(value, type):
            self._class(value)
        elif isinstance(value, types.ModuleType):
            self._tag(b"module")
            self._text(value.__name__)
            if _module_is_library(value.__name__):
                self._text(module_version(value.__name__))
            else:  # a module of the user's own, maybe edited and autoreloaded: its source counts
                self._blob(_source_digest(getattr(value, "__file__", None)))
        elif self._numpy_or_pandas(value):
            return
        elif callable(value) and getattr(value, "__wrapped__", None) is not None:
            # functools.cache / lru_cache / wraps-style wrappers: the code is the wrapped function's.
            self._tag(b"wrapper")
            self._text(f"{type(value).__module__}.{type(value).__qualname__}")
            self.walk(value.__wrapped__)
        else:
            self._pickled(value)

    def _sequence(self, value: list[Any] | tuple[Any, ...]) -> None:
        cls = type(value)
        self._tag(b"list" if cls is list else b"tuple" if cls is tuple else b"seq")
        if cls not in (list, tuple):
            self._text(f"{cls.__module__}.{cls.__qualname__}")
        self._h.update(_U64.pack(len(value)))
        for item in value:
            self.walk(item)

    def _unordered(self, tag: bytes, digests: Iterable[bytes]) -> None:
        ordered = sorted(digests)
        self._tag(tag)
        self._h.update(_U64.pack(len(ordered)))
        for d in ordered:
            self._h.update(d)

    # code
    def _function(self, func: Any) -> None:
        if isinstance(func, types.MethodType):
            self._tag(b"method")
            self.walk(func.__self__)
            self.walk(func.__func__)
            return
        owner = getattr(func, "__self__", None)
        if (
            isinstance(func, types.BuiltinFunctionType)
            and owner is not None
            and not isinstance(owner, types.ModuleType)
        ):
            self._tag(b"builtin_method")  # {"a": 1}.get: what it does depends on its dict
            self._text(func.__name__)
            self.walk(owner)
            return
        module = getattr(func, "__module__", None) or ""
        if not isinstance(func, types.FunctionType) or _module_is_library(module):
            self._tag(b"libfunc")
            self._text(module)
            self._text(getattr(func, "__qualname__", repr(func)))
            self._text(module_version(module))
            return
        self._tag(b"func")
        self._text(func.__qualname__)
        self._code(func.__code__)
        self.walk(func.__defaults__)
        self.walk(func.__kwdefaults__)
        cells = func.__closure__ or ()
        self._h.update(_U64.pack(len(cells)))
        for cell in cells:
            try:
                self.walk(cell.cell_contents)
            except ValueError:  # an empty cell: the variable is not bound yet
                self._tag(b"empty_cell")
        self._globals(func.__code__, func.__globals__)

    def _globals(self, code: types.CodeType, namespace: Mapping[str, Any]) -> None:
        for name in global_names(code):
            if name in namespace:
                self._text(name)
                self.walk(namespace[name])

    def _code(self, code: types.CodeType) -> None:
        self._tag(b"code")
        self._blob(code.co_code)
        for names in (code.co_names, code.co_varnames, code.co_freevars, code.co_cellvars):
            self._text("\x00".join(names))
        self._h.update(
            struct.pack(
                "<5Q",
                code.co_argcount,
                code.co_posonlyargcount,
                code.co_kwonlyargcount,
                code.co_flags,
                len(code.co_consts),
            )
        )
        for const in code.co_consts:
            if isinstance(const, types.CodeType):
                self._code(const)
            else:
                self.walk(const)

    def _class(self, cls: type) -> None:
        if _module_is_library(cls.__module__):
            self._tag(b"libclass")
            self._text(cls.__module__)
            self._text(cls.__qualname__)
            self._text(module_version(cls.__module__))
            return
        self._tag(b"class")
        self._text(cls.__qualname__)
        self.walk(cls.__bases__)
        attrs = sorted((k, v) for k, v in vars(cls).items() if k not in _PLAIN_ATTRS)
        self._h.update(_U64.pack(len(attrs)))
        for name, attr in attrs:
            self._text(name)
            if isinstance(attr, (staticmethod, classmethod)):
                self.walk(attr.__func__)
            elif isinstance(attr, property):
                self.walk((attr.fget, attr.fset, attr.fdel))
            else:
                self.walk(attr)

    # data libraries (only looked at when already imported: hashing never imports them)
    def _numpy_or_pandas(self, value: Any) -> bool:
        np = sys.modules.get("numpy")
        if np is not None:
            if type(value) is np.ndarray:
                self._ndarray(value)
                return True
            if isinstance(value, np.ndarray):  # masked arrays, matrices: their pickle has it all
                self._pickled(value)
                return True
            if isinstance(value, np.generic):
                self._tag(b"np.scalar")
                self._text(value.dtype.str)
                if value.dtype.hasobject:
                    self.walk(value.item())
                else:
                    self._blob(value.tobytes())
                return True
        pd = sys.modules.get("pandas")
        if pd is None:
            return False
        if isinstance(value, pd.DataFrame):
            self._tag(b"pd.DataFrame")
            self._text(type(value).__qualname__)
            self.walk(value.columns)
            self.walk(value.index)
            self._h.update(_U64.pack(value.shape[1]))
            for column in (value.iloc[:, i] for i in range(value.shape[1])):
                self._text(str(column.dtype))
                self._array(column.array)
            return True
        if isinstance(value, pd.Series):
            self._tag(b"pd.Series")
            self._text(type(value).__qualname__)
            self.walk(value.name)
            self.walk(value.index)
            self._text(str(value.dtype))
            self._array(value.array)
            return True
        if isinstance(value, pd.MultiIndex):
            self._tag(b"pd.MultiIndex")
            self.walk(list(value.names))
            self.walk(list(value.levels))
            self.walk([value.codes[i] for i in range(value.nlevels)])
            return True
        if isinstance(value, pd.RangeIndex):
            self._tag(b"pd.RangeIndex")
            self.walk(value.name)
            self.walk((value.start, value.stop, value.step))
            return True
        if isinstance(value, pd.Index):
            self._tag(b"pd.Index")
            self._text(type(value).__qualname__)
            self.walk(value.name)
            self._text(str(value.dtype))
            self._array(value.array)
            return True
        if isinstance(value, pd.api.extensions.ExtensionArray):
            self._array(value)
            return True
        return False

    def _ndarray(self, array: Any) -> None:
        self._tag(b"ndarray")
        self._text(array.dtype.str if array.dtype.fields is None else repr(array.dtype.descr))
        self.walk(tuple(int(n) for n in array.shape))
        if array.dtype.hasobject:
            items = array.ravel(order="C").tolist()
            if all(type(item) is str for item in items):
                self._strings(items)
            else:
                for item in items:
                    self.walk(item)
            return
        np = sys.modules["numpy"]
        contiguous = np.ascontiguousarray(array)
        self._blob(memoryview(contiguous.reshape(-1).view(np.uint8)))

    def _strings(self, items: list[str]) -> None:
        """Many strings at once: their concatenation plus every length, so the split is unique."""
        np = sys.modules["numpy"]
        self._tag(b"strings")
        lengths = np.fromiter(map(len, items), dtype=np.int64, count=len(items))
        self._blob(memoryview(lengths).cast("B"))
        self._blob("".join(items).encode("utf-8", "surrogatepass"))

    def _array(self, array: Any) -> None:
        """The values of a pandas column or index, by their physical layout."""
        pd = sys.modules["pandas"]
        self._text(type(array).__qualname__)
        if isinstance(array, pd.Categorical):
            self.walk(array.categories)
            self.walk(bool(array.ordered))
            self._ndarray(array.codes)
            return
        ndarray = getattr(array, "_ndarray", None)  # numpy-backed: datetimes, python strings
        if ndarray is not None:
            self._text(str(array.dtype))
            self._ndarray(ndarray)
            return
        data, mask = getattr(array, "_data", None), getattr(array, "_mask", None)
        if data is not None and mask is not None:  # masked: Int64, Float64, boolean
            self._ndarray(data)
            self._ndarray(mask)
            return
        arrow = getattr(array, "_pa_array", None)
        if arrow is not None:
            self._arrow(arrow)
            return
        self._pickled(array)

    def _arrow(self, chunked: Any) -> None:
        """Arrow columns by their buffers, hashed in place, with each chunk's offset and length.

        Slices share their parent's buffers, so the offset and length are what tell two
        slices of one buffer apart; the whole buffer is hashed, never a sample of it.
        """
        self._tag(b"arrow")
        self._text(str(chunked.type))
        self._h.update(_U64.pack(chunked.num_chunks))
        for chunk in chunked.chunks:
            self._arrow_array(chunk)

    def _arrow_array(self, chunk: Any) -> None:
        self._text(str(chunk.type))
        self._h.update(struct.pack("<3Q", len(chunk), chunk.offset, chunk.null_count))
        buffers = chunk.buffers()  # children's buffers included
        self._h.update(_U64.pack(len(buffers)))
        for buffer in buffers:
            if buffer is None:
                self._tag(b"nobuf")
            else:
                self._blob(memoryview(buffer))
        dictionary = getattr(chunk, "dictionary", None)  # dictionary-encoded: the values live here
        if dictionary is not None:
            self._tag(b"dictionary")
            self._arrow_array(dictionary)

    def _pickled(self, value: Any) -> None:
        cls = type(value)
        self._tag(b"pickle")
        self._text(f"{cls.__module__}.{cls.__qualname__}")
        sizes: list[int] = []

        def on_buffer(buffer: pickle.PickleBuffer) -> None:
            raw = buffer.raw()
            sizes.append(raw.nbytes)
            self._blob(raw)

        try:
            stream = cloudpickle.dumps(value, protocol=5, buffer_callback=on_buffer)
        except Exception as exc:
            raise Unhashable(cls, f"{type(exc).__name__}: {exc}") from exc
        self._blob(stream)
        self._h.update(_U64.pack(len(sizes)))


def _atom(tag: bytes, encode: Callable[[Any], bytes]) -> Callable[[_Walker, Any], None]:
    def handle(walker: _Walker, value: Any) -> None:
        walker._tag(tag)
        walker._blob(encode(value))

    return handle


def _encode_int(value: int) -> bytes:
    return value.to_bytes((value.bit_length() + 8) // 8 or 1, "little", signed=True)


def _encode_float(value: float) -> bytes:
    # All NaNs are one value for caching; -0.0 and 0.0 stay apart (1/x tells them apart).
    return b"nan" if math.isnan(value) else _F64.pack(value)


_EXACT: dict[type, Callable[[_Walker, Any], None]] = {
    type(None): _atom(b"none", lambda v: b""),
    bool: _atom(b"bool", lambda v: b"\x01" if v else b"\x00"),
    int: _atom(b"int", _encode_int),
    float: _atom(b"float", _encode_float),
    complex: _atom(b"complex", lambda v: _encode_float(v.real) + _encode_float(v.imag)),
    str: _atom(b"str", lambda v: v.encode("utf-8", "surrogatepass")),
    bytes: _atom(b"bytes", lambda v: v),
    bytearray: _atom(b"bytearray", bytes),
    type(Ellipsis): _atom(b"ellipsis", lambda v: b""),
}
