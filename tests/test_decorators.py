"""``@cache_data`` and ``@cache_resource``: the contract of issue 3, on a store with a fake clock.

A cached function's key includes the values it reads (closure variables too), so the
functions under test never read a mutable counter: they count through store statistics,
through a ``_``-prefixed parameter (left out of the key), or through ``Tracker``, whose
pickle (what the hash sees) never changes.
"""

from __future__ import annotations

import contextlib
import inspect
import io
import json
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from IPython.core.interactiveshell import InteractiveShell

import ipycache_ext
from ipycache_ext import (
    CacheStore,
    UnhashableInputError,
    UnserializableResultError,
    _engine,
    _spinner,
)
from ipycache_ext._decorators import cache_data, cache_resource

from .conftest import FakeClock

ROOT = Path(__file__).resolve().parent.parent


class Tracker:
    """Counts computations and records released values; hashes the same whatever its state."""

    def __init__(self) -> None:
        self.calls = 0
        self.released: list[Any] = []
        self.fail = False
        self._lock = threading.Lock()

    def called(self) -> int:
        with self._lock:
            self.calls += 1
            return self.calls

    def release(self, value: Any) -> None:
        self.released.append(value)

    def __reduce__(self) -> tuple[Any, ...]:
        return (Tracker, ())


class Resource:
    """Something that should not be copied: identity matters, and it can be closed."""

    def __init__(self, name: object) -> None:
        self.name = name
        self.ok = True

    def __repr__(self) -> str:
        return f"Resource({self.name!r})"


@pytest.fixture
def cached(store: CacheStore, monkeypatch: pytest.MonkeyPatch) -> CacheStore:
    """Decorators use the test's fake-clock store instead of the kernel-wide one."""
    monkeypatch.setattr(cache_data, "store", store)
    monkeypatch.setattr(cache_resource, "store", store)
    return store


def define(source: str, **names: Any) -> dict[str, Any]:
    """Run ``source`` as a notebook would: in a namespace that is its functions' globals."""
    namespace: dict[str, Any] = {
        "__name__": "notebook",
        "cache_data": cache_data,
        "cache_resource": cache_resource,
    }
    namespace.update(names)
    exec(textwrap.dedent(source), namespace)
    return namespace


def run_threads(target: Callable[[], Any], count: int = 16) -> list[Any]:
    """Call ``target`` from ``count`` threads released together; return results or exceptions."""
    barrier = threading.Barrier(count)
    outcomes: list[Any] = [None] * count

    def worker(index: int) -> None:
        barrier.wait(10)
        try:
            outcomes[index] = target()
        except Exception as exc:
            outcomes[index] = exc

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert not [t for t in threads if t.is_alive()], "a caller was left waiting"
    return outcomes


# --------------------------------------------------------------------------- interface
def _parameters(func: Callable[..., Any]) -> list[tuple[str, Any, Any]]:
    return [(p.name, p.kind, p.default) for p in inspect.signature(func).parameters.values()]


STREAMLIT_DATA = [
    "ttl",
    "max_entries",
    "max_size",
    "show_spinner",
    "show_time",
    "persist",
    "hash_funcs",
    "scope",
    "refresh_mode",
]
STREAMLIT_RESOURCE = [
    "ttl",
    "max_entries",
    "show_spinner",
    "show_time",
    "validate",
    "hash_funcs",
    "on_release",
    "scope",
    "refresh_mode",
]
DEFAULTS = {"show_spinner": True, "show_time": False, "scope": "global", "refresh_mode": "foreground"}


# Ours beyond Streamlit's: files a result depends on that can't be seen being read (issue 11).
EXTRA_DATA = [("depends_on", inspect.Parameter.KEYWORD_ONLY, None)]


def test_signatures_are_streamlit_1_67s() -> None:
    kw = inspect.Parameter.KEYWORD_ONLY
    first = ("func", inspect.Parameter.POSITIONAL_OR_KEYWORD, None)
    for decorator, names, extra in (
        (cache_data, STREAMLIT_DATA, EXTRA_DATA),
        (cache_resource, STREAMLIT_RESOURCE, []),
    ):
        assert _parameters(decorator) == [first, *((n, kw, DEFAULTS.get(n)) for n in names), *extra]


def test_signatures_match_the_installed_streamlit() -> None:
    st = pytest.importorskip("streamlit")
    if tuple(int(p) for p in st.__version__.split(".")[:2]) != (1, 67):
        pytest.skip(f"compares with Streamlit 1.67, not {st.__version__}")
    for ours, theirs, extra in (
        (cache_data, st.cache_data, EXTRA_DATA),
        (cache_resource, st.cache_resource, []),
    ):
        assert _parameters(ours) == _parameters(theirs) + extra


