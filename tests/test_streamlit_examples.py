"""The examples of Streamlit's caching docs, run unchanged apart from the import line.

Each example is the docs' code with its external service replaced by a local one (a
SQLite file for Postgres, a sleeping function for the HTTP API, a small class holding a
lock for the ML model), run as a notebook runs it: its functions' globals are the
namespace the code ran in. Every example also runs under Streamlit itself when it is
installed, with the same results: proof that the code is Streamlit's, not ours.
"""

from __future__ import annotations

import logging
import sqlite3
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from ipycache_ext import CacheStore
from ipycache_ext._decorators import cache_data, cache_resource

from .test_decorators import Tracker

OURS = "from ipycache_ext import cache_data, cache_resource"
THEIRS = "from streamlit import cache_data, cache_resource"


@pytest.fixture
def cached(store: CacheStore, monkeypatch: pytest.MonkeyPatch) -> CacheStore:
    monkeypatch.setattr(cache_data, "store", store)
    monkeypatch.setattr(cache_resource, "store", store)
    return store


@pytest.fixture
def database(tmp_path: Path) -> Path:
    path = tmp_path / "shop.db"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE sales (item TEXT, amount INTEGER)")
        db.executemany("INSERT INTO sales VALUES (?, ?)", [("tea", 3), ("cake", 5), ("tea", 2)])
    return path


def run(source: str, import_line: str = OURS, **names: Any) -> dict[str, Any]:
    """Run an example as a notebook would, after ``import_line``."""
    namespace: dict[str, Any] = {"__name__": "notebook", **names}
    exec(import_line + "\n" + textwrap.dedent(source), namespace)
    return namespace


# --------------------------------------------------------------------------- the examples
DATAFRAME_TRANSFORM = """
import numpy as np
import pandas as pd

@cache_data
def transform(df):
    df = df.filter(items=["one", "three"])
    df = df.apply(np.sum, axis=0)
    return df

df = pd.DataFrame({"one": [1, 2], "two": [3, 4], "three": [5, 6]})
first = transform(df)
second = transform(df)
"""

ARRAY_ADD = """
import numpy as np

@cache_data
def add(arr1, arr2):
    return arr1 + arr2

a, b = np.arange(5), np.ones(5)
first = add(a, b)
second = add(a, b)
b[0] = 10  # changed in place: another entry
third = add(a, b)
"""

API_CALL = """
@cache_data
def api_call():
    response = requests.get("https://jsonplaceholder.typicode.com/posts/1")
    return response.json()

first = api_call()
second = api_call()
"""

MODEL_INFERENCE = """
@cache_resource
def load_model():
    return pipeline("sentiment-analysis")

model = load_model()

@cache_data
def run_model(inputs):
    return model(inputs)

first = run_model("This is a test!")
second = run_model("This is a test!")
"""

RESOURCE_CONNECTION = """
@cache_resource
def init_connection():
    return sqlite3.connect(DATABASE, check_same_thread=False)

conn = init_connection()

@cache_data(ttl=600)
def run_query(query):
    return conn.execute(query).fetchall()

rows = run_query("SELECT * FROM sales;")
again = run_query("SELECT * FROM sales;")
same_connection = init_connection() is conn
"""

MODEL_LOADER = """
@cache_resource
def load_model():
    model = Model()
    model.eval()
    return model

first = load_model()
second = load_model()
"""

SEED_CONNECTION = """
connection = sqlite3.connect(DATABASE, check_same_thread=False)

@cache_data
def query():
    return pd.read_sql_query("SELECT * FROM sales", connection)

first = query()
second = query()
"""


# --------------------------------------------------------------------------- local stand-ins
class Response:
    def __init__(self, payload: dict[str, Any]) -> None:
        self._payload = payload

    def json(self) -> dict[str, Any]:
        return dict(self._payload)


class Requests:
    """``requests.get``, slow as a network call, counting its calls (hashes the same throughout)."""

    def __init__(self) -> None:
        self.tracker = Tracker()

    def get(self, url: str) -> Response:
        import time

        self.tracker.called()
        time.sleep(0.05)
        return Response({"userId": 1, "id": 1, "url": url})

    def __reduce__(self) -> tuple[Any, ...]:
        return (Requests, ())


class Model:
    """A model as most real ones are: it holds a lock, so it can't be hashed by content."""

    def __init__(self) -> None:
        import threading

        self._lock = threading.Lock()
        self.training = True

    def eval(self) -> Model:
        self.training = False
        return self

    def __call__(self, text: str) -> list[dict[str, Any]]:
        with self._lock:
            return [{"label": "POSITIVE", "score": round(len(text) / 100, 2)}]


def pipeline(task: str) -> Model:
    assert task == "sentiment-analysis"
    return Model()


# --------------------------------------------------------------------------- the tests
def test_dataframe_transform(cached: CacheStore) -> None:
    ns = run(DATAFRAME_TRANSFORM)
    assert ns["first"].to_dict() == ns["second"].to_dict() == {"one": 3, "three": 11}
    assert ns["first"] is not ns["second"]  # a copy for every call
    assert (cached.stats().misses, cached.stats().hits) == (1, 1)


