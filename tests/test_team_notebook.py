"""``make team-demo`` end to end: notebooks/team.ipynb in two real kernels as two users."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from .redis_fixtures import require_redis_server

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_the_second_users_slow_cell_is_a_hit_computed_by_the_first() -> None:
    require_redis_server()
    result = subprocess.run(
        [sys.executable, "scripts/team_demo.py", "notebooks/team.ipynb"],
        cwd=ROOT,
        check=False,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "bob's slow cell was a team hit computed by alice@" in result.stdout