def test_the_package_exports_the_decorators() -> None:
    assert ipycache_ext.cache_data is cache_data
    assert ipycache_ext.cache_resource is cache_resource


@pytest.mark.parametrize("decorator", [cache_data, cache_resource])
def test_bare_and_called_forms_both_cache(cached: CacheStore, decorator: Any) -> None:
    def square(x: int) -> int:
        """Square a number."""
        return x * x

    for wrapped in (decorator(square), decorator()(square), decorator(ttl=60, max_entries=5)(square)):
        assert wrapped(3) == 9
        assert wrapped(3) == 9
        assert wrapped.__name__ == "square"
        assert wrapped.__doc__ == "Square a number."
        assert wrapped.__wrapped__ is square
        assert inspect.signature(wrapped) == inspect.signature(square)
    assert cached.stats().misses == 1  # the three wrappers of one function share its entry
    assert cached.stats().hits == 5


def test_entries_are_labelled_with_the_function_and_its_arguments(cached: CacheStore) -> None:
    @cache_data
    def fetch(city: str, days: int = 3, _session: object = None) -> str:
        return city * days

    fetch("Paris", _session=object())
    (entry,) = cached.entries()
    assert entry.label == "fetch(city='Paris', days=3)"
    assert entry.kind == "data"
    assert set(entry.inputs) == {"city", "days"}


def test_one_function_can_use_its_own_store(cached: CacheStore) -> None:
    own = CacheStore()

    @cache_data
    def alone(x: int) -> int:
        return x

    alone.store = own
    alone(1)
    assert [e.label for e in own.entries()] == ["alone(x=1)"]
    assert cached.entries() == []


def test_entries_go_to_the_kernel_wide_store_by_default() -> None:
    @cache_resource
    def kernel_wide_resource() -> Resource:
        return Resource("kw")

    try:
        value = kernel_wide_resource()
        labels = [e.label for e in ipycache_ext.get_store().entries()]
        assert any("kernel_wide_resource()" in label for label in labels)
        assert kernel_wide_resource() is value
    finally:
        kernel_wide_resource.clear()
    assert not [e for e in ipycache_ext.get_store().entries() if "kernel_wide_resource" in e.label]


# --------------------------------------------------------------------------- the key
def test_arguments_are_bound_to_the_signature_with_defaults_applied(cached: CacheStore) -> None:
    @cache_data
    def add(x: int, y: int = 2) -> int:
        return x + y

    assert [add(1), add(x=1), add(1, 2), add(1, y=2), add(y=2, x=1)] == [3] * 5
    assert len(cached.entries()) == 1
    assert cached.stats().misses == 1
    assert add(1, 3) == 4
    assert len(cached.entries()) == 2


def test_keyword_order_does_not_matter_even_for_var_keywords(cached: CacheStore) -> None:
    @cache_data
    def options(*args: int, **kwargs: int) -> list[Any]:
        return [args, sorted(kwargs.items())]

    options(1, a=1, b=2)
    options(1, b=2, a=1)
    assert cached.stats().misses == 1
    options(2, b=2, a=1)
    assert cached.stats().misses == 2


def test_similar_values_of_other_types_are_other_entries(cached: CacheStore) -> None:
    @cache_data
    def echo(x: object) -> str:
        return repr(x)

    assert [echo(1), echo(True), echo(1.0), echo("1"), echo(0.0), echo(-0.0)] == [
        "1",
        "True",
        "1.0",
        "'1'",
        "0.0",
        "-0.0",
    ]
    assert [echo(1), echo(True), echo(1.0), echo(-0.0)] == ["1", "True", "1.0", "-0.0"]
    assert cached.stats().misses == 6


def test_parameters_with_a_leading_underscore_are_not_hashed(cached: CacheStore) -> None:
    @cache_resource
    def query(sql: str, _conn: object) -> str:
        return sql.upper()

    first = query("select 1", threading.Lock())  # a lock can't be hashed: it is not tried
    assert query("select 1", _conn=threading.Lock()) is first
    assert cached.stats().misses == 1


def test_an_argument_holding_an_unhashable_part_suggests_hash_funcs_for_it(cached: CacheStore) -> None:
    @cache_data
    def g(items: list[object]) -> int:
        return len(items)

    with pytest.raises(UnhashableInputError) as caught:
        g([1, threading.Lock()])
    message = str(caught.value)
    assert "hash_funcs={_thread.lock:" in message and "hash_funcs={list" not in message


