"""Fault injection and hostile input: the store stays consistent, the user gets one clear error.

Store level: release hooks and validate functions that raise (even ``KeyboardInterrupt``),
computations that fail, serializers that fail half-way. Magic level, through the real
shell: values that can't be pickled, a ``KeyboardInterrupt`` in the middle of a cell,
hostile magic lines, unhashable, self-referencing and enormous inputs. In every case the
store holds no entry and no computation in flight, the namespace holds what a normal run
would have left, and the printed output is either a one-line ``UsageError`` or the user's
own traceback, never a traceback through ``ipycache_ext/``.
"""

from __future__ import annotations

import errno
import gc
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from IPython.core.error import UsageError
from IPython.core.interactiveshell import ExecutionResult, InteractiveShell

import ipycache_ext._serialize as serialize_module
from ipycache_ext import CacheStore, UnserializableResultError
from ipycache_ext._serialize import serialize

from .conftest import FakeClock, lock_is_free


# --------------------------------------------------------------------------- helpers
class Handle:
    """A resource that knows whether it was closed, and how often."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.closed = 0

    def __repr__(self) -> str:
        return f"Handle({self.name!r})"


class Unpicklable:
    """Pickling it raises, after whatever came before it in the stream was written."""

    def __reduce__(self) -> Any:
        raise RuntimeError("this object refuses to be pickled")


def _consistent(store: CacheStore) -> None:
    """Nothing in flight, the lock free (another thread gets it at once), the bytes add up."""
    assert not store._flights, f"left in flight: {sorted(store._flights)}"
    assert lock_is_free(store), "the store's lock is still held"
    stats = store.stats()
    assert stats.data_bytes == sum(e.size or 0 for e in store.entries() if e.kind == "data")


def _resource(
    store: CacheStore, key: str, handle: Handle, release: Callable[[Any], Any], **options: Any
) -> Any:
    return store.get_or_create(
        key, lambda: (handle, None), kind="resource", label=key, on_release=release, **options
    )


def _closer(fail_on: set[str], error: type[BaseException] = OSError) -> Callable[[Any], None]:
    def close(handle: Any) -> None:
        handle.closed += 1
        if handle.name in fail_on:
            raise error(f"cannot close {handle.name}")

    return close


# --------------------------------------------------------------------------- release hooks
LEAVE_WAYS = ["clear", "delete_where", "expiry", "eviction", "max_entries", "close"]


@pytest.mark.parametrize("how", LEAVE_WAYS)
def test_a_raising_release_hook_skips_no_other_release(how: str, store: CacheStore, clock: FakeClock) -> None:
    close = _closer({"b"})
    handles = [Handle(name) for name in "abc"]
    for handle in handles:
        _resource(store, handle.name, handle, close, ttl=10, group="g")
    with pytest.warns(RuntimeWarning, match=r"on_release for 'b' raised OSError: cannot close b"):
        if how == "clear":
            assert store.clear() == 3
        elif how == "delete_where":
            assert store.delete_where(lambda e: e.group == "g") == 3
        elif how == "expiry":
            clock.advance(10)
            assert store.purge_expired() == 3
        elif how == "eviction":
            _resource(store, "d", Handle("d"), close, group="g", max_entries=1)
        elif how == "max_entries":
            store.max_entries = 1
            _resource(store, "d", Handle("d"), close)
        else:
            store.close()
    assert [h.closed for h in handles] == [1, 1, 1]
    _consistent(store)
    fresh = Handle("e")  # and the store still works
    assert _resource(store, "e", fresh, close).value is fresh
    store.close()
    assert [h.closed for h in handles] == [1, 1, 1] and fresh.closed == 1


def test_replacing_and_invalidating_release_the_old_resource_once(store: CacheStore) -> None:
    close = _closer({"old"})
    old, newer, newest = Handle("old"), Handle("newer"), Handle("newest")
    _resource(store, "k", old, close)
    with pytest.warns(RuntimeWarning, match="on_release for 'k' raised OSError"):
        assert _resource(store, "k", newer, close, refresh=True).value is newer
    assert old.closed == 1 and store.removal_reason("k") is None
    lookup = _resource(store, "k", newest, close, validate=lambda h: False)
    assert lookup.value is newest and not lookup.hit
    assert (old.closed, newer.closed, newest.closed) == (1, 1, 0)
    store.close()
    assert (old.closed, newer.closed, newest.closed) == (1, 1, 1)


def test_a_release_hook_interrupted_by_ctrl_c_still_releases_the_others(store: CacheStore) -> None:
    close = _closer({"b"}, KeyboardInterrupt)
    handles = [Handle(name) for name in "abc"]
    for handle in handles:
        _resource(store, handle.name, handle, close)
    events: list[str] = []
    store.subscribe(lambda event: events.append(f"{event.action} {event.key}"))
    with pytest.raises(KeyboardInterrupt):
        store.clear()
    assert [h.closed for h in handles] == [1, 1, 1], "Ctrl-C in one hook leaked the other resources"
    assert events == ["removed a", "removed b", "removed c"]
    assert store.entries() == []
    _consistent(store)


def test_release_warnings_turned_into_errors_skip_no_release(store: CacheStore) -> None:
    """``python -W error``: the hook's warning raises, but only after every release ran."""
    close = _closer({"a", "b"})
    handles = [Handle(name) for name in "abc"]
    for handle in handles:
        _resource(store, handle.name, handle, close)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(RuntimeWarning, match="on_release for 'a' raised"):
            store.clear()
    assert [h.closed for h in handles] == [1, 1, 1]
    assert store.entries() == []
    _consistent(store)


