"""Dynamic batching of latents from concurrent callers, in the manner of Ray Serve's _BatchQueue.

Callers `submit` latents and await a future. Runs happen on worker threads, off the event loop,
but for the inline ones (below).
A batch starts as soon as a model instance is free and
  - the queue holds a full batch (`max_batch_size` latents): flush reason "full";
  - nothing is computing: a lone request runs at once, no added latency at low load: "idle";
  - an instance computes already and the oldest request waited `max_queue_delay`: "timeout".
While a batch computes, the next one gathers. A request larger than a batch is split across
batches and reassembled in order. Latents whose caller went away, or whose deadline passed, are
dropped before they are computed. An error fails exactly the requests of its batch.
A free instance takes its share of what waits, 1/instances of it, and leaves the rest to the
next instance to free, which starts on it without waiting out the delay again: batches even out,
and none holds latents that another could start sooner.
With a wide lane (see dcgan.service.runtime), a handful of latents (no more than the instances)
arriving while nothing computes run wide instead, on every core, holding all instances until
done; but not while calls overlap (a run had company: another request arrived, waited or
computed beside it): a wide run would keep the next caller waiting for all of it, so lone
batches then run on one instance, until `WIDE_AFTER` runs in a row were alone.

Calls that come one at a time run their wide batch on the event loop itself ("inline"): handing a
lone batch to a worker thread and back wakes two sleeping threads, 0.2-0.3 ms of a 2.2 ms call
on a 2-core machine (BENCHMARKS.md). A blocked loop cannot see another caller arrive, so the
batcher only goes inline after `QUIET_RUNS` lone runs on a worker saw no other request arrive
while they computed, and sends every `PROBE_EVERY`-th lone run back to a worker to look again;
the first arrival during one of those runs ends the inline runs.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from dcgan.service.errors import DeadlineExceeded, ModelFailure, QueueFull
from dcgan.service.metrics import VersionMetrics
from dcgan.service.options import BatchingOptions
from dcgan.service.runtime import INLINE, PARALLEL, WIDE

Outputs = dict[str, npt.NDArray]  # type: ignore[type-arg]
RunBatch = Callable[
    [npt.NDArray[np.float32], frozenset[str], str], Outputs
]  # latents, kinds, lane (PARALLEL, WIDE or INLINE)
WIDE_AFTER = 2  # runs in a row alone in the batcher that end overlapping calls
QUIET_RUNS = 4  # lone runs on a worker with no other arrival before lone runs go inline
PROBE_EVERY = 16  # of the lone runs after that, this one in so many runs on a worker again


@dataclass(frozen=True)
class BatchResult:
    outputs: Outputs  # each [n, ...], in the order of the request's latents
    queue_s: float  # from submission to the start of the (first) run that computed them
    compute_s: float  # the runs that computed them, summed


@dataclass(eq=False)
class _Request:
    latents: npt.NDArray[np.float32]
    kinds: frozenset[str]
    deadline: float | None  # time.monotonic() by which it must be computed
    future: asyncio.Future[BatchResult]
    submitted: float
    remaining: int
    arrival: int  # its number among the batcher's requests, from 1
    outputs: Outputs = field(default_factory=dict)
    queue_s: float | None = None
    compute_s: float = 0.0

    def store(
        self,
        outputs: Outputs,
        start: int,
        offset: int,
        count: int,
        started: float,
        compute_s: float,
    ) -> None:
        """Keep batch rows [offset, offset + count) as this request's [start, start + count)."""
        whole = start == 0 and count == len(self.latents)
        for kind in self.kinds:
            rows = outputs[kind][offset : offset + count]
            if whole:
                self.outputs[kind] = rows
            else:
                if kind not in self.outputs:
                    self.outputs[kind] = np.empty((len(self.latents), *rows.shape[1:]), rows.dtype)
                self.outputs[kind][start : start + count] = rows
        if self.queue_s is None:
            self.queue_s = started - self.submitted
        self.compute_s += compute_s
        self.remaining -= count
        if self.remaining == 0 and not self.future.done():
            self.future.set_result(BatchResult(self.outputs, self.queue_s, self.compute_s))


@dataclass
class _Slice:
    """Latents [start, end) of a request, waiting in the queue."""

    request: _Request
    start: int
    end: int


@dataclass(frozen=True)
class _Part:
    """Latents [start, start + count) of a request, at rows [offset, offset + count) of a batch."""

    request: _Request
    start: int
    offset: int
    count: int


