"""Settings are checked when they are set: a bad value is refused, the previous one stays.

Run through ``%config`` in a real IPython shell. ``%config`` does not fail the cell when a
setting is refused; it logs the refusal (``logging.error``), which is what a user sees,
so the tests read the log.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from IPython.core.interactiveshell import InteractiveShell
from traitlets import TraitError
from traitlets.config import Config

import ipycache_ext
from ipycache_ext import CacheStore, _persist
from ipycache_ext._persist import DEFAULT_DISK_BUDGET
from ipycache_ext._store import default_memory_budget

from .conftest import FakeClock, run


def magics_of(shell: InteractiveShell) -> Any:
    return shell.magics_manager.registry["CacheMagics"]


def disk_budget_of(store: CacheStore) -> int:
    return _persist._settings[store][1]


def store_value(store: CacheStore, name: str) -> Any:
    """What the store itself holds for a setting (default_ttl lives in the magics only)."""
    if name == "disk_budget":
        return disk_budget_of(store)
    if name == "default_ttl":
        return None
    return getattr(store, name)


# (setting, a good value set first, bad values given as %config would be typed)
BAD_VALUES = [
    ("max_entries", 7, ["0", "-3", "True"]),
    ("memory_budget", 1_000_000, ["0", "-1", "False"]),
    ("disk_budget", 50_000_000, ["-5", "0"]),
    ("default_ttl", "1h", ["'soon'", "0.0", "-5.0", "'-1h'"]),
]


@pytest.mark.parametrize(("name", "good", "bad"), [(n, g, b) for n, g, bads in BAD_VALUES for b in bads])
def test_a_bad_value_is_refused_by_name_and_the_previous_one_stays(
    shell: InteractiveShell,
    store: CacheStore,
    caplog: pytest.LogCaptureFixture,
    *,
    name: str,
    good: Any,
    bad: str,
) -> None:
    magics = magics_of(shell)
    run(shell, f"%config CacheMagics.{name} = {good!r}")
    assert getattr(magics, name) == good
    before = store_value(store, name)
    caplog.clear()
    run(shell, f"%config CacheMagics.{name} = {bad}")
    bad_value = eval(bad)
    said = caplog.text
    assert f"CacheMagics.{name} = {bad_value!r} refused" in said
    assert "give a positive" in said  # what is accepted
    assert f"CacheMagics.{name} stays {good!r}" in said
    assert getattr(magics, name) == good
    assert store_value(store, name) == before
    if name != "default_ttl":
        assert before == good


def test_a_refusal_is_not_repeated_and_does_not_block_another_setting(
    shell: InteractiveShell, store: CacheStore, caplog: pytest.LogCaptureFixture
) -> None:
    magics = magics_of(shell)
    run(shell, "%config CacheMagics.max_entries = 0")
    assert "CacheMagics.max_entries = 0 refused" in caplog.text
    caplog.clear()
    run(shell, "%config CacheMagics.memory_budget = 10**9")
    assert caplog.text == ""  # the refused max_entries is not set, so not complained about again
    assert magics.memory_budget == store.memory_budget == 10**9
    assert magics.max_entries is None and store.max_entries is None

    run(shell, "%config CacheMagics.max_entries = 5")
    run(shell, "%config CacheMagics.memory_budget = -1")
    assert "CacheMagics.memory_budget = -1 refused" in caplog.text
    caplog.clear()
    run(shell, "%config CacheMagics.max_entries = None")
    assert caplog.text == ""
    assert magics.max_entries is None and store.max_entries is None
    assert magics.memory_budget == store.memory_budget == 10**9
    run(shell, "%config CacheMagics.disk_budget = 0")
    run(shell, "%config CacheMagics.max_entries = 3")
    assert store.max_entries == 3


def test_a_bad_default_ttl_is_refused_when_set_and_cells_keep_working(
    shell: InteractiveShell, store: CacheStore, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    run(shell, "%config CacheMagics.default_ttl = 'soon'")
    assert "CacheMagics.default_ttl = 'soon' refused" in caplog.text
    assert "CacheMagics.default_ttl stays None" in caplog.text
    assert magics_of(shell).default_ttl is None
    cell = "%%cache_data\nx = 41 + 1"
    run(shell, cell)  # no UsageError blaming a --ttl never given
    run(shell, cell)
    assert shell.user_ns["x"] == 42 and store.stats().hits == 1
    (entry,) = store.entries()
    assert entry.expires is None

    run(shell, "%config CacheMagics.default_ttl = '10m'")  # a good one still applies
    run(shell, "%%cache_data\ny = 1")
    (timed,) = [e for e in store.entries() if e.expires is not None]
    assert timed.expires == pytest.approx(clock() + 600)


def test_a_setting_assigned_in_code_is_refused_before_it_is_set(
    shell: InteractiveShell, store: CacheStore
) -> None:
    magics = magics_of(shell)
    with pytest.raises(TraitError, match=r"CacheMagics\.max_entries = 0 refused.*stays None"):
        magics.max_entries = 0
    assert magics.max_entries is None and store.max_entries is None
    with pytest.raises(
        TraitError, match=rf"CacheMagics\.disk_budget = -5 refused.*stays {DEFAULT_DISK_BUDGET}"
    ):
        magics.disk_budget = -5
    assert magics.disk_budget == disk_budget_of(store) == DEFAULT_DISK_BUDGET


def test_memory_budget_none_means_a_quarter_of_ram(shell: InteractiveShell, store: CacheStore) -> None:
    assert store.memory_budget == 64 * 1024 * 1024  # the test store's own budget is kept at load
    run(shell, "%config CacheMagics.memory_budget = 12345")
    run(shell, "%config CacheMagics.memory_budget = None")
    assert store.memory_budget == default_memory_budget()  # as its help says


def test_a_refused_value_is_not_loaded_again_by_a_reload(
    shell: InteractiveShell, store: CacheStore, caplog: pytest.LogCaptureFixture
) -> None:
    # %config hands the line to the shell too, which keeps it even when CacheMagics refused it.
    run(shell, "%config CacheMagics.max_entries = 4")
    run(shell, "%config CacheMagics.max_entries = 0")
    run(shell, "%config CacheMagics.default_ttl = 'soon'")
    shell.run_cell("%config CacheMagics.team_store = 'file:///tmp/not-the-team'")  # refused as well
    ipycache_ext.unload_ipython_extension(shell)
    ipycache_ext.load_ipython_extension(shell, store=store)  # would raise on max_entries = 0
    magics = magics_of(shell)
    assert magics.max_entries == store.max_entries == 4  # the accepted value survives the reload
    assert magics.default_ttl is None
    assert magics.team_store is None  # a refused team store must not sneak in through a reload
    assert _persist._settings[store][2] is None


def test_a_bad_value_in_the_configuration_stops_the_load_by_name(store: CacheStore) -> None:
    ip = InteractiveShell.instance()
    config = Config()
    config.CacheMagics.default_ttl = "soon"
    ip.config.update(config)
    try:
        with pytest.raises(
            TraitError, match=r"CacheMagics\.default_ttl = 'soon' refused.*ipython_config\.py"
        ):
            ipycache_ext.load_ipython_extension(ip, store=store)
    finally:
        ipycache_ext.unload_ipython_extension(ip)
        ip.config.pop("CacheMagics", None)


# ------------------------------------------------------------------ the store's own setters
@pytest.mark.parametrize("value", ["1GB", None, 1.5, 8e9, True])
def test_store_memory_budget_refuses_what_is_not_a_whole_number(store: CacheStore, value: Any) -> None:
    with pytest.raises(TypeError, match=r"memory_budget must be a positive whole number of bytes") as caught:
        store.memory_budget = value
    assert repr(value) in str(caught.value) and "stays 67108864" in str(caught.value)
    assert store.memory_budget == 64 * 1024 * 1024


@pytest.mark.parametrize("value", ["3", 0.5, 2.0, True])
def test_store_max_entries_refuses_what_is_not_a_whole_number_or_none(store: CacheStore, value: Any) -> None:
    store.max_entries = 9
    with pytest.raises(TypeError, match=r"max_entries must be a positive whole number .*or None") as caught:
        store.max_entries = value
    assert repr(value) in str(caught.value) and "stays 9" in str(caught.value)
    assert store.max_entries == 9


def test_store_setters_refuse_non_positive_values_and_take_numpy_integers(store: CacheStore) -> None:
    for name, value in [("memory_budget", 0), ("memory_budget", -1), ("max_entries", 0), ("max_entries", -2)]:
        with pytest.raises(
            ValueError, match=rf"{name} must be a positive whole number.*not {value}"
        ) as caught:
            setattr(store, name, value)
        message = str(caught.value)
        assert "CacheMagics" not in message and "%" not in message  # the store names no front end
    store.memory_budget = np.int64(1000)  # type: ignore[assignment]
    store.max_entries = np.int32(3)  # type: ignore[assignment]
    assert type(store.memory_budget) is int and store.memory_budget == 1000
    assert type(store.max_entries) is int and store.max_entries == 3


def test_store_type_errors_name_the_attribute_and_no_front_end(store: CacheStore) -> None:
    for name, value in [("memory_budget", "1GB"), ("memory_budget", None), ("max_entries", 0.5)]:
        with pytest.raises(TypeError) as caught:
            setattr(store, name, value)
        assert name in str(caught.value)
        assert "CacheMagics" not in str(caught.value) and "%" not in str(caught.value)
