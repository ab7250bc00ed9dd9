"""Two kernels on one cache directory, against a model: this process and a real subprocess.

Kernel A is a ``CacheStore`` in the test process; kernel B is ``tests/store_process.py``, a
long-lived subprocess with its own store on the same directory, driven by JSON lines (every
read has a timeout, so a hang fails the test instead of blocking it). A Hypothesis state
machine runs the same operations in either kernel: persisted puts (and refreshes, with or
without a TTL), deletes, clears, evictions from memory, and restarts ("a new kernel": a new
store on the directory); time passes for both at once (their clocks are set together).

The model, written from the documented contract (README, "Persistence across restarts"):

- each kernel's memory (key -> value, expiry) and the disk (key -> value, expiry, file size,
  last use);
- a put is a memory hit if the kernel holds the key, else the disk's value (a hit that
  counts as a use of the file) unless it has expired (then the file is removed), else
  computed, saved and found by the other kernel once its own memory copy is gone; a
  refresh always computes and replaces the file;
- an entry that expires in a kernel's memory leaves it and removes the file it came from
  (the one it wrote or loaded), never a newer file another kernel wrote since;
- a delete of an entry the kernel holds removes its file (whoever wrote it); a delete of one
  it doesn't hold is a no-op; a clear empties this kernel's memory and the whole disk; an
  eviction from memory or a restart leaves the files alone;
- after each save the file backend trims the disk to its budget: least recently *used on
  disk* first (saves and disk loads are uses, memory hits are not), never the file just
  written, so the disk is under budget unless that one file alone is larger.

After every step both kernels hold exactly the model's keys, the directory holds exactly
the model's files (and no temporary ones), and the disk use is the sum of their sizes.
Every value served must be one that was saved for that key (the model's, exactly).
"""

from __future__ import annotations

import itertools
import json
import os
import queue
import subprocess
import sys
import tempfile
import threading
import warnings
from collections import defaultdict
from pathlib import Path
from typing import IO, Any

from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from ipycache_ext._store import CacheStore

from .store_process import Clock, open_store, put

KEYS = ("a1", "b2", "c3")
SIZES = (0, 0, 2_000, 5_000, 20_000)  # payload bytes; 20,000 alone is over the disk budget
REFRESH = (False, False, False, True)  # a refresh in one put of four: others mostly look first
TTLS = (None, 1.0, 5.0)
STEPS = (0.5, 2.0)
START = 1_700_000_000.0
BUDGET = 12_000  # disk budget in bytes (each file also has its header and signature)
KERNELS = ("A", "B")
READ_TIMEOUT = 30.0  # seconds for one answer of the other kernel: a hang fails, never blocks
HELPER = Path(__file__).with_name("store_process.py")

Served = tuple[int, int]  # (number, payload size): numbers are unique over the whole run
Value = tuple[int, int, float | None]  # and its expiry

