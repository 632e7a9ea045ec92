"""The calls a server has accepted: what a drain refuses, waits for, and stops at the grace's end.

A call is accepted when its handler starts, before any of its work. From the start of a drain,
new calls are refused with Unavailable, while accepted ones carry on: a stream keeps sending its
chunks, however many it has left. The drain returns once every accepted call has ended. Calls
still running when the grace runs out are stopped, each marked `cut` so that its handler can end
it with a status that says why.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from dcgan.service.errors import Unavailable
from dcgan.service.metrics import ServiceMetrics

CUT_WAIT_S = 1.0  # how long stopped calls get to send their status before the server stops


@dataclass(eq=False)
class AcceptedCall:
    method: str
    task: asyncio.Task[object] | None = field(repr=False)
    cut: bool = False  # stopped at the end of a drain's grace


class AcceptedCalls:
    """Every accepted call of one server, counted by method in `dcgan_in_flight_calls`."""

    def __init__(self, metrics: ServiceMetrics) -> None:
        self._metrics = metrics
        self._calls: set[AcceptedCall] = set()
        self._draining = False
        self._none_left = asyncio.Event()
        self.grace_s = 0.0  # the grace of the drain under way

    @contextmanager
    def accept(self, method: str) -> Iterator[AcceptedCall]:
        """Hold the current task's call as accepted while its handler runs; refused in a drain."""
        if self._draining:
            raise Unavailable("the server is draining: send the request to another replica")
        call = AcceptedCall(method, asyncio.current_task())
        self._calls.add(call)
        self._metrics.in_flight.labels(method).inc()
        try:
            yield call
        finally:
            self._calls.discard(call)
            self._metrics.in_flight.labels(method).dec()
            if not self._calls:
                self._none_left.set()

    def __len__(self) -> int:
        return len(self._calls)

    async def drain(self, grace_s: float) -> list[AcceptedCall]:
        """Refuse new calls and wait for the accepted ones; those left at the grace's end are
        stopped and returned."""
        self._draining = True
        self.grace_s = grace_s
        if not self._calls:
            return []
        self._none_left.clear()
        try:
            await asyncio.wait_for(self._none_left.wait(), grace_s)
            return []
        except TimeoutError:
            pass
        cut = list(self._calls)
        for call in cut:
            call.cut = True
            if call.task is not None:
                call.task.cancel()
        with contextlib.suppress(TimeoutError):  # each stopped handler sends its status
            await asyncio.wait_for(self._none_left.wait(), CUT_WAIT_S)
        return cut
