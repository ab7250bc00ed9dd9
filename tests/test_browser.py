"""End to end: cell statuses and the cache panel in real JupyterLab 4 and Notebook 7 pages.

A server of this venv on 127.0.0.1 (temp config, data, runtime and IPython dirs; a temp
root holding a generated notebook), driven by Playwright for Python with Debian's
Chromium. One test per front end walks a notebook through a miss, a hit, the countdown
(texts that only the kernel's ticker threads change, so updates from background threads
reach the page), the column alignment at 1400 and 900 px, a row's details, Recompute,
expiry, the kind filter, delete and clear all, asserting the status and panel texts.

Screenshots of the panel and of a cell status are saved under ``test-artifacts/`` (the
path is printed), and on failure a full-page screenshot, the console and the server log.
The facts this relies on (flags, selectors, pitfalls) are in ../shared/BROWSER-TESTING.md.
Without Chromium the tests skip, except under ``CI=true``, where a skipped browser test
would hide that the page was never tested: there they fail.
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
NOTEBOOK = "cache_e2e.ipynb"
SHORT_TTL = 30  # seconds; the answer cells' 90 s must outlast it with room to spare
CELLS = [
    # a small budget, so the memory chart has something to show
    "%load_ext ipycache_ext\n%config CacheMagics.memory_budget = 65_536\nimport sqlite3\nn = 1000",
    # 1: a miss; 2: the same cell again, a hit. `math` is bound too, but a module: not listed
    "%%cache_data --ttl 90\nanswer = sum(range(n))\nsquares = [i * i for i in range(n)]\n"
    "import math, time\ntime.sleep(0.2)\nanswer",
    "%%cache_data --ttl 90\nanswer = sum(range(n))\nsquares = [i * i for i in range(n)]\n"
    "import math, time\ntime.sleep(0.2)\nanswer",
    # 3: a resource whose label is long (cut with an ellipsis at 900 px)
    '%%cache_resource\nconn = sqlite3.connect(":memory:", check_same_thread=False)  # shared by every hit',
    # 4: expires while the test watches; SHORT_TTL leaves room for the ~13 checks (and the widget
    # rendering) that expect it listed, on a loaded machine too
    f"%%cache_data --ttl {SHORT_TTL}\nshort = list(range(10))",
    "%cache_panel",
]
ANSWER, CONN, SHORT, PANEL = 1, 3, 4, 5
# 1m 00s to 1m 29s: a 90 s TTL counting down (whenever the check lands within its first 30 s)
MISS = re.compile(r"cached · computed in 0\.\ds · expires in 1m [0-2]\ds")
HIT = re.compile(r"from cache · computed \d\d:\d\d in 0\.\ds · expires in 1m [0-2]\ds · hit 1×")
LAB_ONLY = ["--LabApp.news_url=None", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"]
FRONT_ENDS = {
    # name: (server command, notebook URL path, app class whose expose_app_in_browser we set)
    "jupyterlab": ("lab", "/lab/tree/{name}?token={token}&reset", "LabApp"),
    "notebook7": ("notebook", "/notebooks/{name}?token={token}", "JupyterNotebookApp"),
}


def _missing(reason: str) -> None:
    """Skip, or fail under CI, where a browser test that did not run must not pass."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true and the browser test cannot run: {reason}", pytrace=False)
    pytest.skip(reason)


@dataclass
class Server:
    front_end: str
    url: str
    token: str
    log: Path

    def notebook_url(self, name: str) -> str:
        path = FRONT_ENDS[self.front_end][1].format(name=name, token=self.token)
        return f"{self.url}{path}"


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
        "cells": [code(i, source) for i, source in enumerate(CELLS)],
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
            pytest.fail(f"the jupyter server exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as answer:
                if answer.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.25)
    pytest.fail(f"the jupyter server was not ready within {timeout}s:\n{log.read_text()[-3000:]}")


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


