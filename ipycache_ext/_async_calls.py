"""The misses of an ``async def`` cached function: one computation per key, whatever the loop.

The store's single flight blocks a thread, which would block an event loop; so a miss
runs as a task of the first caller's loop, and its end is signalled through a
``concurrent.futures.Future``, which any loop can await without blocking
(``asyncio.wrap_future``). So concurrent awaiters of one key, in one loop or in several
(threads each running ``asyncio.run``), share one computation.

Cancellation follows the awaiters: one awaiter cancelled leaves the computation to the
others; the last one cancelled cancels it, and nothing is stored, so the next call
computes again. A computation cancelled under an awaiter that was not (its loop ended,
say) is started again for that awaiter.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import threading
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from . import _deps as deps
from ._engine import CacheEngine, Outcome, Plan, Request
from ._replay import ArgumentChanges, replay_arguments, served

__all__ = ["AsyncFlights"]

Start = Callable[[], Coroutine[Any, Any, Outcome]]


@dataclass(eq=False)
class _Flight:
    loop: asyncio.AbstractEventLoop
    task: asyncio.Task[Outcome] | None = None
    done: concurrent.futures.Future[Outcome] = field(default_factory=concurrent.futures.Future)
    waiters: int = 0

    def finished(self) -> bool:
        return self.done.done() or (self.task is not None and self.task.done())

    def cancel(self) -> None:
        """Cancel the computation, from any thread (a no-op once its loop is gone)."""
        task = self.task
        if task is None or task.done():
            return
        if self.loop.is_closed():
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self.loop:
            task.cancel()
        else:
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                self.loop.call_soon_threadsafe(task.cancel)


class AsyncFlights:
    """The computations of one cached async function in progress, by key, across loops."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._flights: dict[str, _Flight] = {}

    def __len__(self) -> int:
        with self._lock:
            return len(self._flights)

    async def fetch(
        self, engine: CacheEngine, request: Request, plan: Plan, start: Start, var_keyword: str | None = None
    ) -> Any:
        """The value for ``plan``: served at once if stored, else from the one computation.

        Arguments the computation changed in place are changed in this awaiter's too (each
        awaiter passed its own objects; ``var_keyword`` names the ``**kwargs`` parameter).
        """
        __tracebackhide__ = True
        hit = engine.peek(request, plan)
        if hit is not None:
            return served(hit, request, var_keyword).value
        loop = asyncio.get_running_loop()
        while True:
            flight = self._join(plan.key, loop, start)
            try:
                if flight.loop is loop:
                    assert flight.task is not None
                    # shield: one awaiter cancelled must not cancel what the others wait for
                    outcome = await asyncio.shield(flight.task)
                else:
                    outcome = await asyncio.shield(asyncio.wrap_future(flight.done))
            except (asyncio.CancelledError, concurrent.futures.CancelledError):
                if _caller_cancelled(flight):
                    self._leave(flight, cancel=True)
                    raise
                self._leave(flight)
                continue  # the computation was cancelled (its loop ended), not this caller
            except BaseException:
                self._leave(flight)
                raise
            self._leave(flight)
            if outcome.entry is not None and outcome.entry.dependencies:
                # what it read is a dependency of every awaiter's own computation, not only
                # of the one whose context the flight's task copied
                deps.note(outcome.entry.dependencies)
            value = engine.load(request.kind, outcome.stored)  # data: a copy for every awaiter
            if isinstance(value, ArgumentChanges):
                return replay_arguments(request.arguments, value, var_keyword)
            return value

    def _join(self, key: str, loop: asyncio.AbstractEventLoop, start: Start) -> _Flight:
        with self._lock:
            flight = self._flights.get(key)
            if flight is None or flight.finished():
                flight = self._flights[key] = _Flight(loop)
                flight.task = loop.create_task(self._run(flight, start))
                flight.task.add_done_callback(functools.partial(self._landed, key, flight))
            flight.waiters += 1
            return flight

    @staticmethod
    async def _run(flight: _Flight, start: Start) -> Outcome:
        __tracebackhide__ = True
        outcome = await start()
        flight.done.set_result(outcome)  # other loops' awaiters wake now, not a loop turn later
        return outcome

    def _leave(self, flight: _Flight, *, cancel: bool = False) -> None:
        with self._lock:
            flight.waiters -= 1
            last = flight.waiters == 0
        if cancel and last:
            flight.cancel()  # nobody waits for it any more

    def _landed(self, key: str, flight: _Flight, task: asyncio.Task[Outcome]) -> None:
        with self._lock:
            if self._flights.get(key) is flight:
                del self._flights[key]
        if flight.done.done():
            return
        if task.cancelled():
            flight.done.cancel()
        elif (error := task.exception()) is not None:  # retrieved: no "never retrieved" warning
            flight.done.set_exception(error)
        else:
            flight.done.set_result(task.result())


def _caller_cancelled(flight: _Flight) -> bool:
    """Whether this awaiter was cancelled (rather than the computation it waited for)."""
    task = asyncio.current_task()
    cancelling = getattr(task, "cancelling", None)  # Python 3.11+
    if cancelling is not None:
        return bool(cancelling())
    return not flight.done.cancelled() and not (flight.task is not None and flight.task.cancelled())
