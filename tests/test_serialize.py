"""Serialization: fresh, writable, independent copies; clear errors when pickling fails."""

from __future__ import annotations

import threading

import numpy as np
import pandas as pd
import pytest

from ipycache_ext import UnserializableResultError
from ipycache_ext._serialize import serialize


def test_loads_are_equal_independent_and_writable() -> None:
    frame = pd.DataFrame({"a": np.arange(10_000), "b": np.linspace(0, 1, 10_000)})
    stored = serialize({"df": frame, "arr": np.ones(1000)})
    first, second = stored.load(), stored.load()
    pd.testing.assert_frame_equal(first["df"], frame)
    first["arr"][0] = 42.0
    first["df"].loc[0, "a"] = -1
    assert second["arr"][0] == 1.0 and second["df"].loc[0, "a"] == 0
    assert stored.load()["arr"][0] == 1.0
    assert first["arr"].flags.writeable


def test_the_store_copy_is_independent_of_the_original() -> None:
    original = np.zeros(1000)
    stored = serialize(original)
    original[:] = 7
    assert stored.load().sum() == 0


def test_nbytes_counts_meta_and_buffers() -> None:
    stored = serialize(np.zeros(1_000_000, dtype=np.uint8))
    assert 1_000_000 <= stored.nbytes < 1_001_000


def test_notebook_functions_travel_by_value() -> None:
    namespace: dict[str, object] = {"__name__": "__main__"}
    exec("def triple(x):\n    return 3 * x", namespace)
    stored = serialize(namespace["triple"])
    assert stored.load()(2) == 6


def test_unpicklable_values_say_to_use_cache_resource() -> None:
    with pytest.raises(UnserializableResultError) as info:
        serialize({"lock": threading.Lock()}, "the result")
    assert "cache_resource" in str(info.value) and "the result" in str(info.value)
