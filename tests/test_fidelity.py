"""A hit leaves the kernel as a real run would: what later cells observe is the same.

Two ways of being "another shell" on the same store, for every behaviour:

- across a restart: three fresh interpreters (``tests/fidelity_kernel.py``) run the same
  scenarios — plain (no magic: the baseline), with ``%%cache_data --persist`` (a miss), and
  again with it on the same cache directory (a hit from disk) — and the observations of
  later cells are compared;
- in one kernel: the real IPython shell runs the scenario, its namespace is reset
  (``shell.reset(new_session=False)``, the store kept), and it runs again as a hit.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from IPython.core.interactiveshell import InteractiveShell

from ipycache_ext import CacheStore

from .conftest import run

KERNEL = Path(__file__).with_name("fidelity_kernel.py")

CLASS_CELL = "\n".join(
    [
        "class Shape:",
        "    def __init__(self, n):",
        "        self.n = n",
        "    def area(self):",
        "        return self.n * SCALE",
    ]
)

SCENARIOS: list[dict[str, Any]] = [
    {
        "name": "functions",
        "cells": [
            "RATE = 2",
            "{magic}\ndef f(x):\n    return x * RATE\ndef bump():\n    global COUNT\n    COUNT = COUNT + 1\n"
            "def uses_later():\n    return later_helper()\nclosure = (lambda k: lambda: k * RATE)(3)",
        ],
        "observe": "RATE = 10\nCOUNT = 0\nbump()\ndef later_helper():\n    return 'found'\n"
        "obs = dict(f=f(1), count=COUNT, later=uses_later(), closure=closure(), "
        "real_globals=f.__globals__ is globals() and closure.__globals__ is globals())",
    },
    {
        "name": "classes",
        "cells": [
            "SCALE = 1",
            CLASS_CELL,
            "{magic}\nsq = Shape(3)\nshapes = [Shape(1), Shape(2)]",
            CLASS_CELL,
            "{magic}\nsq = Shape(3)\nshapes = [Shape(1), Shape(2)]",
        ],
        "observe": "SCALE = 10\nobs = dict(isinstance=isinstance(sq, Shape), "
        "all=all(type(s) is Shape for s in shapes), area=sq.area())",
    },
    {
        "name": "class_of_the_cell",
        "cells": [
            "{magic}\nclass Point:\n    def __init__(self, x):\n        self.x = x\norigin = Point(0)",
            "first = origin",
            "{magic}\nclass Point:\n    def __init__(self, x):\n        self.x = x\norigin = Point(0)",
        ],
        "observe": "obs = dict(first=isinstance(first, Point), origin=isinstance(origin, Point), x=origin.x)",
    },
    {
        "name": "dataframe_alias",
        "cells": [
            "import pandas as pd\ndf = pd.DataFrame({'a': [1, 2]})\nraw = df",
            "{magic}\ndf['b'] = df['a'] * 2\ntotal = int(df['b'].sum())",
        ],
        "observe": "obs = dict(columns=list(raw.columns), same=df is raw, b=raw['b'].tolist(), total=total)",
    },
    {
        "name": "list_alias",
        "cells": [
            "items = [1]\nsame = items\nnested = {'items': items}",
            "{magic}\nitems.append(2)\nn = len(items)",
        ],
        "observe": "obs = dict(same=same, identical=items is same, nested=nested['items'] is items, n=n)",
    },
    {
        "name": "alias_rebound",  # array.array can't be changed from outside: every alias is rebound
        "cells": [
            "import array\narr = array.array('i', [1])\narr_alias = arr",
            "{magic}\narr.append(2)\nk = 1",
        ],
        "observe": "obs = dict(values=list(arr_alias), identical=arr is arr_alias)",
    },
    {
        "name": "dynamic_names",  # bound and deleted where no analysis of the cell sees it
        "cells": [
            "gone = 1\ndef setup():\n    global from_helper, gone\n    from_helper = 'set'\n    del gone",
            "{magic}\nsetup()\nz = 1",
            "{magic}\n%run {tmp}/fid_script.py",
        ],
        "observe": "obs = dict(helper=from_helper, gone='gone' not in globals(), script=from_script)",
    },
    {
        "name": "exec_names",
        "cells": ["dyn_gone = 1", "{magic}\nexec('dyn_value = 42')\nexec('del dyn_gone')"],
        "observe": "obs = dict(dyn=dyn_value, gone='dyn_gone' not in globals())",
    },
    {
        "name": "attributes",
        "cells": [
            "import sys\nif '{tmp}' not in sys.path:\n    sys.path.insert(0, '{tmp}')\nimport fid_conf\n"
            "class Cfg:\n    threshold = 0.1",
            "{magic}\nfid_conf.MODE = 'fast'\ndel fid_conf.OLD\nCfg.threshold = 0.5\ndone = True",
        ],
        "observe": "obs = dict(mode=fid_conf.MODE, old=hasattr(fid_conf, 'OLD'), threshold=Cfg.threshold)",
    },
    {
        "name": "first_import",  # a module the cached cell imports for the first time, then changes
        "cells": [
            "import sys\nif '{tmp}' not in sys.path:\n    sys.path.insert(0, '{tmp}')",
            "{magic}\nimport fid_first\nfid_first.X = 2\nseen = 1",
        ],
        "observe": "obs = dict(x=fid_first.X)",
    },
    {
        "name": "module_closure",  # a nested function of a local module: it lives in its module
        "cells": [
            "import sys\nif '{tmp}' not in sys.path:\n    sys.path.insert(0, '{tmp}')\nimport fid_maker",
            "{magic}\ng = fid_maker.make()",
        ],
        "observe": "fid_maker.FACTOR = 10\nobs = dict(v=g(1), home=g.__globals__ is vars(fid_maker))",
    },
    {
        "name": "refused",  # an attribute set to what can't be pickled: said once, and the cell runs
        "cells": [
            "import sys\nif '{tmp}' not in sys.path:\n    sys.path.insert(0, '{tmp}')\nimport fid_locks",
            "{magic}\nimport threading\nfid_locks.LOCK = threading.Lock()\nprint('ran')",
            "{magic}\nimport threading\nfid_locks.LOCK = threading.Lock()\nprint('ran')",
        ],
        "observe": "obs = dict(lock=type(fid_locks.LOCK).__name__)",
    },
    {
        "name": "logging",
        "cells": [
            "import logging, sys\nlog = logging.getLogger('fid')\n"
            "log.handlers[:] = [logging.StreamHandler(sys.stdout)]\n"
            "log.setLevel(logging.INFO)\nlog.propagate = False",
            "{magic}\nprint('before')\nlog.info('computing %d', 3)\nprint('after')\nv = 1",
        ],
        "observe": "obs = dict(v=v)",
    },
    {
        "name": "traceback",
        "cells": ["x_tb = 0", "{magic}\nx_tb = 1\ndef inner():\n    raise ValueError('boom')\ninner()"],
        "observe": "obs = dict(x=x_tb)",
    },
    {
        "name": "widget",
        "cells": ["{magic}\nimport ipywidgets\ndisplay(ipywidgets.IntSlider(value=3))\nshown = 1"],
        "observe": "obs = dict(shown=shown)",
    },
    {
        "name": "random_state",  # the dependency layer's replay (DEPS): later draws are the same
        "cells": [
            "import random\nimport numpy as np\nrandom.seed(3)\nnp.random.seed(3)",
            "{magic}\ndraw = random.random()\nnp_draw = float(np.random.rand())",
        ],
        "observe": "obs = dict(draw=draw, np_draw=np_draw, next=random.random(),\n"
        "np_next=float(np.random.rand()))",
    },
    {
        "name": "kernel_state",  # last: it changes the working directory
        "cells": [
            "import os, sys",
            "{magic}\nos.environ['FID_ENV'] = 'on'\nos.chdir('{tmp}')\nsys.path.append('/fid/extra')\nz = 1",
        ],
        "observe": "obs = dict(env=os.environ.get('FID_ENV'), cwd=os.getcwd(),\n"
        "path='/fid/extra' in sys.path)",
    },
]


def _run_kernel(tmp: Path, cache: Path, magic: str) -> dict[str, Any]:
    scenarios = json.loads(json.dumps(SCENARIOS).replace("{tmp}", str(tmp)))
    env = {**os.environ, "IPYCACHE_EXT_CACHE_DIR": str(cache), "PYTHONPATH": str(Path(__file__).parents[1])}
    done = subprocess.run(
        [sys.executable, str(KERNEL)],
        input=json.dumps({"scenarios": scenarios, "magic": magic}),
        capture_output=True, text=True, timeout=300, env=env, cwd=str(cache.parent), check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


@pytest.fixture(scope="module")
def kernels(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    """The same scenarios plain, as a miss, and as a hit in a fresh interpreter (restart)."""
    tmp = tmp_path_factory.mktemp("fidelity")
    (tmp / "fid_conf.py").write_text("MODE = 'slow'\nOLD = 1\n")
    (tmp / "fid_locks.py").write_text("LOCK = None\n")
    (tmp / "fid_first.py").write_text("X = 1\n")
    (tmp / "fid_maker.py").write_text(
        "FACTOR = 2\ndef make():\n    def inner(x):\n        return x * FACTOR\n    return inner\n"
    )
    (tmp / "fid_script.py").write_text("from_script = 'ran'\n")
    cache = tmp / "cache"
    return {
        "plain": _run_kernel(tmp, tmp / "plain-cache", ""),
        "miss": _run_kernel(tmp, cache, "%%cache_data --persist"),
        "hit": _run_kernel(tmp, cache, "%%cache_data --persist"),
    }


def _ours(text: str) -> str:
    """What the cell itself showed: our hit/miss lines left out."""
    return "".join(line for line in text.splitlines(keepends=True) if not line.startswith("[ipycache_ext]"))


SAME_AS_PLAIN = [
    *("functions", "classes", "dataframe_alias", "list_alias", "alias_rebound", "dynamic_names"),
    *(
        "attributes",
        "first_import",
        "module_closure",
        "refused",
        "logging",
        "traceback",
        "random_state",
        "kernel_state",
    ),
]


# The dependency layer's namespace snapshot of a cell that reads names dynamically (exec) is
# taken when the run ends, so a name the run bound "was deleted" (and one it deleted "was
# defined") whenever the namespace is as before the run (a restart, a reset): never a hit.


@pytest.mark.parametrize("name", [*SAME_AS_PLAIN, "exec_names"])
def test_after_a_restart_later_cells_see_what_a_real_run_left(kernels: dict[str, Any], name: str) -> None:
    plain, miss, hit = kernels["plain"][name], kernels["miss"][name], kernels["hit"][name]
    for run_ in (plain, miss, hit):  # the observing cell itself ran: obs is what it saw
        assert run_["observe_error"] is None and run_["obs"] is not None, run_
    assert miss["obs"] == plain["obs"]
    assert hit["obs"] == plain["obs"], hit
    scenario = next(s for s in SCENARIOS if s["name"] == name)
    if name not in ("refused", "traceback"):  # every cached cell really was served from the cache
        for cell, shown in zip(scenario["cells"], hit["shown"], strict=True):
            assert ("{magic}" not in cell) or "[ipycache_ext] cache hit" in shown, (cell, shown)
    for shown_plain, shown_hit in zip(plain["shown"], hit["shown"], strict=True):
        if name == "traceback":
            continue
        assert _ours(shown_hit) == shown_plain


def test_a_class_the_namespace_holds_with_the_same_code_is_reused(kernels: dict[str, Any]) -> None:
    # By design unlike a real run, which makes a new class and leaves `first` an instance of the old one.
    assert kernels["plain"]["class_of_the_cell"]["obs"] == {"first": False, "origin": True, "x": 0}
    for run_ in ("miss", "hit"):  # the second run of the cell is a hit in both
        assert kernels[run_]["class_of_the_cell"]["obs"] == {"first": True, "origin": True, "x": 0}


def test_functions_see_the_namespace_after_a_restart(kernels: dict[str, Any]) -> None:
    assert kernels["hit"]["functions"]["obs"] == {
        "f": 10, "count": 1, "later": "found", "closure": 30, "real_globals": True,
    }  # fmt: skip


def test_an_input_changed_in_place_is_changed_for_every_alias(kernels: dict[str, Any]) -> None:
    hit = kernels["hit"]
    assert hit["dataframe_alias"]["obs"] == {"columns": ["a", "b"], "same": True, "b": [2, 4], "total": 6}
    assert hit["list_alias"]["obs"] == {"same": [1, 2], "identical": True, "nested": True, "n": 2}
    assert hit["alias_rebound"]["obs"] == {"values": [1, 2], "identical": True}


def test_module_and_class_attributes_are_set_again(kernels: dict[str, Any]) -> None:
    assert kernels["hit"]["attributes"]["obs"] == {"mode": "fast", "old": False, "threshold": 0.5}
    assert kernels["hit"]["kernel_state"]["obs"]["env"] == "on"
    assert kernels["hit"]["kernel_state"]["obs"]["path"] is True


def test_what_a_hit_cant_reproduce_is_said_once_and_the_cell_runs(kernels: dict[str, Any]) -> None:
    shown = kernels["hit"]["refused"]["shown"]
    assert "can't reproduce `fid_locks.LOCK` is set to a lock that can't be pickled" in shown[1]
    assert "ran" in shown[1] and "ran" in shown[2]
    assert "not served" not in shown[2]  # said once
    assert kernels["hit"]["refused"]["obs"] == {"lock": "lock"}


def test_log_records_are_replayed_in_order(kernels: dict[str, Any]) -> None:
    assert kernels["plain"]["logging"]["shown"][1] == "before\ncomputing 3\nafter\n"
    shown = kernels["hit"]["logging"]["shown"][1]
    assert shown.startswith("[ipycache_ext] cache hit")
    assert _ours(shown) == "before\ncomputing 3\nafter\n"


def test_a_failing_cell_shows_its_own_number_and_no_wrapper_frame(kernels: dict[str, Any]) -> None:
    for run_ in ("miss", "hit"):
        shown = kernels[run_]["traceback"]["shown"][1]
        assert kernels[run_]["traceback"]["errors"][1] == "ValueError"
        assert "run_cell_magic" not in shown
        number = kernels[run_]["traceback"]["counts"][1]
        assert shown.count(f"Cell In[{number}]") == 2, shown  # the cell's own number, its frame first
        assert f"Cell In[{number}], line 5" in shown.split("\n\n")[0]
        assert "raise ValueError('boom')" in shown
    plain = kernels["plain"]["traceback"]
    assert f"Cell In[{plain['counts'][1]}], line 4" in plain["shown"][1]  # one line less: no magic line


def test_a_widget_from_before_a_restart_shows_its_text_form(kernels: dict[str, Any]) -> None:
    view = "application/vnd.jupyter.widget-view+json"
    assert view in kernels["plain"]["widget"]["published"][0][0]
    assert view in kernels["miss"]["widget"]["published"][0][0]  # live on the miss
    assert kernels["hit"]["widget"]["published"][0] == [["text/plain"]]
    assert (
        "IntSlider(value=3) (widget from the cached run; not live in this kernel)"
        in kernels["hit"]["widget"]["shown"][0]
    )


# ---------------------------------------------------------------------- in one kernel
def _twice(shell: InteractiveShell, setup: str, cell: str) -> None:
    """Run ``setup`` and the cached ``cell``; reset the namespace (store kept); run both again."""
    run(shell, setup)
    run(shell, cell)
    shell.reset(new_session=False)
    run(shell, setup)
    run(shell, cell)


def test_in_one_kernel_functions_live_in_the_namespace(shell: InteractiveShell, store: CacheStore) -> None:
    cell = (
        "%%cache_data\ndef f(x):\n    return x * RATE\nclass K:\n    def m(self):\n"
        "        return RATE\nk = K()"
    )
    _twice(shell, "RATE = 2", cell)
    assert store.stats().hits == 1
    run(shell, "RATE = 7")
    assert run(shell, "f(1), k.m(), f.__globals__ is globals(), K.m.__globals__ is globals()") == (
        7,
        7,
        True,
        True,
    )


def test_in_one_kernel_a_rerun_class_cell_keeps_instances_of_it(
    shell: InteractiveShell, store: CacheStore
) -> None:
    cell = "%%cache_data\nsq = Shape(3)"
    run(shell, "SCALE = 1")
    run(shell, CLASS_CELL)
    run(shell, cell)
    run(shell, CLASS_CELL)  # a new class object, the same code
    run(shell, cell)
    assert store.stats().hits == 1
    assert run(shell, "isinstance(sq, Shape), type(sq) is Shape") == (True, True)


@pytest.mark.parametrize(
    ("setup", "cell", "check"),
    [
        (
            "import pandas as pd\ndf = pd.DataFrame({'a': [1, 2]})\nraw = df",
            "%%cache_data\ndf['b'] = 1",
            "list(raw.columns) == ['a', 'b'] and df is raw",
        ),
        ("items = [1]\nsame = items", "%%cache_data\nitems.append(2)", "same == [1, 2] and items is same"),
        (
            "import numpy as np\na = np.zeros(3)\nb = a",
            "%%cache_data\na += 1",
            "b.tolist() == [1, 1, 1] and a is b",
        ),
        ("class P:\n    pass\np = P()\nq = p", "%%cache_data\np.x = 5", "q.x == 5 and p is q"),
        ("t = ([1], 2)\nu = t[0]", "%%cache_data\nt[0].append(3)", "u == [1, 3] and t[0] is u"),
    ],
    ids=["dataframe", "list", "ndarray", "instance", "tuple"],
)
def test_in_one_kernel_in_place_changes_reach_every_alias(
    shell: InteractiveShell, store: CacheStore, setup: str, cell: str, check: str
) -> None:
    _twice(shell, setup, cell)
    assert store.stats().hits == 1
    assert run(shell, check) is True


def test_in_one_kernel_dynamic_names_are_bound(shell: InteractiveShell, store: CacheStore) -> None:
    setup = "gone = 1\ndef helper():\n    global made, gone\n    made = 6 * 7\n    del gone"
    _twice(shell, setup, "%%cache_data\nhelper()\nk = 1")
    assert store.stats().hits == 1
    assert run(shell, "made, 'gone' in globals()") == (42, False)


def test_in_one_kernel_names_bound_by_exec_are_bound(shell: InteractiveShell, store: CacheStore) -> None:
    with pytest.warns(RuntimeWarning, match="`exec` may read any variable"):
        _twice(shell, "gone = 1", "%%cache_data\nexec('made = 6 * 7')\nexec('del gone')")
    assert store.stats().hits == 1
    assert run(shell, "made, 'gone' in globals()") == (42, False)


def test_in_one_kernel_class_attributes_are_set_again(shell: InteractiveShell, store: CacheStore) -> None:
    _twice(shell, "class Cfg:\n    threshold = 0.1", "%%cache_data\nCfg.threshold = 0.5\nk = 1")
    assert store.stats().hits == 1
    assert run(shell, "Cfg.threshold") == 0.5


def test_in_one_kernel_a_failing_cell_renders_from_its_own_code(
    shell: InteractiveShell, capsys: pytest.CaptureFixture[str]
) -> None:
    number = shell.execution_count
    result = shell.run_cell("%%cache_data\nx = 1\nraise ValueError('mine')", store_history=True)
    assert isinstance(result.error_in_exec, ValueError)
    out = capsys.readouterr().out
    assert f"Cell In[{number}], line 3" in out
    assert "run_cell_magic" not in out and "ipycache_ext" not in out


def test_in_one_kernel_a_resource_cell_changes_the_namespaces_object_too(
    shell: InteractiveShell, store: CacheStore
) -> None:
    _twice(shell, "items = [1]\nsame = items", "%%cache_resource\nitems.append(2)\nhandle = object()")
    assert store.stats().hits == 1
    assert run(shell, "same == [1, 2] and items is same") is True
    assert len(store.entries()) == 1
    assert run(shell, "handle") is not None
    _twice(shell, "items = [1]\nsame = items", "%%cache_resource\nitems.append(2)\nhandle = object()")
    assert run(shell, "same == [1, 2] and items is same") is True  # the stored bindings were not changed


def test_an_error_raised_again_later_shows_its_new_traceback(
    shell: InteractiveShell, capsys: pytest.CaptureFixture[str]
) -> None:
    run(shell, "class Box:\n    pass\nbox = Box()")
    failed = shell.run_cell(
        "%%cache_data\ntry:\n    1 / 0\nexcept ZeroDivisionError as exc:\n    box.error = exc\n    raise",
        store_history=True,
    )
    assert isinstance(failed.error_in_exec, ZeroDivisionError)
    capsys.readouterr()
    again = shell.run_cell("def rethrow():\n    raise box.error\nrethrow()", store_history=True)
    assert again.error_in_exec is failed.error_in_exec  # the same object, raised from elsewhere
    out = capsys.readouterr().out
    assert "rethrow()" in out and "raise box.error" in out