# --------------------------------------------------------------------------- validate hooks
def test_a_raising_validate_releases_and_recomputes(store: CacheStore) -> None:
    close = _closer(set())
    first, second = Handle("first"), Handle("second")
    _resource(store, "k", first, close)

    def validate(handle: Handle) -> bool:
        raise ConnectionError("server went away")

    with pytest.warns(RuntimeWarning, match=r"validate for 'k' raised ConnectionError: server went away"):
        lookup = _resource(store, "k", second, close, validate=validate)
    assert lookup.value is second and not lookup.hit
    assert first.closed == 1 and second.closed == 0
    assert _resource(store, "k", Handle("unused"), close, validate=lambda h: True).value is second
    _consistent(store)


def test_ctrl_c_in_validate_leaves_the_entry_and_the_store_usable(store: CacheStore) -> None:
    close = _closer(set())
    handle = Handle("k")
    _resource(store, "k", handle, close)

    def validate(value: Any) -> bool:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _resource(store, "k", Handle("unused"), close, validate=validate)
    _consistent(store)
    assert _resource(store, "k", Handle("unused"), close).value is handle and handle.closed == 0


def test_validate_never_sees_an_entry_that_left_the_store(store: CacheStore, clock: FakeClock) -> None:
    """Between finding a hit and validating it, release hooks run; they may clear the store.

    Here the hook of an expired entry clears everything (as a concurrent ``clear`` in another
    thread could at that moment): validate must not be handed the released entry's value.
    """
    close = _closer(set())
    kept = Handle("k")
    _resource(store, "k", kept, close)
    _resource(store, "x", Handle("x"), lambda h: store.clear(), ttl=1)
    clock.advance(5)
    seen: list[Any] = []

    def validate(value: Any) -> bool:
        seen.append(value)
        return True

    fresh = Handle("fresh")
    assert _resource(store, "k", fresh, close, validate=validate).value is fresh
    assert seen == [] and kept.closed == 1
    _consistent(store)


# --------------------------------------------------------------------------- failing computations
@pytest.mark.parametrize("error", [ValueError, KeyboardInterrupt, SystemExit, UnserializableResultError])
def test_a_failing_computation_leaves_nothing_behind(error: type[BaseException], store: CacheStore) -> None:
    def fail() -> tuple[Any, int | None]:
        if error is UnserializableResultError:
            serialize([np.arange(1000), "written", Unpicklable()], "the result")  # fails half-way
        raise error("failed")

    with pytest.raises(error):
        store.get_or_create("k", fail, kind="data", label="k")
    assert "k" not in store and store.removal_reason("k") is None
    assert store.stats().misses == 1 and store.stats().entries == 0
    _consistent(store)
    good = serialize([1, 2])
    assert store.get_or_create("k", lambda: (good, good.nbytes), kind="data", label="k").value is good


