"""``recording()``: run a computation while noting what it reads, then turn that into records."""

from __future__ import annotations

import os
from collections.abc import Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from . import _audit, _environ, _native, _records, _rng
from ._state import CURRENT, Observations, begin, end, suspended


class Recording:
    """What one computation read; ``dependencies()`` once it has finished."""

    def __init__(self, observations: Observations, declared: Sequence[str], declared_cwd: str, *,
                 namespace: Mapping[str, Any] | None, dynamic: str | None,
                 exclude: Collection[str], watch_cwd: bool = True) -> None:  # fmt: skip
        self._obs = observations
        self._declared = tuple(declared)
        self._declared_cwd = declared_cwd
        self._namespace = namespace
        self.dynamic = dynamic  # the construct that reads names dynamically (None: none found)
        self._exclude = tuple(exclude)
        self._namespace_before: dict[str, str] = {}
        if namespace is not None:  # the values the computation may read, as they are before it runs
            from ._dynamic import namespace_digests

            with suspended():
                self._namespace_before = namespace_digests(namespace, self._exclude)
        self._end_cwd = observations.cwd
        self._watch_cwd = watch_cwd  # a change of working directory is an effect of the computation
        self._rng_after: dict[str, Any] = {}
        self._finished = False
        self._records: tuple[dict[str, Any], ...] | None = None

    def _finish(self) -> None:
        """At the end of the run: the cheap facts that would drift if taken later."""
        self._finished = True
        try:
            if self._watch_cwd:  # else: as it started (relative reads still depend on that)
                self._end_cwd = os.getcwd()
        except OSError:
            self._obs.errors.append("the working directory was removed")
        for rng, before in self._obs.rng_before.items():
            state = _rng.capture(rng)
            if state is not None and not _rng.same(rng, state, before):
                self._rng_after[rng] = (_rng.state_digest(rng, before), _rng.to_json(rng, state))

    def dependencies(self) -> tuple[dict[str, Any], ...]:
        """The JSON-able records, sorted (hashes each input file once, on the first call)."""
        if self._records is None:
            if not self._finished:
                raise RuntimeError("dependencies() is known once the recording has ended")
            with suspended():
                records = _records.finalize(self._obs, self._declared, self._declared_cwd,
                                            self._end_cwd, self._rng_after)  # fmt: skip
                if self._namespace is not None:
                    from ._dynamic import namespace_record

                    via = self.dynamic or "a dynamic read"
                    before = self._namespace_before
                    records.append(namespace_record(before, self._namespace, via=via, exclude=self._exclude))
            self._records = tuple(records)
        return self._records


_installed: list[bool] = []


def _install() -> None:
    if not _installed:
        _audit.install()
        _environ.install()
        _native.install()
        _installed.append(True)


@contextmanager
def recording(*, declared: Sequence[str] = (), cwd: str | None = None,
              namespace: Mapping[str, Any] | None = None, dynamic: str | None = None,
              exclude: Collection[str] = (), process_state: bool = True) -> Iterator[Recording]:  # fmt: skip
    """Record what the body reads, for this context only (not other threads or cells).

    ``declared``: paths or globs the computation depends on that can't be seen (a
    subprocess's input); relative ones resolve against ``cwd`` (default: the working
    directory now). ``namespace``: when the code reads names dynamically (``dynamic``, from
    ``dynamic_reads``), the namespace whose variables (less ``exclude``) become dependencies.
    ``process_state=False``: the global generators' state and a change of working directory
    are not watched (a coroutine's body: while it awaits, other tasks draw from the same
    generators and may ``chdir``, which would be taken for its own).
    """
    _install()
    try:
        start = os.getcwd()
    except OSError:  # the working directory was removed: relative reads will say so
        start = ""
    obs = Observations(cwd=start)
    obs.parent = CURRENT.get()
    obs.rng_before = _rng.before_all() if process_state else {}
    result = Recording(obs, declared, cwd or start, namespace=namespace, dynamic=dynamic, exclude=exclude,
                       watch_cwd=process_state)  # fmt: skip
    token = begin(obs)
    try:
        yield result
    finally:
        end(token, obs)
        result._finish()
        if obs.parent is not None:
            obs.parent.absorb(obs)
