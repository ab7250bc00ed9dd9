"""Run a notebook in a real kernel, then its cached cells once more, and print miss vs hit times.

Used by ``make demo`` (on notebooks/quickstart.ipynb) and by the notebook tests. Exits
non-zero if a cached cell's second run was not served from the cache.

    python scripts/run_demo.py notebooks/quickstart.ipynb
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nbformat
from nbclient import NotebookClient

CACHED = ("%%cache_data", "%%cache_resource")
HIT_MARK = "[ipycache_ext] cache hit"


@dataclass
class CellTiming:
    index: int
    label: str
    first_seconds: float
    again_seconds: float
    again_was_hit: bool
    first_output: str
    again_output: str


def _text(cell: Any) -> str:
    parts: list[str] = []
    for output in cell.get("outputs", []):
        if output.get("output_type") == "stream":
            parts.append(output.get("text", ""))
        elif "data" in output and "text/plain" in output["data"]:
            if "ipycache-status" in str(output["data"].get("text/html", "")):
                continue  # the cell's cache status, not its output
            parts.append(output["data"]["text/plain"])
    return "".join(parts)


def _label(source: str) -> str:
    lines = [line.strip() for line in source.splitlines() if line.strip()]
    body = next((line for line in lines[1:] if not line.startswith("#")), "")
    text = f"{lines[0]}  | {body}"
    return text if len(text) <= 70 else text[:67] + "..."


def run_twice(path: Path, timeout: int = 600) -> tuple[Any, list[CellTiming]]:
    """Execute every cell, then every cached cell again, in one kernel; time each."""
    notebook = nbformat.read(path, as_version=4)
    client = NotebookClient(
        notebook, kernel_name="python3", timeout=timeout, resources={"metadata": {"path": str(path.parent)}}
    )
    first: dict[int, float] = {}
    timings: list[CellTiming] = []
    with client.setup_kernel():
        for index, cell in enumerate(notebook.cells):
            if cell.cell_type != "code":
                continue
            started = time.perf_counter()
            client.execute_cell(cell, index)
            first[index] = time.perf_counter() - started
        for index, cell in enumerate(notebook.cells):
            if cell.cell_type != "code" or not cell.source.lstrip().startswith(CACHED):
                continue
            again = nbformat.from_dict(dict(cell))
            started = time.perf_counter()
            client.execute_cell(again, index)
            elapsed = time.perf_counter() - started
            output = _text(again)
            timings.append(
                CellTiming(
                    index, _label(cell.source), first[index], elapsed, HIT_MARK in output, _text(cell), output
                )
            )
    return notebook, timings


def main(argv: list[str]) -> int:
    path = Path(argv[1] if len(argv) > 1 else "notebooks/quickstart.ipynb")
    print(f"executing {path} in a real kernel (first run: every cell; then each cached cell again)")
    _, timings = run_twice(path)
    print(f"\n{'cell':<72} {'first run':>10} {'again':>10} {'speed-up':>9}  served from cache")
    for t in timings:
        ratio = t.first_seconds / t.again_seconds if t.again_seconds else float("inf")
        print(
            f"{t.label:<72} {t.first_seconds:>9.3f}s {t.again_seconds:>9.3f}s {ratio:>8.0f}×"
            f"  {'yes' if t.again_was_hit else 'NO'}"
        )
    missed = [t for t in timings if not t.again_was_hit]
    if missed:
        print(
            f"\n{len(missed)} cached cell(s) ran again instead of being served from the cache",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
