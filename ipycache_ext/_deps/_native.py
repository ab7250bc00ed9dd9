"""Readers and writers that open files in native code, where no audit event is raised.

pyarrow (and pandas' ``read_parquet``, which calls it), polars, duckdb, h5py and PyTables
open files in C/C++/Rust. Their public entry points are wrapped once, on the first
recording, or right after the library is imported if that comes later (a meta-path hook
that only looks at the names below). Outside a recording a wrapper costs one list lookup
and one extra call (measured in ``benchmarks/bench_deps.py``). Code that bound a reader
before the wrapping (``from pyarrow.parquet import read_table`` before the first cached
computation ran) calls the original: such reads are not seen (documented).

Globs (``glob.glob``, ``Path.glob``) are wrapped too: their dependency is the match list,
and the directory scans they do internally are not recorded as listings.
"""

from __future__ import annotations

import contextlib
import functools
import glob as _glob
import importlib.abc
import inspect
import os
import pathlib
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from ._state import LIVE, Observations, current

_MARK = "__ipycache_deps_original__"
_ABSENT = object()


@dataclass(frozen=True)
class Target:
    """One entry point: where it lives, which argument is the path, what it does with it."""

    module: str
    name: str  # "read_table", or "ParquetFile.__init__" for a class's constructor
    keyword: str  # the path parameter's name (its position is read from the signature)
    role: str = "read"  # or "write", "connect" (a database: read and maybe written), "mode"
    position: int = 0  # used when the signature can't be read (some compiled functions)
    mode_keyword: str = "mode"
    mode_position: int = 1
    default_mode: str = "r"


def _targets() -> tuple[Target, ...]:
    t = Target
    pq, feather, csv, orc, ds, ipc, pl = (
        "pyarrow.parquet", "pyarrow.feather", "pyarrow.csv", "pyarrow.orc", "pyarrow.dataset",
        "pyarrow.ipc", "polars",
    )  # fmt: skip
    reads = [
        t(pq, "read_table", "source"),
        t(pq, "read_pandas", "source"),
        t(pq, "read_metadata", "where"),
        t(pq, "read_schema", "where"),
        t(pq, "ParquetFile.__init__", "source", "read", 1),
        t(pq, "ParquetDataset.__init__", "path_or_paths", "read", 1),
        t(feather, "read_table", "source"),
        t(feather, "read_feather", "source"),
        t(csv, "read_csv", "input_file"),
        t(csv, "open_csv", "input_file"),
        t("pyarrow.json", "read_json", "input_file"),
        t(orc, "read_table", "source"),
        t(orc, "ORCFile.__init__", "source", "read", 1),
        t(ds, "dataset", "source"),
        t(ds, "parquet_dataset", "metadata_path"),
        t(ipc, "open_file", "source"),
        t(ipc, "open_stream", "source"),
        t("pyarrow", "input_stream", "source"),
        t("pyarrow", "memory_map", "path", "mode"),
        t("duckdb", "connect", "database", "connect"),
        *(t("duckdb", name, "path_or_buffer") for name in ("read_csv", "read_json", "from_csv_auto")),
        *(t("duckdb", name, "file_glob") for name in ("read_parquet", "from_parquet")),
        t("h5py", "File.__init__", "name", "mode", 1, "mode", 2),
        t("tables", "open_file", "filename", "mode", 0, "mode", 1),
    ]
    readers = ("read_csv", "read_parquet", "read_ipc", "read_ipc_stream", "read_ndjson", "read_json",
               "read_avro", "read_excel", "read_ods", "read_delta", "scan_csv", "scan_parquet",
               "scan_ipc", "scan_ndjson", "scan_delta")  # fmt: skip
    reads += [t(pl, name, "source") for name in readers]
    writes = [
        t(pq, "write_table", "where", "write", 1),
        t(pq, "write_to_dataset", "root_path", "write", 1),
        t(pq, "write_metadata", "where", "write", 1),
        t(pq, "ParquetWriter.__init__", "where", "write", 1),
        t(feather, "write_feather", "dest", "write", 1),
        t(csv, "write_csv", "output_file", "write", 1),
        t(orc, "write_table", "where", "write", 1),
        t(ds, "write_dataset", "base_dir", "write", 1),
        t(ipc, "new_file", "sink", "write"),
        t(ipc, "new_stream", "sink", "write"),
        t("pyarrow", "output_stream", "source", "write"),
        t("pyarrow", "create_memory_map", "path", "write"),
    ]
    for name in ("write_csv", "write_parquet", "write_ipc", "write_ipc_stream", "write_ndjson",
                 "write_json", "write_avro", "write_excel", "write_delta"):  # fmt: skip
        writes.append(t(pl, f"DataFrame.{name}", "file" if name != "write_delta" else "target", "write", 1))
    for name in ("sink_parquet", "sink_csv", "sink_ipc", "sink_ndjson"):
        writes.append(t(pl, f"LazyFrame.{name}", "path", "write", 1))
    return (*reads, *writes)


