"""End to end: the cache panel in a real JupyterLab page, in headless Chromium.

A JupyterLab server on 127.0.0.1 (temp config, data, runtime and IPython dirs; a temp
root holding a generated notebook), driven by Playwright for Python with Debian's
Chromium. The test runs a ``--ttl`` cell and ``%cache_panel``, watches the row's TTL count
down (that text comes from the panel's ticker thread, so this also proves that updates
from a background thread reach the page), clicks the row's delete button, and checks the
row is gone from the page and the entry from the kernel's store.

The facts this relies on (flags, selectors, pitfalls) are in ../shared/BROWSER-TESTING.md.
On failure a screenshot and the server log go to ``test-artifacts/``. Without Chromium
the test skips, except under ``CI=true``, where a skipped browser test would hide that
the panel was never tested: there it fails.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.browser

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
NOTEBOOK = "panel_e2e.ipynb"
CACHED_CELL = "%%cache_data --ttl 120\nanswer = sum(range(1000))"
LABEL = "answer = sum(range(1000))"  # the row's label: the cell's first line of code


def _missing(reason: str) -> None:
    """Skip, or fail under CI, where a browser test that did not run must not pass."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true and the browser test cannot run: {reason}", pytrace=False)
    pytest.skip(reason)


@dataclass
class Lab:
    url: str
    token: str
    log: Path

    def notebook_url(self, name: str) -> str:
        # &reset: Lab does not reopen the notebooks of an earlier session.
        return f"{self.url}/lab/tree/{name}?token={self.token}&reset"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _notebook() -> dict[str, Any]:
    """Written as JSON directly: importing nbformat alone costs about 2 s."""

    def code(i: int, source: str) -> dict[str, Any]:
        return {
            "cell_type": "code",
            "execution_count": None,
            "id": f"cell-{i}",
            "metadata": {},
            "outputs": [],
            "source": source,
        }

    return {
        "cells": [code(0, "%load_ext ipycache_ext"), code(1, CACHED_CELL), code(2, "%cache_panel")],
        # A kernelspec, or a "Select Kernel" dialog blocks the page.
        "metadata": {
            "kernelspec": {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"},
            "language_info": {"name": "python"},
        },
        "nbformat": 4,
        "nbformat_minor": 5,
    }


def _wait_ready(proc: subprocess.Popen[bytes], url: str, log: Path, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"jupyter lab exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as answer:
                if answer.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.25)
    pytest.fail(f"jupyter lab not ready within {timeout}s:\n{log.read_text()[-3000:]}")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM, which shuts the kernels down cleanly (SIGINT would leave them orphaned)."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            # Last resort: the server and its kernels are alone in the session we gave them.
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    """A JupyterLab server of this venv, isolated in temp dirs, stopped whatever happens."""
    if not CHROMIUM.exists():
        _missing(f"{CHROMIUM} is missing (scripts/ensure-chromium.sh installs it as root)")
    for module in ("playwright", "jupyterlab"):
        if importlib.util.find_spec(module) is None:
            _missing(f"{module} is not installed in this venv (pip install -e '.[test]')")

    dirs = {name: tmp_path / name for name in ("config", "data", "runtime", "ipython", "root")}
    for folder in dirs.values():
        folder.mkdir()
    labconfig = dirs["config"] / "labconfig"
    labconfig.mkdir()
    (labconfig / "page_config.json").write_text(
        json.dumps({"disabledExtensions": {"@jupyterlab/apputils-extension:announcements": True}})
    )
    (dirs["root"] / NOTEBOOK).write_text(json.dumps(_notebook()))

    env = dict(os.environ)
    env.update(
        JUPYTER_CONFIG_DIR=str(dirs["config"]),
        JUPYTER_DATA_DIR=str(dirs["data"]),
        JUPYTER_RUNTIME_DIR=str(dirs["runtime"]),
        IPYTHONDIR=str(dirs["ipython"]),
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
    )
    token = secrets.token_hex(16)
    port = _free_port()
    log = tmp_path / "jupyter-lab.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "jupyter",
                "lab",
                "--no-browser",
                "--allow-root",
                "--ip=127.0.0.1",
                f"--port={port}",
                "--ServerApp.port_retries=0",
                f"--IdentityProvider.token={token}",
                f"--ServerApp.root_dir={dirs['root']}",
                "--LabApp.expose_app_in_browser=True",
                "--LabApp.news_url=None",
                "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
            ],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
    try:
        url = f"http://127.0.0.1:{port}"
        _wait_ready(proc, f"{url}/api/status?token={token}", log)
        yield Lab(url=url, token=token, log=log)
    finally:
        _stop(proc)


