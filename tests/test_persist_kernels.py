"""Persistence across real kernel restarts (subprocess kernels, jupyter_client)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import nbformat
import pytest
from nbclient import NotebookClient
from nbclient.util import run_sync

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow


def _text(cell: Any) -> str:
    parts = []
    for output in cell.get("outputs", []):
        if output.get("output_type") == "stream":
            parts.append(output["text"])
        elif "data" in output:
            parts.append(output["data"].get("text/plain", ""))
    return "".join(parts)


def _kernel_pid(client: NotebookClient) -> int:
    assert client.km is not None and client.km.provisioner is not None
    return int(client.km.provisioner.pid)  # type: ignore[attr-defined]


def _run_all(client: NotebookClient, notebook: Any) -> list[str]:
    texts = []
    for index, cell in enumerate(notebook.cells):
        if cell.cell_type == "code":
            client.execute_cell(cell, index)
            texts.append(_text(cell))
    return texts


def test_persist_notebook_survives_a_kernel_restart(tmp_path: Path) -> None:
    notebook = nbformat.read(ROOT / "notebooks" / "persist.ipynb", as_version=4)
    client = NotebookClient(notebook, kernel_name="python3", timeout=120)
    env = {**os.environ, "IPYCACHE_EXT_CACHE_DIR": str(tmp_path / "cache")}
    with client.setup_kernel(env=env):
        first = _run_all(client, notebook)
        pid = _kernel_pid(client)
        assert client.km is not None and client.kc is not None
        run_sync(client.km.restart_kernel)(now=True)
        run_sync(client.kc.wait_for_ready)(timeout=60)
        assert _kernel_pid(client) != pid  # a new process: nothing left in memory
        second = _run_all(client, notebook)
    slow_first, slow_second = first[2], second[2]
    assert "fetched 30 days" in slow_first and "cache hit" not in slow_first
    assert "cache hit" in slow_second, slow_second
    assert "fetched 30 days" in slow_second  # the output is replayed
    table = next(line for line in slow_first.splitlines() if line.startswith("std"))
    assert table.split("cached")[0] in slow_second  # and the last value is the same
    assert "disk" in second[3]  # %cache_info shows the persisted entry
    entries = list((tmp_path / "cache").glob("*.entry"))
    assert len(entries) == 1
    assert (tmp_path / "cache").stat().st_mode & 0o777 == 0o700
