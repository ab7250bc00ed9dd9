"""The exceptions ipycache_ext raises, in one place.

::

    CacheError                         base of everything below
    ├── UnhashableInputError (TypeError)     an input's value can't be turned into a key
    └── UnserializableResultError (TypeError) a cache_data result can't be pickled

Each message names the variable or parameter at fault and the way out, because the
person reading it is in the middle of a notebook and wants to carry on, not debug us.
"""

from __future__ import annotations

import sys
import warnings


class CacheWarning(RuntimeWarning):
    """Something about caching could not be done as asked (a tier failed, an entry was
    refused, an input is keyed by identity...); the computation itself goes on. A
    ``RuntimeWarning``, so filters on that still apply; filter on this one for the cache's own."""


# Frames a warning is not attributed to: ours, the notebook machinery that calls a cell
# magic, and context managers. A warning then points at the user's own line (the cell's, or
# the call of a cached function), not at one of ours, whatever path led to it.
_NOT_THE_CALLER = ("ipycache_ext", "IPython", "ipykernel", "contextlib")


def warn(message: str) -> None:
    """Warn with a ``CacheWarning`` attributed to the first frame outside the cache."""
    frame = sys._getframe(1)
    level = 1
    while frame.f_back is not None:
        name = frame.f_globals.get("__name__")
        if not (isinstance(name, str) and name.partition(".")[0] in _NOT_THE_CALLER):
            break
        frame = frame.f_back
        level += 1
    warnings.warn(message, CacheWarning, stacklevel=level + 1)


class CacheError(Exception):
    """Base class of the errors raised by ipycache_ext."""


class UnhashableInputError(CacheError, TypeError):
    """An input value could not be hashed into a cache key."""

    def __init__(self, name: str, value_type: type, reason: str, way_out: str) -> None:
        self.name = name
        self.value_type = value_type
        self.reason = reason
        type_name = f"{value_type.__module__}.{value_type.__qualname__}"
        super().__init__(
            f"cannot hash input `{name}` of type {type_name} to build the cache key ({reason}). {way_out}"
        )


class UnserializableResultError(CacheError, TypeError):
    """A cache_data result could not be serialized with cloudpickle."""

    def __init__(self, what: str, reason: str, way_out: str) -> None:
        self.what = what
        self.reason = reason
        super().__init__(f"cannot serialize {what} for cache_data ({reason}). {way_out}")