# Runs in the page: execute code in the notebook's kernel and return what it printed.
_EXECUTE_JS = """async (code) => {
  const kernel = window.jupyterapp.shell.currentWidget.sessionContext.session.kernel;
  const future = kernel.requestExecute({code, store_history: false});
  let out = '';
  future.onIOPub = (msg) => {
    if (msg.header.msg_type === 'stream') out += msg.content.text;
    if (msg.header.msg_type === 'error') out += `ERROR ${msg.content.ename}: ${msg.content.evalue}`;
  };
  await future.done;
  return out;
}"""

_KERNEL_READY_JS = """() => {
  const widget = window.jupyterapp && window.jupyterapp.shell.currentWidget;
  const session = widget && widget.sessionContext && widget.sessionContext.session;
  const kernel = session && session.kernel;
  return !!kernel && kernel.connectionStatus === 'connected' && kernel.status === 'idle';
}"""

_COUNT_PANEL_THREADS = (
    "import threading; print(sum(t.name == 'ipycache_ext-panel' for t in threading.enumerate()))"
)


def _seconds(ttl: str) -> float:
    """'1m 59s' -> 119, '42s' -> 42, '9.0s' -> 9 (format_duration's forms below an hour)."""
    match = re.fullmatch(r"(?:(\d+)m )?(\d+(?:\.\d)?)s", ttl.strip())
    assert match, f"not a TTL countdown: {ttl!r}"
    return int(match[1] or 0) * 60 + float(match[2])


def test_the_panel_counts_down_and_deletes_an_entry_in_jupyterlab(
    lab: Lab, request: pytest.FixtureRequest
) -> None:
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        console: list[str] = []
        page.on("console", lambda msg: console.append(f"{msg.type}: {msg.text}"))
        try:
            page.goto(lab.notebook_url(NOTEBOOK), timeout=60_000)
            page.wait_for_function(_KERNEL_READY_JS, timeout=60_000)
            kernel_prefix = page.evaluate(_EXECUTE_JS, "import sys; print(sys.prefix)").strip()
            assert kernel_prefix == sys.prefix, "the kernel is not this venv's Python"

            def run_all() -> None:
                page.locator("#jp-MainMenu .lm-MenuBar-item", has_text="Run").click()
                page.locator("#jp-mainmenu-run li[data-command='runmenu:run-all']").click()

            run_all()

            panel = page.locator(".jp-OutputArea-output .ipycache-panel")
            row = panel.locator(".ipycache-entry")
            expect(row).to_have_count(1, timeout=60_000)
            expect(row).to_contain_text(LABEL)
            expect(row).to_contain_text("answer")
            ttl = row.locator(".ipycache-ttl")
            expect(ttl).to_be_visible()
            expect(ttl).to_have_text(re.compile(r"^(2m 00s|1m \d\ds)$"))

            # The countdown moves by itself (the ticker thread), without re-running anything.
            first = ttl.inner_text()
            expect(ttl).not_to_have_text(first, timeout=5_000)
            second = ttl.inner_text()
            expect(ttl).not_to_have_text(second, timeout=5_000)
            third = ttl.inner_text()
            assert _seconds(first) > _seconds(second) > _seconds(third) > 100, (first, second, third)

            row.locator(".ipycache-delete").click()
            expect(panel.locator(".ipycache-entry")).to_have_count(0, timeout=10_000)
            expect(panel.locator(".ipycache-empty")).to_be_visible()
            expect(panel.locator(".ipycache-header")).to_contain_text("0 entries")

            left = page.evaluate(
                _EXECUTE_JS, "import ipycache_ext; print(len(ipycache_ext.get_store().entries()))"
            )
            assert left.strip() == "0", left

            # Running everything again shows a new panel (the cell is computed again: a new
            # row) and the old panel, whose output is gone, stops its thread.
            run_all()
            expect(panel.locator(".ipycache-entry")).to_have_count(1, timeout=30_000)
            deadline = time.monotonic() + 15
            while (threads := page.evaluate(_EXECUTE_JS, _COUNT_PANEL_THREADS).strip()) != "1":
                assert time.monotonic() < deadline, f"{threads} panel threads after re-running the panel"
                time.sleep(0.25)
        except BaseException:
            ARTIFACTS.mkdir(exist_ok=True)
            name = re.sub(r"[^\w.-]", "_", request.node.name)
            page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)
            (ARTIFACTS / f"{name}.console.txt").write_text("\n".join(console))
            (ARTIFACTS / f"{name}.jupyter-lab.log").write_text(lab.log.read_text())
            raise
        finally:
            browser.close()