def test_a_failing_refresh_keeps_the_old_value(store: CacheStore) -> None:
    old = serialize("old")
    store.get_or_create("k", lambda: (old, old.nbytes), kind="data", label="k")

    def fail() -> tuple[Any, int | None]:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        store.get_or_create("k", fail, kind="data", label="k", refresh=True)
    assert store.get_or_create("k", fail, kind="data", label="k").value is old
    _consistent(store)


def test_a_refresh_too_large_to_keep_drops_the_outdated_value(store: CacheStore) -> None:
    """The refreshed value can't be cached; the old one must not be served after it either."""
    store.memory_budget = 100
    old = serialize("old")
    store.get_or_create("k", lambda: (old, 10), kind="data", label="k")
    new = serialize("new")
    with pytest.warns(RuntimeWarning, match="larger than the whole memory budget"):
        lookup = store.get_or_create("k", lambda: (new, 1_000), kind="data", label="k", refresh=True)
    assert lookup.value is new and lookup.entry is None
    assert "k" not in store and store.removal_reason("k") == "replaced"
    assert store.stats().data_bytes == 0
    _consistent(store)


# --------------------------------------------------------------------------- through the shell
class Notebook:
    """The shell, its store, and what cells print; cells append to ``ran`` to show they ran."""

    def __init__(self, shell: InteractiveShell, store: CacheStore, capsys: pytest.CaptureFixture[str]):
        self.shell = shell
        self.store = store
        self.ns = shell.user_ns
        self.ran: list[int] = []
        self.ns["ran"] = self.ran
        self._capsys = capsys

    def run(self, code: str) -> tuple[ExecutionResult, str]:
        """Run a cell as Jupyter does; return its result and everything it printed."""
        self._capsys.readouterr()
        result = self.shell.run_cell(code, store_history=True)
        out, err = self._capsys.readouterr()
        return result, out + err

    def setup(self, code: str) -> None:
        result, printed = self.run(code)
        assert result.success, printed


@pytest.fixture
def nb(shell: InteractiveShell, store: CacheStore, capsys: pytest.CaptureFixture[str]) -> Notebook:
    return Notebook(shell, store, capsys)


def _no_library_frames(printed: str) -> None:
    assert "ipycache_ext/" not in printed and "ipycache_ext\\" not in printed, printed
    assert "_magics.py" not in printed and "_store.py" not in printed, printed


def _one_line_usage_error(result: ExecutionResult, printed: str, *fragments: str) -> None:
    error = result.error_in_exec or result.error_before_exec
    assert isinstance(error, UsageError), f"{type(error).__name__}: {error}\n{printed}"
    message = str(error)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message
    assert "Traceback" not in printed
    assert printed.strip() == f"UsageError: {message}", printed
    _no_library_frames(printed)


def test_an_unpicklable_result_is_one_line_and_leaves_a_normal_run(nb: Notebook) -> None:
    nb.ns["Unpicklable"] = Unpicklable
    cell = (
        "%%cache_data --ignore ran --ignore Unpicklable\n"
        "ran.append(1)\nbig = list(range(1000))\nbad = [big, Unpicklable()]"
    )
    result, printed = nb.run(cell)
    _one_line_usage_error(result, printed, "`bad`", "refuses to be pickled", "nothing was cached")
    assert nb.ns["big"] == list(range(1000)) and nb.ns["bad"][0] is nb.ns["big"]
    assert nb.store.entries() == [] and nb.ran == [1]
    _consistent(nb.store)
    result, printed = nb.run(cell)  # nothing half-stored: it runs again, fails again
    assert isinstance(result.error_in_exec, UsageError) and nb.ran == [1, 1]


