"""The global random generators: numpy's legacy ``np.random.*`` state and the ``random`` module's.

A computation that draws from one depends on its state before the run, and a hit must
leave it where the run left it. Use is detected by comparing the state before and after
(a ~3 KB copy each, only while a computation records); a ``seed()``/``set_state()`` call
made before any draw (the state is still the one from the start) means the prior state
did not matter. Only the generators of modules already imported when the computation
starts are watched: numpy imported for the first time inside it is seeded from the OS.
"""

from __future__ import annotations

import array
import base64
import functools
import json
import sys
from collections.abc import Callable
from types import ModuleType
from typing import Any

import xxhash

from ._state import LIVE, current

RNGS = ("numpy", "random")
_MODULE = {"numpy": "numpy.random", "random": "random"}
_SEEDERS = {"numpy.random": ("seed", "set_state"), "random": ("seed", "setstate")}
_MARK = "__ipycache_deps_original__"
DESCRIBED = {"numpy": "numpy's global random state", "random": "the `random` module's global state"}


def capture(rng: str) -> Any | None:
    """The live state of one global generator (raw), or None when its module isn't imported."""
    module = sys.modules.get(_MODULE[rng])
    if module is None:
        return None
    return module.get_state(legacy=False) if rng == "numpy" else module.getstate()


def _mt19937(state: Any) -> bool:
    return isinstance(state, dict) and state.get("bit_generator") == "MT19937"


def same(rng: str, a: Any, b: Any) -> bool:
    """Whether two raw states are equal (cheap: no copies, no digests)."""
    if rng == "numpy" and _mt19937(a) and _mt19937(b):
        sa, sb = a["state"], b["state"]
        return bool(
            sa["pos"] == sb["pos"] and a["has_gauss"] == b["has_gauss"] and a["gauss"] == b["gauss"]
            and (sa["key"] == sb["key"]).all()
        )  # fmt: skip
    if rng == "random":
        return bool(a == b)
    return bool(state_digest(rng, a) == state_digest(rng, b))


def state_digest(rng: str, state: Any) -> str:
    """The digest of a raw state (the same for a live state and one restored from JSON)."""
    if rng == "numpy" and _mt19937(state):
        inner = state["state"]
        tail = f"{inner['pos']},{state['has_gauss']},{state['gauss']!r}".encode()
        return xxhash.xxh3_128_hexdigest(inner["key"].tobytes() + tail)
    if rng == "random":
        version, internal, gauss = state
        try:
            words = array.array("I", internal).tobytes()
        except OverflowError:
            words = repr(internal).encode()
        return xxhash.xxh3_128_hexdigest(words + f"{version},{gauss!r}".encode())
    return xxhash.xxh3_128_hexdigest(json.dumps(_to_json(state), sort_keys=True).encode())


def to_json(rng: str, state: Any) -> Any:
    """A raw state as plain JSON, to be replayed after a restart."""
    if rng == "random":
        version, internal, gauss = state
        return [version, list(internal), gauss]
    return _to_json(state)


def _to_json(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _to_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_to_json(v) for v in value]
    if hasattr(value, "dtype") and hasattr(value, "tobytes"):
        if getattr(value, "shape", ()) == ():
            return value.item()
        return {"__ndarray__": value.dtype.str, "shape": list(value.shape),
                "b64": base64.b64encode(value.tobytes()).decode("ascii")}  # fmt: skip
    return value


def _from_json(value: Any) -> Any:
    if isinstance(value, dict):
        if "__ndarray__" in value:
            import numpy as np

            data = np.frombuffer(base64.b64decode(value["b64"]), dtype=value["__ndarray__"])
            return data.reshape(value["shape"]).copy()
        return {k: _from_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_from_json(v) for v in value]
    return value


def current_digest(rng: str) -> str | None:
    state = capture(rng)
    return None if state is None else state_digest(rng, state)


def restore(rng: str, state_json: Any) -> None:
    """Set a global generator to a recorded state (with the original setter: not a seed call)."""
    module: Any = sys.modules.get(_MODULE[rng])
    if module is None:
        if rng == "numpy":
            return  # numpy is not imported in this kernel: nothing can draw from it
        import random as module
    if rng == "numpy":
        setter = module.set_state
        getattr(setter, _MARK, setter)(_from_json(state_json))
    else:
        version, internal, gauss = state_json
        setter = module.setstate
        getattr(setter, _MARK, setter)((version, tuple(internal), gauss))


def _seeding(rng: str, func: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        obs = current() if LIVE[0] else None
        if obs is not None:
            now = capture(rng)
            while obs is not None:  # every enclosing recording judges this call too
                if rng not in obs.rng_decided and rng in obs.rng_before:
                    obs.rng_decided.add(rng)
                    if same(rng, now, obs.rng_before[rng]):
                        obs.rng_seeded.add(rng)  # nothing was drawn before: the prior state is moot
                obs = obs.parent
        return func(*args, **kwargs)

    setattr(wrapper, _MARK, func)
    return wrapper


def wrap_seeding(module: ModuleType) -> None:
    rng = "numpy" if module.__name__ == "numpy.random" else "random"
    for name in _SEEDERS[module.__name__]:
        func = getattr(module, name, None)
        if func is not None and not hasattr(func, _MARK):
            setattr(module, name, _seeding(rng, func))


def before_all() -> dict[str, Any]:
    """The raw states at the start of a computation (of the modules imported by then)."""
    states = {}
    for rng in RNGS:
        state = capture(rng)
        if state is not None:
            states[rng] = state
    return states