@pytest.fixture(params=list(FRONT_ENDS))
def server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Server]:
    """A JupyterLab or Notebook 7 server of this venv, isolated in temp dirs, stopped whatever happens."""
    front_end: str = request.param
    command, _, app = FRONT_ENDS[front_end]
    if not CHROMIUM.exists():
        _missing(f"{CHROMIUM} is missing (scripts/ensure-chromium.sh installs it as root)")
    for module in ("playwright", "jupyterlab", "notebook"):
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
        IPYCACHE_EXT_CACHE_DIR=str(tmp_path / "cache"),
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
    )
    token = secrets.token_hex(16)
    port = _free_port()
    log = tmp_path / f"jupyter-{command}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "jupyter",
                command,
                "--no-browser",
                "--allow-root",
                "--ip=127.0.0.1",
                f"--port={port}",
                "--ServerApp.port_retries=0",
                f"--IdentityProvider.token={token}",
                f"--ServerApp.root_dir={dirs['root']}",
                f"--{app}.expose_app_in_browser=True",
                *(LAB_ONLY if command == "lab" else []),
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
        yield Server(front_end=front_end, url=url, token=token, log=log)
    finally:
        _stop(proc)


@pytest.fixture
def patient_expect() -> Iterator[None]:
    """A 15 s default for ``expect`` instead of 5 s, restored afterwards (``expect`` is one global).

    Most checks wait for a kernel reply or a ticker thread, which can take more than 5 s on a
    loaded 2-core machine.
    """
    from playwright.sync_api import expect

    expect.set_options(timeout=15_000)
    try:
        yield
    finally:
        expect.set_options(timeout=None)  # Playwright's own default again


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

_RUN_ALL_JS = "() => window.jupyterapp.commands.execute('notebook:run-all-cells')"

# The left edge and width of every header cell and of the cells of every row, in page pixels.
_COLUMN_BOXES_JS = """async (panel) => {
  // after two animation frames, so layout work queued by the resize has run
  for (let i = 0; i < 2; i++) await new Promise((done) => requestAnimationFrame(done));
  const boxes = (grid) => Array.from(grid.children).map((c) => {
    const r = c.getBoundingClientRect();
    return [r.left, r.width];
  });
  return {
    viewport: window.innerWidth,
    header: boxes(panel.querySelector('.ipycache-columns')),
    rows: Array.from(panel.querySelectorAll('.ipycache-entry > .widget-gridbox')).map(boxes),
  };
}"""

_CLIPPED_JS = """(cell) => ({clipped: cell.scrollWidth > cell.clientWidth, title: cell.title,
  overflow: getComputedStyle(cell).textOverflow})"""

_COUNT_THREADS = (
    "import threading; print(sorted(t.name for t in threading.enumerate() if t.name.startswith('ipycache')))"
)


def _seconds(text: str) -> float:
    """'1m 29s' -> 89, '42s' -> 42, '9.0s' -> 9 (format_duration's forms below an hour)."""
    match = re.search(r"(?:(\d+)m )?(\d+(?:\.\d)?)s$", text.strip())
    assert match, f"not a duration: {text!r}"
    return int(match[1] or 0) * 60 + float(match[2])


def _settled_boxes(page: Any, panel: Any, width: int, timeout: float = 10.0) -> dict[str, Any]:
    """The column boxes once the page is ``width`` wide and two readings in a row agree."""
    deadline = time.monotonic() + timeout
    previous = None
    while True:
        boxes: dict[str, Any] = panel.evaluate(_COLUMN_BOXES_JS)
        if boxes["viewport"] == width and boxes == previous:
            return boxes
        assert time.monotonic() < deadline, f"the layout at {width}px did not settle: {previous} {boxes}"
        previous = boxes
        page.wait_for_timeout(100)


def _assert_aligned(page: Any, panel: Any, width: int) -> None:
    page.set_viewport_size({"width": width, "height": 1000})
    boxes = _settled_boxes(page, panel, width)
    header, rows = boxes["header"], boxes["rows"]
    assert rows, "no rows to align"
    for row in rows:
        assert len(row) == len(header)
        for column, ((hx, hw), (cx, cw)) in enumerate(zip(header, row, strict=True)):
            # Left edges always; widths too for the text columns (the buttons are narrower than
            # their header cell's track, which is fine as long as they start where it starts).
            same_width = abs(hw - cw) <= 1 or column in (0, len(header) - 1)
            assert abs(hx - cx) <= 1 and same_width, (
                f"at {width}px column {column} of a row starts at {cx:.1f} (width {cw:.1f}), "
                f"its header at {hx:.1f} (width {hw:.1f})"
            )
    assert header[1][1] >= 120, f"at {width}px the entry column is only {header[1][1]:.0f}px wide"
    # Playwright's own boxes agree for the TTL column: header and first row.
    head = panel.locator(".ipycache-columns .ipycache-col-ttl").bounding_box()
    cell = panel.locator(".ipycache-entry .ipycache-ttl").first.bounding_box()
    assert head is not None and cell is not None
    assert abs(head["x"] - cell["x"]) <= 1, (width, head, cell)


