"""File, directory and glob dependencies: what is recorded, and the cheap check on a hit.

A file is recorded with its size, ``mtime_ns``, ``ctime_ns`` and the xxh3-128 digest of its
whole content (never sampled, read in 1 MiB chunks). On a hit it is ``stat``-ed: when
size, ``mtime_ns`` and ``ctime_ns`` are as recorded it is taken as unchanged without
reading it; otherwise its content is hashed, so a ``touch`` is not a change. POSIX change
time can't be set back by a program (``os.utime`` itself moves it), so even an edit that
keeps the size and restores ``mtime_ns`` is seen; where there is no change time (Windows)
such an edit is not. Digests already verified for a stat are remembered for the session,
so a touched 1 GB file is hashed once, not on every hit.

A stat vouches for a digest only once it is settled (see ``_settle``): a record taken of a
file changed just before it was read is hashed again on its next check, once per session,
after which the digest verified then stands for the stat.
"""

from __future__ import annotations

import glob as _glob
import os
import pathlib
import time
from collections import OrderedDict
from collections.abc import Iterable
from typing import Any

import xxhash

from .._settle import settled
from ._native import original
from ._state import StatKey, stat_key

NAMES_KEPT = 256  # a listing or match list up to this long is kept by name (to say what changed)
# 1 MiB chunks hash fastest here (the chunk stays in cache between the copy and the hash);
# mmap would skip the copy but a file truncated meanwhile by another process kills the kernel (SIGBUS).
_CHUNK = 1024 * 1024
_verified: OrderedDict[str, tuple[StatKey, str]] = OrderedDict()  # settled stats only
_VERIFIED_MAX = 20_000


def content_digest(path: str) -> tuple[str, StatKey, bool] | None:
    """The digest of a file, the stat it held for the whole read, and whether that stat is
    settled (see ``_settle``); None if it changed meanwhile."""
    before = stat_key(path)
    if before is None:
        return None
    known = _verified.get(path)
    if known is not None and known[0] == before:
        return known[1], before, True
    started = time.time_ns()
    hasher = xxhash.xxh3_128()
    buffer = bytearray(min(_CHUNK, max(before[0], 1)))
    view = memoryview(buffer)
    with open(path, "rb", buffering=0) as handle:
        while True:
            count = handle.readinto(buffer)
            if not count:
                break
            hasher.update(view[:count])
    after = stat_key(path)
    if after != before:
        return None
    digest = hasher.hexdigest()
    is_settled = settled(before[1], before[2], read_from_ns=started)
    if is_settled:
        _verified[path] = (before, digest)
        if len(_verified) > _VERIFIED_MAX:
            _verified.popitem(last=False)
    return digest, before, is_settled


def file_record(path: str, first: StatKey | None = None, *, first_known: bool = False) -> dict[str, Any]:
    """The record of one input file as it is now. ``first``: its stat when it was first read."""
    now = stat_key(path)
    if first_known and first != now:
        return {"kind": "file", "path": path, "state": "changing"}  # changed while the computation ran
    if now is None:
        return {"kind": "file", "path": path, "state": "absent"}
    try:
        hashed = content_digest(path)
    except OSError:
        hashed = None
    if hashed is None or hashed[1] != now:
        return {"kind": "file", "path": path, "state": "changing"}
    digest, (size, mtime_ns, ctime_ns), is_settled = hashed
    return {"kind": "file", "path": path, "state": "present", "size": size, "mtime_ns": mtime_ns,
            "ctime_ns": ctime_ns, "digest": digest, "settled": is_settled}  # fmt: skip


def check_file(record: dict[str, Any]) -> str | None:
    path = record["path"]
    state = record["state"]
    now = stat_key(path)
    if state == "changing":
        return f"{shown(path)} changed while the computation read it"
    if state == "absent":
        return None if now is None else f"{shown(path)} appeared"
    if now is None:
        return f"{shown(path)} was deleted" if not os.path.exists(path) else f"{shown(path)} changed"
    if now == (record["size"], record["mtime_ns"], record["ctime_ns"]) and record.get("settled", False):
        return None
    known = _verified.get(path)
    if known is not None and known[0] == now:  # hashed since (a touch): no need to read it again
        return None if known[1] == record["digest"] else f"{shown(path)} changed"
    try:
        hashed = content_digest(path)
    except OSError as exc:
        return f"{shown(path)} can't be read ({type(exc).__name__})"
    if hashed is None or hashed[0] != record["digest"]:
        return f"{shown(path)} changed"
    return None


def _names_record(kind: str, names: list[str] | None, **fields: Any) -> dict[str, Any]:
    record: dict[str, Any] = {"kind": kind, **fields}
    if names is None:
        record["count"] = None
        return record
    record["count"] = len(names)
    record["digest"] = xxhash.xxh3_128_hexdigest("\0".join(names).encode("utf-8", "surrogateescape"))
    if len(names) <= NAMES_KEPT:
        record["names"] = names
    return record