TARGETS = _targets()
MODULES = frozenset(target.module for target in TARGETS) | {"numpy.random", "random"}


def note_source(obs: Observations, source: Any, role: str) -> None:
    """Record a path (or a list of them) handed to a native reader or writer."""
    if isinstance(source, (list, tuple)):
        for item in source:
            note_source(obs, item, role)
        return
    if not isinstance(source, (str, bytes, os.PathLike)):
        return  # a buffer or an already open file: its opening was seen (or it is in memory)
    text = os.fsdecode(os.fspath(source))
    if "://" in text:
        if not text.startswith("file://"):
            return  # remote: not a file of this machine (declare it with depends_on if it matters)
        text = text[len("file://") :]
    path = obs.resolve(text)
    if path is None:
        return
    if role == "write":
        obs.note_write(path)
    elif _glob.has_magic(text) and not os.path.exists(path):
        obs.patterns.setdefault(path)
    elif os.path.isdir(path):
        obs.trees.setdefault(path)
    else:
        obs.note_read(path, role)
        if role == "connect":  # duckdb's write-ahead log: what another writer left there is data too
            obs.note_read(f"{path}.wal", role)


def _position(func: Callable[..., Any], target: Target, keyword: str, fallback: int) -> int:
    try:
        names = list(inspect.signature(func).parameters)
    except (TypeError, ValueError):
        return fallback
    return names.index(keyword) if keyword in names else fallback


def _argument(args: Sequence[Any], kwargs: dict[str, Any], keyword: str, position: int) -> Any:
    if keyword in kwargs:
        return kwargs[keyword]
    return args[position] if len(args) > position else _ABSENT


def _wrap(func: Callable[..., Any], target: Target) -> Callable[..., Any]:
    position = _position(func, target, target.keyword, target.position)
    mode_position = _position(func, target, target.mode_keyword, target.mode_position)

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        obs = current() if LIVE[0] else None
        if obs is not None:
            try:
                source = _argument(args, kwargs, target.keyword, position)
                role = target.role
                if role == "mode":
                    mode = _argument(args, kwargs, target.mode_keyword, mode_position)
                    role = "read" if mode in (_ABSENT, None, "r", "rb") else "write"
                if source is not _ABSENT:
                    note_source(obs, source, role)
            except Exception as exc:  # a read we can't note must not break the read
                obs.errors.append(f"{target.module}.{target.name}: {type(exc).__name__}: {exc}")
        return func(*args, **kwargs)

    setattr(wrapper, _MARK, func)
    return wrapper


def _patch(owner: Any, name: str, make: Callable[[Callable[..., Any]], Callable[..., Any]]) -> None:
    func = getattr(owner, name, None)
    if func is None or hasattr(func, _MARK):
        return
    with contextlib.suppress(AttributeError, TypeError):  # a compiled class that can't be patched
        setattr(owner, name, make(func))


def wrap_module(module: ModuleType) -> None:
    """Wrap the entry points of one (just imported) module; idempotent."""
    for target in TARGETS:
        if target.module != module.__name__:
            continue
        owner: Any = module
        *classes, name = target.name.split(".")
        for cls in classes:
            owner = getattr(owner, cls, None)
            if owner is None:
                break
        else:
            _patch(owner, name, functools.partial(_wrap_target, target=target))
    if module.__name__ in ("numpy.random", "random"):
        from . import _rng

        _rng.wrap_seeding(module)


def _wrap_target(func: Callable[..., Any], target: Target) -> Callable[..., Any]:
    return _wrap(func, target)


# ---------------------------------------------------------------- globs


class _Quiet(Iterator[Any]):
    """A glob's iterator: its own directory scans are part of the glob, not listings."""

    def __init__(self, iterator: Iterator[Any], obs: Observations) -> None:
        self._iterator = iterator
        self._obs = obs

    def __next__(self) -> Any:
        self._obs.quiet += 1
        try:
            return next(self._iterator)
        finally:
            self._obs.quiet -= 1


