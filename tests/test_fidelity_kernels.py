"""What a hit shows, in real kernels across a restart: descriptor output, log lines, widgets, tracebacks.

Kernels are started by nbclient with ``PYTEST_CURRENT_TEST`` removed from their
environment: ipykernel forwards file-descriptor output (``os.system``) only outside pytest.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import nbformat
import pytest
from nbclient import NotebookClient
from nbclient.util import run_sync

pytestmark = pytest.mark.slow

CELLS = [
    "%load_ext ipycache_ext",
    "import logging, sys\nlog = logging.getLogger('fidk')\n"
    "log.handlers[:] = [logging.StreamHandler(sys.stdout)]\n"
    "log.setLevel(logging.INFO)\nlog.propagate = False",
    "%%cache_data --persist\nimport os\nprint('py-before', flush=True)\nos.system('echo from-fd')\n"
    "log.info('logged')\nprint('py-after')\nv = 1",
    "%%cache_data --persist\nimport ipywidgets\ndisplay(ipywidgets.IntSlider(value=4))\nw = 1",
    "%%cache_data\nx = 1\nraise ValueError('kboom')",
]
VIEW = "application/vnd.jupyter.widget-view+json"


def _streams(cell: Any) -> str:
    return "".join(o["text"] for o in cell["outputs"] if o["output_type"] == "stream")


def _run(client: NotebookClient, notebook: Any) -> list[Any]:
    for index, cell in enumerate(notebook.cells):
        cell.outputs = []
        client.execute_cell(cell, index, execution_count=index + 1)
    return [nbformat.from_dict(c.copy()) for c in notebook.cells]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[Any], list[Any]]:
    """The cells run in a kernel, then again after a restart (same cache directory)."""
    cache = tmp_path_factory.mktemp("fidelity-kernels") / "cache"
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in CELLS])
    client = NotebookClient(notebook, kernel_name="python3", timeout=120, allow_errors=True)
    env = {k: v for k, v in os.environ.items() if k != "PYTEST_CURRENT_TEST"}
    env["IPYCACHE_EXT_CACHE_DIR"] = str(cache)
    env["PYTHONPATH"] = str(Path(__file__).parents[1])
    with client.setup_kernel(env=env):
        first = _run(client, notebook)
        assert client.km is not None and client.kc is not None
        run_sync(client.km.restart_kernel)(now=True)
        run_sync(client.kc.wait_for_ready)(timeout=60)
        second = _run(client, notebook)
    return first, second


def test_descriptor_output_and_log_lines_are_replayed(runs: tuple[list[Any], list[Any]]) -> None:
    first, second = runs
    shown, replayed = _streams(first[2]), _streams(second[2])
    for text in ("py-before", "from-fd", "logged", "py-after"):
        assert text in shown, shown
        assert text in replayed, replayed
    assert "cache hit" in replayed
    assert replayed.index("py-before") < replayed.index("logged") < replayed.index("py-after")


def test_a_widget_from_before_the_restart_is_shown_as_text(runs: tuple[list[Any], list[Any]]) -> None:
    first, second = runs
    live = [o for o in first[3]["outputs"] if "IntSlider" in o.get("data", {}).get("text/plain", "")]
    assert live and VIEW in live[0]["data"]
    replayed = [o for o in second[3]["outputs"] if "IntSlider" in o.get("data", {}).get("text/plain", "")]
    assert replayed, second[3]["outputs"]
    assert VIEW not in replayed[0]["data"]
    assert "not live in this kernel" in replayed[0]["data"]["text/plain"]


def test_a_failing_cell_shows_the_users_traceback_with_its_number(runs: tuple[list[Any], list[Any]]) -> None:
    for cells in runs:
        (error,) = [o for o in cells[4]["outputs"] if o["output_type"] == "error"]
        assert error["ename"] == "ValueError"
        text = re.sub(r"\x1b\[[0-9;]*m", "", "\n".join(error["traceback"]))  # no colours
        assert "run_cell_magic" not in text
        assert "Cell In[5], line 3" in text, text  # the fifth cell of each kernel session, its own line
