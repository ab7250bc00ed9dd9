"""Reads of the namespace that no analysis of the code can see, and what to key them on.

``eval``/``exec`` of a string, ``globals()[...]``, ``locals()``, ``vars()``,
``get_ipython().user_ns``, ``sys._getframe``, ``__main__.__dict__``, ``%run -i``, ``%who``:
such code may read any variable. ``dynamic_reads(code)`` says which construct it found
(or None); the engine then records a *namespace snapshot*: the digest of every variable
that could be read (modules and the names it is told to leave out excluded), taken when
the computation ends, and checked on every hit, so the entry is never served after any of
those variables changed. It costs hashing the whole namespace on every run and hit;
leaving a name out (``exclude``) narrows it.
"""

from __future__ import annotations

import io
import re
import tokenize
from collections.abc import Callable, Collection, Mapping
from types import CodeType, FunctionType, ModuleType
from typing import Any

_NAMES = {
    "eval": "`eval`", "exec": "`exec`", "globals": "`globals()`", "locals": "`locals()`",
    "get_ipython": "`get_ipython()`", "user_ns": "`user_ns`", "_getframe": "`sys._getframe`",
    "currentframe": "`inspect.currentframe`", "__main__": "`__main__`", "f_globals": "`f_globals`",
    "f_locals": "`f_locals`", "run_line_magic": "`run_line_magic`", "run_cell": "`run_cell`",
}  # fmt: skip
_MAGICS = re.compile(r"^\s*%(who|whos|who_ls)\b|^\s*%run\s+(.*\s)?-\w*i", re.MULTILINE)
_WORDS = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def dynamic_reads(code: str | CodeType | Callable[..., Any]) -> str | None:
    """The construct through which ``code`` may read variables by name at run time, or None.

    ``code`` is a cell's text (IPython syntax allowed), a code object or a function.
    """
    if isinstance(code, FunctionType):
        code = code.__code__
    if isinstance(code, CodeType):
        return _in_code(code)
    if not isinstance(code, str):
        return None
    magic = _MAGICS.search(code)
    if magic is not None:
        return f"`%{magic.group(1) or 'run -i'}`"
    words = _tokens(code)
    previous = ""
    for word, following in words:
        if word == "vars" and following == "()":
            return "`vars()`"
        if word in _NAMES and not (word in ("eval", "exec") and previous == "."):
            return _NAMES[word]
        previous = word
    return None


def _tokens(text: str) -> list[tuple[str, str]]:
    """NAME tokens (not in strings or comments) with what follows; a plain word scan if it won't tokenize."""
    try:
        tokens = [t for t in tokenize.generate_tokens(io.StringIO(text).readline)
                  if t.type not in (tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE)]  # fmt: skip
        found = []
        for i, token in enumerate(tokens):
            if token.type == tokenize.NAME:
                after = "".join(t.string for t in tokens[i + 1 : i + 3])
                found.append((token.string, after))
            elif token.type == tokenize.OP and token.string == ".":
                found.append((".", ""))
        return found
    except (tokenize.TokenError, SyntaxError, IndentationError):
        return [(word, "") for word in _WORDS.findall(text)]


def _in_code(code: CodeType) -> str | None:
    for name in code.co_names:
        if name in _NAMES:
            return _NAMES[name]
    if "vars" in code.co_names:
        return "`vars()`"
    for const in code.co_consts:
        if isinstance(const, CodeType):
            found = _in_code(const)
            if found is not None:
                return found
    return None


def _readable(namespace: Mapping[str, Any], exclude: Collection[str]) -> list[str]:
    return sorted(
        name
        for name, value in list(namespace.items())
        if not name.startswith("_") and name not in exclude and not isinstance(value, ModuleType)
    )


def _value_digest(value: Any) -> str:
    from .._hashing import Unhashable, digest

    try:
        return digest(value)
    except Unhashable:
        return f"identity:{type(value).__module__}.{type(value).__qualname__}:{id(value)}"
    except RecursionError:
        return f"identity:{type(value).__qualname__}:{id(value)}"


def namespace_digests(namespace: Mapping[str, Any], exclude: Collection[str] = ()) -> dict[str, str]:
    """The digest of every variable that may be read (unhashable ones by identity)."""
    return {name: _value_digest(namespace[name]) for name in _readable(namespace, exclude)}


def namespace_record(before: Mapping[str, str], namespace: Mapping[str, Any], *, via: str,
                     exclude: Collection[str] = ()) -> dict[str, Any]:  # fmt: skip
    """The snapshot: each variable's digest before the run, and after it where the run changed it.

    The result depends on the values before the run; a variable the run itself bound or
    deleted may also be found as the run left it (the namespace after this very run) without
    being a change. So a hit is served both after a restart (the run's names not there yet)
    and on a re-run in the same kernel (the run's names still bound).
    """
    after = namespace_digests(namespace, exclude)
    names: dict[str, Any] = {}
    for name in sorted(set(before) | set(after)):
        old, new = before.get(name), after.get(name)
        names[name] = old if old == new else [old, new]
    return {"kind": "namespace", "via": via, "exclude": sorted(exclude), "names": names}


def check_namespace(record: Mapping[str, Any], namespace: Mapping[str, Any] | None) -> str | None:
    via = record.get("via", "a dynamic read")
    if namespace is None:
        return f"the variables it may read ({via}) can't be checked here"
    recorded: Mapping[str, Any] = record["names"]
    now = namespace_digests(namespace, record.get("exclude", ()))
    suffix = f" (it may read any variable: {via})"
    for name in sorted(set(recorded) | set(now)):
        known = recorded.get(name)
        allowed = set(known) if isinstance(known, list) else {known}
        digest = now.get(name)
        if digest in allowed:
            continue
        if digest is None:
            return f"`{name}` was deleted{suffix}"
        if allowed == {None}:
            return f"`{name}` was defined{suffix}"
        return f"`{name}` changed{suffix}"
    return None