class DynamicBatcher:
    """Batches for `run_batch`, which runs up to `instances` batches in parallel.

    `wide_lane`: `run_batch(..., WIDE or INLINE)` runs one batch on every core, holding all
    instances.
    `inline_after`: quiet lone runs on a worker before lone runs go inline (None: never).
    """

    def __init__(
        self,
        run_batch: RunBatch,
        options: BatchingOptions,
        metrics: VersionMetrics,
        *,
        instances: int = 1,
        wide_lane: bool = False,
        inline_after: int | None = QUIET_RUNS,
    ) -> None:
        self._run_batch = run_batch
        self.options = options
        self._metrics = metrics
        self._instances = instances
        self._wide_lane = wide_lane
        self._inline_after = inline_after
        self._queue: deque[_Slice] = deque()
        self._queued = 0  # latents in the queue
        self._free = instances
        self._executor = ThreadPoolExecutor(instances, thread_name_prefix="model")
        self._timer: asyncio.TimerHandle | None = None
        self._quiet_runs = 0  # runs in a row alone in the batcher, on a worker, no one arriving
        self._inline_runs = 0  # inline runs since the last lone run on a worker
        self._arrivals = 0  # requests submitted so far: a run that sees this change was not alone
        self._concurrent = False  # calls overlap: lone batches run narrow, not wide
        # The requests up to this arrival were waiting when a batch last started: released, they
        # start with the next free instance, without waiting out the delay again.
        self._released = 0
        self._released_by = "idle"  # the flush reason that released them

    # ------------------------------------------------------------------------- callers

    async def submit(
        self, latents: npt.NDArray[np.float32], kinds: frozenset[str], deadline: float | None = None
    ) -> BatchResult:
        """Images of `latents` as the output `kinds`.

        Raises QueueFull, DeadlineExceeded or ModelFailure. A draining server still batches for
        the calls it accepted (dcgan.service.calls refuses the new ones).
        """
        count = len(latents)
        if self._queued + count > self.options.max_queue_size:
            raise QueueFull(
                f"the queue holds {self._queued} latents; {count} more would pass its limit of "
                f"{self.options.max_queue_size}"
            )
        loop = asyncio.get_running_loop()
        self._arrivals += 1
        request = _Request(
            latents, kinds, deadline, loop.create_future(), time.monotonic(), count, self._arrivals
        )
        self._queue.append(_Slice(request, 0, count))
        self._queued += count
        self._metrics.queue_depth.set(self._queued)
        self._schedule()
        return await request.future  # cancelled with the caller's RPC: its latents are dropped

    def shutdown(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def close(self) -> None:
        """Shut down, waiting (off the event loop) for a run still in progress, whose caller went
        away: afterwards no thread of this batcher touches the model."""
        self._executor.shutdown(wait=False, cancel_futures=True)
        await asyncio.to_thread(self._executor.shutdown, wait=True)

    @property
    def queued(self) -> int:
        return self._queued

    # ------------------------------------------------------------------------- scheduling

    def _schedule(self) -> None:
        """Start every batch the flush rules allow now; arm the delay timer otherwise."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        max_batch = self.options.max_batch_size
        share = max(1, -(-self._queued // self._instances))  # what an instance takes of it
        while self._free > 0 and self._queue:
            computing = self._free < self._instances
            oldest = self._queue[0].request
            waited = time.monotonic() - oldest.submitted
            if self._queued >= max_batch:
                reason = "full"
            elif not computing:
                reason = "idle"
            elif oldest.arrival <= self._released:
                reason = self._released_by
            elif waited >= self.options.max_queue_delay_s:
                reason = "timeout"
            else:
                delay = self.options.max_queue_delay_s - waited
                self._timer = asyncio.get_running_loop().call_later(delay, self._schedule)
                return
            # A handful of latents with nothing computing, calls one at a time: all cores on
            # them (low latency). Otherwise this instance's share of what waits.
            wide = (
                self._wide_lane
                and not computing
                and self._queued <= self._instances
                and not self._concurrent
            )
            parts = self._take(max_batch if wide else min(max_batch, share))
            if parts:
                self._released, self._released_by = self._arrivals, reason
                self._start(parts, reason, wide)
        self._metrics.queue_depth.set(self._queued)

    def _take(self, capacity: int) -> list[_Part]:
        """Up to `capacity` latents from the head of the queue, skipping abandoned ones."""
        parts: list[_Part] = []
        offset = 0
        now = time.monotonic()
        while self._queue and offset < capacity:
            piece = self._queue[0]
            request = piece.request
            if request.future.done():  # cancelled by its caller, or failed in an earlier batch
                self._drop(piece)
                if request.future.cancelled():
                    self._metrics.dropped["cancelled"].inc(piece.end - piece.start)
                continue
            if request.deadline is not None and now >= request.deadline:
                self._drop(piece)
                self._metrics.dropped["deadline"].inc(piece.end - piece.start)
                request.future.set_exception(
                    DeadlineExceeded("the deadline passed while the request waited in the queue")
                )
                continue
            count = min(piece.end - piece.start, capacity - offset)
            parts.append(_Part(request, piece.start, offset, count))
            offset += count
            self._queued -= count
            piece.start += count
            if piece.start == piece.end:
                self._queue.popleft()
        return parts

    def _drop(self, piece: _Slice) -> None:
        self._queue.popleft()
        self._queued -= piece.end - piece.start

    def _start(self, parts: list[_Part], reason: str, wide: bool) -> None:
        if (
            len(parts) == 1
            and parts[0].start == 0
            and parts[0].count == len(parts[0].request.latents)
        ):
            latents = parts[0].request.latents
        else:
            latents = np.concatenate(
                [p.request.latents[p.start : p.start + p.count] for p in parts]
            )
        kinds = frozenset().union(*(p.request.kinds for p in parts))
        # One request (it appears once in a batch), nothing else waiting or computing.
        alone = len(parts) == 1 and not self._queue and self._free == self._instances
        lane = (INLINE if alone and self._goes_inline() else WIDE) if wide else PARALLEL
        slots = self._instances if wide else 1
        self._free -= slots
        self._metrics.flushes[reason].inc()
        self._metrics.batch_size.observe(len(latents))
        self._metrics.runs[lane].inc()
        started = time.monotonic()
        arrivals = self._arrivals
        loop = asyncio.get_running_loop()
        if lane == INLINE:  # on this thread: the loop waits for the run, as the lone caller does
            run: asyncio.Future[tuple[Outputs, float]] = loop.create_future()
            try:
                run.set_result(self._timed_run(latents, kinds, lane))
            except Exception as error:
                run.set_exception(error)
            except BaseException:  # its callers are answered, the instances freed, then it goes on
                run.set_exception(ModelFailure("the model run was interrupted"))
                raise
        else:
            run = loop.run_in_executor(self._executor, self._timed_run, latents, kinds, lane)
        run.add_done_callback(
            lambda done: self._finish(parts, started, slots, done, lane, alone, arrivals)
        )

    def _goes_inline(self) -> bool:
        """Whether a lone batch runs on the event loop: calls have been coming one at a time,
        and this is not a run that looks again (on a worker) for a second caller."""
        if (
            self._inline_after is None
            or self._quiet_runs < self._inline_after
            or self._inline_runs + 1 >= PROBE_EVERY
        ):
            self._inline_runs = 0
            return False
        self._inline_runs += 1
        return True

    def _timed_run(
        self, latents: npt.NDArray[np.float32], kinds: frozenset[str], lane: str
    ) -> tuple[Outputs, float]:
        start = time.perf_counter()
        outputs = self._run_batch(latents, kinds, lane)
        return outputs, time.perf_counter() - start

    def _finish(
        self,
        parts: list[_Part],
        started: float,
        slots: int,
        done: asyncio.Future[tuple[Outputs, float]],
        lane: str,
        alone: bool,
        arrivals: int,
    ) -> None:
        self._free += slots
        arrived = self._arrivals != arrivals
        if lane == INLINE:  # a caller arriving before this ran was blocked behind the run
            self._quiet_runs = 0 if arrived else self._quiet_runs
        else:  # a run on a worker lets the loop see who arrives meanwhile
            self._quiet_runs = self._quiet_runs + 1 if alone and not arrived else 0
        if self._quiet_runs == 0:
            self._concurrent = True
        elif self._quiet_runs >= WIDE_AFTER:
            self._concurrent = False
        failure = self._failure(parts, done)
        if failure is not None:
            for part in parts:
                if not part.request.future.done():
                    part.request.future.set_exception(failure)
        else:
            outputs, compute_s = done.result()
            self._metrics.compute_seconds.observe(compute_s)
            for part in parts:
                request = part.request
                if request.future.done():
                    continue
                if request.queue_s is None:
                    self._metrics.queue_seconds.observe(started - request.submitted)
                request.store(outputs, part.start, part.offset, part.count, started, compute_s)
            self._metrics.images.inc(sum(part.count for part in parts))
        self._schedule()

    @staticmethod
    def _failure(
        parts: list[_Part], done: asyncio.Future[tuple[Outputs, float]]
    ) -> ModelFailure | None:
        """Why a finished run cannot answer its requests, if it cannot."""
        if done.cancelled():
            return ModelFailure("the model run was cancelled")
        error = done.exception()
        if error is not None:
            return (
                error if isinstance(error, ModelFailure) else ModelFailure("the model run failed")
            )
        outputs, _ = done.result()
        expected = sum(part.count for part in parts)
        for kind, array in outputs.items():
            if len(array) != expected:
                return ModelFailure(
                    f"the model returned {len(array)} {kind} for {expected} latents"
                )
        return None