def test_array_add(cached: CacheStore) -> None:
    ns = run(ARRAY_ADD)
    assert ns["first"].tolist() == ns["second"].tolist() == [1.0, 2.0, 3.0, 4.0, 5.0]
    assert ns["third"].tolist() == [10.0, 2.0, 3.0, 4.0, 5.0]
    assert (cached.stats().misses, cached.stats().hits) == (2, 1)


def test_api_call(cached: CacheStore) -> None:
    requests = Requests()
    ns = run(API_CALL, requests=requests)
    assert (
        ns["first"]
        == ns["second"]
        == {"userId": 1, "id": 1, "url": "https://jsonplaceholder.typicode.com/posts/1"}
    )
    assert requests.tracker.calls == 1


def test_model_inference_reads_the_cached_model_as_a_global(cached: CacheStore) -> None:
    ns = run(MODEL_INFERENCE, pipeline=pipeline)
    assert ns["first"] == ns["second"] == [{"label": "POSITIVE", "score": 0.15}]
    assert (cached.stats().misses, cached.stats().hits) == (2, 1)  # load_model, then run_model once
    # the model is keyed by which resource it is: loaded again, it is the same input...
    ns["load_model"].clear()
    ns["model"] = ns["load_model"]()
    assert ns["run_model"]("This is a test!") == ns["first"]
    assert (cached.stats().misses, cached.stats().hits) == (3, 2)
    # ...while a model from elsewhere is another one
    ns["model"] = pipeline("sentiment-analysis")
    assert ns["run_model"]("This is a test!") == ns["first"]
    assert cached.stats().misses == 4


def test_cache_resource_connection_read_by_a_cached_query(cached: CacheStore, database: Path) -> None:
    ns = run(RESOURCE_CONNECTION, sqlite3=sqlite3, DATABASE=str(database))
    assert ns["rows"] == ns["again"] == [("tea", 3), ("cake", 5), ("tea", 2)]
    assert ns["same_connection"] is True
    labels = sorted(e.label for e in cached.entries())
    assert labels == ["init_connection()", "run_query(query='SELECT * FROM sales;')"]
    run_query = next(e for e in cached.entries() if e.label.startswith("run_query"))
    assert run_query.hits == 1


def test_cache_resource_model_loader(cached: CacheStore) -> None:
    ns = run(MODEL_LOADER, Model=Model)
    assert ns["first"] is ns["second"]
    assert ns["first"].training is False


def test_seed_pattern_a_plain_connection_global_and_a_cached_query(
    cached: CacheStore, database: Path
) -> None:
    """Issue 10's first seed: the connection is no resource; it is keyed by its identity."""
    import pandas as pd

    ns = run(SEED_CONNECTION, sqlite3=sqlite3, pd=pd, DATABASE=str(database))
    assert ns["first"].to_dict("records") == ns["second"].to_dict("records")
    assert ns["first"]["amount"].sum() == 10
    assert (cached.stats().misses, cached.stats().hits) == (1, 1)
    ns["connection"] = sqlite3.connect(str(database), check_same_thread=False)  # another connection
    ns["query"]()
    assert cached.stats().misses == 2
    assert "keyed by identity" in (cached.entries()[-1].miss_reason or "")


# --------------------------------------------------------------------------- and under Streamlit itself
def _extra_names(database: Path) -> dict[str, Any]:
    import pandas as pd

    names: dict[str, Any] = {"sqlite3": sqlite3, "pd": pd, "DATABASE": str(database), "Model": Model}
    names["pipeline"] = pipeline
    names["requests"] = Requests()
    return names


EXAMPLES: dict[str, tuple[str, Callable[[dict[str, Any]], Any]]] = {
    "dataframe transform": (DATAFRAME_TRANSFORM, lambda ns: (ns["first"].to_dict(), ns["second"].to_dict())),
    "array add": (ARRAY_ADD, lambda ns: (ns["first"].tolist(), ns["third"].tolist())),
    "api call": (API_CALL, lambda ns: (ns["first"], ns["requests"].tracker.calls)),
    "model inference": (MODEL_INFERENCE, lambda ns: (ns["first"], ns["second"])),
    "resource connection": (RESOURCE_CONNECTION, lambda ns: (ns["rows"], ns["again"], ns["same_connection"])),
    "model loader": (MODEL_LOADER, lambda ns: (ns["first"] is ns["second"], ns["first"].training)),
    "seed connection": (SEED_CONNECTION, lambda ns: ns["first"].to_dict("records")),
}


@pytest.mark.parametrize("example", list(EXAMPLES))
def test_each_example_gives_what_streamlit_gives(cached: CacheStore, database: Path, example: str) -> None:
    st = pytest.importorskip("streamlit")
    for name in ["streamlit", *logging.root.manager.loggerDict]:
        if name.startswith("streamlit"):
            logging.getLogger(name).setLevel(logging.CRITICAL)
    source, result = EXAMPLES[example]
    theirs = result(run(source, THEIRS, **_extra_names(database)))
    ours = result(run(source, OURS, **_extra_names(database)))
    assert ours == theirs
    st.cache_data.clear()
    st.cache_resource.clear()
