"""Content hashing of input values: the one place that decides what a key is made of.

Every value is fed to a streaming xxh3-128 hasher as a *frame*: a type tag, then its
fields, each with its length. Framing makes the encoding unambiguous: ``("ab", "c")`` and
``("a", "bc")``, ``1`` and ``"1"``, a list and a tuple never produce the same bytes. Data
is hashed in full, never sampled: a change anywhere in an input changes its digest.

What is hashed how (this module walks values; ``_hash_code`` hashes code, classes and
modules; ``_hash_data``, ``_hash_arrow`` and ``_hash_buffers`` hash numpy and pandas, Arrow,
and large buffers):

- atoms by their bytes (floats by their IEEE bits, so NaN's sign and payload count);
- lists, tuples and dicts in order (a dict's order is part of what a result sees:
  ``list(d)``, ``pd.DataFrame(d).columns``); sets and frozensets canonically (sorted item
  digests), because their order is an artefact of the process's hash seed;
- any other object by what pickle would rebuild it from (``__reduce_ex__``): its class
  (by code when defined in the notebook or a local module), the constructor arguments and
  its state, each walked by these same rules. So sets inside objects are canonical, a
  notebook class's instance hits again after the class cell is re-run or the kernel
  restarted, and a local class's code edits are seen.

Who may interfere: ``hash_funcs`` replace a type's value by what the function returns; a
``HashContext`` (the engine's) turns a cached resource into its token and decides what a
function's unhashable global becomes.

xxh3-128 is not a cryptographic hash: keys guard against accidents, not adversaries
(anything persisted to disk is signed separately).
"""

from __future__ import annotations

import functools
import io
import os
import struct
import tempfile
import types
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol

import cloudpickle
import xxhash

from ._hash_buffers import feed_blob
from ._hash_code import (
    cached_property_names,
    global_names,
    import_target,
    module_is_library,
    module_version,
    walk_code,
)
from ._hash_data import library_stand_in, volatile_attributes, walk_data

__all__ = [
    "MISSING",
    "HashContext",
    "HashFuncError",
    "HashFuncs",
    "Unhashable",
    "combine",
    "digest",
    "global_names",
    "import_inputs",
    "module_version",
]

HashFuncs = Mapping[type | str, Callable[[Any], Any]]

# Every digest starts with this: a change of encoding changes it, so entries persisted by an
# older encoding are never confused with new ones (they simply miss).
# 2: dicts in order, objects by their reduction, live local modules, 4 MiB pieces.
KEY_FORMAT = b"ipycache-digest-2"

# Kept under its old name: the decorators ask it whether a function is a library's.
_module_is_library = module_is_library


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


class HashFuncError(Unhashable):
    """A ``hash_funcs`` function raised: the front end names the cached function, type and func."""

    def __init__(self, value_type: type, func: Callable[[Any], Any], error: BaseException) -> None:
        name = getattr(func, "__qualname__", None) or repr(func)
        super().__init__(value_type, f"the hash function {name} raised {type(error).__name__}: {error}")
        self.func = func
        self.error = error


class HashContext(Protocol):
    """What the engine knows that hashing can't: which values are cached resources, and
    what to do with a function's global or closure value that can't be hashed."""

    def identity_of(self, value: Any) -> str | None:
        """A cached resource's token (hashed instead of the value), else None."""

    def unhashable(self, name: str, value: Any, error: Unhashable) -> str | None:
        """A token to hash for global/closure ``name`` (identity keying), or None to raise."""


def digest(value: Any, *, hash_funcs: HashFuncs | None = None, context: HashContext | None = None) -> str:
    """The hex digest (32 characters) of ``value``'s content. Raises Unhashable."""
    walker = Walker(hash_funcs, context)
    walker.h.update(KEY_FORMAT)
    try:
        walker.walk(value)
    except RecursionError:
        raise Unhashable(type(value), "it is nested deeper than Python's recursion limit") from None
    return walker.hexdigest()


# Values of these types can't change in place: the same object is the same content.
IMMUTABLE_TYPES = frozenset({int, float, complex, str, bytes, bool, type(None), range})
_LENGTH = struct.Struct("<Q")