settings.register_profile(
    "ipycache-two-kernels-ci",
    max_examples=80,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "ipycache-two-kernels-long",
    max_examples=250,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
PROFILE = "long" if os.environ.get("HYPOTHESIS_PROFILE") == "long" else "ci"


class OtherKernel:
    """Kernel B: the subprocess, one JSON line per command and per answer."""

    def __init__(self, directory: Path, budget: int, now: float) -> None:
        self._stderr: IO[bytes] = tempfile.TemporaryFile()  # noqa: SIM115 (closed by stop())
        self.process = subprocess.Popen(
            [sys.executable, str(HELPER), str(directory), str(budget), repr(now)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
        )
        self._lines: queue.Queue[str | None] = queue.Queue()
        assert self.process.stdout is not None
        self._pumping = threading.Thread(target=self._pump, args=(self.process.stdout,), daemon=True)
        self._pumping.start()
        try:
            ready = self._read()
            assert ready.get("ready") == self.process.pid, ready
        except BaseException:
            self.stop()  # the machine's teardown only stops a kernel that started
            raise

    def _pump(self, stream: IO[str]) -> None:
        for line in stream:
            self._lines.put(line)
        self._lines.put(None)  # end of output: the process exited

    def _read(self) -> dict[str, Any]:
        try:
            line = self._lines.get(timeout=READ_TIMEOUT)
        except queue.Empty:
            raise AssertionError(f"kernel B gave no answer within {READ_TIMEOUT} s{self._tail()}") from None
        if line is None:
            raise AssertionError(f"kernel B exited (status {self.process.wait(10)}){self._tail()}")
        answer: dict[str, Any] = json.loads(line)
        return answer

    def _tail(self) -> str:
        self._stderr.seek(0)
        text = self._stderr.read().decode(errors="replace")[-4000:]
        return f"; its stderr:\n{text}" if text else ""

    def call(self, op: str, **arguments: Any) -> dict[str, Any]:
        """Send one command; its answer (failing the test on an error or any warning in B)."""
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps({"op": op, **arguments}) + "\n")
        self.process.stdin.flush()
        answer = self._read()
        assert "error" not in answer, f"kernel B failed on {op}:\n{answer['error']}"
        assert answer.pop("warnings") == [], f"kernel B warned on {op}: {answer}"
        return answer

    def stop(self) -> None:
        """End of input closes B's store and ends it; killed if it doesn't within 10 s."""
        try:
            if self.process.stdin is not None:
                self.process.stdin.close()
            self.process.wait(10)
        except (OSError, subprocess.TimeoutExpired):
            self.process.kill()
            self.process.wait(10)
        finally:
            self._pumping.join(10)  # it has read the end of the output: its pipe can close
            if self.process.stdout is not None:
                self.process.stdout.close()
            self._stderr.close()


class TwoKernels(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self._directory = tempfile.TemporaryDirectory()
        self.directory = Path(self._directory.name) / "cache"
        self.numbers = itertools.count()
        self.memory: dict[str, dict[str, Value]] = {kernel: {} for kernel in KERNELS}
        self.disk: dict[str, Value] = {}
        self.file_size: dict[str, int] = {}
        self.writer: dict[str, str] = {}  # the kernel that wrote each file (for the statistics)
        self.refreshed: set[str] = set()  # files written by a refresh (for the statistics)
        self.disk_use_order: list[str] = []  # keys on disk, least recently used first
        self.saved: defaultdict[str, set[Served]] = defaultdict(set)
        self.clock = Clock(START)
        self.store: CacheStore = open_store(self.directory, BUDGET, self.clock)
        self.other: OtherKernel | None = None
        self.other = OtherKernel(self.directory, BUDGET, START)

    # ------------------------------------------------------------ driving either kernel
    def _put(
        self, kernel: str, key: str, *, value: int, size: int, refresh: bool, ttl: float | None
    ) -> dict[str, Any]:
        if kernel == "A":
            return put(self.store, key, value=value, size=size, refresh=refresh, ttl=ttl)
        assert self.other is not None
        return self.other.call("put", key=key, value=value, size=size, refresh=refresh, ttl=ttl)

    def _due(self, value: Value) -> bool:
        return value[2] is not None and self.clock() >= value[2]

    def _memory_keys(self, kernel: str) -> list[str]:
        if kernel == "A":
            return sorted(e.key for e in self.store.entries())
        assert self.other is not None
        keys: list[str] = self.other.call("keys")["keys"]
        return keys

    # ------------------------------------------------------------ the disk model
    def _use(self, key: str) -> None:
        if key in self.disk_use_order:
            self.disk_use_order.remove(key)
        self.disk_use_order.append(key)

    def _forget(self, key: str) -> None:
        self.disk.pop(key, None)
        self.file_size.pop(key, None)
        self.writer.pop(key, None)
        self.refreshed.discard(key)
        if key in self.disk_use_order:
            self.disk_use_order.remove(key)

    def _trim(self, keep: str) -> None:
        """What the file backend does after a save: LRU files go until under budget, never ``keep``."""
        while sum(self.file_size.values()) > BUDGET:
            victims = [k for k in self.disk_use_order if k != keep]
            if not victims:
                break
            self._forget(victims[0])

    # ------------------------------------------------------------ rules
    @rule(
        kernel=st.sampled_from(KERNELS),
        key=st.sampled_from(KEYS),
        size=st.sampled_from(SIZES),
        refresh=st.sampled_from(REFRESH),
        ttl=st.sampled_from(TTLS),
    )
    def put(self, kernel: str, key: str, size: int, refresh: bool, ttl: float | None) -> None:
        number = next(self.numbers)
        answer = self._put(kernel, key, value=number, size=size, refresh=refresh, ttl=ttl)
        served = (answer["value"], answer["size"])
        value: Value = (*served, answer["expires"])
        memory = self.memory[kernel]
        assert answer["persisted"], answer
        if not answer["hit"]:
            assert served == (number, size)
        else:
            assert served in self.saved[key], f"{kernel} loaded {served} for {key}, never saved for it"

        if not refresh and key in self.disk and key not in memory and self._due(self.disk[key]):
            self._forget(key)  # an expired file is not loaded: it is removed, and the key computed
            event("an expired file was removed instead of loaded")
        if not refresh and key in memory:  # (never due here: the clock rule drops what falls due)
            assert answer["hit"] and value == memory[key], (answer, memory[key])
        elif not refresh and key in self.disk:
            assert answer["hit"] and value == self.disk[key], (kernel, key, answer, self.disk[key])
            memory[key] = self.disk[key]
            self._use(key)  # a disk load counts as a use of the file
            event("loaded the other kernel's file" if self.writer[key] != kernel else "loaded its own file")
            if self.writer[key] != kernel and key in self.refreshed:
                event("loaded the other kernel's refresh")
        else:
            assert not answer["hit"], (kernel, key, answer)
            assert value[2] == (None if ttl is None else self.clock() + ttl), answer
            memory[key] = self.disk[key] = value
            self.saved[key].add(served)
            self.file_size[key] = (self.directory / f"{key}.entry").stat().st_size
            self.writer[key] = kernel
            (self.refreshed.add if refresh else self.refreshed.discard)(key)
            self._use(key)
            before = set(self.disk)
            self._trim(keep=key)
            if before - set(self.disk):
                event("the save trimmed other files to the budget")
            if self.file_size[key] > BUDGET:
                event("one file alone over the budget")

    @rule(kernel=st.sampled_from(KERNELS), key=st.sampled_from(KEYS))
    def delete(self, kernel: str, key: str) -> None:
        if kernel == "A":
            found = self.store.delete(key)
        else:
            assert self.other is not None
            found = self.other.call("delete", key=key)["found"]
        held = key in self.memory[kernel]
        assert found is held
        if held and self.writer.get(key, kernel) != kernel:
            event("deleted the other kernel's file")
        if held:  # a persisted entry deleted here is gone from disk too, whoever wrote the file
            del self.memory[kernel][key]
            self._forget(key)

    @rule(kernel=st.sampled_from(KERNELS))
    def clear(self, kernel: str) -> None:
        if kernel == "A":
            cleared = self.store.clear()
            counts = (cleared.in_memory, cleared.in_tiers)  # type: ignore[attr-defined]
        else:
            assert self.other is not None
            answer = self.other.call("clear")
            counts = (answer["in_memory"], answer["in_tiers"])
        memory = self.memory[kernel]
        assert counts == (len(memory), len(set(self.disk) - set(memory)))
        memory.clear()
        for key in list(self.disk):
            self._forget(key)

    @rule(kernel=st.sampled_from(KERNELS), key=st.sampled_from(KEYS))
    def evict(self, kernel: str, key: str) -> None:
        """Memory pressure drops the entry here; its file stays for every kernel."""
        if kernel == "A":
            count = self.store.delete_where(lambda e: e.key == key, reason="evicted")
        else:
            assert self.other is not None
            count = self.other.call("evict", key=key)["count"]
        assert count == (key in self.memory[kernel])
        self.memory[kernel].pop(key, None)

    @rule(seconds=st.sampled_from(STEPS))
    def time_passes(self, seconds: float) -> None:
        """Both clocks move; what falls due leaves each kernel's memory and takes its file along."""
        self.clock.now += seconds
        assert self.other is not None
        expired = {
            "A": self.store.purge_expired(),
            "B": self.other.call("time", now=self.clock.now)["expired"],
        }
        for kernel in KERNELS:
            due = [key for key, value in self.memory[kernel].items() if self._due(value)]
            assert expired[kernel] == len(due), (kernel, expired, self.memory)
            for key in due:
                held = self.memory[kernel].pop(key)
                if key in self.disk and self.disk[key][0] == held[0]:  # values are unique per save
                    self._forget(key)  # the file this kernel wrote or loaded
                elif key in self.disk:
                    event("an expiry left the other kernel's newer file in place")

    @rule(kernel=st.sampled_from(KERNELS))
    def restart(self, kernel: str) -> None:
        """The kernel stops (its entries stay on disk) and a new one opens the directory."""
        if kernel == "A":
            self.store.close()
            self.store = open_store(self.directory, BUDGET, self.clock)
        else:
            assert self.other is not None
            self.other.call("restart")
        self.memory[kernel].clear()

    # ------------------------------------------------------------ invariants
    @invariant()
    def memory_is_the_model(self) -> None:
        for kernel in KERNELS:
            assert self._memory_keys(kernel) == sorted(self.memory[kernel]), kernel

    @invariant()
    def disk_is_the_model(self) -> None:
        files = sorted(p.name for p in self.directory.glob("*.entry"))
        assert files == sorted(f"{key}.entry" for key in self.disk)  # and no .tmp-* left behind
        used = self.store.stats().disk_bytes
        assert used == sum(self.file_size.values())
        assert used <= BUDGET or len(self.disk) == 1, (used, self.file_size)

    def teardown(self) -> None:
        try:
            if self.other is not None:
                self.other.stop()
        finally:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                self.store.close()
            self._directory.cleanup()


TestTwoKernels = TwoKernels.TestCase
TestTwoKernels.settings = settings.get_profile(f"ipycache-two-kernels-{PROFILE}")


def test_a_file_that_expired_unheld_is_removed_by_the_other_kernel_not_loaded(tmp_path: Path) -> None:
    """The state machine reaches this path in few runs: a file that fell due while no kernel
    held it in memory is removed by the next kernel that looks, which computes the value again."""
    directory, clock = tmp_path / "cache", Clock(START)
    store = open_store(directory, BUDGET, clock)
    other = OtherKernel(directory, BUDGET, START)
    try:
        assert not put(store, "a1", value=1, size=10, refresh=False, ttl=1.0)["hit"]
        store.close()  # A stops: its entry stays on disk, held by no kernel
        clock.now += 2.0
        assert other.call("time", now=clock.now) == {"expired": 0}
        answer = other.call("put", key="a1", value=2, size=20, refresh=False, ttl=None)
        assert (answer["hit"], answer["value"], answer["size"]) == (False, 2, 20)
        store = open_store(directory, BUDGET, clock)  # A again: it finds B's new value, not its own
        assert put(store, "a1", value=4, size=0, refresh=False, ttl=None)["value"] == 2
    finally:
        other.stop()
        store.close()


def test_an_entry_expiring_in_one_kernel_leaves_the_other_kernels_newer_file(tmp_path: Path) -> None:
    directory, clock = tmp_path / "cache", Clock(START)
    store = open_store(directory, BUDGET, clock)
    other = OtherKernel(directory, BUDGET, START)
    try:
        assert not put(store, "a1", value=1, size=0, refresh=False, ttl=1.0)["hit"]
        assert not other.call("put", key="a1", value=2, size=0, refresh=True, ttl=None)["hit"]
        clock.now += 2.0
        assert store.purge_expired() == 1  # A's own copy is due: it goes, with the file it wrote
        store.close()
        store = open_store(directory, BUDGET, clock)  # a new kernel: B's value never expires
        answer = put(store, "a1", value=3, size=0, refresh=False, ttl=None)
        assert (answer["hit"], answer["value"]) == (True, 2)
    finally:
        other.stop()
        store.close()
