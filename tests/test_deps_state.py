"""The dynamic-dependency layer, kernel state: global RNGs, os.environ, dynamic namespace reads."""

from __future__ import annotations

import json
import os
import random
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest

from ipycache_ext._deps import dynamic_reads, first_change, recording, replay_effects

Deps = tuple[dict[str, Any], ...]


def record(body: Callable[[], Any], **options: Any) -> tuple[Deps, Any]:
    with recording(**options) as rec:
        value = body()
    return rec.dependencies(), value


def of(deps: Deps, kind: str) -> list[dict[str, Any]]:
    return [d for d in deps if d["kind"] == kind]


@pytest.fixture
def rngs() -> Iterator[None]:
    """Leave the global generators as they were found."""
    np_state, py_state = np.random.get_state(), random.getstate()
    yield
    np.random.set_state(np_state)
    random.setstate(py_state)


# ---------------------------------------------------------------- random state


@pytest.mark.usefixtures("rngs")
def test_numpy_draws_depend_on_the_state_before_and_a_hit_leaves_the_state_after() -> None:
    np.random.seed(1)
    deps, drawn = record(lambda: np.random.rand(3))
    (rng,) = of(deps, "random")
    assert rng["rng"] == "numpy" and rng["before"] is not None
    next_real = np.random.rand()  # what the next cell draws after a real run

    assert first_change(deps) == "numpy's global random state differs"  # the state moved on
    np.random.seed(1)
    assert first_change(deps) is None  # same state as before the run: a hit
    replay_effects(json.loads(json.dumps(deps)))  # as stored on disk
    assert np.random.rand() == next_real  # the hit left the generator where the run did
    np.random.seed(1)
    assert np.array_equal(np.random.rand(3), drawn)


@pytest.mark.usefixtures("rngs")
def test_a_seed_inside_the_computation_before_any_draw_means_the_prior_state_does_not_matter() -> None:
    deps, _ = record(lambda: (np.random.seed(7), np.random.rand(2))[1])
    (rng,) = of(deps, "random")
    assert rng["before"] is None
    after_real = np.random.rand()
    np.random.seed(123)  # any state at all
    assert first_change(deps) is None
    replay_effects(deps)
    assert np.random.rand() == after_real


@pytest.mark.usefixtures("rngs")
def test_a_draw_before_the_seed_still_depends_on_the_prior_state() -> None:
    deps, _ = record(lambda: (np.random.rand(), np.random.seed(7), np.random.rand()))
    assert of(deps, "random")[0]["before"] is not None


@pytest.mark.usefixtures("rngs")
def test_the_random_module_with_and_without_a_seed_inside() -> None:
    random.seed(5)
    deps, _ = record(lambda: random.random())
    (rng,) = of(deps, "random")
    assert rng["rng"] == "random" and rng["before"] is not None
    after_real = random.random()
    assert first_change(deps) == "the `random` module's global state differs"
    random.seed(5)
    assert first_change(deps) is None
    replay_effects(json.loads(json.dumps(deps)))
    assert random.random() == after_real

    deps, _ = record(lambda: (random.seed(3), random.random()))
    assert of(deps, "random")[0]["before"] is None
    assert first_change(deps) is None


@pytest.mark.usefixtures("rngs")
def test_no_draw_no_random_dependency() -> None:
    deps, _ = record(lambda: sum(range(10)))
    assert of(deps, "random") == []
    np.random.rand()
    assert first_change(deps) is None


@pytest.mark.usefixtures("rngs")
def test_a_nested_hit_replaying_the_rng_is_not_mistaken_for_a_seed() -> None:
    np.random.seed(2)
    inner, _ = record(lambda: np.random.rand())
    np.random.seed(2)
    with recording() as outer:
        assert first_change(inner) is None
        replay_effects(inner)
    (rng,) = of(outer.dependencies(), "random")
    assert rng["before"] is not None


# ---------------------------------------------------------------- environment


def test_environment_reads_by_name_are_inputs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IPYCACHE_TEST_MODE", "fast")
    monkeypatch.delenv("IPYCACHE_TEST_UNSET", raising=False)
    environ = os.environ  # a reference bound before the recording is seen too

    def body() -> Any:
        mode = environ["IPYCACHE_TEST_MODE"]
        return mode, os.getenv("IPYCACHE_TEST_UNSET"), "IPYCACHE_TEST_X" in os.environ

    deps, _ = record(body)
    names = {d["name"] for d in of(deps, "env")}
    assert names >= {"IPYCACHE_TEST_MODE", "IPYCACHE_TEST_UNSET", "IPYCACHE_TEST_X"}
    assert "fast" not in json.dumps(deps)  # values are kept as digests
    assert first_change(deps) is None
    monkeypatch.setenv("IPYCACHE_TEST_MODE", "slow")
    assert first_change(deps) == "environment variable `IPYCACHE_TEST_MODE` changed"
    monkeypatch.setenv("IPYCACHE_TEST_MODE", "fast")
    monkeypatch.setenv("IPYCACHE_TEST_UNSET", "1")
    assert first_change(deps) == "environment variable `IPYCACHE_TEST_UNSET` is now set"


