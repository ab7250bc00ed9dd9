"""Every ```python block of README.md runs when pasted, in order, into a fresh notebook.

The blocks run one after another as cells of one real kernel (jupyter_client + ipykernel),
in an empty temporary directory with its own cache directory, after ``%load_ext
ipycache_ext`` — what a reader does. A reader may start at any section, so the namespace
is emptied (``%reset -f``) at each ``## `` heading: a section's blocks import what they use.
Skipped: configuration for ``ipython_config.py`` (blocks using ``c.CacheMagics``), and
blocks right after an HTML comment ``<!-- readme-test: skip (why) -->`` (those needing a
server, say): the reason is in the README next to the block.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"
_BLOCK = re.compile(r"(?P<before>(?:<!--[^\n]*-->\s*\n)?)```python\n(?P<code>.*?)```", re.S)
_SKIP = re.compile(r"<!--\s*readme-test:\s*skip")


_SECTION = re.compile(r"^## ", re.M)


def readme_blocks(text: str) -> list[tuple[int, str, str | None, int]]:
    """(line number, code, why it is skipped or None, section number) for each python block."""
    blocks = []
    for match in _BLOCK.finditer(text):
        line = text.count("\n", 0, match.start("code"))
        section = len(_SECTION.findall(text, 0, match.start()))
        code = match["code"]
        skip = None
        if _SKIP.search(match["before"]):
            skip = "marked in the README"
        elif re.search(r"^\s*c\.CacheMagics\.", code, re.M):
            skip = "ipython_config.py settings"
        blocks.append((line, code, skip, section))
    return blocks


def test_the_readme_has_python_blocks_and_the_extractor_sees_marks() -> None:
    sample = "a\n```python\nx = 1\n```\n<!-- readme-test: skip (needs redis) -->\n```python\ny\n```\n"
    assert [(code, skip) for _, code, skip, _ in readme_blocks(sample)] == [
        ("x = 1\n", None),
        ("y\n", "marked in the README"),
    ]
    assert len(readme_blocks(README.read_text())) >= 5


@pytest.mark.slow
def test_every_readme_snippet_runs_in_a_fresh_kernel(tmp_path: Path) -> None:
    jupyter_client = pytest.importorskip("jupyter_client")
    env = dict(os.environ, IPYCACHE_EXT_CACHE_DIR=str(tmp_path / "cache"))
    work = tmp_path / "work"
    work.mkdir()
    manager, client = jupyter_client.manager.start_new_kernel(kernel_name="python3", cwd=str(work), env=env)
    failures = []
    ran = 0
    try:
        section = 0
        for line, code, skip, block_section in readme_blocks(README.read_text()):
            if skip is not None:
                continue
            if block_section != section:  # a new section: a reader may start here
                section = block_section
                client.execute_interactive("%reset -f\n%load_ext ipycache_ext", timeout=60)
            errors: list[str] = []

            def hook(msg: dict[str, Any], errors: list[str] = errors) -> None:
                if msg["msg_type"] == "error":
                    errors.append(f"{msg['content']['ename']}: {msg['content']['evalue']}")

            reply = client.execute_interactive(code, output_hook=hook, timeout=120)
            ran += 1
            if reply["content"]["status"] != "ok" or errors:
                failures.append(f"README.md line {line}:\n{code}-> {'; '.join(errors) or reply['content']}")
    finally:
        client.stop_channels()
        manager.shutdown_kernel(now=True)
    assert ran >= 5
    assert failures == [], "\n\n".join(failures)
