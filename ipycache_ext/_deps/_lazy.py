"""Values that stand for files they will read later: key them by those files.

``files_of(value)`` returns the absolute paths (or glob patterns) a lazy reader or an open
handle will read, for the engine to pass to ``recording(declared=...)``, or None when the
value is not one of these (hash it as usual). Covered:

- polars ``LazyFrame``: the paths of its scans (from its serialized plan; relative paths
  resolve against the working directory now, as polars does when it collects);
- pyarrow ``FileSystemDataset`` on the local file system (and ``UnionDataset`` of them),
  ``pyarrow.parquet.ParquetDataset``;
- sqlite3 and duckdb connections: their database files (``PRAGMA database_list``);
- h5py / PyTables files, pandas ``HDFStore``: their file;
- a Python file object opened for reading: its file.

Not covered (hashed as before): dask collections, pyarrow datasets on other file systems,
``ParquetFile`` objects, remote URLs.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Iterable
from typing import Any


def files_in(*groups: Iterable[Any]) -> tuple[str, ...]:
    """The files behind every value of ``groups`` (a computation's inputs), for ``declared=``."""
    found: dict[str, None] = {}
    for group in groups:
        for value in group:
            for path in files_of(value) or ():
                found.setdefault(path)
    return tuple(found)


def files_of(value: Any) -> list[str] | None:
    module = type(value).__module__ or ""
    try:
        if module.startswith("polars") and type(value).__name__ == "LazyFrame":
            return _polars(value)
        if module.startswith("pyarrow"):
            return _arrow(value)
        if module == "sqlite3" and type(value).__name__ == "Connection":
            return _database_list(value, column=2)
        if module.startswith("duckdb") and type(value).__name__ == "DuckDBPyConnection":
            return _database_list(value, column=2)
        if module.startswith(("h5py", "tables")):
            name = getattr(value, "filename", None)
            return [_absolute(name)] if isinstance(name, str) else None
        if module.startswith("pandas") and type(value).__name__ == "HDFStore":
            return [_absolute(value.filename)]
        name = getattr(value, "name", None)
        if hasattr(value, "readable") and isinstance(name, str) and not name.startswith("<"):  # not <stdin>
            mode = getattr(value, "mode", "r")
            if not getattr(value, "closed", False) and value.readable() and "r" in str(mode):
                return [_absolute(name)]
    except Exception:  # a value we can't introspect is hashed as usual
        return None
    return None


def _absolute(path: str) -> str:
    return os.path.normpath(os.path.join(os.getcwd(), os.path.expanduser(path)))


def _polars(frame: Any) -> list[str] | None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        plan = json.loads(frame.serialize(format="json"))
    found: list[str] = []
    _scan_paths(plan, found)
    return [_absolute(p) for p in dict.fromkeys(found) if "://" not in p or p.startswith("file://")]


def _scan_paths(node: Any, found: list[str]) -> None:
    if isinstance(node, dict):
        for key, item in node.items():
            if key in ("Paths", "paths") and isinstance(item, list):
                for path in item:
                    text = path.get("inner") if isinstance(path, dict) else path
                    if isinstance(text, str):
                        found.append(text.removeprefix("file://"))
            else:
                _scan_paths(item, found)
    elif isinstance(node, list):
        for item in node:
            _scan_paths(item, found)


def _arrow(value: Any) -> list[str] | None:
    name = type(value).__name__
    if name == "UnionDataset":
        paths: list[str] = []
        for child in value.children:
            files = _arrow(child)
            if files is None:
                return None
            paths.extend(files)
        return paths
    if name == "InMemoryDataset":
        return []
    if name in ("FileSystemDataset", "ParquetDataset", "_ParquetDatasetV2"):
        filesystem = getattr(value, "filesystem", None)
        if filesystem is not None and type(filesystem).__name__ != "LocalFileSystem":
            return None
        return [_absolute(path) for path in value.files]
    return None


def _database_list(connection: Any, column: int) -> list[str] | None:
    rows = connection.execute("PRAGMA database_list").fetchall()
    return [_absolute(row[column]) for row in rows if row[column]]