def test_an_unhashable_argument_names_the_parameter_its_type_and_the_ways_out(cached: CacheStore) -> None:
    @cache_data
    def query(sql: str, conn: object) -> str:
        return sql

    with pytest.raises(UnhashableInputError) as caught:
        query("select 1", threading.Lock())
    message = str(caught.value)
    assert caught.value.name == "conn"
    assert "`conn`" in message
    assert "_thread.lock" in message
    assert "`_conn`" in message
    assert "hash_funcs={_thread.lock:" in message
    assert isinstance(caught.value, TypeError)
    assert cached.entries() == []


class Connection:
    def __init__(self, url: str) -> None:
        self.url = url
        self.lock = threading.Lock()  # unpicklable, so unhashable by content


class PooledConnection(Connection):
    pass


@pytest.mark.parametrize("target", [Connection, f"{__name__}.Connection"])
def test_hash_funcs_replace_a_type_by_what_identifies_it_subclasses_too(
    cached: CacheStore, target: Any
) -> None:
    @cache_data(hash_funcs={target: lambda conn: conn.url})
    def rows(conn: Connection, n: int) -> list[int]:
        return list(range(n))

    assert rows(Connection("db://a"), 2) == [0, 1]
    assert rows(Connection("db://a"), 2) == [0, 1]
    assert rows(PooledConnection("db://a"), 2) == [0, 1]  # the subclass is hashed the same way
    assert cached.stats().misses == 1
    rows(Connection("db://b"), 2)
    assert cached.stats().misses == 2


def test_a_change_of_code_globals_or_helpers_is_a_new_entry(cached: CacheStore) -> None:
    source = """
        SCALE = 2

        def helper(x):
            return x * SCALE

        @cache_data
        def scaled(x):
            return helper(x) + 1
    """
    ns = define(source)
    assert ns["scaled"](1) == 3
    assert ns["scaled"](1) == 3
    assert cached.stats().misses == 1
    ns["SCALE"] = 3  # a global the helper reads
    assert ns["scaled"](1) == 4
    ns["SCALE"] = 2  # back to the first value: its entry is still there
    assert ns["scaled"](1) == 3
    assert cached.stats().misses == 2
    exec("def helper(x):\n    return x * SCALE * 10", ns)  # the helper is redefined
    assert ns["scaled"](1) == 21
    assert cached.stats().misses == 3
    exec(textwrap.dedent(source).replace("+ 1", "+ 2"), ns)  # the function itself changes
    assert ns["scaled"](1) == 4
    assert cached.stats().misses == 4
    exec(textwrap.dedent(source).replace("+ 1", "+ 2"), ns)  # the same cell run again: a hit
    assert ns["scaled"](1) == 4
    assert cached.stats().misses == 4


def test_a_global_changed_in_place_is_a_new_entry(cached: CacheStore) -> None:
    ns = define(
        """
        WEIGHTS = [1, 2]

        @cache_data
        def total(x):
            return x * sum(WEIGHTS)
        """
    )
    assert ns["total"](2) == 6
    ns["WEIGHTS"].append(3)
    assert ns["total"](2) == 12
    assert ns["total"](2) == 12
    assert cached.stats().misses == 2


