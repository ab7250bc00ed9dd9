"""What the key sees, end to end: through ``%%cache_data`` in a real shell and through
``@cache_data``, by behaviour (ran again or not) only."""

from __future__ import annotations

import importlib
import os
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from IPython.core.interactiveshell import InteractiveShell

from ipycache_ext import CacheStore, cache_data

from .conftest import run


@pytest.fixture
def ip(shell: InteractiveShell, store: CacheStore, monkeypatch: pytest.MonkeyPatch) -> InteractiveShell:
    """The shell with a run counter (``ran``, never part of a key) and decorators on the store."""
    monkeypatch.setattr(cache_data, "store", store)
    run(shell, "ran = []\nfrom ipycache_ext import cache_data")
    return shell


def runs(ip: InteractiveShell) -> int:
    return len(ip.user_ns["ran"])


CELL = "%%cache_data --ignore ran\nran.append(1)\n"


def test_an_instance_of_a_notebook_class_hits_after_the_class_cell_runs_again(ip: InteractiveShell) -> None:
    define = (
        "import dataclasses\n@dataclasses.dataclass\nclass Cfg:\n    rate: float = 0.1\n"
        "    tags: frozenset = frozenset({'a', 'b', 'c'})\n"
    )
    run(ip, define + "cfg = Cfg()")
    cell = CELL + "out = cfg.rate * 2"
    run(ip, cell)
    run(ip, define + "cfg = Cfg()")  # the class cell again, unchanged: a new class object
    run(ip, cell)
    assert runs(ip) == 1
    run(ip, define.replace("0.1", "0.2") + "cfg = Cfg()")
    run(ip, cell)
    assert runs(ip) == 2 and ip.user_ns["out"] == 0.4


def test_attribute_names_are_not_globals_for_a_helper_a_cell_calls(ip: InteractiveShell) -> None:
    run(ip, "class Db:\n    conn = 'db'\ndef name_of(db):\n    return db.conn\nconn = 1\nd = Db()")
    cell = CELL + "out = name_of(d)"
    run(ip, cell)
    run(ip, "conn = 2")  # a global that only shares the attribute's name
    run(ip, cell)
    assert runs(ip) == 1


def test_a_dicts_order_is_part_of_the_key(ip: InteractiveShell) -> None:
    run(ip, "d = {'a': 1, 'b': 2}")
    cell = CELL + "cols = list(d)"
    run(ip, cell)
    run(ip, "d = {'b': 2, 'a': 1}")
    run(ip, cell)
    assert runs(ip) == 2 and ip.user_ns["cols"] == ["b", "a"]


def test_a_docstring_edit_of_a_helper_is_a_hit(ip: InteractiveShell) -> None:
    run(ip, 'def helper(x):\n    "Doubles."\n    return 2 * x')
    cell = CELL + "out = helper(21)"
    run(ip, cell)
    run(ip, 'def helper(x):\n    """Doubles x,\n    as documented at length."""\n    return 2 * x')
    run(ip, cell)
    assert runs(ip) == 1
    run(ip, "def helper(x):\n    return 3 * x")
    run(ip, cell)
    assert runs(ip) == 2 and ip.user_ns["out"] == 63


