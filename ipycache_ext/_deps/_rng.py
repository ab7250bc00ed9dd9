"""The global random generators: numpy's legacy ``np.random.*`` state and the ``random`` module's.

A computation that draws from one depends on its state before the run, and a hit must
leave it where the run left it. Use is detected by comparing the state before and after
(a ~3 KB copy each, only while a computation records); a ``seed()``/``set_state()`` call
made before any draw (the state is still the one from the start) means the prior state
did not matter. Only the generators of modules already imported when the computation
starts are watched: numpy imported for the first time inside it is seeded from the OS.
"""

from __future__ import annotations

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
    """The live state of one global generator, or None when its module isn't imported."""
    module = sys.modules.get(_MODULE[rng])
    if module is None:
        return None
    getter = module.get_state if rng == "numpy" else module.getstate
    return getter(legacy=False) if rng == "numpy" else getter()


def to_json(value: Any) -> Any:
    """A state as plain JSON (arrays as base64 bytes with their dtype)."""
    if isinstance(value, dict):
        return {str(k): to_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_json(v) for v in value]
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


def state_digest(state_json: Any) -> str:
    return xxhash.xxh3_128_hexdigest(json.dumps(state_json, sort_keys=True).encode())


def current_digest(rng: str) -> str | None:
    state = capture(rng)
    return None if state is None else state_digest(to_json(state))


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
            now: str | None = None
            while obs is not None:  # every enclosing recording judges this call too
                if rng not in obs.rng_decided and rng in obs.rng_before:
                    now = current_digest(rng) if now is None else now
                    obs.rng_decided.add(rng)
                    if now == obs.rng_before[rng]:
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


def before_all() -> dict[str, str]:
    """Digests of the states at the start of a computation (modules imported by then)."""
    states = {}
    for rng in RNGS:
        digest = current_digest(rng)
        if digest is not None:
            states[rng] = digest
    return states
