"""Streamlit 1.67 parity of the decorators (issue 10, section 3), on a store with a fake clock.

``_``-prefixed keyword arguments in ``**kwargs``, a sync function that returns an
awaitable, a clear during a computation, ``max_size``, ``show_time``, ``scope`` and
``refresh_mode="background"``.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from IPython.core.interactiveshell import InteractiveShell

from ipycache_ext import CacheStore, UnhashableInputError, _spinner
from ipycache_ext._decorator_options import parse_byte_size
from ipycache_ext._decorators import AwaitableResultError, cache_data, cache_resource

from .conftest import FakeClock
from .test_decorators import Resource, Tracker, define


@pytest.fixture
def cached(store: CacheStore, monkeypatch: pytest.MonkeyPatch) -> CacheStore:
    monkeypatch.setattr(cache_data, "store", store)
    monkeypatch.setattr(cache_resource, "store", store)
    return store


# --------------------------------------------------------------------------- _private arguments
def test_underscore_keywords_in_var_kwargs_are_not_hashed(cached: CacheStore) -> None:
    @cache_data
    def scaled(x: int, **options: Any) -> int:
        return x * options.get("factor", 1)

    # a lock can't be hashed: under an underscore name it is not even tried
    assert scaled(2, factor=3, _trace=threading.Lock()) == 6
    assert scaled(2, _trace=threading.Lock(), factor=3) == 6
    assert scaled(2, factor=3) == 6
    assert cached.stats().misses == 1
    assert scaled(2, factor=4, _trace=[]) == 8
    assert cached.stats().misses == 2
    (first, _) = cached.entries()
    assert "_trace" not in first.label


def test_underscore_parameters_are_not_hashed_however_they_are_passed(cached: CacheStore) -> None:
    @cache_data
    def query(sql: str, _conn: object = None, *, _log: object = None) -> str:
        return sql.upper()

    query("a", threading.Lock())
    query("a", _conn=threading.Lock(), _log=threading.Lock())
    query(sql="a")
    assert cached.stats().misses == 1
    assert [set(e.inputs) for e in cached.entries()] == [{"sql"}]


# --------------------------------------------------------------------------- awaitables from sync code
class Awaitable:
    """A custom awaitable: touching it in any way is recorded."""

    def __init__(self) -> None:
        self.awaited = False

    def __await__(self) -> Iterator[Any]:
        self.awaited = True
        yield
        return 1


async def _coroutine() -> int:
    return 1


def _awaitables() -> list[tuple[str, Callable[[], Any], Callable[[Any], bool]]]:
    """(name, make, untouched): ways to hand back something to await."""

    def make_task() -> Any:
        loop = asyncio.new_event_loop()
        task = loop.create_task(_coroutine())
        task._test_loop = loop  # type: ignore[attr-defined]
        return task

    return [
        ("coroutine", _coroutine, lambda c: inspect.getcoroutinestate(c) == inspect.CORO_CREATED),
        ("asyncio future", lambda: asyncio.Future(loop=asyncio.new_event_loop()), lambda f: not f.done()),
        ("task", make_task, lambda t: not t.done()),
        ("custom", Awaitable, lambda a: not a.awaited),
    ]


@pytest.mark.parametrize("decorator", [cache_data, cache_resource])
@pytest.mark.parametrize(
    ("what", "make", "untouched"), _awaitables(), ids=lambda v: v if isinstance(v, str) else ""
)
def test_a_sync_function_returning_an_awaitable_is_an_error_every_time(
    cached: CacheStore, decorator: Any, what: str, make: Callable[[], Any], untouched: Callable[[Any], bool]
) -> None:
    made: list[Any] = []

    @decorator
    def load(x: int, _made: list[Any]) -> Any:
        _made.append(make())
        return _made[-1]

    for attempt in (1, 2):
        with pytest.raises(AwaitableResultError) as caught:
            load(1, made)
        assert len(made) == attempt  # computed again: nothing was cached
        message = str(caught.value)
        assert "load()" in message
        assert "async def" in message
        assert "Nothing was cached" in message
        assert caught.value.value is made[-1]
        assert isinstance(caught.value, TypeError)
    assert cached.entries() == []
    assert all(untouched(value) for value in made), f"the {what} was touched"
    for value in made:  # tidy up what the test made (the library must not)
        if inspect.iscoroutine(value):
            value.close()
        loop = getattr(value, "_test_loop", None) or getattr(value, "_loop", None)
        if isinstance(value, asyncio.Future):
            value.cancel()
        if isinstance(loop, asyncio.AbstractEventLoop):
            loop.run_until_complete(asyncio.sleep(0))
            loop.close()


# --------------------------------------------------------------------------- clear while computing
@pytest.mark.parametrize("how", ["function", "decorator", "one key"])
@pytest.mark.parametrize("decorator", [cache_data, cache_resource])
def test_a_clear_during_a_computation_keeps_its_result_out_of_the_cache(
    cached: CacheStore, how: str, decorator: Any
) -> None:
    tracker = Tracker()
    started, go = threading.Event(), threading.Event()

    @decorator
    def load(x: int, _tracker: Tracker, _wait: bool = True) -> Resource:
        _tracker.called()
        if _wait:
            started.set()
            assert go.wait(5)
        return Resource(x)

    results: list[Resource] = []
    thread = threading.Thread(target=lambda: results.append(load(1, tracker)))
    thread.start()
    assert started.wait(5)
    if how == "function":
        load.clear()
    elif how == "decorator":
        decorator.clear()
    else:
        load.clear(1, tracker)
    go.set()
    thread.join(5)
    assert [r.name for r in results] == [1]  # the caller gets what it computed
    assert cached.entries() == []  # the store does not
    assert load(1, tracker, _wait=False).name == 1
    assert tracker.calls == 2  # computed again
    assert len(cached.entries()) == 1
    assert load(1, tracker, _wait=False).name == 1
    assert tracker.calls == 2


def test_a_clear_of_other_arguments_does_not_stop_a_computation_being_kept(cached: CacheStore) -> None:
    started, go = threading.Event(), threading.Event()

    @cache_data
    def load(x: int) -> int:
        if x == 1:
            started.set()
            assert go.wait(5)
        return x

    thread = threading.Thread(target=load, args=(1,))
    thread.start()
    assert started.wait(5)
    load.clear(2)
    go.set()
    thread.join(5)
    assert [e.label for e in cached.entries()] == ["load(x=1)"]


# --------------------------------------------------------------------------- max_size
@pytest.mark.parametrize(
    ("text", "size"),
    [("1GB", 1024**3), ("1gb", 1024**3), ("500MB", 500 * 1024**2), ("1.5GiB", 1536 * 1024**2),
     ("1.1KB", 1126), ("200 KiB", 200 * 1024), ("10b", 10), (4096, 4096), (None, None)],
)  # fmt: skip
def test_max_size_takes_bytes_or_sizes_with_binary_units_as_streamlit(text: Any, size: int | None) -> None:
    assert parse_byte_size("cache_data", text) == size


@pytest.mark.parametrize("bad", ["1 GB!", "GB", "12", "-1MB", 0, -5, True, 1.5, "0KB"])
def test_a_bad_max_size_names_the_option_and_the_forms(bad: Any) -> None:
    with pytest.raises((TypeError, ValueError), match=r"cache_data\(max_size=") as caught:
        cache_data(max_size=bad)
    assert "500MB" in str(caught.value)


def test_max_size_evicts_the_functions_least_recently_used_entries(
    cached: CacheStore, clock: FakeClock
) -> None:
    @cache_data(max_size="2.5KiB")  # two of these results fit, not three
    def blob(n: int) -> bytes:
        return bytes(1000) + bytes([n])

    @cache_data
    def other(n: int) -> bytes:
        return bytes(1000)

    other(0)
    for n in (1, 2):
        blob(n)
        clock.advance(1)
    blob(1)  # used: now 2 is the least recently used
    clock.advance(1)
    blob(3)
    clock.advance(1)
    labels = sorted(e.label for e in cached.entries())
    assert labels == ["blob(n=1)", "blob(n=3)", "other(n=0)"]
    assert sum(e.size or 0 for e in cached.entries() if e.label.startswith("blob")) <= 2.5 * 1024
    removed = [e for e in cached.entries() if e.label == "blob(n=2)"]
    assert removed == []


def test_one_result_larger_than_max_size_is_kept_alone_with_a_warning(cached: CacheStore) -> None:
    @cache_data(max_size=2000)
    def blob(n: int) -> bytes:
        return bytes(n)

    blob(100)
    blob(200)
    with pytest.warns(RuntimeWarning, match=r"blob\(\).*more than its max_size of 2000 bytes"):
        blob(5000)
    assert [e.label for e in cached.entries()] == ["blob(n=5000)"]
    blob(10)  # the next result replaces the oversized one
    assert sorted(e.label for e in cached.entries()) == ["blob(n=10)"]


def test_max_size_is_cache_data_only_as_in_streamlit() -> None:
    with pytest.raises(TypeError, match="max_size"):
        cache_resource(max_size="1GB")  # type: ignore[call-overload]


# --------------------------------------------------------------------------- show_time, scope, old keywords
@pytest.fixture
def published(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[dict[str, Any]]]:
    shell = InteractiveShell.instance()
    records: list[dict[str, Any]] = []

    def publish(data: dict[str, Any], metadata: Any = None, *args: Any, **kwargs: Any) -> None:
        records.append({"data": data, **kwargs})

    monkeypatch.setattr(shell.display_pub, "publish", publish)
    monkeypatch.setattr(_spinner, "DELAY", 0.0)
    monkeypatch.setattr(_spinner, "TICK", 0.01)
    yield records


def test_show_time_says_how_long_the_miss_has_taken(
    cached: CacheStore, published: list[dict[str, Any]]
) -> None:
    @cache_data(show_spinner="Loading", show_time=True)
    def slow(x: int, _published: list[dict[str, Any]]) -> int:
        deadline = time.monotonic() + 5
        while len({r["data"]["text/plain"] for r in _published}) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        return x

    slow(1, published)
    texts = [r["data"]["text/plain"] for r in published]
    assert texts[0].startswith("Loading (") and texts[0].endswith(" s)")
    assert len({t for t in texts if t}) >= 2  # the time went up while it ran
    assert texts[-1] == ""  # and it went away at the end
    assert all(r["transient"]["display_id"] == published[0]["transient"]["display_id"] for r in published)


def test_show_time_false_shows_the_text_alone(cached: CacheStore, published: list[dict[str, Any]]) -> None:
    @cache_data(show_spinner="Loading")
    def slow(x: int, _published: list[dict[str, Any]]) -> int:
        deadline = time.monotonic() + 5
        while not _published and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.05)
        return x

    slow(1, published)
    assert [r["data"]["text/plain"] for r in published] == ["Loading", ""]


def test_a_cached_function_called_by_another_shows_no_spinner_of_its_own(
    cached: CacheStore, published: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    entered: list[_spinner.Spinner] = []  # every spinner started, and those whose thread is done
    ran: list[_spinner.Spinner] = []
    enter, run = _spinner.Spinner.__enter__, _spinner.Spinner._run

    def entering(self: _spinner.Spinner) -> _spinner.Spinner:
        entered.append(self)
        return enter(self)

    def running(self: _spinner.Spinner) -> None:
        try:
            run(self)  # with DELAY 0 and no show_time: shows the text and returns
        finally:
            ran.append(self)

    monkeypatch.setattr(_spinner.Spinner, "__enter__", entering)
    monkeypatch.setattr(_spinner.Spinner, "_run", running)

    def shown() -> None:
        """Wait until every spinner started so far has shown its text, had it one of its own."""
        deadline = time.monotonic() + 10
        while any(s not in ran for s in entered) and time.monotonic() < deadline:
            time.sleep(0.01)

    @cache_data(show_spinner="inner")
    def inner(x: int) -> int:
        shown()  # a spinner of inner's own would be on the page by now
        return x

    @cache_data(show_spinner="outer")
    def outer(x: int) -> int:
        shown()
        return inner(x) + 1

    assert outer(1) == 2
    assert [r["data"]["text/plain"] for r in published] == ["outer", ""]
    assert inner(2) == 2  # called on its own, it shows its own
    assert [r["data"]["text/plain"] for r in published][2:] == ["inner", ""]


@pytest.mark.parametrize("decorator", [cache_data, cache_resource])
def test_scope_session_is_this_kernel(cached: CacheStore, decorator: Any) -> None:
    namespace = define("@decorator(scope='session')\ndef f(x):\n    return [x]", decorator=decorator)
    first = namespace["f"](1)
    assert namespace["f"](1) == first
    assert cached.stats().misses == 1
    with pytest.raises(ValueError, match=r"scope=.*'global' or 'session'"):
        decorator(scope="user")


def test_keywords_streamlit_1_67_dropped_are_refused_as_there() -> None:
    with pytest.raises(TypeError, match="experimental_allow_widgets"):
        cache_data(experimental_allow_widgets=True)  # type: ignore[call-overload]


# --------------------------------------------------------------------------- refresh_mode="background"
def test_background_refresh_serves_the_stale_value_and_refreshes_it_once(
    cached: CacheStore, clock: FakeClock
) -> None:
    tracker = Tracker()
    go = threading.Event()

    @cache_data(ttl=60, refresh_mode="background")
    def price(item: str, _tracker: Tracker) -> int:
        attempt = _tracker.called()
        if attempt > 1:
            assert go.wait(5)
        return attempt

    assert price("tea", tracker) == 1
    clock.advance(30)
    assert price("tea", tracker) == 1
    assert not price.refreshing("tea", tracker)
    clock.advance(31)  # stale: served at once, refreshed in the background
    assert [price("tea", tracker) for _ in range(5)] == [1] * 5
    assert price.refreshing("tea", tracker)
    go.set()
    price._background.join(5)  # type: ignore[union-attr]
    assert tracker.calls == 2  # one refresh for five stale hits
    assert price("tea", tracker) == 2
    assert not price.refreshing("tea", tracker)
    (entry,) = cached.entries()
    assert entry.label == "price(item='tea')"


def test_background_refresh_has_a_hard_expiry_of_two_ttls(cached: CacheStore, clock: FakeClock) -> None:
    tracker = Tracker()

    @cache_data(ttl=60, refresh_mode="background")
    def price(item: str, _tracker: Tracker) -> int:
        return _tracker.called()

    assert price("tea", tracker) == 1
    (entry,) = cached.entries()
    assert entry.expires == entry.created + 120
    clock.advance(121)  # past the hard expiry: the call waits for a new value
    assert price("tea", tracker) == 2
    assert tracker.calls == 2


def test_a_failed_background_refresh_keeps_the_stale_value_and_says_so(
    cached: CacheStore, clock: FakeClock
) -> None:
    tracker = Tracker()

    @cache_resource(ttl=100, refresh_mode="background")
    def connect(url: str, _tracker: Tracker) -> Resource:
        attempt = _tracker.called()
        if attempt == 2:
            raise ConnectionError("server down")
        return Resource(attempt)

    first = connect("db", tracker)
    clock.advance(101)
    assert connect("db", tracker) is first
    connect._background.join(5)  # type: ignore[union-attr]
    with pytest.warns(RuntimeWarning, match=r"refreshing connect\(\) in the background failed.*server down"):
        assert connect("db", tracker) is first
    assert connect("db", tracker) is first  # said once; not tried again for a minute
    assert tracker.calls == 2
    clock.advance(61)  # 162 s: past the retry cooldown, still before the hard expiry (200 s)
    assert connect("db", tracker) is first
    connect._background.join(5)  # type: ignore[union-attr]
    assert connect("db", tracker).name == 3


def test_a_clear_during_a_background_refresh_keeps_the_refresh_out(
    cached: CacheStore, clock: FakeClock
) -> None:
    tracker = Tracker()
    started, go = threading.Event(), threading.Event()

    @cache_data(ttl=10, refresh_mode="background")
    def price(item: str, _tracker: Tracker) -> int:
        attempt = _tracker.called()
        if attempt == 2:
            started.set()
            assert go.wait(5)
        return attempt

    price("tea", tracker)
    clock.advance(11)
    price("tea", tracker)
    assert started.wait(5)
    price.clear()
    go.set()
    price._background.join(5)  # type: ignore[union-attr]
    assert cached.entries() == []
    assert price("tea", tracker) == 3


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"refresh_mode": "background"}, r"needs a ttl"),
        ({"refresh_mode": "background", "ttl": 60, "persist": "disk"}, r"persist='disk'"),
        ({"refresh_mode": "later"}, r"'foreground' or 'background'"),
        ({"show_time": "yes"}, r"show_time=.*True or False"),
    ],
)
def test_bad_refresh_options_are_refused_with_the_way_out(options: dict[str, Any], message: str) -> None:
    with pytest.raises((TypeError, ValueError), match=message):
        cache_data(**options)


def test_an_unhashable_default_is_named_with_the_ways_out(cached: CacheStore) -> None:
    """Defaults are part of the function's code; Streamlit hashes only the source text."""
    with pytest.raises(UnhashableInputError) as caught:

        @cache_data
        def fetch(url: str, _session: object = threading.Lock()) -> str:
            return url

        fetch("a")
    message = str(caught.value)
    assert caught.value.name == "_session"
    assert "default of fetch()'s parameter `_session`" in message
    assert "Pass it at each call" in message
    assert "hash_funcs=" in message


