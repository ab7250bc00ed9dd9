"""``make team-demo``: a local redis-server, one notebook in two kernels as two users.

Alice's kernel runs notebooks/team.ipynb first and computes the slow ``--share`` cell; Bob's
kernel (his own cache directory and Ed25519 key, trusting Alice's public key) runs it next
and must get a hit computed by Alice. Everything lives in a temporary directory: the server
(started on a free loopback port, stopped with SIGTERM to its pidfile PID), both cache
directories and both keys. Exits non-zero if Bob's slow cell was not a team hit.

    python scripts/team_demo.py notebooks/team.ipynb
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import nbformat
from nbclient import NotebookClient

SHARED_MARK = "--share"
REPORT = (
    "import json, ipycache_ext\n"
    "print(json.dumps([dict(label=e.label, computed_by=e.computed_by, shared=e.shared, "
    "persisted=e.persisted, hits=e.hits, key=e.key) for e in ipycache_ext.get_store().entries()]))"
)


def start_redis(directory: Path) -> tuple[int, Path]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    pidfile = directory / "redis.pid"
    subprocess.run(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", str(directory), "--save", "",
         "--appendonly", "no", "--daemonize", "yes", "--pidfile", str(pidfile),
         "--logfile", str(directory / "redis.log")],
        check=True,
    )  # fmt: skip
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5) as connection:
                connection.sendall(b"PING\r\n")
                if connection.recv(16).startswith(b"+PONG") and pidfile.exists():
                    return port, pidfile
        except OSError:
            pass
        time.sleep(0.05)
    raise SystemExit(f"redis-server did not start on port {port}")


def stop_redis(pidfile: Path) -> None:
    """SIGTERM to the server we started (its pidfile's PID), and wait until it is gone."""
    if not pidfile.exists():
        return
    pid = int(pidfile.read_text().strip())
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)


def public_key(path: Path) -> str:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from ipycache_ext._signing import Ed25519Signer

    return Ed25519Signer.load_or_create(path).public_key


def text_of(cell: Any) -> str:
    parts = []
    for output in cell.get("outputs", []):
        if output.get("output_type") == "stream":
            parts.append(output.get("text", ""))
        elif "data" in output and "text/plain" in output["data"]:
            parts.append(output["data"]["text/plain"])
    return "".join(parts)


def run_kernel(path: Path, env: dict[str, str]) -> tuple[float, str, list[dict[str, Any]]]:
    """Run the notebook in a new kernel; the slow cell's time and text, and the store's entries."""
    notebook = nbformat.read(path, as_version=4)
    notebook.cells.append(nbformat.v4.new_code_cell(REPORT))
    client = NotebookClient(notebook, kernel_name="python3", timeout=600)
    slow_seconds, slow_text, report = 0.0, "", "[]"
    with client.setup_kernel(env={**os.environ, **env}):
        for index, cell in enumerate(notebook.cells):
            if cell.cell_type != "code":
                continue
            started = time.perf_counter()
            client.execute_cell(cell, index)
            if SHARED_MARK in cell.source.splitlines()[0]:
                slow_seconds, slow_text = time.perf_counter() - started, text_of(cell)
            report = text_of(cell)
    return slow_seconds, slow_text, json.loads(report.strip().splitlines()[-1])


def main() -> int:
    notebook = Path(sys.argv[1] if len(sys.argv) > 1 else "notebooks/team.ipynb").resolve()
    with tempfile.TemporaryDirectory(prefix="ipycache-team-demo-", ignore_cleanup_errors=True) as directory:
        work = Path(directory)
        port, pidfile = start_redis(work)
        try:
            url = f"redis://127.0.0.1:{port}/0"
            alice_key = public_key(work / "alice" / "team.pem")
            public_key(work / "bob" / "team.pem")
            common = {"IPYCACHE_EXT_TEAM_STORE": url, "IPYCACHE_EXT_TEAM_NAMESPACE": "demo"}
            users = {
                "alice": {},
                "bob": {"IPYCACHE_EXT_TEAM_TRUSTED_KEYS": f"alice {alice_key}"},  # bob trusts alice
            }
            results = {}
            for name, extra in users.items():
                env = {
                    **common,
                    **extra,
                    "IPYCACHE_EXT_USER": name,
                    "IPYCACHE_EXT_CACHE_DIR": str(work / name / "cache"),
                    "IPYCACHE_EXT_TEAM_KEY": str(work / name / "team.pem"),
                }
                results[name] = run_kernel(notebook, env)
                seconds, text, entries = results[name]
                print(f"kernel {len(results)} ({name}): slow cell took {seconds:.2f} s")
                for entry in entries:
                    who = entry["computed_by"] or "this kernel"
                    print(f"    entry {entry['label'][:40]!r}: computed by {who}, shared={entry['shared']}")
        finally:
            stop_redis(pidfile)
    seconds, text, entries = results["bob"]
    team_hits = [
        entry for entry in entries if entry["shared"] and (entry["computed_by"] or "").startswith("alice@")
    ]
    if team_hits and "cache hit" in text:
        print(f"bob's slow cell was a team hit computed by {team_hits[0]['computed_by']} "
              f"({results['alice'][0]:.2f} s -> {seconds:.2f} s)")  # fmt: skip
        return 0
    print("bob's slow cell was NOT a team hit (is `%%cache_data --share` wired to persist='team'?)")
    print(text)
    return 1


if __name__ == "__main__":
    sys.exit(main())
