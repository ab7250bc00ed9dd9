"""Streamlit-style caching for Jupyter: ``%%cache_data``, ``%%cache_resource`` and one store.

``%load_ext ipycache_ext`` registers the magics. Everything they cache lives in one
kernel-wide store, ``get_store()``.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any

from ._errors import (
    CacheError,
    CacheWarning,
    UnhashableInputError,
    UnserializableResultError,
)
from ._store import CacheStats, CacheStore, EntryInfo, StoreEvent, get_store

__all__ = [
    "CacheError",
    "CachePanel",
    "CacheStats",
    "CacheStore",
    "CacheWarning",
    "EntryInfo",
    "StoreEvent",
    "UnhashableInputError",
    "UnserializableResultError",
    "cache_data",
    "cache_resource",
    "get_store",
    "load_ipython_extension",
    "unload_ipython_extension",
]

__version__ = "0.1.0"

if TYPE_CHECKING:  # type checkers see the real signatures; at run time they load lazily
    from ._decorators import cache_data, cache_resource
    from ._panel import CachePanel

# Imported on first use: the decorators and the panel pull in more than the store needs.
_LAZY = {
    "cache_data": "._decorators",
    "cache_resource": "._decorators",
    "CachePanel": "._panel",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'ipycache_ext' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module, __name__), name)


# id(shell) -> its CacheMagics instance; loading twice is then harmless
_loaded: dict[int, Any] = {}


def load_ipython_extension(ipython: Any, store: CacheStore | None = None) -> None:
    """Called by ``%load_ext ipycache_ext``: register the magics on this shell.

    ``store`` replaces the kernel-wide store (tests pass one with a fake clock).
    """
    # Deferred: importing IPython is the magics module's business alone.
    from ._magics import CacheMagics

    if id(ipython) in _loaded:
        return
    from . import _progress_view

    magics = CacheMagics(ipython, store=store)
    ipython.register_magics(magics)
    ipython.events.register("pre_run_cell", magics.pre_run_cell)
    if magics not in ipython.configurables:
        ipython.configurables.append(magics)
    _loaded[id(ipython)] = magics
    _progress_view.install(ipython)  # long loads and hashing show progress in the notebook


def unload_ipython_extension(ipython: Any) -> None:
    """Called by ``%unload_ext ipycache_ext``: remove the magics (cached entries stay)."""
    magics = _loaded.pop(id(ipython), None)
    if magics is None:
        return
    magics.close()
    from . import _progress_view

    _progress_view.uninstall()
    for kind, table in magics.magics.items():
        for name in table:
            ipython.magics_manager.magics[kind].pop(name, None)
    ipython.magics_manager.registry.pop(type(magics).__name__, None)
    with contextlib.suppress(ValueError):  # unregistered by someone else already
        ipython.events.unregister("pre_run_cell", magics.pre_run_cell)
    if magics in ipython.configurables:
        ipython.configurables.remove(magics)