@pytest.mark.usefixtures("patient_expect")
def test_statuses_and_panel_follow_the_cache(server: Server, request: pytest.FixtureRequest) -> None:
    from playwright.sync_api import expect, sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    prefix = server.front_end
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        console: list[str] = []
        page.on("console", lambda msg: console.append(f"{msg.type}: {msg.text}"))
        try:
            page.goto(server.notebook_url(NOTEBOOK), timeout=60_000)
            page.wait_for_function(_KERNEL_READY_JS, timeout=60_000)
            kernel_prefix = page.evaluate(_EXECUTE_JS, "import sys; print(sys.prefix)").strip()
            assert kernel_prefix == sys.prefix, "the kernel is not this venv's Python"
            page.evaluate(_RUN_ALL_JS)

            cells = page.locator(".jp-Notebook .jp-Cell")
            expect(cells).to_have_count(len(CELLS))

            def status(i: int) -> Any:
                return cells.nth(i).locator(".ipycache-status")

            panel = page.locator(".jp-OutputArea-output .ipycache-panel")
            rows = panel.locator(".ipycache-entry")
            expect(rows).to_have_count(3, timeout=60_000)

            # ---- miss and hit: the statuses say where the results came from
            expect(status(ANSWER)).to_have_count(1)
            expect(status(ANSWER)).to_contain_text(MISS)
            expect(status(ANSWER + 1)).to_contain_text(HIT)
            expect(cells.nth(ANSWER + 1).locator(".jp-OutputArea")).to_contain_text("499500")
            expect(status(ANSWER + 1).locator(".ipycache-recompute")).to_be_visible()

            # ---- the panel: labels that say which cell, names without modules, sizes
            answer_row = rows.filter(has_text="answer = sum(range(n))")
            conn_row = rows.filter(has_text="conn = sqlite3.connect")
            expect(answer_row).to_have_count(1)
            # not "answer, squares, math, time": imported modules are not what the cell computed
            expect(answer_row.locator(".ipycache-col-names")).to_have_text("answer, squares")
            expect(conn_row.locator(".ipycache-col-names")).to_have_text("conn")
            expect(conn_row.locator(".ipycache-col-size")).to_have_text("shared")
            expect(answer_row.locator(".ipycache-col-hits")).to_have_text("1")
            summary = panel.locator(".ipycache-header")
            expect(summary).to_contain_text(re.compile(r"3 entries · memory .* of 64.0 KiB · 1 hit / 3 miss"))
            expect(panel.locator(".ipycache-chart-segment")).to_have_count(2)  # two data entries

            # ---- countdown, in the status and in the panel, by the kernel's threads alone
            line = status(ANSWER + 1).locator(".ipycache-status-text")
            text = line.inner_text()
            expect(line).not_to_have_text(text)
            later = line.inner_text()
            assert _seconds(text.split("expires in ")[1].split(" · ")[0]) > _seconds(
                later.split("expires in ")[1].split(" · ")[0]
            ), (text, later)
            ttl = answer_row.locator(".ipycache-ttl")
            first = ttl.inner_text()
            expect(ttl).not_to_have_text(first)
            assert _seconds(first) > _seconds(ttl.inner_text()) > 60

            # ---- one grid: header and cells share their columns at any width
            _assert_aligned(page, panel, 1400)
            clipped = conn_row.locator(".ipycache-col-label .ipycache-cut")
            _assert_aligned(page, panel, 900)
            seen = clipped.evaluate(_CLIPPED_JS)
            assert seen["clipped"] and seen["overflow"] == "ellipsis", seen
            assert "check_same_thread" in seen["title"], seen  # the full text on hover
            page.set_viewport_size({"width": 1400, "height": 1000})

            # ---- a row expands to its inputs, why it was computed and where it lives
            answer_row.locator(".ipycache-expand").click()
            details = answer_row.locator(".ipycache-details")
            expect(details).to_contain_text("first run")
            expect(details).to_contain_text("lives in")
            expect(details).to_contain_text("memory")
            expect(details.locator(".ipycache-inputs")).to_contain_text("n ")  # `n` and its digest

            panel.screenshot(path=str(ARTIFACTS / f"{prefix}-panel.png"))
            cells.nth(ANSWER + 1).locator(".jp-Cell-outputWrapper").screenshot(
                path=str(ARTIFACTS / f"{prefix}-status.png")
            )
            print(f"\nscreenshots: {ARTIFACTS}/{prefix}-panel.png, {ARTIFACTS}/{prefix}-status.png")

            # ---- expiry: the status says so and the row goes, live
            expect(status(SHORT)).to_contain_text("expired · computed", timeout=(SHORT_TTL + 15) * 1000)
            expect(rows).to_have_count(2)

            # ---- Recompute: the cell runs again; its output goes into the status
            status(ANSWER).locator(".ipycache-recompute").click()
            recomputed = status(ANSWER).locator(".ipycache-recompute-output")
            expect(recomputed).to_contain_text("499500")
            expect(status(ANSWER)).to_contain_text(MISS)
            expect(answer_row.locator(".ipycache-col-hits")).to_have_text("0")  # a new entry
            expect(panel.locator(".ipycache-header")).to_contain_text("4 misses")

            # ---- the kind filter, and what it says when it hides everything
            kind = panel.locator(".ipycache-filter select")
            kind.select_option("resource")
            expect(rows).to_have_count(1)
            expect(rows.first).to_contain_text("conn = sqlite3.connect")
            expect(panel.locator(".ipycache-header")).to_contain_text("1 entry hidden by the filter")
            kind.select_option("all")
            expect(rows).to_have_count(2)
            search = panel.locator(".ipycache-search input")
            search.fill("squares")  # a name, not in any label
            expect(rows).to_have_count(1)
            expect(rows.first).to_contain_text("answer = sum(range(n))")
            search.fill("no such entry")
            expect(panel.locator(".ipycache-empty")).to_contain_text("No entries match “no such entry”")
            search.fill("")
            expect(rows).to_have_count(2)

            # ---- delete: the row goes, and both statuses of that entry say so
            answer_row.locator(".ipycache-delete").click()
            expect(rows).to_have_count(1)
            expect(status(ANSWER)).to_contain_text("deleted · computed")
            expect(status(ANSWER + 1)).to_contain_text("deleted · computed")
            kind.select_option("data")
            expect(rows).to_have_count(0)
            expect(panel.locator(".ipycache-empty")).to_have_text(
                "No data entries: 1 entry hidden by the kind filter."
            )
            kind.select_option("all")

            # ---- clear all
            panel.locator(".ipycache-clear-all").click()
            expect(rows).to_have_count(0)
            expect(panel.locator(".ipycache-empty")).to_contain_text("The cache is empty")
            expect(panel.locator(".ipycache-header")).to_contain_text("0 entries")
            expect(status(CONN)).to_contain_text("cleared · computed")
            left = page.evaluate(
                _EXECUTE_JS, "import ipycache_ext; print(len(ipycache_ext.get_store().entries()))"
            )
            assert left.strip() == "0", left

            # ---- nothing counts down any more: no status thread is left
            deadline = time.monotonic() + 15
            while "ipycache_ext-status" in (threads := page.evaluate(_EXECUTE_JS, _COUNT_THREADS)):
                assert time.monotonic() < deadline, threads
                time.sleep(0.25)
        except BaseException:
            name = re.sub(r"[^\w.-]", "_", request.node.name)
            page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)
            (ARTIFACTS / f"{name}.console.txt").write_text("\n".join(console))
            (ARTIFACTS / f"{name}.server.log").write_text(server.log.read_text())
            print(f"\nfailure artifacts: {ARTIFACTS}/{name}.*")
            raise
        finally:
            browser.close()
