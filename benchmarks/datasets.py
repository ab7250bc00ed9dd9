"""Deterministic benchmark data of a given size, built the same way for every contender."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

KINDS = ("numeric", "arrow_str", "object_str", "datetime", "dicts")


def build(kind: str, nbytes: int) -> Any:
    """About ``nbytes`` of data of one kind (a DataFrame, or a list of dicts)."""
    rng = np.random.default_rng(42)
    if kind == "numeric":
        rows = nbytes // 32
        return pd.DataFrame({name: rng.random(rows) for name in "abcd"})
    if kind == "datetime":
        rows = nbytes // 16
        start = np.datetime64("2020-01-01T00:00:00", "ns")
        offsets = rng.integers(0, 10**15, rows).astype("timedelta64[ns]")
        return pd.DataFrame({"t": start + offsets, "u": start + offsets[::-1]})
    if kind in ("arrow_str", "object_str"):
        rows = nbytes // 20  # ~12 characters plus offsets per row
        words = np.char.add("item-", rng.integers(0, 10**7, rows).astype(str)).astype(object)
        dtype = "string[pyarrow]" if kind == "arrow_str" else object
        return pd.DataFrame({"s": pd.Series(words, dtype=dtype)})
    if kind == "dicts":
        rows = nbytes // 200
        ids = rng.integers(0, 10**9, rows).tolist()
        return [{"id": i, "name": f"user{i}", "score": i / 7, "tags": ["a", "b"]} for i in ids]
    raise ValueError(f"unknown kind {kind!r}; choose from {KINDS}")