def test_a_hit_hashes_nothing_again_while_what_the_function_reads_is_unchanged(
    cached: CacheStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The hot path: the function's digest and the key of plain arguments are reused."""
    ns = define(
        """
        import math
        OFFSET = 1

        def helper(x):
            return math.floor(x) + OFFSET

        @cache_data
        def compute(x, label="a"):
            return helper(x)
        """
    )
    compute = ns["compute"]
    assert compute(1, label="b") == 2
    hashed: list[object] = []

    def counting_digest(value: object, **kwargs: Any) -> str:
        hashed.append(value)
        return real_digest(value, **kwargs)

    real_digest = _engine.digest
    monkeypatch.setattr(_engine, "digest", counting_digest)
    assert [compute(1, label="b") for _ in range(3)] == [2, 2, 2]
    assert hashed == []
    ns["OFFSET"] = 2  # rebinding what the helper reads is seen at once
    assert compute(1, label="b") == 3
    assert compute.__wrapped__ in hashed


def test_an_unhashable_global_is_keyed_by_its_identity(cached: CacheStore) -> None:
    """Issue 10, section 2: a global that can't be hashed hits while it is the same object."""
    ns = define(
        """
        LOCK = __import__("threading").Lock()

        @cache_data
        def guarded(x):
            with LOCK:
                return x
        """
    )
    guarded = ns["guarded"]
    assert guarded(1) == guarded(1) == 1
    assert cached.stats().misses == 1
    ns["LOCK"] = threading.Lock()  # rebound: another object, another entry
    assert guarded(1) == 1
    assert cached.stats().misses == 2
    assert "`LOCK` keyed by identity" in (cached.entries()[-1].miss_reason or "")
    # hash_funcs still say what identifies it, and then any lock is the same
    relaxed = cache_data(hash_funcs={type(ns["LOCK"]): lambda lock: "the lock"})(guarded.__wrapped__)
    assert relaxed(1) == 1
    ns["LOCK"] = threading.Lock()
    assert relaxed(1) == 1
    assert cached.stats().misses == 3


def test_a_cached_function_calling_another_is_keyed_by_both(cached: CacheStore) -> None:
    ns = define(
        """
        @cache_resource
        def connect(url):
            return {"url": url}

        @cache_data
        def load(url):
            return connect(url)["url"].upper()
        """
    )
    assert ns["load"]("db") == "DB"
    assert ns["load"]("db") == "DB"
    assert cached.stats().misses == 2  # load and connect, once each
    exec("@cache_resource\ndef connect(url):\n    return {'url': url + '!'}", ns)
    assert ns["load"]("db") == "DB!"


# --------------------------------------------------------------------------- cache_data
def test_cache_data_returns_a_fresh_copy_on_every_call_including_the_first(cached: CacheStore) -> None:
    ns = define(
        """
        ROWS = [1, 2]

        @cache_data
        def rows():
            return ROWS
        """
    )
    first = ns["rows"]()
    assert first == [1, 2]
    assert first is not ns["ROWS"]  # even the computing call gets a copy
    first.append(3)
    second = ns["rows"]()
    assert second == [1, 2]
    assert second is not first
    second.append(4)
    assert ns["rows"]() == [1, 2]
    assert ns["ROWS"] == [1, 2]
    assert cached.stats().misses == 1


def test_an_unserializable_result_says_to_use_cache_resource(cached: CacheStore) -> None:
    @cache_data
    def make_lock() -> Any:
        return threading.Lock()

    with pytest.raises(UnserializableResultError) as caught:
        make_lock()
    message = str(caught.value)
    assert "make_lock" in message
    assert "@cache_resource" in message
    assert cached.entries() == []
    assert cache_resource(make_lock.__wrapped__)() is not None


def test_ttl_expires_data_on_the_store_clock(cached: CacheStore, clock: FakeClock) -> None:
    @cache_data(ttl="10m")
    def stamp(x: int) -> int:
        return x

    stamp(1)
    clock.advance(599)
    stamp(1)
    assert cached.stats().misses == 1
    clock.advance(2)
    stamp(1)
    assert cached.stats().misses == 2
    (entry,) = cached.entries()
    assert entry.expires == pytest.approx(clock.now + 600)


def test_ttl_accepts_seconds_and_timedelta(cached: CacheStore) -> None:
    @cache_data(ttl=timedelta(hours=1))
    def one(x: int) -> int:
        return x

    @cache_data(ttl=90)
    def two(x: int) -> int:
        return x

    one(1)
    two(1)
    assert sorted(round(e.expires - e.created) for e in cached.entries() if e.expires) == [90, 3600]


def test_max_entries_keeps_the_most_recently_used_of_that_function(cached: CacheStore) -> None:
    @cache_data(max_entries=2)
    def limited(x: int) -> int:
        return x

    @cache_data
    def other(x: int) -> int:
        return x

    other(0)
    limited(1)
    limited(2)
    limited(1)  # 1 is now the most recently used
    limited(3)  # evicts 2, not 1, and never `other`'s entry
    labels = sorted(e.label for e in cached.entries())
    assert labels == ["limited(x=1)", "limited(x=3)", "other(x=0)"]


def test_clear_drops_the_function_or_one_argument_set_or_a_whole_kind(cached: CacheStore) -> None:
    @cache_data
    def a(x: int, y: int = 0) -> int:
        return x

    @cache_data
    def b(x: int) -> int:
        return x

    @cache_resource
    def r(x: int) -> Resource:
        return Resource(x)

    for x in (1, 2):
        a(x)
        b(x)
        r(x)
    a.clear(1, y=0)  # bound like a call: the entry of a(1)
    assert sorted(e.label for e in cached.entries("data")) == [
        "a(x=2, y=0)",
        "b(x=1)",
        "b(x=2)",
    ]
    b.clear()
    assert [e.label for e in cached.entries("data")] == ["a(x=2, y=0)"]
    cache_data.clear()
    assert cached.entries("data") == []
    assert len(cached.entries("resource")) == 2
    cache_resource.clear()
    assert cached.entries() == []


def new_kernel(
    directory: Path, clock: Any, monkeypatch: pytest.MonkeyPatch, source: str, **names: Any
) -> tuple[CacheStore, Any]:
    """A fresh store on the disk in ``directory``, as after a restart, and ``load`` defined
    anew by ``source``."""
    from ipycache_ext._persist import DiskCache, StorePersistence

    store = CacheStore(timer=clock)
    store.persistence = StorePersistence(DiskCache.in_directory(directory, timer=clock))
    monkeypatch.setattr(cache_data, "store", store)
    return store, define(source, **names)["load"]


@pytest.mark.parametrize("persist", ["disk", True])
def test_persisted_results_are_found_again_by_a_new_kernel(
    persist: Any, tmp_path: Path, clock: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[int] = []

    def kernel() -> Any:
        source = "@cache_data(persist=PERSIST, ttl='1h')\ndef load(n, _calls):\n    _calls.append(n)\n"
        source += "    return list(range(n))"
        return new_kernel(tmp_path / "cache", clock, monkeypatch, source, PERSIST=persist)

    store, load = kernel()
    assert load(5, calls) == [0, 1, 2, 3, 4] and calls == [5]
    assert store.entries()[0].persisted
    store, load = kernel()
    assert load(5, calls) == [0, 1, 2, 3, 4] and calls == [5]  # from disk: not computed again
    assert store.stats().hits == 1
    clock.advance(3601)
    store, load = kernel()
    assert load(5, calls) == [0, 1, 2, 3, 4] and calls == [5, 5]  # the TTL held on disk too
    load.clear(5, calls)
    store, load = kernel()
    load(5, calls)
    assert calls == [5, 5, 5]  # clear(5) removed it from disk as well


def test_persist_none_or_false_keeps_entries_in_memory(
    cached: CacheStore, tmp_path: Path, clock: FakeClock
) -> None:
    from ipycache_ext._persist import DiskCache, StorePersistence

    cached.persistence = StorePersistence(DiskCache.in_directory(tmp_path / "cache", timer=clock))
    for value, persist in ((1, None), (2, False)):
        assert cache_data(persist=persist)(lambda v=value: v)() == value
    assert len(cached.entries()) == 2 and not any(e.persisted for e in cached.entries())
    assert list((tmp_path / "cache").glob("*.entry")) == []
    assert cache_data(persist="disk")(lambda: 3)() == 3  # the same store does write to that disk
    assert len(list((tmp_path / "cache").glob("*.entry"))) == 1


@pytest.mark.parametrize(
    ("options", "error", "words"),
    [
        ({"ttl": "soon"}, ValueError, "ttl"),
        ({"ttl": -1}, ValueError, "ttl"),
        ({"max_entries": 0}, ValueError, "max_entries"),
        ({"max_entries": "3"}, TypeError, "max_entries"),
        ({"show_spinner": 1}, TypeError, "show_spinner"),
        ({"hash_funcs": {1: str}}, TypeError, "hash_funcs"),
        ({"hash_funcs": [int]}, TypeError, "hash_funcs"),
        ({"persist": "memory"}, ValueError, "persist"),
        ({"persist": 1}, ValueError, "persist"),
    ],
)
def test_bad_options_are_refused_with_the_option_named(
    options: dict[str, Any], error: type, words: str
) -> None:
    with pytest.raises(error, match=words):
        cache_data(**options)


def test_bad_resource_hooks_and_non_functions_are_refused() -> None:
    with pytest.raises(TypeError, match="validate"):
        cache_resource(validate=True)  # type: ignore[call-overload]
    with pytest.raises(TypeError, match="on_release"):
        cache_resource(on_release="close")  # type: ignore[call-overload]
    with pytest.raises(TypeError, match="by keyword"):
        cache_data("10m")  # type: ignore[call-overload]
    with pytest.raises(TypeError, match="generator"):

        @cache_data
        def numbers() -> Iterator[int]:
            yield 1


# --------------------------------------------------------------------------- cache_resource
def test_cache_resource_returns_the_same_instance(cached: CacheStore) -> None:
    @cache_resource
    def connect(url: str) -> Resource:
        return Resource(url)

    first = connect("db://a")
    assert connect("db://a") is first
    assert connect(url="db://a") is first
    assert connect("db://b") is not first


@pytest.mark.parametrize("decorator", [cache_data, cache_resource])
def test_sixteen_threads_calling_one_key_compute_once(cached: CacheStore, decorator: Any) -> None:
    tracker = Tracker()

    @decorator
    def slow(x: int, _tracker: Tracker) -> dict[str, int]:
        _tracker.called()
        time.sleep(0.3)  # long enough for every thread to arrive while it runs
        return {"x": x}

    results = run_threads(lambda: slow(1, tracker))
    assert tracker.calls == 1
    assert all(r == {"x": 1} for r in results)
    assert cached.stats().misses == 1
    assert cached.stats().hits == 15
    if decorator is cache_resource:
        assert all(r is results[0] for r in results)
    else:
        assert len({id(r) for r in results}) == 16  # every caller has its own copy


def test_a_failure_under_concurrency_is_shared_not_cached_and_strands_no_one(cached: CacheStore) -> None:
    tracker = Tracker()
    tracker.fail = True

    @cache_resource
    def flaky(_tracker: Tracker) -> Resource:
        attempt = _tracker.called()
        time.sleep(0.3)
        if _tracker.fail:
            raise ValueError(f"attempt {attempt} failed")
        return Resource(attempt)

    outcomes = run_threads(lambda: flaky(tracker))
    assert all(isinstance(o, ValueError) for o in outcomes)
    # each computation raised one error, and every caller got one of those: waiters share it
    assert len({id(o) for o in outcomes}) == tracker.calls < 16
    assert cached.entries() == []
    tracker.fail = False
    value = flaky(tracker)
    assert flaky(tracker) is value


# --------------------------------------------------------------------------- on_release
def released_resource(tracker: Tracker, **options: Any) -> Any:
    @cache_resource(on_release=tracker.release, **options)
    def open_resource(name: str) -> Resource:
        return Resource(name)

    return open_resource


def test_on_release_runs_on_ttl_expiry(cached: CacheStore, clock: FakeClock) -> None:
    tracker = Tracker()
    open_resource = released_resource(tracker, ttl=60)
    first = open_resource("a")
    clock.advance(61)
    second = open_resource("a")
    assert tracker.released == [first]
    assert second is not first
    clock.advance(61)
    cached.purge_expired()  # what the store's expiry thread does in a kernel
    assert tracker.released == [first, second]


def test_on_release_runs_on_lru_eviction(cached: CacheStore) -> None:
    tracker = Tracker()
    open_resource = released_resource(tracker, max_entries=1)
    first = open_resource("a")
    open_resource("b")
    assert tracker.released == [first]


def test_on_release_runs_on_every_kind_of_clear(cached: CacheStore) -> None:
    tracker = Tracker()
    open_resource = released_resource(tracker)
    a, b, c = open_resource("a"), open_resource("b"), open_resource("c")
    open_resource.clear("a")
    assert tracker.released == [a]
    open_resource.clear()
    assert sorted(tracker.released, key=repr) == [a, b, c]
    d = open_resource("d")
    cache_resource.clear()
    assert tracker.released[-1] is d


def test_on_release_runs_when_validate_says_no_or_raises(cached: CacheStore) -> None:
    tracker = Tracker()

    def still_ok(resource: Resource) -> bool:
        if resource.name == "boom":
            raise ConnectionError("gone")
        return resource.ok

    open_resource = released_resource(tracker, validate=still_ok)
    first = open_resource("a")
    assert open_resource("a") is first
    first.ok = False
    second = open_resource("a")
    assert second is not first
    assert tracker.released == [first]
    boom = open_resource("boom")
    with pytest.warns(RuntimeWarning, match="ConnectionError"):
        again = open_resource("boom")
    assert again is not boom
    assert tracker.released == [first, boom]


def test_on_release_runs_when_the_entry_is_replaced(cached: CacheStore) -> None:
    tracker = Tracker()
    open_resource = released_resource(tracker)
    first = open_resource("a")
    (entry,) = cached.entries()
    # a refresh (as the panel or %%cache_resource --refresh does) replaces the value in place
    cached.get_or_create(
        entry.key, lambda: (Resource("new"), None), kind="resource", label=entry.label, refresh=True
    )
    assert tracker.released == [first]


def test_on_release_runs_when_the_store_closes(cached: CacheStore) -> None:
    tracker = Tracker()
    open_resource = released_resource(tracker)
    values = [open_resource("a"), open_resource("b")]
    cached.close()
    assert sorted(tracker.released, key=repr) == values


def test_on_release_runs_at_interpreter_exit() -> None:
    script = textwrap.dedent(
        """
        from ipycache_ext import cache_resource

        @cache_resource(on_release=lambda value: print("released", value, flush=True))
        def connect(url):
            return f"<connection to {url}>"

        connect("db://a")
        print("exiting", flush=True)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], check=False, capture_output=True, text=True, timeout=60, cwd=ROOT
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["exiting", "released <connection to db://a>"]


# --------------------------------------------------------------------------- methods
class Model:
    def __init__(self, name: str) -> None:
        self.name = name

    @cache_data
    def predict(self, x: int) -> str:
        return f"{self.name}:{x}"

    @cache_resource
    def session(_self, user: str) -> Resource:
        return Resource(user)


def test_methods_hash_the_instance(cached: CacheStore) -> None:
    assert Model("a").predict(1) == "a:1"
    assert Model("b").predict(1) == "b:1"  # another instance state: another entry
    assert Model("a").predict(1) == "a:1"  # an equal instance: the same entry
    assert cached.stats().misses == 2
    assert Model.predict(Model("a"), 1) == "a:1"
    assert cached.stats().misses == 2


def test_methods_with_underscore_self_share_entries_across_instances(cached: CacheStore) -> None:
    first = Model("a").session("ann")
    assert Model("b").session("ann") is first
    assert Model("b").session(user="bob") is not first


def test_a_bound_method_clears_its_own_entries(cached: CacheStore) -> None:
    model = Model("a")
    model.predict(1)
    model.predict(2)
    model.predict.clear(1)
    assert [e.label for e in cached.entries()] == ["Model.predict(x=2)"]
    model.predict.clear()
    assert cached.entries() == []


def test_an_unhashable_instance_says_to_name_it_underscore_self(cached: CacheStore) -> None:
    class Holder:
        def __init__(self) -> None:
            self.lock = threading.Lock()

        @cache_data
        def value(self) -> int:
            return 1

    with pytest.raises(UnhashableInputError, match="`_self`"):
        Holder().value()


# --------------------------------------------------------------------------- show_spinner
@pytest.fixture
def published(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[dict[str, Any]]]:
    """What the shell's display publisher was asked to show, with the spinner's delay at 0."""
    shell = InteractiveShell.instance()
    records: list[dict[str, Any]] = []

    def publish(data: dict[str, Any], metadata: Any = None, *args: Any, **kwargs: Any) -> None:
        records.append({"data": data, **kwargs})

    monkeypatch.setattr(shell.display_pub, "publish", publish)
    monkeypatch.setattr(_spinner, "DELAY", 0.0)
    yield records


def wait_for(condition: Callable[[], bool]) -> bool:
    deadline = time.monotonic() + 10
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    return True


@pytest.mark.parametrize(
    ("show_spinner", "text"), [(True, "Running slow(...)"), ("Asking the API...", "Asking the API...")]
)
def test_a_slow_miss_shows_a_text_that_goes_away(
    cached: CacheStore, published: list[dict[str, Any]], show_spinner: Any, text: str
) -> None:
    @cache_data(show_spinner=show_spinner)
    def slow(x: int, _published: list[dict[str, Any]]) -> int:
        assert wait_for(lambda: bool(_published)), "the text never appeared"
        return x

    assert slow(1, published) == 1
    shown, removed = published
    assert shown["data"] == {"text/plain": text}
    display_id = shown["transient"]["display_id"]
    assert removed["update"] is True
    assert removed["transient"]["display_id"] == display_id
    assert removed["data"]["text/plain"] == ""
    slow(1, published)  # a hit shows nothing
    assert len(published) == 2


def test_show_spinner_false_a_fast_miss_or_no_shell_show_nothing(
    cached: CacheStore, published: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    @cache_data(show_spinner=False)
    def quiet(x: int) -> int:
        time.sleep(0.2)
        return x

    quiet(1)
    monkeypatch.setattr(_spinner, "DELAY", 5.0)

    @cache_data
    def fast(x: int) -> int:
        return x

    fast(1)
    monkeypatch.setattr(_spinner, "DELAY", 0.0)
    import IPython

    monkeypatch.setattr(IPython, "get_ipython", lambda: None)

    @cache_data
    def outside(x: int) -> int:
        time.sleep(0.2)
        return x

    outside(1)
    assert published == []


# --------------------------------------------------------------------------- porting from Streamlit
PORTED = """\
{import_line}
import sqlite3


@cache_data(ttl=3600, show_spinner="Fetching data...")
def fetch(city, days=3):
    print(f"fetching {{city}}")
    return {{"city": city, "temps": [20 + d for d in range(days)]}}


@cache_resource(validate=lambda conn: conn.execute("select 1").fetchone() == (1,))
def connect(path=":memory:"):
    print("connecting")
    return sqlite3.connect(path, check_same_thread=False)


class Model:
    def __init__(self, name):
        self.name = name

    @cache_data
    def predict(_self, x):
        print(f"predicting {{x}}")
        return x * 2


first = fetch("Paris")
first["temps"].append(99)
print(fetch("Paris"))
fetch.clear("Paris")
fetch("Paris")
print(connect() is connect())
print(connect().execute("select 40 + 2").fetchone())
print(Model("a").predict(2), Model("b").predict(2))
cache_data.clear()
fetch("Paris")
cache_resource.clear()
print(connect() is not None)
"""

PORTED_OUTPUT = """\
fetching Paris
{'city': 'Paris', 'temps': [20, 21, 22]}
fetching Paris
connecting
True
(42,)
predicting 2
4 4
fetching Paris
connecting
True
"""


def run_snippet(import_line: str) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(PORTED.format(import_line=import_line), {"__name__": "ported_app"})
    return out.getvalue()


def test_a_streamlit_snippet_runs_unchanged_apart_from_the_import(cached: CacheStore) -> None:
    assert run_snippet("from ipycache_ext import cache_data, cache_resource") == PORTED_OUTPUT
    assert {e.label.split("(")[0] for e in cached.entries()} == {"fetch", "connect"}


def test_the_snippet_is_real_streamlit_code() -> None:
    pytest.importorskip("streamlit")
    import logging

    for name in ["streamlit", *logging.root.manager.loggerDict]:
        if name.startswith("streamlit"):
            logging.getLogger(name).setLevel(logging.CRITICAL)
    assert run_snippet("from streamlit import cache_data, cache_resource") == PORTED_OUTPUT


# --------------------------------------------------------------------------- the demo notebook
@pytest.mark.slow
def test_the_demo_notebook_runs_and_its_second_call_is_a_hit() -> None:
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    notebook = nbformat.read(ROOT / "notebooks" / "decorators.ipynb", as_version=4)
    nbclient.NotebookClient(
        notebook, kernel_name="python3", timeout=120, resources={"metadata": {"path": str(ROOT)}}
    ).execute()
    texts = [
        output.get("text", "")
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.get("outputs", [])
        if output.get("output_type") == "stream"
    ]
    results = [
        json.loads(line.split(" ", 1)[1])
        for text in texts
        for line in text.splitlines()
        if line.startswith("RESULT ")
    ]
    forecast, connection, patterns = results
    assert forecast["first_seconds"] >= 0.5
    assert forecast["second_seconds"] < forecast["first_seconds"] / 5  # a hit, not the 1 s compute
    assert forecast["hits"] == 1
    assert forecast["misses"] == 1
    assert connection["same_connection"] is True
    assert connection["released"] == 1
    # Streamlit's connection and model patterns: globals read by cached functions, hits
    assert patterns["pattern_hits"] == 2
    assert patterns["same_totals"] is True
    assert patterns["prediction"] == {"label": "POSITIVE", "chars": 10}
    assert any("first run (`connection` keyed by identity)" in text for text in texts)
    assert any("fetch_forecast(city='Paris', days=3)" in text for text in texts)  # %cache_info
    # the 1 s miss showed its spinner text in the real kernel, then replaced it by nothing
    spinner = [
        output
        for cell in notebook.cells
        if 'fetch_forecast("Paris")' in cell.source
        for output in cell.get("outputs", [])
        if output.get("output_type") == "display_data"
    ]
    assert [output["data"]["text/plain"] for output in spinner] == [""]


def test_each_computation_says_why_it_ran(cached: CacheStore) -> None:
    namespace = define("@cache_data\ndef area(width, height=2):\n    return width * height")
    area = namespace["area"]
    area(3)
    area(5)
    area(5, height=7)
    reasons = [entry.miss_reason for entry in cached.entries()]
    assert reasons == ["first run", "`width` changed", "`height` changed"]


def test_wrong_arguments_are_the_usual_type_error_naming_the_function(cached: CacheStore) -> None:
    @cache_data
    def load(x: int, y: int = 1) -> int:
        return x + y

    with pytest.raises(TypeError, match=r"^load\(\) missing a required argument: 'x'$"):
        load()  # type: ignore[call-arg]
    with pytest.raises(TypeError, match=r"^load\(\) too many positional arguments$"):
        load(1, 2, 3)  # type: ignore[call-arg]
    assert load(1) == 2 and cached.stats().misses == 1  # nothing was cached for the wrong calls


def test_a_cache_warning_of_a_cached_call_points_at_the_call(cached: CacheStore) -> None:
    import warnings

    from ipycache_ext import CacheWarning

    cached.memory_budget = 1024

    @cache_data
    def big() -> bytes:
        return b"x" * 100_000

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        big()
    (warning,) = [w for w in caught if issubclass(w.category, CacheWarning)]
    assert warning.filename == __file__  # this line, not one of the cache's