def combine(parts: Iterable[tuple[str, str | bytes]]) -> str:
    """A key from named parts (each framed with its name and length), order preserved."""
    chunks: list[bytes] = []
    add = chunks.append
    pack = _LENGTH.pack
    for name, part in parts:  # one update: the framing is the same, the calls are fewer
        data = part.encode("utf-8", "surrogatepass") if isinstance(part, str) else bytes(part)
        add(_framed_name(name))
        add(pack(len(data)))
        add(data)
    return xxhash.xxh3_128_hexdigest(b"".join(chunks))


@functools.lru_cache(maxsize=4096)
def _framed_name(name: str) -> bytes:
    """A part's name as ``combine`` frames it: its length, then its bytes (names recur)."""
    encoded = name.encode()
    return _LENGTH.pack(len(encoded)) + encoded


def import_inputs(imports: Iterable[tuple[str, tuple[str, ...]]]) -> dict[str, Any]:
    """The modules a cell's import statements will bind, as inputs named ``import NAME``.

    A cell that runs ``import helpers`` depends on helpers' code although it binds
    ``helpers`` rather than reading it. A local module not imported yet is imported now, as
    the cell itself (or a hit, which unpickles the module) would, so that its key is the
    same before and after the first run.
    """
    return {f"import {name}": import_target(name, fromlist) for name, fromlist in imports}


_PLAIN_CONTAINERS = frozenset({list, tuple, dict, set, frozenset})
_F64 = struct.Struct("<d")
_U64 = struct.Struct("<Q")
_DISPATCH: Mapping[type, Callable[[Any], Any]] = cloudpickle.cloudpickle.Pickler.dispatch_table