def _glob_key(obs: Observations, pathname: Any, kwargs: dict[str, Any]) -> tuple[Any, ...] | None:
    if kwargs.get("dir_fd") is not None:
        return None
    pattern = os.fsdecode(os.fspath(pathname))
    root = kwargs.get("root_dir")
    if root is not None:
        root = obs.resolve(root)
    elif not os.path.isabs(pattern):
        obs.relative = True
        pattern = os.path.join(_glob.escape(os.getcwd()), pattern)
    return ("glob", pattern, root, bool(kwargs.get("recursive")), bool(kwargs.get("include_hidden")))


def _wrap_glob(func: Callable[..., Any], lazy: bool) -> Callable[..., Any]:
    @functools.wraps(func)
    def wrapper(pathname: Any, *args: Any, **kwargs: Any) -> Any:
        obs = current() if LIVE[0] else None
        if obs is None:
            return func(pathname, *args, **kwargs)
        try:
            key = _glob_key(obs, pathname, kwargs)
            if key is not None:
                obs.globs.setdefault(key)
        except Exception as exc:
            obs.errors.append(f"glob: {type(exc).__name__}: {exc}")
        if lazy:
            return _Quiet(func(pathname, *args, **kwargs), obs)
        obs.quiet += 1
        try:
            return func(pathname, *args, **kwargs)
        finally:
            obs.quiet -= 1

    setattr(wrapper, _MARK, func)
    return wrapper


def _wrap_path_glob(func: Callable[..., Any], method: str) -> Callable[..., Any]:
    @functools.wraps(func)
    def wrapper(self: pathlib.Path, pattern: Any, *args: Any, **kwargs: Any) -> Any:
        obs = current() if LIVE[0] else None
        if obs is None:
            return func(self, pattern, *args, **kwargs)
        if args or kwargs:  # with options (case_sensitive=...) its scans stay listings
            return func(self, pattern, *args, **kwargs)
        try:
            root = obs.resolve(self) or os.getcwd()
            obs.globs.setdefault(("path", root, os.fsdecode(os.fspath(pattern)), method))
        except Exception as exc:  # a glob we can't note must not break the glob
            obs.errors.append(f"Path.{method}: {type(exc).__name__}: {exc}")
            return func(self, pattern)
        return _Quiet(iter(func(self, pattern)), obs)

    setattr(wrapper, _MARK, func)
    return wrapper


def original(func: Callable[..., Any]) -> Callable[..., Any]:
    """The unwrapped function (what our own checks call)."""
    return getattr(func, _MARK, func)


# ---------------------------------------------------------------- installing


class _AfterImport(importlib.abc.MetaPathFinder):
    """Wraps a target module's entry points right after it is imported (nothing else)."""

    def __init__(self) -> None:
        self._busy: set[str] = set()

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> Any:
        if fullname not in MODULES or fullname in self._busy:
            return None
        self._busy.add(fullname)
        try:
            for finder in sys.meta_path:
                if finder is self or not hasattr(finder, "find_spec"):
                    continue
                spec = finder.find_spec(fullname, path, target)
                if spec is not None:
                    break
            else:
                return None
        finally:
            self._busy.discard(fullname)
        loader = spec.loader
        exec_module = getattr(loader, "exec_module", None)
        if exec_module is None or isinstance(loader, type):  # a class-level loader is shared
            return spec

        def exec_and_wrap(module: ModuleType) -> None:
            exec_module(module)
            wrap_module(module)

        try:
            loader.exec_module = exec_and_wrap  # type: ignore[union-attr,method-assign]
        except AttributeError:
            return spec
        return spec


_installed = False


def install() -> None:
    global _installed
    if _installed:
        return
    _installed = True
    _patch(_glob, "glob", lambda f: _wrap_glob(f, lazy=False))
    _patch(_glob, "iglob", lambda f: _wrap_glob(f, lazy=True))
    _patch(pathlib.Path, "glob", lambda f: _wrap_path_glob(f, "glob"))
    _patch(pathlib.Path, "rglob", lambda f: _wrap_path_glob(f, "rglob"))
    for name in MODULES:
        module = sys.modules.get(name)
        if module is not None:
            wrap_module(module)
    sys.meta_path.insert(0, _AfterImport())


__all__ = ["MODULES", "TARGETS", "install", "note_source", "original", "wrap_module"]
