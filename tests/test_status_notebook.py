"""The cell status in a real kernel (nbclient): what the magics publish, once per cached cell.

A hit must show one status of its own, never one replayed from the entry (the status is
published after output recording ends); ``CacheMagics.show_status = False`` turns it off
and the text hit line stays. The browser test proves the page renders and clicks it.
"""

from __future__ import annotations

from typing import Any

import pytest

WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"
CELL = "%%cache_data --ttl 1h\nvalue = sum(range(10))\nprint('ran')\nvalue"


def _statuses(cell: Any) -> list[dict[str, Any]]:
    return [
        o["data"]
        for o in cell.outputs
        if o.get("output_type") == "display_data" and "ipycache-status" in o["data"].get("text/html", "")
    ]


@pytest.mark.slow
def test_each_cached_cell_shows_one_status_after_its_output() -> None:
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")

    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    sources = [
        "%load_ext ipycache_ext",
        CELL,  # a miss
        CELL,  # a hit
        "%config CacheMagics.show_status = False",
        CELL,  # a hit, no status
        "%%cache_resource\nimport sqlite3\nconn = sqlite3.connect(':memory:', check_same_thread=False)",
    ]
    nb.cells = [nbformat.v4.new_code_cell(source) for source in sources]
    nbclient.NotebookClient(nb, kernel_name="python3", store_widget_state=True, timeout=120).execute()
    for cell in nb.cells:
        errors = [o for o in cell.outputs if o.get("output_type") == "error"]
        assert errors == [], f"{cell.source!r} raised {errors}"

    miss, hit, _, quiet, resource = nb.cells[1:]
    [miss_status] = _statuses(miss)
    assert miss_status["text/plain"].startswith("cached · computed in ")
    assert "expires in 59m" in miss_status["text/plain"]
    # After the cell's own output and its Out[n] value, not above them.
    kinds = [o["output_type"] for o in miss.outputs]
    assert kinds == ["stream", "execute_result", "display_data"], kinds

    [hit_status] = _statuses(hit)  # one: the miss's status was not recorded into the entry
    assert hit_status["text/plain"].startswith("from cache · computed ")
    assert hit_status["text/plain"].endswith("· hit 1×")
    assert hit.outputs[0]["text"].startswith("[ipycache_ext] cache hit")  # the text line stays
    assert hit_status[WIDGET_VIEW]["model_id"] != miss_status[WIDGET_VIEW]["model_id"]

    assert _statuses(quiet) == []
    assert quiet.outputs[0]["text"].startswith("[ipycache_ext] cache hit")
    assert _statuses(resource) == []  # show_status is still off

    # The widget the page renders: the status box with its live text and Recompute button.
    models = nb.metadata["widgets"][WIDGET_STATE]["state"]
    box = models[hit_status[WIDGET_VIEW]["model_id"]]["state"]
    assert "ipycache-status" in box["_dom_classes"]
    children = [models[ref.removeprefix("IPY_MODEL_")]["state"] for ref in box["children"]]
    assert "from cache · computed" in children[0]["value"]
    assert children[1]["description"] == "Recompute"
    assert "ipycache-recompute" in children[1]["_dom_classes"]

    # Exported without widget state (the usual case), HTML shows the status's own HTML.
    nbconvert = pytest.importorskip("nbconvert")
    del nb.metadata["widgets"]
    body, _ = nbconvert.HTMLExporter().from_notebook_node(nb)
    assert 'class="ipycache-status"' in body or "class='ipycache-status'" in body
    assert "from cache · computed" in body