@pytest.fixture
def local_modules(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    for name in [n for n in sys.modules if n.startswith("ke2e_")]:
        del sys.modules[name]


def write(path: Path, source: str, stamp: int) -> None:
    path.write_text(textwrap.dedent(source))
    os.utime(path, (stamp, stamp))
    importlib.invalidate_caches()


def test_a_runtime_attribute_of_a_local_module_is_an_input(ip: InteractiveShell, local_modules: Path) -> None:
    write(local_modules / "ke2e_config.py", "THRESHOLD = 1\n", 1_700_000_000)
    run(ip, "import ke2e_config")
    cell = CELL + "out = 10 > ke2e_config.THRESHOLD * 5"
    run(ip, cell)
    run(ip, "ke2e_config.THRESHOLD = 2")
    run(ip, cell)
    assert runs(ip) == 2 and ip.user_ns["out"] is False
    run(ip, cell)
    assert runs(ip) == 2


def test_a_cell_reading_a_module_sees_an_edit_of_a_module_that_one_imports(
    ip: InteractiveShell, local_modules: Path
) -> None:
    write(local_modules / "ke2e_utils.py", "def g():\n    return 1\n", 1_700_000_000)
    helpers = "import ke2e_utils\ndef f():\n    return ke2e_utils.g()\n"
    write(local_modules / "ke2e_helpers.py", helpers, 1_700_000_000)
    run(ip, "import importlib, ke2e_helpers")
    cell = CELL + "out = ke2e_helpers.f()"
    run(ip, cell)
    write(local_modules / "ke2e_utils.py", "def g():\n    return 2\n", 1_700_000_100)
    run(ip, "importlib.reload(ke2e_helpers.ke2e_utils)")
    run(ip, cell)
    assert runs(ip) == 2 and ip.user_ns["out"] == 2


def test_a_cell_that_imports_a_local_module_itself_sees_its_edits(
    ip: InteractiveShell, local_modules: Path
) -> None:
    write(local_modules / "ke2e_inner.py", "def g():\n    return 1\n", 1_700_000_000)
    cell = CELL + "import ke2e_inner\nout = ke2e_inner.g()"
    run(ip, cell)
    run(ip, cell)
    assert runs(ip) == 1
    write(local_modules / "ke2e_inner.py", "def g():\n    return 2\n", 1_700_000_100)
    run(ip, "import importlib\nimportlib.reload(ke2e_inner)")
    run(ip, cell)
    assert runs(ip) == 2 and ip.user_ns["out"] == 2


def test_a_decorated_function_hits_for_an_equal_notebook_class_instance(
    ip: InteractiveShell, store: CacheStore
) -> None:
    define = "import enum\nclass Mode(enum.Enum):\n    FAST = 1\n    SLOW = 2\n"
    run(ip, define + "@cache_data\ndef speed(mode):\n    return mode.value * 10")
    assert run(ip, "speed(Mode.FAST)") == 10
    run(ip, define)  # the class cell again: Mode is a new class with equal code
    assert run(ip, "speed(Mode.FAST)") == 10
    assert store.stats().misses == 1
    assert run(ip, "speed(Mode.SLOW)") == 20
    assert store.stats().misses == 2


def test_a_decorated_method_does_not_read_globals_named_like_its_attributes(
    ip: InteractiveShell, store: CacheStore
) -> None:
    run(
        ip,
        "width = 1\nclass Panel:\n    def __init__(self):\n        self.width = 3\n"
        "    @cache_data\n    def area(self, h):\n        return self.width * h\np = Panel()",
    )
    assert run(ip, "p.area(2)") == 6
    run(ip, "width = 2")
    assert run(ip, "p.area(2)") == 6
    assert store.stats().misses == 1


def test_a_matplotlib_figure_as_input_hits(ip: InteractiveShell) -> None:
    pytest.importorskip("matplotlib")
    run(ip, "import matplotlib\nmatplotlib.use('Agg')\nimport matplotlib.pyplot as plt")
    run(ip, "fig, ax = plt.subplots()\nax.plot([1, 2, 3])")
    cell = CELL + "n = len(ax.lines)\nfig.savefig('/dev/null', format='png')"
    try:
        run(ip, cell)
        run(ip, cell)
        assert runs(ip) == 1
        run(ip, "ax.plot([3, 2, 1])")
        run(ip, cell)
        assert runs(ip) == 2 and ip.user_ns["n"] == 2
    finally:
        run(ip, "plt.close('all')")


def test_a_star_import_costs_no_extra_miss(ip: InteractiveShell, local_modules: Path) -> None:
    write(local_modules / "ke2e_star.py", "__all__ = ['A']\nA = 1\n_hidden = 2\n", 1_700_000_000)
    cell = CELL + "from ke2e_star import *\nout = A + 1"
    run(ip, cell)
    run(ip, cell)  # A now exists in the namespace: still not an input (the module is)
    assert runs(ip) == 1 and ip.user_ns["out"] == 2
    write(local_modules / "ke2e_star.py", "__all__ = ['A']\nA = 5\n_hidden = 2\n", 1_700_000_100)
    run(ip, "import importlib, ke2e_star\nimportlib.reload(ke2e_star)")
    run(ip, cell)
    assert runs(ip) == 2 and ip.user_ns["out"] == 6
