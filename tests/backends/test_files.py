"""The file backend's own guarantees: index, killed writers, files that aren't what they seem."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from ipycache_ext.backends.files import FileBackend, NotARegularFile, read_regular_file
from tests.descriptors import descriptors_to

ROOT = Path(__file__).resolve().parents[2]


def test_usage_and_budget_never_list_the_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    backend = FileBackend(tmp_path / "store")
    for index in range(50):
        backend.put(f"k{index}", [b"x" * 100], tag=str(index), size=100)

    def no_listing(*args: object, **kwargs: object) -> None:
        raise AssertionError("the directory was listed")

    monkeypatch.setattr(Path, "glob", no_listing)
    monkeypatch.setattr(os, "listdir", no_listing)
    monkeypatch.setattr(os, "scandir", no_listing)
    backend.put("new", [b"y" * 100], tag="n", size=100)
    assert backend.usage() == 5100
    assert len(backend.trim(1000, keep="new")) == 41
    assert backend.usage() == 1000 and backend.contains("new")


HOLDER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from ipycache_ext.backends.files import FileBackend

    backend = FileBackend(Path(sys.argv[1]))
    def chunks():
        yield b"x" * 500_000
        print("writing", flush=True)
        time.sleep(60)  # killed here, mid-write
        yield b"y"
    backend.put("victim", chunks(), tag="t", size=1_000_000)
    """
)


def test_a_killed_writer_is_counted_then_swept_once_its_pid_is_gone(tmp_path: Path) -> None:
    directory = tmp_path / "store"
    backend = FileBackend(directory)
    writer = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(directory)], stdout=subprocess.PIPE, text=True, cwd=ROOT
    )
    assert writer.stdout is not None and writer.stdout.readline().strip() == "writing"
    assert backend.usage() == 1_000_000  # the write in flight counts against the budget
    assert len(list(directory.glob(".tmp-*"))) == 1
    backend.put("other", [b"z"], tag="o", size=1)  # the writer is alive: its file stays
    assert len(list(directory.glob(".tmp-*"))) == 1
    writer.send_signal(signal.SIGKILL)
    writer.wait(10)
    backend.put("other", [b"z"], tag="o2", size=1)  # the next write sweeps what it left
    assert list(directory.glob(".tmp-*")) == []
    assert backend.usage() == 1
    assert not backend.contains("victim")


KILLED_AFTER_RENAME = textwrap.dedent(
    """
    import os, signal, sys
    from ipycache_ext.backends.files import FileBackend

    backend = FileBackend(sys.argv[1])
    backend.put("k", [b"first"], tag="g1", size=5)
    real = os.replace

    def replace_then_die(source, target):
        real(source, target)  # the new file is in place; its index transaction never commits
        os.kill(os.getpid(), signal.SIGKILL)

    os.replace = replace_then_die
    backend.put("k", [b"second"], tag="g2", size=6)
    """
)


def test_a_writer_killed_between_its_rename_and_its_commit_leaves_a_readable_entry(tmp_path: Path) -> None:
    """The file in place carries the dead writer's tag: sweeping its row must not make that
    file look like an old copy put back (readers would refuse and remove it)."""
    directory = tmp_path / "store"
    done = subprocess.run([sys.executable, "-c", KILLED_AFTER_RENAME, str(directory)], cwd=ROOT, check=False)
    assert done.returncode == -signal.SIGKILL
    backend = FileBackend(directory)
    backend.put("other", [b"z"], tag="o", size=1)  # sweeps what the dead writer left
    opened = backend.open_file("k")
    assert opened is not None
    fd, current = opened
    try:
        assert os.pread(fd, 16, 0) == b"second" and current is not None and "g2" in current
    finally:
        os.close(fd)
    backend.put("k", [b"third"], tag="g3", size=5)  # the file is replaced: the dead row goes
    reopened = backend.open_file("k")
    assert reopened is not None
    os.close(reopened[0])
    assert reopened[1] == frozenset({"g3"}) and backend.usage() == 6


def test_a_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    backend = FileBackend(tmp_path / "store")
    os.mkfifo(backend.path("fifo1"))
    result: list[object] = []

    def read() -> None:
        try:
            backend.get("fifo1")
        except NotARegularFile as exc:
            result.append(exc)

    thread = threading.Thread(target=read, daemon=True)
    thread.start()
    thread.join(5)
    assert not thread.is_alive(), "reading a FIFO named like an entry blocked"
    assert len(result) == 1


@pytest.mark.parametrize("kind", ["directory", "symlink"])
def test_directories_and_links_are_not_opened(tmp_path: Path, kind: str) -> None:
    backend = FileBackend(tmp_path / "store")
    path = backend.path("odd")
    if kind == "directory":
        path.mkdir()
    else:
        (tmp_path / "elsewhere").write_bytes(b"data")
        path.symlink_to(tmp_path / "elsewhere")
    with pytest.raises(NotARegularFile):
        read_regular_file(path)


def test_an_index_row_names_the_current_generation(tmp_path: Path) -> None:
    backend = FileBackend(tmp_path / "store")
    backend.put("k", [b"one"], tag="g1", size=3)
    backend.put("k", [b"two"], tag="g2", size=3)
    blob = backend.get("k")
    assert blob is not None and blob.current == frozenset({"g2"})
    backend.delete("k")
    backend.path("k").write_bytes(b"one")  # an old copy put back after a delete
    blob = backend.get("k")
    assert blob is not None and blob.current == frozenset()  # nothing is current: it will be refused


def test_kernels_share_one_index(tmp_path: Path) -> None:
    first, second = FileBackend(tmp_path / "store"), FileBackend(tmp_path / "store")
    first.put("k", [b"x" * 10], tag="a", size=10)
    assert second.usage() == 10 and second.get("k") is not None
    second.delete("k")
    assert first.usage() == 0 and not first.contains("k")


def test_leases_are_released_when_their_process_dies(tmp_path: Path) -> None:
    directory = tmp_path / "store"
    backend = FileBackend(directory)
    code = (
        "import sys, time; from pathlib import Path; from ipycache_ext.backends.files import FileBackend\n"
        "lease = FileBackend(Path(sys.argv[1])).acquire('k', 'alice@host since 14:02', 30)\n"
        "print('held' if lease else 'free', flush=True); time.sleep(60)"
    )
    holder = subprocess.Popen([sys.executable, "-c", code, str(directory)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
    assert backend.holder("k") == "alice@host since 14:02"
    assert backend.acquire("k", "bob", 30) is None
    holder.kill()
    holder.wait(10)
    deadline = time.monotonic() + 5
    while backend.holder("k") is not None and time.monotonic() < deadline:
        time.sleep(0.01)
    lease = backend.acquire("k", "bob", 30)
    assert lease is not None
    lease.release()


def test_close_releases_the_index_descriptors_and_a_closed_backend_reopens(tmp_path: Path) -> None:
    def open_fds() -> int:
        return descriptors_to(tmp_path / "store")

    backend = FileBackend(tmp_path / "store")
    backend.put("k", [b"x" * 100], tag="t", size=100)
    assert open_fds() > 0
    backend.close()
    assert open_fds() == 0  # not left to garbage collection
    assert backend.get("k") is not None and backend.usage() == 100
    backend.close()
