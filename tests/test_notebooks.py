"""The demo notebooks, executed in a real kernel (nbclient)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _runner() -> ModuleType:
    spec = importlib.util.spec_from_file_location("run_demo", ROOT / "scripts" / "run_demo.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["run_demo"] = module
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_quickstart_second_runs_are_hits_with_the_same_results() -> None:
    _, timings = _runner().run_twice(ROOT / "notebooks" / "quickstart.ipynb", timeout=300)
    assert len(timings) == 5
    for timing in timings:
        assert timing.again_was_hit, timing.again_output
    aggregation = timings[0]
    # The notebook zeroes summary["revenue"] between the two runs: the hit must not see it.
    table = aggregation.first_output.split("[ipycache_ext] cache hit")[0]
    assert "north" in aggregation.again_output
    assert table.strip() and table.strip() in aggregation.again_output
    # The data file changed between the two copies of the prices cell: the second says so.
    first_prices, second_prices = timings[3], timings[4]
    assert "11.0" in first_prices.first_output  # (10 + 12) / 2
    assert "ipycache_quickstart_prices.csv` changed" in second_prices.first_output
    assert "14.0" in second_prices.first_output and "14.0" in first_prices.again_output