class Walker:
    """One hashing pass: the hasher, the stack of values being walked (to cut cycles) and a
    memo of code-bearing values already hashed in this pass (so a module or helper reached
    along many paths is hashed once)."""

    def __init__(self, hash_funcs: HashFuncs | None, context: HashContext | None = None) -> None:
        self.h = xxhash.xxh3_128()
        self.context = context
        self._stack: dict[int, int] = {}
        self.memo: dict[int, tuple[Any, bytes]] = {}
        self._by_type: dict[type, Callable[[Any], Any]] = {}
        self._by_name: dict[str, Callable[[Any], Any]] = {}
        for target, func in (hash_funcs or {}).items():
            if isinstance(target, str):
                self._by_name[target] = func
            else:
                self._by_type[target] = func
        self._custom_active: set[int] = set()

    def hexdigest(self) -> str:
        return self.h.hexdigest()

    # framing primitives
    def tag(self, tag: bytes) -> None:
        self.h.update(bytes((len(tag),)))
        self.h.update(tag)

    def u64(self, number: int) -> None:
        self.h.update(_U64.pack(number))

    def blob(self, data: bytes | memoryview) -> None:
        feed_blob(self.h, data)

    def text(self, text: str) -> None:
        self.blob(text.encode("utf-8", "surrogatepass"))

    def sub_digest(self, value: Any) -> bytes:
        """The digest of ``value`` alone (same stack and memo), to sort, memoize or fall back."""
        saved, self.h = self.h, xxhash.xxh3_128()
        try:
            self.walk(value)
            return self.h.digest()
        finally:
            self.h = saved

    def guarded(self, name: str, value: Any) -> None:
        """A global or closure value of a function: if it can't be hashed, the context may
        key it by identity instead."""
        try:
            part = self.sub_digest(value)
        except HashFuncError:
            raise
        except Unhashable as exc:
            token = None if self.context is None else self.context.unhashable(name, value, exc)
            if token is None:
                raise
            self.tag(b"identity")
            self.text(token)
            return
        self.h.update(part)

    # dispatch
    def walk(self, value: Any) -> None:
        if self._by_type or self._by_name:
            custom = self._custom(value)
            if custom is not None:
                self.tag(b"hash_func")
                self._custom_active.add(id(value))
                try:
                    try:
                        replacement = custom(value)
                    except Exception as exc:
                        raise HashFuncError(type(value), custom, exc) from exc
                    self.walk(replacement)
                finally:
                    self._custom_active.discard(id(value))
                return
        handler = _EXACT.get(type(value))
        if handler is not None:
            handler(self, value)
            return
        if self.context is not None:
            token = self.context.identity_of(value)
            if token is not None:
                self.tag(b"resource")
                self.text(token)
                return
        marker = id(value)
        if marker in self._stack:
            self.tag(b"cycle")
            self.u64(len(self._stack) - self._stack[marker])
            return
        remembered = self.memo.get(marker)
        if remembered is not None and remembered[0] is value:
            self.h.update(remembered[1])
            return
        self._stack[marker] = len(self._stack)
        try:
            if type(value) not in _PLAIN_CONTAINERS:
                # Objects recur along many paths (a helper, a module, a matplotlib transform
                # shared by every artist): hash each once per pass, by content, as pickle
                # writes each once. Plain containers are too many and too cheap to remember.
                part = self.sub_digest_unstacked(value)
                self.memo[marker] = (value, part)
                self.h.update(part)
            else:
                self._walk_other(value)
        finally:
            del self._stack[marker]

    def sub_digest_unstacked(self, value: Any) -> bytes:
        saved, self.h = self.h, xxhash.xxh3_128()
        try:
            self._walk_other(value)
            return self.h.digest()
        finally:
            self.h = saved

    def _custom(self, value: Any) -> Callable[[Any], Any] | None:
        if id(value) in self._custom_active:
            return None
        for cls in type(value).__mro__:
            func = self._by_type.get(cls) or self._by_name.get(f"{cls.__module__}.{cls.__qualname__}")
            if func is not None:
                return func
        return None

    def _walk_other(self, value: Any) -> None:
        cls = type(value)
        if value is MISSING:
            self.tag(b"missing")
        elif cls is list or cls is tuple:
            self.tag(b"list" if cls is list else b"tuple")
            self.u64(len(value))
            for item in value:
                self.walk(item)
        elif cls is dict:
            self.tag(b"dict")  # in order: list(d) and DataFrame(d) see it
            self.u64(len(value))
            for key, item in value.items():
                self.walk(key)
                self.walk(item)
        elif cls is set or cls is frozenset:
            self._unordered(b"set" if cls is set else b"frozenset", value)
        elif isinstance(value, (set, frozenset)):
            # A subclass: its class and own state, and its items canonically (pickle would
            # write them in hash-seed order).
            self.tag(b"set_subclass")
            self.walk(cls)
            items = set.__iter__(value) if isinstance(value, set) else frozenset.__iter__(value)
            self._unordered(b"items", items)
            self.walk(getattr(value, "__dict__", None))
        elif walk_code(self, value) or walk_data(self, value):
            return
        elif isinstance(value, (io.IOBase, tempfile._TemporaryFileWrapper)):
            self._file(value)
        elif cls is types.MappingProxyType:
            self.tag(b"mappingproxy")
            self.walk(dict(value))
        elif cls is memoryview:
            self.tag(b"memoryview")
            self.text(value.format)
            self.walk(value.shape)
            self.blob(value.tobytes() if not value.c_contiguous else value.cast("B"))
        elif cls is types.CellType:
            self.tag(b"cell")
            try:
                self.walk(value.cell_contents)
            except ValueError:
                self.tag(b"empty_cell")
        else:
            self.reduced(value)

    def _unordered(self, tag: bytes, items: Iterable[Any]) -> None:
        ordered = sorted(self.sub_digest(item) for item in items)
        self.tag(tag)
        self.u64(len(ordered))
        for part in ordered:
            self.h.update(part)

    def _file(self, handle: Any) -> None:
        """Files as Streamlit hashes them: name, modification time and position (plus size);
        in-memory files by position and content."""
        name: Any = getattr(handle, "name", None)
        if isinstance(handle, tempfile._TemporaryFileWrapper):
            handle = handle.file
        if handle.closed:
            raise Unhashable(type(handle), "it is closed: neither its content nor its position can be read")
        self.tag(b"file")
        self.text(type(handle).__qualname__)
        if isinstance(handle, (io.BytesIO, io.StringIO)):
            self.u64(handle.tell())
            self.walk(handle.getvalue())
            return
        if name is None:
            raise Unhashable(type(handle), "a file object without a name can't be keyed by its file")
        self.walk(name)
        try:
            info = os.stat(name)
        except (OSError, TypeError, ValueError):
            self.tag(b"nostat")
        else:
            self.h.update(struct.pack("<qQ", info.st_mtime_ns, info.st_size))
        try:
            self.u64(handle.tell())
        except (OSError, ValueError):
            self.tag(b"notell")

    def reduced(self, value: Any) -> None:
        """Any other object, by what pickle rebuilds it from: class, arguments and state."""
        cls = type(value)
        stand_in = library_stand_in(value)
        if stand_in is not None:  # pickling it would change it (a counter) or see ids
            self.tag(b"stand_in")
            self.walk(cls)
            self.walk(stand_in)
            return
        reducer = _DISPATCH.get(cls)
        try:
            parts = reducer(value) if reducer is not None else value.__reduce_ex__(5)
        except Exception as exc:
            raise Unhashable(cls, f"{type(exc).__name__}: {exc}") from exc
        self.tag(b"object")
        self.walk(cls)
        if isinstance(parts, str):  # a module-level singleton, pickled by name
            self.text(parts)
            return
        if not isinstance(parts, tuple) or len(parts) < 2:
            raise Unhashable(cls, f"its __reduce_ex__ returned {type(parts).__name__}, not a tuple")
        rebuild, args, *rest = parts
        self.walk(rebuild)
        self.walk(args)
        state = rest[0] if rest else None
        derived = _derived_attributes(cls)
        if derived and isinstance(state, dict):
            # functools.cached_property values are derived from the rest of the state, and
            # a few libraries' back-links are keyed by id() (see volatile_attributes).
            state = {k: v for k, v in state.items() if k not in derived}
        self.walk(state)
        for extra in rest[1:3]:
            if extra is None:
                self.tag(b"none")
            else:  # listitems / dictitems iterators
                self.walk(list(extra))