def test_a_clear_from_the_function_defined_again_stops_the_old_definitions_write(cached: CacheStore) -> None:
    """A cell run again decorates the function anew; its clear() covers the old one's call."""
    started, go = threading.Event(), threading.Event()
    source = """
        @cache_data
        def load(x, _started, _go):
            _started.set()
            assert _go.wait(5)
            return x
        """
    old, new = define(source)["load"], define(source)["load"]
    thread = threading.Thread(target=old, args=(1, started, go))
    thread.start()
    assert started.wait(5)
    new.clear()
    go.set()
    thread.join(5)
    assert cached.entries() == []


def test_a_hash_func_that_raises_names_the_function_the_type_and_the_hash_func(cached: CacheStore) -> None:
    def broken(value: Resource) -> str:
        raise ValueError("no name yet")

    @cache_data(hash_funcs={Resource: broken})
    def describe(resource: Resource) -> str:
        return str(resource.name)

    with pytest.raises(UnhashableInputError) as caught:
        describe(Resource("db"))
    message = str(caught.value)
    assert "describe() takes it as parameter `resource`" in message
    assert "Resource" in message
    assert "broken" in message
    assert "ValueError: no name yet" in message
    assert cached.entries() == []


# --------------------------------------------------------------------------- in-place changes of arguments
def test_a_hit_changes_the_callers_arguments_as_the_call_did(cached: CacheStore) -> None:
    tracker = Tracker()

    @cache_data
    def tag(items: list[str], _tracker: Tracker, **extra: dict[str, int]) -> int:
        _tracker.called()
        items.append("seen")
        extra["counts"]["calls"] = 1
        return len(items)

    assert tag(["a"], tracker, counts={}) == 2
    mine, counts = ["a"], {}
    alias = mine
    assert tag(mine, tracker, counts=counts) == 2
    assert tracker.calls == 1  # a hit...
    assert alias == ["a", "seen"]  # ...that left the caller's list as the call did
    assert counts == {"calls": 1}  # **kwargs values too


