"""The built wheel ships every module of the package (an editable install can't show a
module missing from the package list: it imports from the source tree)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_the_wheel_holds_every_module_and_the_type_marker(tmp_path: Path) -> None:
    # built from a copy: a build in the checkout would leave build/ there, whose stale
    # modules a later build could ship
    source = tmp_path / "source"
    skip = shutil.ignore_patterns(".git", ".venv", "build", "*.egg-info", "__pycache__", "test-artifacts")
    shutil.copytree(ROOT, source, ignore=skip)
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp_path), str(source)],
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert built.returncode == 0, built.stderr
    (wheel,) = tmp_path.glob("ipycache_ext-*.whl")
    shipped = set(zipfile.ZipFile(wheel).namelist())
    sources = {path.relative_to(ROOT).as_posix() for path in (ROOT / "ipycache_ext").rglob("*.py")}
    assert sources and sources - shipped == set()
    assert "ipycache_ext/py.typed" in shipped
