"""The layering the style guide asks for, checked: the core imports neither IPython nor ipywidgets."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import ipycache_ext

# The front ends: the only modules allowed to import IPython or ipywidgets (at import time).
FRONT_ENDS = {
    "_magics",  # the cell magics
    "_panel", "_panel_rows", "_panel_chart",  # the widget panel
    "_status",  # the cell status widget
    "_progress_view",  # progress shown in a notebook
    "_spinner",  # the decorators' spinner (a notebook display)
}  # fmt: skip
PACKAGE = Path(ipycache_ext.__file__).parent


def _core_modules() -> list[str]:
    names = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        if parts and parts[0] not in FRONT_ENDS:
            names.append("ipycache_ext." + ".".join(parts))
    return names


def test_the_core_imports_neither_ipython_nor_ipywidgets() -> None:
    core = _core_modules()
    assert "ipycache_ext._engine" in core and "ipycache_ext._store" in core and len(core) > 30
    code = (
        f"import sys, {', '.join(core)}\n"
        "import ipycache_ext\n"
        "ipycache_ext.get_store()\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('IPython', 'ipywidgets')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_core_messages_name_no_front_end() -> None:
    """The store, hashing, serialization and backends speak of options, not of magics or traits."""
    lower = ("_store", "_table", "_flight", "_events", "_expiry", "_tier", "_stats", "_entry", "_hashing",
             "_hash_code", "_hash_data", "_hash_arrow", "_hash_buffers", "_serialize", "_mapped",
             "_persist", "_envelope", "_signing",
             "backends")  # fmt: skip
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.relative_to(PACKAGE).parts[0].removesuffix(".py") not in lower:
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if re.search(r"%%?cache_|%config|CacheMagics|--ignore|--persist", line) and "#" not in line[:1]:
                offenders.append(f"{path.name}:{number}: {line.strip()}")
    assert offenders == []


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
