"""Restart hits map the entry file's buffers copy-on-write instead of reading them, after the
pickle stream's signature and every buffer's signed digest are checked; a flipped byte in
either is refused (never unpickled) in a second process on the same cache directory."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import numpy as np
import pytest

from ipycache_ext import _pagemap
from ipycache_ext._envelope import PREFIX_MAPPED, EntryHeader, seal
from ipycache_ext._persist import SignedCache
from ipycache_ext._serialize import serialize

pytestmark = pytest.mark.skipif(not _pagemap.available(), reason="maps files: Linux only")

MARKER = """
from pathlib import Path

FLAG = Path(__file__).with_name("unpickled")


def rebuild():
    FLAG.write_text("the pickle stream was unpickled")
    return Marker()


class Marker:
    def __reduce__(self):
        return rebuild, ()
"""

KERNEL = r'''
import json, sys, warnings
warnings.simplefilter("always")
caught = []
warnings.showwarning = lambda message, *args, **kwargs: caught.append(str(message))
from IPython.core.interactiveshell import InteractiveShell
import ipycache_ext
from ipycache_ext import _mapped
shell = InteractiveShell.instance()
ipycache_ext.load_ipython_extension(shell)
shell.run_cell("import numpy as np, pandas as pd\nfrom marker import Marker")
shell.user_ns["RUNS"] = sys.argv[1]
result = shell.run_cell("""%%cache_data --persist --quiet
open(RUNS, "a").write("run ")
df = pd.DataFrame({"a": np.arange(2_000_000, dtype=np.float64), "b": np.ones(2_000_000)})
tag = Marker()
""")
df = shell.user_ns["df"]
block = df._mgr.blocks[0].values
found = _mapped.registry.find(block.__array_interface__["data"][0], block.nbytes)
print(json.dumps({
    "ok": bool(result.success),
    "sum": float(df["a"].sum() + df["b"].sum()),
    "from_file": bool(found and getattr(found[0], "is_file", False)),
    "warnings": caught,
}))
'''


def kernel(tmp_path: Path) -> dict[str, object]:
    """One kernel process on the shared cache directory; what its one cached cell saw."""
    env = {**os.environ, "IPYCACHE_EXT_CACHE_DIR": str(tmp_path / "cache"), "PYTHONPATH": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-c", KERNEL, str(tmp_path / "runs.txt")],
        env=env, capture_output=True, text=True, timeout=300, check=False, cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def runs(tmp_path: Path) -> int:
    return (tmp_path / "runs.txt").read_text().count("run")


def entry_file(tmp_path: Path) -> Path:
    (path,) = (tmp_path / "cache").glob("[0-9a-f]*.entry")
    return path


def parts(path: Path) -> tuple[int, int, EntryHeader]:
    """Where the pickle stream and the buffers start, and the signed header."""
    data = path.read_bytes()
    *_, header_length, _, start = PREFIX_MAPPED.unpack_from(data)
    header = EntryHeader.from_json(data[PREFIX_MAPPED.size : PREFIX_MAPPED.size + header_length])
    return PREFIX_MAPPED.size + header_length, start, header


def flip(path: Path, offset: int) -> None:
    with path.open("r+b") as handle:
        handle.seek(offset)
        byte = handle.read(1)
        handle.seek(offset)
        handle.write(bytes([byte[0] ^ 0x01]))


@pytest.fixture
def persisted(tmp_path: Path) -> Path:
    (tmp_path / "marker.py").write_text(textwrap.dedent(MARKER))
    first = kernel(tmp_path)
    assert first["ok"] and runs(tmp_path) == 1
    assert not (tmp_path / "unpickled").exists()
    return tmp_path


def test_a_restart_hit_maps_the_file_and_is_the_same_data(persisted: Path) -> None:
    second = kernel(persisted)
    assert second["ok"] and runs(persisted) == 1  # a hit
    assert second["from_file"]  # the frame's buffer is a private mapping of the entry file
    assert second["sum"] == float(np.arange(2_000_000).sum() + 2_000_000)
    assert (persisted / "unpickled").exists()  # the marker does tell an unpickling
    assert second["warnings"] == []


def test_a_flipped_byte_in_a_buffer_is_refused(persisted: Path) -> None:
    path = entry_file(persisted)
    _, start, header = parts(path)
    biggest = max(range(len(header.offsets)), key=lambda i: header.layout[i + 1])
    flip(path, start + header.offsets[biggest] + header.layout[biggest + 1] // 2)
    second = kernel(persisted)
    assert second["ok"] and runs(persisted) == 2  # refused, so computed again
    assert any("does not match the digest" in w for w in second["warnings"]), second["warnings"]  # type: ignore[attr-defined]
    assert not (persisted / "unpickled").exists()  # the buffers are checked before unpickling
    third = kernel(persisted)  # the recomputed entry replaced the damaged one
    assert third["ok"] and runs(persisted) == 2 and third["from_file"]


def test_a_flipped_byte_in_the_pickle_stream_is_refused_never_unpickled(persisted: Path) -> None:
    path = entry_file(persisted)
    meta_start, _, _ = parts(path)
    flip(path, meta_start + 20)
    second = kernel(persisted)
    assert second["ok"] and runs(persisted) == 2
    assert any("signature does not match" in w for w in second["warnings"]), second["warnings"]  # type: ignore[attr-defined]
    assert not (persisted / "unpickled").exists()


def test_a_truncated_file_is_refused_not_mapped_past_its_end(persisted: Path) -> None:
    path = entry_file(persisted)
    os.truncate(path, path.stat().st_size - 4096)
    second = kernel(persisted)
    assert second["ok"] and runs(persisted) == 2
    assert any("length does not match" in w for w in second["warnings"]), second["warnings"]  # type: ignore[attr-defined]


def _header(key: str) -> EntryHeader:
    return EntryHeader(key=key, kind="data", label="x", names=("x",), created=0.0, expires=None,
                       compute_seconds=1.0)  # fmt: skip


def test_format_2_files_are_still_read(tmp_path: Path) -> None:
    cache = SignedCache.in_directory(tmp_path / "cache")
    value = np.arange(1_000_000)
    meta, buffers = serialize(value).parts()
    sealed, size, pieces = seal(_header("a1"), meta, buffers, cache.signer)  # format 2
    cache.backend.put("a1", pieces, tag=sealed.generation, size=size)
    assert struct.unpack_from("<H", (tmp_path / "cache" / "a1.entry").read_bytes(), 8) == (2,)
    found = cache.load("a1")
    assert found is not None
    assert np.array_equal(found[0].load(), value)
    assert not found[0].memory_file or not found[0].memory_file.is_file  # read, not mapped


def test_hits_outlive_the_file_and_stay_private(tmp_path: Path) -> None:
    cache = SignedCache.in_directory(tmp_path / "cache")
    value = np.arange(1_000_000, dtype=np.float64)
    assert cache.save(serialize(value), _header("b2"))
    found = cache.load("b2")
    assert found is not None
    stored = found[0]
    assert stored.memory_file is not None and stored.memory_file.is_file
    first = stored.load()
    cache.delete("b2")  # evicted from disk while the entry is in memory
    first[0] = -1.0  # a hit's write is its own
    second = stored.load()
    assert second[0] == 0.0 and np.array_equal(second, value)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert cache.load("b2") is None


def test_a_restored_hit_is_keyed_without_hashing_until_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ipycache_ext import _hash_buffers
    from ipycache_ext._hashing import digest

    cache = SignedCache.in_directory(tmp_path / "cache")
    value = np.arange(3_000_000, dtype=np.float64)  # 24 MB: hashed in pieces
    assert cache.save(serialize(value), _header("c3"))
    found = cache.load("c3")
    assert found is not None
    hit = found[0].load()
    hashed: list[int] = []
    original = _hash_buffers.piece_digests
    monkeypatch.setattr(_hash_buffers, "piece_digests", lambda data: hashed.append(1) or original(data))
    assert digest(hit) == digest(value)
    assert len(hashed) == 1  # the original was hashed; the file-mapped hit was known from its check
    with _pagemap.forced_fallback():
        assert digest(hit) == digest(value)
    hit[1_500_000] = -1.0
    assert digest(hit) != digest(value)
