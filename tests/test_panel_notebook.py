"""notebooks/panel.ipynb runs in a real kernel and leaves a panel in the saved widget state.

This proves the kernel side (the magic returns a widget, the rows and TTL texts are in
the models) without a browser; tests/test_browser.py proves that a page renders it and
that clicks get through.
"""

from __future__ import annotations

import html
import re
from pathlib import Path
from typing import Any

import pytest

NOTEBOOK = Path(__file__).resolve().parent.parent / "notebooks" / "panel.ipynb"
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"
# A row's grid: the expand button, these columns, then the delete button.
COLUMNS = ("label", "kind", "names", "size", "age", "ttl", "hits")


def _classes(model: dict[str, Any]) -> tuple[str, ...]:
    return tuple(model["state"].get("_dom_classes", ()))


def _text(model: dict[str, Any]) -> str:
    """A Label's value, or an HTML cell's text without its markup."""
    return html.unescape(re.sub(r"<[^>]+>", "", model["state"]["value"]))


def _children(models: dict[str, Any], model: dict[str, Any]) -> list[dict[str, Any]]:
    return [models[ref.removeprefix("IPY_MODEL_")] for ref in model["state"].get("children", [])]


@pytest.mark.slow
def test_the_panel_notebook_runs_and_shows_a_row_per_entry() -> None:
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")

    nb = nbformat.read(NOTEBOOK, as_version=4)
    assert nb.metadata["kernelspec"]["name"] == "python3"
    nbclient.NotebookClient(nb, kernel_name="python3", store_widget_state=True, timeout=120).execute()

    for cell in nb.cells:
        errors = [o for o in cell.get("outputs", []) if o.get("output_type") == "error"]
        assert errors == [], f"{cell.source!r} raised {errors}"

    panel_cell = next(c for c in nb.cells if c.source.strip() == "%cache_panel")
    views = [o["data"][WIDGET_VIEW] for o in panel_cell.outputs if WIDGET_VIEW in o.get("data", {})]
    assert len(views) == 1, panel_cell.outputs
    models = nb.metadata["widgets"][WIDGET_STATE]["state"]
    panel = models[views[0]["model_id"]]
    assert "ipycache-panel" in _classes(panel)

    parts = _children(models, panel)
    header = next(m for m in parts if "ipycache-header" in _classes(m))
    # The three cells cached before %cache_panel ran; the fourth, added later, reaches the
    # panel through its ticker thread, which nbclient records only if that update lands
    # before the notebook ends (on a loaded machine it may, or not).
    assert header["state"]["value"].startswith(("3 entries · memory ", "4 entries · memory "))
    entries = next(m for m in parts if "ipycache-entries" in _classes(m))
    rows = _children(models, entries)
    assert len(rows) in (3, 4)
    assert all("ipycache-entry" in _classes(row) for row in rows)

    shown = []
    for row in rows:
        [grid] = _children(models, row)  # folded: the details are not there yet
        cells = _children(models, grid)
        assert "ipycache-expand" in _classes(cells[0])
        assert "ipycache-delete" in _classes(cells[-1])
        assert "ipycache-ttl" in _classes(cells[1 + COLUMNS.index("ttl")])
        shown.append(dict(zip(COLUMNS, (_text(c) for c in cells[1:-1]), strict=True)))
    squares, words, conn = shown[:3]  # oldest first
    assert squares["label"].endswith("squares = [i * i for i in range(200_000)]")
    assert (squares["kind"], squares["names"]) == ("data", "squares, total")
    assert squares["size"].endswith("KiB") or squares["size"].endswith("MiB")
    assert squares["ttl"].startswith("1m 5")  # --ttl 2m, seconds ago
    assert words["ttl"].startswith("59m")  # --ttl 1h
    assert (conn["kind"], conn["ttl"]) == ("resource", "no expiry")
    assert conn["names"] == "conn"  # `import sqlite3` binds a module: not listed
    assert conn["size"] == "shared"
    chart = next(m for m in parts if "ipycache-chart" in _classes(m))
    assert chart["state"]["value"].count("ipycache-chart-segment") == 2  # the two data entries

    last = nb.cells[-1].outputs[0]["data"]["text/plain"]
    assert last == "4"  # the entry added after the panel is in the store