def test_async_awaiters_each_get_their_own_arguments_changed(cached: CacheStore) -> None:
    @cache_data
    async def tag(items: list[str], _gate: asyncio.Event) -> int:
        await _gate.wait()
        items.append("seen")
        return len(items)

    async def main() -> list[list[str]]:
        gate = asyncio.Event()
        lists = [["a"] for _ in range(3)]
        calls = [asyncio.ensure_future(tag(items, gate)) for items in lists]
        await asyncio.sleep(0.01)
        gate.set()
        assert await asyncio.gather(*calls) == [2, 2, 2]
        later = ["a"]
        assert await tag(later, gate) == 2  # a hit
        return [*lists, later]

    assert asyncio.run(main()) == [["a", "seen"]] * 4
    assert cached.stats().misses == 1


def test_a_resource_that_changes_its_argument_says_a_hit_will_not(cached: CacheStore) -> None:
    @cache_resource
    def connect(settings: dict[str, int]) -> Resource:
        settings["opened"] = 1
        return Resource("db")

    with pytest.warns(RuntimeWarning, match=r"connect\(\) changed its argument `settings` in place"):
        connect({})
    settings: dict[str, int] = {}
    connect(settings)  # a hit: no second warning
    assert settings == {}  # a resource hit does not change the argument (said once, above)
    assert cached.stats().misses == 1


def test_a_function_that_changes_what_it_reads_on_every_call_says_so_once(cached: CacheStore) -> None:
    namespace: dict[str, Any] = {"cache_data": cache_data, "log": []}
    exec("@cache_data\ndef record(x):\n    log.append(x)\n    return len(log)", namespace)
    record = namespace["record"]
    assert record(1) == 1
    with pytest.warns(RuntimeWarning, match=r"record\(\) changes `log`.*on every call.*`_log`"):
        assert record(1) == 2  # log changed, so this is another key: computed again
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert record(1) == 3  # said once
    assert cached.stats().hits == 0


def test_a_function_that_only_reads_a_global_says_nothing(cached: CacheStore) -> None:
    namespace: dict[str, Any] = {"cache_data": cache_data, "rates": [1, 2]}
    exec("@cache_data\ndef total(x):\n    return x * sum(rates)", namespace)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert namespace["total"](2) == 6
        namespace["rates"].append(3)  # changed by the notebook, between calls: a plain miss
        assert namespace["total"](2) == 12
        namespace["rates"].append(4)
        assert namespace["total"](2) == 20
    assert cached.stats().misses == 3
