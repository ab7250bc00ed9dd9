"""Shared fixtures: a real IPython shell with the extension loaded, a fake clock, a store."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from hypothesis import settings
from IPython.core.interactiveshell import InteractiveShell

import ipycache_ext
from ipycache_ext import CacheStore

# Hypothesis's 200 ms per-example deadline is a speed check, and speed checks live in
# benchmarks/: on a loaded two-core CI machine one stalled example would fail a correct test.
settings.register_profile("ipycache_ext", deadline=None)
settings.load_profile("ipycache_ext")


class FakeClock:
    """A timer that only moves when told to (cachetools-style clock injection)."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def store(clock: FakeClock) -> Iterator[CacheStore]:
    cache = CacheStore(timer=clock, memory_budget=64 * 1024 * 1024)
    yield cache
    cache.close()


@pytest.fixture
def shell(store: CacheStore) -> Iterator[InteractiveShell]:
    """The real IPython shell, extension loaded on the test's store, namespace cleaned after."""
    ip = InteractiveShell.instance()
    ip.colors = "nocolor"
    ipycache_ext.load_ipython_extension(ip, store=store)
    try:
        yield ip
    finally:
        ipycache_ext.unload_ipython_extension(ip)
        ip.config.pop("CacheMagics", None)  # %config in one test must not reach the next
        ip.reset(new_session=False)


def lock_is_free(store: CacheStore) -> bool:
    """True when another thread can take the store's lock at once (nothing left holding it)."""
    import threading

    got: list[bool] = []

    def take() -> None:
        if store._lock.acquire(timeout=5):
            got.append(True)
            store._lock.release()

    thread = threading.Thread(target=take)
    thread.start()
    thread.join(10)
    return got == [True]


def run(ip: InteractiveShell, code: str) -> object:
    """Run a cell like Jupyter does; fail the test with the cell's own error if it raised."""
    result = ip.run_cell(code, store_history=True)
    if result.error_before_exec is not None:
        raise result.error_before_exec
    if result.error_in_exec is not None:
        raise result.error_in_exec
    return result.result