def _fail_second_write(monkeypatch: pytest.MonkeyPatch) -> None:
    """The memory file takes the first large buffer, then the disk/memory is full."""
    real_write = serialize_module._MemFile.write
    writes: list[int] = []

    def write(self: Any, offset: int, data: memoryview) -> None:
        writes.append(offset)
        if len(writes) == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        real_write(self, offset, data)

    monkeypatch.setattr(serialize_module._MemFile, "write", write)


HALF_WAY_CELL = (
    "%%cache_data --ignore ran\nimport numpy as np\nran.append(1)\na1 = np.ones(100_000)\na2 = a1 * 2"
)
needs_memfd = pytest.mark.skipif(
    not serialize_module._memfd_available(), reason="large buffers go to a memfd on Linux only"
)


@needs_memfd
def test_a_memory_file_failing_half_way_falls_back_to_copies(
    nb: Notebook, monkeypatch: pytest.MonkeyPatch
) -> None:
    gc.collect()  # an earlier test's memory file collected mid-test would move the count
    before = serialize_module._MemFile.live
    _fail_second_write(monkeypatch)
    result, printed = nb.run(HALF_WAY_CELL)
    assert result.success, printed
    _no_library_frames(printed)
    assert serialize_module._MemFile.live == before  # the half-filled memory file was closed
    (entry,) = nb.store.entries()
    assert nb.store.stats().data_bytes == entry.size
    _consistent(nb.store)
    nb.ns["a2"][0] = -1
    assert nb.run(HALF_WAY_CELL)[0].success and nb.ran == [1]  # a hit, from the copies
    assert nb.ns["a2"][0] == 2