def listing(path: str) -> list[str] | None:
    try:
        return sorted(os.listdir(path))
    except OSError:
        return None


def listing_record(path: str) -> dict[str, Any]:
    return _names_record("listing", listing(path), path=path)


def _difference(old: dict[str, Any], names: list[str] | None, what: str, noun: str) -> str | None:
    """None when ``names`` is what ``old`` recorded; else what changed, in a few words."""
    if names is None:
        return None if old["count"] is None else f"{what} is gone"
    if old["count"] is None:
        return f"{what} appeared"
    digest = xxhash.xxh3_128_hexdigest("\0".join(names).encode("utf-8", "surrogateescape"))
    if digest == old["digest"]:
        return None
    before = old.get("names")
    if before is not None:
        gained = sorted(set(names) - set(before))
        lost = sorted(set(before) - set(names))
        if gained and not lost:
            return f"{what} gained {_some(gained, noun)}"
        if lost and not gained:
            return f"{what} lost {_some(lost, noun)}"
    if len(names) > old["count"]:
        return f"{what} gained {noun}s"
    if len(names) < old["count"]:
        return f"{what} lost {noun}s"
    return f"{what} changed its {noun}s"


def _some(names: list[str], noun: str) -> str:
    shown_names = ", ".join(f"`{os.path.basename(n) or n}`" for n in names[:3])
    more = f" and {len(names) - 3} more" if len(names) > 3 else ""
    return f"{noun} {shown_names}{more}" if len(names) == 1 else f"{noun}s {shown_names}{more}"


def check_listing(record: dict[str, Any]) -> str | None:
    return _difference(record, listing(record["path"]), f"{shown(record['path'], True)}", "file")


def glob_matches(spec: dict[str, Any]) -> list[str]:
    """Re-run a recorded glob (the original functions; sorted, absolute)."""
    if spec["style"] == "path":
        method = original(getattr(pathlib.Path, spec["method"]))
        return sorted(str(p) for p in method(pathlib.Path(spec["root"]), spec["pattern"]))
    options: dict[str, Any] = {"recursive": spec["recursive"]}
    if spec.get("include_hidden"):
        options["include_hidden"] = True
    root = spec.get("root_dir")
    if root is not None:
        options["root_dir"] = root
    matches = original(_glob.glob)(spec["pattern"], **options)
    if root is not None:
        matches = [os.path.join(root, m) for m in matches]
    return sorted(os.path.normpath(m) for m in matches)


def glob_spec(key: tuple[Any, ...]) -> dict[str, Any]:
    if key[0] == "path":
        return {"style": "path", "root": key[1], "pattern": key[2], "method": key[3]}
    _, pattern, root, recursive, hidden = key
    return {"style": "glob", "pattern": pattern, "root_dir": root, "recursive": recursive,
            "include_hidden": hidden}  # fmt: skip


def glob_record(spec: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    matches = glob_matches(spec)
    return _names_record("glob", matches, **spec), matches


def check_glob(record: dict[str, Any]) -> str | None:
    spec = {k: v for k, v in record.items() if k not in ("kind", "count", "digest", "names")}
    return _difference(record, glob_matches(spec), f"`{pattern_text(record)}`", "match")


def pattern_text(record: dict[str, Any]) -> str:
    if record["style"] == "path":
        return os.path.join(shown(record["root"], True, quoted=False), record["pattern"])
    root = record.get("root_dir")
    pattern = str(record["pattern"])
    return os.path.join(shown(root, True, quoted=False), pattern) if root else _relative(pattern)


def tree(path: str) -> tuple[list[str], list[str]]:
    """Every directory and every file under ``path`` (a dataset read whole)."""
    directories: list[str] = []
    files: list[str] = []
    for root, dirs, names in os.walk(path):
        dirs.sort()
        directories.append(root)
        files.extend(os.path.join(root, name) for name in sorted(names))
    return directories, files


def _relative(path: str) -> str:
    try:
        cwd = os.getcwd()
    except OSError:
        return path
    if path == cwd:
        return "."
    if path.startswith(cwd.rstrip(os.sep) + os.sep):
        return path[len(cwd.rstrip(os.sep)) + 1 :]
    return _home(path)


def _home(path: str) -> str:
    home = os.path.expanduser("~")
    if home not in ("", "/") and path.startswith(home + os.sep):
        return "~" + path[len(home) :]
    return path


def shown(path: str | None, directory: bool = False, *, quoted: bool = True, absolute: bool = False) -> str:
    """A path as the user thinks of it: relative to the working directory when under it."""
    text = _home(path or os.sep) if absolute else _relative(path or ".")
    if directory and not text.endswith(os.sep):
        text += os.sep
    return f"`{text}`" if quoted else text


def inputs_of(paths: Iterable[str]) -> list[str]:
    return sorted(set(paths))