def test_our_own_reads_inside_a_computation_can_be_left_out(monkeypatch: pytest.MonkeyPatch) -> None:
    from ipycache_ext._deps import not_recorded

    monkeypatch.setenv("IPYCACHE_TEST_OWN", "1")

    def body() -> None:
        with not_recorded():
            dict(os.environ)  # a snapshot for replay, say: not what the computation read
        os.environ.get("IPYCACHE_TEST_OWN")

    deps, _ = record(body)
    assert [d["name"] for d in of(deps, "env")] == ["IPYCACHE_TEST_OWN"]


def test_a_variable_the_computation_sets_is_an_effect_replayed_on_a_hit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("IPYCACHE_TEST_SET", raising=False)

    def body() -> str:
        os.environ["IPYCACHE_TEST_SET"] = "on"
        return os.environ["IPYCACHE_TEST_SET"]

    deps, _ = record(body)
    assert of(deps, "env") == []  # read after its own write: not an input
    assert of(deps, "env_effect") == [{"kind": "env_effect", "name": "IPYCACHE_TEST_SET", "value": "on"}]
    del os.environ["IPYCACHE_TEST_SET"]
    replay_effects(deps)
    assert os.environ["IPYCACHE_TEST_SET"] == "on"


def test_a_chdir_inside_the_computation_is_replayed(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "sub").mkdir()
    monkeypatch.chdir(tmp_path)
    deps, _ = record(lambda: os.chdir("sub"))
    os.chdir(tmp_path)
    assert first_change(deps) is None
    replay_effects(deps)
    assert os.getcwd() == str(tmp_path / "sub")
    assert first_change(deps) is not None  # run again from sub/: not the same computation


# ---------------------------------------------------------------- dynamic namespace reads


@pytest.mark.parametrize(
    ("code", "found"),
    [
        ("x = eval('a + 1')", "`eval`"),
        ("exec(src)", "`exec`"),
        ("v = globals()['a']", "`globals()`"),
        ("v = locals()", "`locals()`"),
        ("v = vars()", "`vars()`"),
        ("v = get_ipython().user_ns['a']", "`get_ipython()`"),
        ("%run -i helper.py", "`%run -i`"),
        ("%whos", "`%whos`"),
        ("import sys\nf = sys._getframe()", "`sys._getframe`"),
    ],
)
def test_dynamic_reads_are_found(code: str, found: str) -> None:
    assert dynamic_reads(code) == found


@pytest.mark.parametrize(
    "code",
    [
        "evaluate = 1\n# eval(x)\ns = 'globals()'",
        "df.eval('a + b')",
        "v = vars(args)",
        "%run script.py",
        "!ls\n%time x = 1",
        "x = (",  # does not tokenize: a word scan
    ],
)
def test_no_dynamic_read_where_there_is_none(code: str) -> None:
    assert dynamic_reads(code) is None


def test_dynamic_reads_of_functions_and_code_objects() -> None:
    def reads_globals() -> Any:
        return globals()["np"]

    def plain(x: int) -> int:
        return x + 1

    def nested() -> Any:
        return lambda: eval("1")

    assert dynamic_reads(reads_globals) == "`globals()`"
    assert dynamic_reads(plain) is None
    assert dynamic_reads(nested.__code__) == "`eval`"


def test_a_namespace_snapshot_sees_any_variable_change_and_can_be_narrowed() -> None:
    namespace: dict[str, Any] = {"a": 1, "rows": [1, 2], "np": np, "_": "hidden", "log": object()}
    code = "x = eval('a + 1')"
    via = dynamic_reads(code)
    with recording(namespace=namespace, dynamic=via, exclude=["log"]) as rec:
        namespace["x"] = eval("a + 1", namespace)
    deps = rec.dependencies()
    (snapshot,) = of(deps, "namespace")
    assert set(snapshot["names"]) == {"a", "rows", "x"}  # no modules, no hidden names, not excluded
    assert snapshot["names"]["x"][0] is None  # not there before the run, bound by it
    assert first_change(deps, namespace=namespace) is None  # run again: `x` as the run left it
    x = namespace.pop("x")
    assert first_change(deps, namespace=namespace) is None  # after a restart: as before the run
    namespace["x"] = x + 1
    assert first_change(deps, namespace=namespace) == "`x` changed (it may read any variable: `eval`)"
    namespace["x"] = x
    namespace["log"] = object()
    assert first_change(deps, namespace=namespace) is None  # left out
    namespace["rows"].append(3)
    assert first_change(deps, namespace=namespace) == "`rows` changed (it may read any variable: `eval`)"
    namespace["rows"].pop()
    namespace["b"] = 2
    assert first_change(deps, namespace=namespace) == "`b` was defined (it may read any variable: `eval`)"
    assert first_change(deps) is not None  # a snapshot can't be checked without the namespace
