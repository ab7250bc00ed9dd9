"""Observations -> JSON-able dependency records; the check of records on a hit; replaying effects.

Records are plain dicts (str/int/bool/None/lists/dicts), sorted by kind then subject, so they
can be persisted with an entry and checked after a restart. Kinds, cheapest check first:

- ``unrecorded``: a read that could not be noted (the entry is never trusted);
- ``cwd``: the working directory relative paths were resolved against (and the one the
  computation left, replayed on a hit);
- ``env``: an environment variable read by name, as a digest of its value (None: unset);
  ``env_effect``: one the computation set or removed (replayed on a hit);
- ``random``: a global generator the computation drew from: the digest of its state
  before (None after a seed call that came first) and its state after (replayed);
- ``listing``, ``glob``: a directory's sorted names, a pattern's sorted matches;
- ``file``: an input file (``present`` with stat and digest, ``absent``, or ``changing``:
  it changed while the computation ran, so the entry is stale at once);
- ``namespace``: digests of the variables a computation reading names dynamically may read.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import xxhash

from . import _files, _rng
from ._state import Observations, current, stat_key, suspended

_RANK = {"unrecorded": 0, "cwd": 1, "env": 2, "env_effect": 3, "random": 4, "listing": 5, "glob": 6,
         "file": 7, "namespace": 8}  # fmt: skip


def subject(record: Mapping[str, Any]) -> tuple[Any, ...]:
    """What a record is about (two records with one subject: the first one wins)."""
    kind = record.get("kind")
    if kind == "glob":
        return (kind, record.get("style"), record.get("pattern"), record.get("root_dir"), record.get("root"))
    return (kind, record.get("path", record.get("name", record.get("rng", record.get("reason")))))


def _order(record: Mapping[str, Any]) -> tuple[int, str]:
    return (_RANK.get(str(record.get("kind")), 99), repr(subject(record)))


def env_digest(value: str | None) -> str | None:
    return None if value is None else xxhash.xxh3_128_hexdigest(value.encode("utf-8", "surrogateescape"))


def finalize(obs: Observations, declared: Sequence[str], declared_cwd: str, end_cwd: str,
             rng_after: Mapping[str, Any]) -> list[dict[str, Any]]:  # fmt: skip
    """The records of a finished recording (hashes every input file once: a miss's cost)."""
    records: list[dict[str, Any]] = []
    seen_files: set[str] = set()

    def add_file(path: str, first: Any = None, first_known: bool = False) -> None:
        if path in seen_files or path in obs.written:
            return
        seen_files.add(path)
        records.append(_files.file_record(path, first, first_known=first_known))

    def add_tree(path: str) -> None:
        directories, files = _files.tree(path)
        for directory in directories:
            if directory not in obs.written:
                records.append(_files.listing_record(directory))
        for file in files:
            add_file(file)

    def add_pattern(pattern: str) -> None:
        spec = _files.glob_spec(("glob", pattern, None, "**" in pattern, False))
        record, matches = _files.glob_record(spec)
        records.append(record)
        for match in matches:
            if os.path.isdir(match):
                add_tree(match)
            else:
                add_file(match)

    for path, (role, first) in obs.reads.items():
        if role == "connect":
            if path in obs.written or stat_key(path) != first:
                continue  # a database the computation wrote to: its output
            add_file(path)
        else:
            add_file(path, first, first_known=True)
    for item in declared:
        path = os.path.normpath(os.path.join(declared_cwd, os.path.expanduser(os.fspath(item))))
        if not os.path.isabs(os.path.expanduser(os.fspath(item))):
            obs.relative = True
        if glob.has_magic(os.fspath(item)):
            add_pattern(path)
        elif os.path.isdir(path):
            add_tree(path)
        else:
            add_file(path)
    for pattern in obs.patterns:
        add_pattern(pattern)
    for path in obs.trees:
        add_tree(path)
    for path in obs.listings:
        if path not in obs.written:
            records.append(_files.listing_record(path))
    for key in obs.globs:
        records.append(_files.glob_record(_files.glob_spec(key))[0])
    for name, value in obs.env_read.items():
        records.append({"kind": "env", "name": name, "digest": env_digest(value)})
    for name, value in obs.env_written.items():
        records.append({"kind": "env_effect", "name": name, "value": value})
    for rng, (before, after) in rng_after.items():
        seeded = rng in obs.rng_seeded
        records.append({"kind": "random", "rng": rng, "before": None if seeded else before, "after": after})
    if obs.relative or end_cwd != obs.cwd:
        records.append({"kind": "cwd", "path": obs.cwd, "after": end_cwd if end_cwd != obs.cwd else None})
    for error in dict.fromkeys(obs.errors):
        records.append({"kind": "unrecorded", "reason": error})
    return merge(records, obs.noted)


def merge(own: list[dict[str, Any]], noted: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Own records first, then those of nested hits about other subjects; sorted."""
    by_subject: dict[tuple[Any, ...], dict[str, Any]] = {}
    for record in [*own, *noted]:
        by_subject.setdefault(subject(record), dict(record))
    return sorted(by_subject.values(), key=_order)


# ---------------------------------------------------------------- checking


def _check_cwd(record: Mapping[str, Any], _: Any) -> str | None:
    try:
        now = os.getcwd()
    except OSError:
        return "the working directory is gone"
    if now != record["path"]:
        was = _files.shown(record["path"], True, absolute=True)
        return f"the working directory is {_files.shown(now, True, absolute=True)}, was {was}"
    after = record.get("after")
    if after is not None and not os.path.isdir(after):
        return f"{_files.shown(after, True)} (where the computation moved to) is gone"
    return None


def _check_env(record: Mapping[str, Any], _: Any) -> str | None:
    value = os.environ.get(record["name"])
    if env_digest(value) == record["digest"]:
        return None
    name = f"`{record['name']}`"
    if value is None:
        return f"environment variable {name} is no longer set"
    if record["digest"] is None:
        return f"environment variable {name} is now set"
    return f"environment variable {name} changed"


def _check_random(record: Mapping[str, Any], _: Any) -> str | None:
    if record["before"] is None:
        return None
    if _rng.current_digest(record["rng"]) == record["before"]:
        return None
    return f"{_rng.DESCRIBED[record['rng']]} differs"


def _check_unrecorded(record: Mapping[str, Any], _: Any) -> str | None:
    return f"a read could not be recorded ({record['reason']})"


def _no_check(record: Mapping[str, Any], _: Any) -> str | None:
    return None


def _check_namespace(record: Mapping[str, Any], namespace: Mapping[str, Any] | None) -> str | None:
    from ._dynamic import check_namespace

    return check_namespace(record, namespace)


_CHECKS: dict[str, Callable[[Mapping[str, Any], Any], str | None]] = {
    "unrecorded": _check_unrecorded,
    "cwd": _check_cwd,
    "env": _check_env,
    "env_effect": _no_check,
    "random": _check_random,
    "listing": lambda r, _: _files.check_listing(dict(r)),
    "glob": lambda r, _: _files.check_glob(dict(r)),
    "file": lambda r, _: _files.check_file(dict(r)),
    "namespace": _check_namespace,
}


def first_change(dependencies: Sequence[Mapping[str, Any]], *,
                 namespace: Mapping[str, Any] | None = None) -> str | None:  # fmt: skip
    """None when every dependency is as recorded; else why not, in a few words. Never raises.

    When none changed and a computation is recording (a cached function called from a
    cached cell), the records become that computation's too: its hit won't call this one.
    """
    with suspended():
        for record in dependencies:
            kind = str(record.get("kind"))
            check = _CHECKS.get(kind)
            if check is None:
                return f"a dependency of an unknown kind (`{kind}`)"
            try:
                reason = check(record, namespace)
            except Exception as exc:  # a malformed or unreadable record: recompute, don't break
                return f"a dependency could not be checked ({type(exc).__name__}: {exc})"
            if reason is not None:
                return reason
    note(dependencies)
    return None


def note(dependencies: Sequence[Mapping[str, Any]]) -> None:
    """Make ``dependencies`` (of a result served to the computation recording now, if any)
    that computation's too: its own hit won't run the code that read them."""
    obs = current()
    if obs is not None:
        obs.noted.extend(dict(record) for record in dependencies)


def replay_effects(dependencies: Sequence[Mapping[str, Any]]) -> None:
    """Leave the kernel as the run did: global random states, environment, working directory."""
    for record in dependencies:
        kind = record.get("kind")
        try:
            if kind == "random":
                _rng.restore(record["rng"], record["after"])
            elif kind == "env_effect":
                if record["value"] is None:
                    os.environ.pop(record["name"], None)
                else:
                    os.environ[record["name"]] = record["value"]
            elif kind == "cwd" and record.get("after") and os.getcwd() != record["after"]:
                os.chdir(record["after"])
        except (OSError, ValueError, TypeError, KeyError):
            continue  # first_change said it is all there; a race lost here is not worth a failure