@needs_memfd
def test_running_out_of_file_descriptors_falls_back_to_copies(
    nb: Notebook, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_more_fds(*args: Any) -> int:
        raise OSError(errno.EMFILE, "Too many open files")

    monkeypatch.setattr(serialize_module.os, "memfd_create", no_more_fds)
    result, printed = nb.run(HALF_WAY_CELL)
    assert result.success, printed
    _no_library_frames(printed)
    assert nb.run(HALF_WAY_CELL)[0].success and nb.ran == [1]


def test_memory_files_use_at_most_a_quarter_of_the_descriptor_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    import numpy as np

    monkeypatch.setattr(serialize_module.resource, "getrlimit", lambda which: (64, 64))
    kept = [serialize_module.serialize(np.ones(100_000)) for _ in range(40)]
    assert sum(v.mapped for v in kept) <= 16
    assert all(float(v.load().sum()) == 100_000 for v in kept)


@pytest.mark.parametrize("kind", ["data", "resource"])
@pytest.mark.parametrize("error", ["KeyboardInterrupt", "ZeroDivisionError"])
def test_an_error_in_the_middle_of_a_cell_is_the_users_own(kind: str, error: str, nb: Notebook) -> None:
    nb.ns["before"] = "untouched"
    cell = (
        f"%%cache_{kind} --ignore ran\n"
        f"ran.append(1)\na = 1\nraise {error}('stop here')\nb = 2\nbefore = 'changed'"
    )
    result, printed = nb.run(cell)
    assert type(result.error_in_exec).__name__ == error
    assert "stop here" in printed and "----> 4 raise" in printed, printed  # the user's line
    _no_library_frames(printed)
    assert nb.ns["a"] == 1 and "b" not in nb.ns and nb.ns["before"] == "untouched"
    assert nb.store.entries() == []
    _consistent(nb.store)
    result, _ = nb.run(cell.replace(f"raise {error}('stop here')", "pass"))
    assert result.success and nb.ns["b"] == 2 and len(nb.store.entries()) == 1
    assert nb.run("1 + 1")[0].result == 2  # the kernel is fine


CONN = """
class Conn:
    alive = True

    def ping(self):
        if not self.alive:
            raise ConnectionError("gone")
        return True
"""


def test_a_raising_validate_in_a_cell_recomputes_with_a_clear_warning(nb: Notebook) -> None:
    nb.setup(CONN)
    cell = "%%cache_resource --ignore ran --validate conn.ping()\nran.append(1)\nconn = Conn()"
    assert nb.run(cell)[0].success
    first = nb.ns["conn"]
    first.alive = False
    with pytest.warns(RuntimeWarning, match=r"validate for .* raised ConnectionError: gone"):
        result, printed = nb.run(cell)
    assert result.success and nb.ran == [1, 1]
    assert nb.ns["conn"] is not first and nb.ns["conn"].alive
    _no_library_frames(printed)
    _consistent(nb.store)


# --------------------------------------------------------------------------- hostile magic lines
HOSTILE_LINES = [
    ("%%cache_data --bogus", "unrecognized arguments: --bogus"),
    ("%%cache_data --help", "unrecognized arguments: --help"),
    ("%%cache_data --ttl", "expected one argument"),
    ("%%cache_data --ttl -5", "positive, finite"),
    ("%%cache_data --ttl=-5", "positive, finite"),
    ("%%cache_data --ttl 0", "positive, finite"),
    ("%%cache_data --ttl nan", "positive, finite"),
    ("%%cache_data --ttl inf", "positive, finite"),
    ("%%cache_data --ttl 1e999", "positive, finite"),
    ("%%cache_data --ttl 10parsecs", "invalid TTL"),
    ("%%cache_data --max-entries 0", "--max-entries must be a positive integer"),
    ("%%cache_data --max-entries -1", "--max-entries must be a positive integer"),
    ("%%cache_data --max-entries 1e3", "invalid int value"),
    ("%%cache_data --max-entries ten", "invalid int value"),
    ("%%cache_data --max-entries " + "9" * 5000, "invalid int value"),
    ("%%cache_data --refresh=yes", "--refresh"),
    ('%%cache_data ""', "is not a variable name"),
    ("%%cache_data class", "'class' is not a variable name"),
    ("%%cache_data None", "'None' is not a variable name"),
    ("%%cache_data 1x", "'1x' is not a variable name"),
    ("%%cache_data a-b", "'a-b' is not a variable name"),
    ("%%cache_data x \x00", "is not a variable name"),
    ("%%cache_data --ignore for", "--ignore 'for' is not a variable name"),
    ("%%cache_data --validate x", "unrecognized arguments: --validate"),
    ("%%cache_resource --validate 1+", "is not a Python expression"),
    ("%%cache_resource --validate", "expected one argument"),
]


@pytest.mark.parametrize(("line", "expected"), HOSTILE_LINES, ids=[line[:40] for line, _ in HOSTILE_LINES])
def test_a_hostile_magic_line_is_a_one_line_usage_error(line: str, expected: str, nb: Notebook) -> None:
    result, printed = nb.run(f"{line}\nran.append(1)\nx = 1")
    _one_line_usage_error(result, printed, expected)
    assert nb.ran == [] and "x" not in nb.ns, "the cell ran despite a bad magic line"
    assert nb.store.entries() == []
    _consistent(nb.store)


@pytest.mark.parametrize(
    "line",
    ['%%cache_data "x', "%%cache_resource --validate 'x", '%cache_clear "abc'],
    ids=["unclosed quote", "unclosed quote in --validate", "unclosed quote in %cache_clear"],
)
def test_an_unclosed_quote_is_a_one_line_usage_error(line: str, nb: Notebook) -> None:
    result, printed = nb.run(f"{line}\nran.append(1)\nx = 1")
    _one_line_usage_error(result, printed, "quot")
    assert nb.ran == []


def test_a_quoted_validate_expression_is_evaluated(nb: Notebook) -> None:
    cell = "%%cache_resource --ignore ran --validate 'handle[\"ok\"]'\nran.append(1)\nhandle = {'ok': True}"
    assert nb.run(cell)[0].success
    nb.ns["handle"]["ok"] = False  # the resource went bad
    assert nb.run(cell)[0].success
    assert nb.ran == [1, 1], "validate said nothing: the broken resource was served"
    assert nb.ns["handle"] == {"ok": True}


@pytest.mark.parametrize("ttl", ['"1 hour"', "'10m'"])
def test_a_quoted_ttl_is_accepted(ttl: str, nb: Notebook) -> None:
    result, printed = nb.run(f"%%cache_data --ttl {ttl}\nx = 1")
    assert result.success, printed
    (entry,) = nb.store.entries()
    assert entry.expires is not None


def test_huge_but_valid_numbers_are_accepted(nb: Notebook) -> None:
    cell = f"%%cache_data --ignore ran --ttl 1e300 --max-entries {10**30}\nran.append(1)\nx = 1"
    assert nb.run(cell)[0].success and nb.run(cell)[0].success
    assert nb.ran == [1]
    (entry,) = nb.store.entries()
    assert entry.expires is not None and entry.expires > 1e299


def test_unicode_names_are_names(nb: Notebook) -> None:
    nb.setup("%%cache_data é\né = 'été'")
    assert nb.ns["é"] == "été" and nb.store.entries()[0].names == ("é",)


# --------------------------------------------------------------------------- hostile inputs
@pytest.mark.parametrize(
    "setup",
    [
        "import threading\nvalue = threading.Lock()",
        "value = (i for i in range(3))",
        "import io\nvalue = io.StringIO('text')\nvalue.close()",
    ],
    ids=["lock", "generator", "closed file"],
)
def test_an_unhashable_input_is_keyed_by_identity_not_an_error(setup: str, nb: Notebook) -> None:
    nb.setup(setup)
    cell = "%%cache_data --ignore ran\nran.append(1)\nout = repr(value)"
    result, _ = nb.run(cell)
    assert result.success and nb.ran == [1]
    result, _ = nb.run(cell)  # the same object: served
    assert result.success and nb.ran == [1]
    (entry,) = nb.store.entries()
    assert "`value` keyed by identity" in (entry.miss_reason or "")
    _consistent(nb.store)


SELF_REFERENCES = """
loop = []
loop.append(loop)
knot = {}
knot["self"] = knot
class Node:
    pass
node = Node()
node.me = node
node.items = [node, loop, knot]
"""


def test_self_referencing_inputs_and_results(nb: Notebook) -> None:
    nb.setup(SELF_REFERENCES)
    cell = (
        "%%cache_data --ignore ran\nran.append(1)\n"
        "size = len(loop) + len(knot) + len(node.items)\nout = [loop, knot]\nout.append(out)"
    )
    for _ in range(2):
        result, printed = nb.run(cell)
        assert result.success, printed
    assert nb.ran == [1] and nb.ns["size"] == 5
    out = nb.ns["out"]
    assert out[2] is out and out[0][0] is out[0] and out[1]["self"] is out[1]  # a faithful copy
    nb.ns["loop"].append(1)  # a change deep inside a cycle changes the key
    assert nb.run(cell)[0].success and nb.ran == [1, 1]
    _consistent(nb.store)


def test_a_deeply_nested_input_is_a_clear_error(nb: Notebook) -> None:
    nb.setup("deep = []\nfor _ in range(100_000):\n    deep = [deep]")
    result, printed = nb.run("%%cache_data --ignore ran\nran.append(1)\nm = len(deep)")
    _one_line_usage_error(result, printed, "`deep`")


def test_an_enormous_input_is_hashed_in_full_and_hits(nb: Notebook) -> None:
    nb.ns["big"] = np.zeros(32 * 1024 * 1024, dtype=np.uint8)  # 32 MiB
    cell = "%%cache_data --ignore ran\nran.append(1)\ntotal = int(big.sum())"
    assert nb.run(cell)[0].success and nb.run(cell)[0].success
    assert nb.ran == [1]
    nb.ns["big"][-1] = 1  # one byte at the very end
    assert nb.run(cell)[0].success and nb.ran == [1, 1] and nb.ns["total"] == 1


def test_a_result_larger_than_the_budget_is_not_cached_with_a_clear_warning(nb: Notebook) -> None:
    nb.store.memory_budget = 10_000
    cell = "%%cache_data --ignore ran\nran.append(1)\nbig = bytes(100_000)"
    for runs in (1, 2):
        with pytest.warns(RuntimeWarning, match=r"larger than the whole memory budget.*not cached"):
            result, printed = nb.run(cell)
        assert result.success and nb.ran == [1] * runs and len(nb.ns["big"]) == 100_000
        _no_library_frames(printed)
    assert nb.store.entries() == []
    _consistent(nb.store)
