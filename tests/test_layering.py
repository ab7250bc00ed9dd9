"""The layering the style guide asks for, checked: the core imports neither IPython nor ipywidgets."""

from __future__ import annotations

import subprocess
import sys

import ipycache_ext

CORE = [
    "_store",
    "_hashing",
    "_serialize",
    "_analysis",
    "_persist",
    "_capture",
    "_explain",
    "_ttl",
    "_report",
    "_engine",
    "_identity",
    "_cells",
    "_cellrun",
    "_funcdigest",
]


def test_the_core_imports_neither_ipython_nor_ipywidgets() -> None:
    modules = ", ".join(f"ipycache_ext.{name}" for name in CORE)
    code = (
        f"import sys, {modules}\n"
        "import ipycache_ext\n"
        "ipycache_ext.get_store()\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('IPython', 'ipywidgets')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_the_public_names_are_exactly_the_exported_ones() -> None:
    ours = {
        name
        for name in dir(ipycache_ext)
        if not name.startswith("_")
        and getattr(getattr(ipycache_ext, name), "__module__", "").startswith("ipycache_ext")
    }
    lazy = {"cache_data", "cache_resource", "CachePanel"}  # resolved on first use, by __getattr__
    assert ours | lazy == set(ipycache_ext.__all__)
    for name in ipycache_ext.__all__:
        assert getattr(ipycache_ext, name) is not None
