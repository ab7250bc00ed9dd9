"""A Hypothesis state machine drives the file and memory backends against a dict model.

Random puts, reads, deletes, budget trims and "a new kernel opens the directory" (file
backend): after every step the stored bytes, the keys and the usage figure must match the
model, and a trim must leave usage within the budget, keep the entry it was told to keep,
and (memory backend, whose clock can't tie) evict in least-recently-used order.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from ipycache_ext.backends import Backend, FileBackend, MemoryBackend

KEYS = st.sampled_from(["aa", "bb", "cc", "dd", "ee"])
DATA = st.binary(min_size=0, max_size=300)


class BackendAgainstModel(RuleBasedStateMachine):
    file_backend = False

    @initialize()
    def open(self) -> None:
        self.directory = Path(tempfile.mkdtemp(prefix="ipycache-states-"))
        self.backend: Backend = self._open()
        self.model: dict[str, bytes] = {}
        self.uses: list[str] = []  # least recently used first
        self.tag = 0

    def _open(self) -> Backend:
        return FileBackend(self.directory / "store") if self.file_backend else MemoryBackend()

    def teardown(self) -> None:
        if hasattr(self, "backend"):
            self.backend.close()
            shutil.rmtree(self.directory, ignore_errors=True)

    def _used(self, key: str) -> None:
        if key in self.uses:
            self.uses.remove(key)
        self.uses.append(key)

    @rule(key=KEYS, data=DATA, split=st.integers(0, 300))
    def put(self, key: str, data: bytes, split: int) -> None:
        self.tag += 1
        self.backend.put(key, [data[:split], memoryview(data[split:])], tag=str(self.tag), size=len(data))
        self.model[key] = data
        self._used(key)

    @rule(key=KEYS)
    def get(self, key: str) -> None:
        blob = self.backend.get(key)
        if key in self.model:
            assert blob is not None and bytes(blob.data) == self.model[key]
            self._used(key)
        else:
            assert blob is None

    @rule(key=KEYS)
    def delete(self, key: str) -> None:
        assert self.backend.delete(key) == (key in self.model)
        self.model.pop(key, None)
        if key in self.uses:
            self.uses.remove(key)

    @rule(budget=st.integers(0, 1200), data=st.data())
    def trim(self, budget: int, data: st.DataObject) -> None:
        keep = data.draw(st.sampled_from(sorted(self.model))) if self.model else None
        evicted = self.backend.trim(budget, keep=keep)
        assert keep not in evicted
        assert set(evicted) <= set(self.model)
        if not self.file_backend:  # same-microsecond uses can tie in the file index's clock
            expected = [key for key in self.uses if key != keep][: len(evicted)]
            assert evicted == expected
        for key in evicted:
            del self.model[key]
            self.uses.remove(key)
        assert self.backend.usage() <= budget or list(self.model) == [keep]

    @precondition(lambda self: self.file_backend)
    @rule()
    def new_kernel(self) -> None:
        self.backend.close()
        self.backend = self._open()

    @invariant()
    def matches_the_model(self) -> None:
        if not hasattr(self, "backend"):
            return
        assert sorted(self.backend.keys()) == sorted(self.model)
        assert self.backend.usage() == sum(len(data) for data in self.model.values())
        for key in self.model:
            assert self.backend.contains(key)


class FileBackendAgainstModel(BackendAgainstModel):
    file_backend = True


SETTINGS = settings(max_examples=25, stateful_step_count=30, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])  # fmt: skip
TestMemoryBackend = BackendAgainstModel.TestCase
TestMemoryBackend.settings = SETTINGS
TestFileBackend = FileBackendAgainstModel.TestCase
TestFileBackend.settings = SETTINGS