def _derived_attributes(cls: type) -> frozenset[str]:
    try:
        return _derived_attributes_of(cls)
    except TypeError:  # a class whose metaclass makes it unhashable
        return cached_property_names(cls) | volatile_attributes(cls)


@functools.lru_cache(maxsize=1024)
def _derived_attributes_of(cls: type) -> frozenset[str]:
    return cached_property_names(cls) | volatile_attributes(cls)


def _atom(tag: bytes, encode: Callable[[Any], bytes]) -> Callable[[Walker, Any], None]:
    def handle(walker: Walker, value: Any) -> None:
        walker.tag(tag)
        walker.blob(encode(value))

    return handle


def _encode_int(value: int) -> bytes:
    return value.to_bytes((value.bit_length() + 8) // 8 or 1, "little", signed=True)


def _encode_float(value: float) -> bytes:
    # The IEEE bits: -0.0 and 0.0 differ (1/x tells them apart), and so do NaNs of another
    # sign or payload (math.copysign and struct see them); numpy arrays are hashed the same way.
    return _F64.pack(value)


_EXACT: dict[type, Callable[[Walker, Any], None]] = {
    type(None): _atom(b"none", lambda v: b""),
    bool: _atom(b"bool", lambda v: b"\x01" if v else b"\x00"),
    int: _atom(b"int", _encode_int),
    float: _atom(b"float", _encode_float),
    complex: _atom(b"complex", lambda v: _encode_float(v.real) + _encode_float(v.imag)),
    str: _atom(b"str", lambda v: v.encode("utf-8", "surrogatepass")),
    bytes: _atom(b"bytes", lambda v: v),
    bytearray: _atom(b"bytearray", bytes),
    type(Ellipsis): _atom(b"ellipsis", lambda v: b""),
    type(NotImplemented): _atom(b"notimplemented", lambda v: b""),
}
