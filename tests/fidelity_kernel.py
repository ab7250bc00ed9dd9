"""A fresh interpreter with a real IPython shell that runs scenarios and reports what later cells see.

Run as ``python tests/fidelity_kernel.py`` with JSON on stdin: ``{"scenarios": [{"name",
"cells": [...], "observe": "..."}], "magic": "%%cache_data --persist" | ""}``. Each scenario's
cells run in order (``{magic}`` in a cell is replaced by the magic line, or removed for the
plain baseline), then ``observe`` runs and must bind ``obs`` (JSON-able). Prints one JSON
object: per scenario, ``obs``, the text each cell showed, the display data keys it
published, its error and execution count, and the store's hit count. The namespace is reset between scenarios.
"""

from __future__ import annotations

import io
import json
import sys
from typing import Any


class _Recorder:
    """Stands in for the display publisher: keeps what was published."""

    def __init__(self, real: Any) -> None:
        self.real = real
        self.published: list[dict[str, Any]] = []

    def publish(self, data: dict[str, Any], metadata: Any = None, **kwargs: Any) -> None:
        self.published.append(data)
        self.real.publish(data, metadata=metadata, **kwargs)

    def clear_output(self, wait: bool = False) -> None:
        self.real.clear_output(wait=wait)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)


def main() -> None:
    request = json.load(sys.stdin)
    real_stdout = sys.stdout
    captured = io.StringIO()
    sys.stdout = captured  # before any handler is made: logging handlers write here too
    from IPython.core.interactiveshell import InteractiveShell

    import ipycache_ext

    ip = InteractiveShell.instance()
    ip.colors = "nocolor"
    recorder = _Recorder(ip.display_pub)
    ip.display_pub = recorder
    ipycache_ext.load_ipython_extension(ip)
    store = ipycache_ext.get_store()
    report: dict[str, Any] = {}
    for scenario in request["scenarios"]:
        shown, published, errors, counts = [], [], [], []
        hits_before = store.stats().hits
        for cell in scenario["cells"]:
            code = cell.replace("{magic}\n", request["magic"] + "\n" if request["magic"] else "")
            start, first = captured.tell(), len(recorder.published)
            result = ip.run_cell(code, store_history=True)
            shown.append(captured.getvalue()[start:])
            published.append([sorted(d) for d in recorder.published[first:]])
            errors.append(type(result.error_in_exec).__name__ if result.error_in_exec else None)
            counts.append(result.execution_count)
        observed = ip.run_cell(scenario["observe"], store_history=True)
        report[scenario["name"]] = {
            "obs": ip.user_ns.get("obs"),
            "observe_error": repr(observed.error_in_exec) if observed.error_in_exec else None,
            "shown": shown,
            "published": published,
            "errors": errors,
            "counts": counts,
            "hits": store.stats().hits - hits_before,
        }
        ip.reset(new_session=False)
    sys.stdout = real_stdout
    print(json.dumps(report, default=repr))


if __name__ == "__main__":
    main()
