"""The dynamic batcher on its own, with a plain function as the model it batches for."""

from __future__ import annotations

import asyncio
import functools
import threading
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import Any

import numpy as np
import pytest

from dcgan.service.batcher import PROBE_EVERY, QUIET_RUNS, WIDE_AFTER, DynamicBatcher
from dcgan.service.errors import DeadlineExceeded, ModelFailure, QueueFull
from dcgan.service.metrics import ServiceMetrics
from dcgan.service.options import BatchingOptions
from dcgan.service.runtime import INLINE, PARALLEL, WIDE

KINDS = frozenset({"values"})
MODEL, VERSION = "model", 1  # the labels of the batcher's metrics


class Model:
    """Doubles its latents; records every batch; can be held mid-run and made to fail."""

    def __init__(self) -> None:
        self.batches: list[np.ndarray] = []
        self.wide: list[bool] = []
        self.threads: list[int] = []  # the thread each run ran on
        self.lanes: list[str] = []
        self.release = threading.Event()
        self.release.set()
        self.gates: dict[int, threading.Event] = {}  # call index -> what that call waits for
        self.fail_on: float | None = None  # a latent value that makes the run raise
        self.short_by = 0  # return this many rows fewer than given
        self.run_s = 0.0  # how long each run takes, at the least

    def __call__(self, latents: np.ndarray, kinds: frozenset[str], lane: str) -> dict[str, Any]:
        call = len(self.batches)
        self.batches.append(latents.copy())
        self.wide.append(lane != PARALLEL)
        self.lanes.append(lane)
        self.threads.append(threading.get_ident())
        self.gates.get(call, self.release).wait(timeout=10)
        time.sleep(self.run_s)
        if self.fail_on is not None and (latents == self.fail_on).any():
            raise RuntimeError("boom")
        return {"values": latents[: len(latents) - self.short_by] * 2}

    @property
    def sizes(self) -> list[int]:
        return [len(batch) for batch in self.batches]


def latents(value: float, count: int = 1) -> np.ndarray:
    return np.full((count, 3), value, dtype=np.float32)


@asynccontextmanager
async def batching(
    model: Model,
    metrics: ServiceMetrics | None = None,
    instances: int = 1,
    wide_lane: bool = False,
    **options: Any,
) -> AsyncIterator[DynamicBatcher]:
    """A batcher for `model`; afterwards, pass or fail, the model is released and it shuts down."""
    batcher = DynamicBatcher(
        model,
        BatchingOptions(**options),
        (ServiceMetrics() if metrics is None else metrics).for_version(MODEL, VERSION),
        instances=instances,
        wide_lane=wide_lane,
    )
    try:
        yield batcher
    finally:
        model.release.set()
        for gate in model.gates.values():
            gate.set()
        batcher.shutdown()


def scenario(test: Callable[[], Coroutine[Any, Any, None]]) -> Callable[[], None]:
    """An async test, run on an event loop of its own."""

    @functools.wraps(test)
    def run() -> None:
        asyncio.run(test())

    return run


def counter(metrics: ServiceMetrics, name: str, **labels: str) -> float:
    labels = {"model": MODEL, "version": str(VERSION), **labels}
    value = metrics.registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


async def until(predicate: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out waiting"
        await asyncio.sleep(0.001)


async def occupy(batcher: DynamicBatcher, model: Model, value: float = 0) -> asyncio.Task[Any]:
    """One request the model holds (until `model.release` is set), so later ones must queue."""
    model.release.clear()
    held = asyncio.create_task(batcher.submit(latents(value), KINDS))
    await until(lambda: len(model.batches) == 1)
    return held


@scenario
async def test_a_lone_request_runs_at_once_and_a_full_queue_flushes_by_size() -> None:
    model, metrics = Model(), ServiceMetrics()
    async with batching(model, metrics, max_batch_size=4, max_queue_delay_s=10.0) as batcher:
        first = await occupy(batcher, model)  # nothing was computing: ran at once
        rest = [asyncio.create_task(batcher.submit(latents(i), KINDS)) for i in range(1, 9)]
        await until(lambda: batcher.queued == 8)
        assert counter(metrics, "dcgan_queue_depth") == 8
        model.release.set()
        results = await asyncio.gather(first, *rest)
        assert model.sizes == [1, 4, 4]
        assert counter(metrics, "dcgan_queue_depth") == 0
        for i, result in enumerate(results):
            np.testing.assert_array_equal(result.outputs["values"], latents(i) * 2)
        assert counter(metrics, "dcgan_batch_flushes_total", reason="idle") == 1
        assert counter(metrics, "dcgan_batch_flushes_total", reason="full") == 2


@scenario
async def test_the_queue_delay_flushes_a_partial_batch_while_another_computes() -> None:
    model, metrics = Model(), ServiceMetrics()
    async with batching(
        model, metrics, instances=2, max_batch_size=16, max_queue_delay_s=0.05
    ) as batcher:
        blocker = await occupy(batcher, model)
        begin = time.monotonic()
        waiting = [asyncio.create_task(batcher.submit(latents(i, 4), KINDS)) for i in (1, 2)]
        await until(lambda: len(model.batches) == 2)
        assert time.monotonic() - begin >= 0.045  # held for the delay, then flushed partial
        # the free instance takes its share, half of the 8 latents waiting: one request's 4
        assert model.sizes == [1, 4] and batcher.queued == 4
        assert counter(metrics, "dcgan_batch_flushes_total", reason="timeout") == 1
        model.release.set()
        results = await asyncio.gather(blocker, *waiting)
        assert sum(model.sizes) == 9  # every latent computed once
        for value, result in zip((1, 2), results[1:], strict=True):
            np.testing.assert_array_equal(result.outputs["values"], latents(value, 4) * 2)


@scenario
async def test_without_a_queue_delay_a_freed_instance_starts_on_what_waits_at_once() -> None:
    model, metrics = Model(), ServiceMetrics()
    async with batching(model, metrics, instances=2) as batcher:  # the default delay: none
        blocker = await occupy(batcher, model)
        waiting = asyncio.create_task(batcher.submit(latents(1, 3), KINDS))
        await until(lambda: len(model.batches) == 2)  # beside the blocker, no wait
        assert model.sizes == [1, 2] and batcher.queued == 1  # its share: 2 of the 3
        model.release.set()
        await asyncio.gather(blocker, waiting)
        assert model.sizes == [1, 2, 1]
        np.testing.assert_array_equal(waiting.result().outputs["values"], latents(1, 3) * 2)


@scenario
async def test_a_request_larger_than_a_batch_is_split_and_reassembled_in_order() -> None:
    model = Model()
    model.run_s = 0.02
    async with batching(model, max_batch_size=4) as batcher:
        values = np.arange(30, dtype=np.float32).reshape(10, 3)
        result = await batcher.submit(values, KINDS)
        assert model.sizes == [4, 4, 2]
        np.testing.assert_array_equal(result.outputs["values"], values * 2)
        # the three runs, one after another: queued until the first began, computing in all
        assert result.compute_s >= 3 * model.run_s
        assert result.queue_s < model.run_s


@scenario
async def test_requests_share_batches_and_each_gets_its_own_rows() -> None:
    model = Model()
    async with batching(model, max_batch_size=5) as batcher:
        blocker = await occupy(batcher, model, -1)
        sizes = [3, 1, 4, 2]
        tasks = [
            asyncio.create_task(batcher.submit(latents(i, n), KINDS)) for i, n in enumerate(sizes)
        ]
        await until(lambda: batcher.queued == 10)
        model.release.set()
        results = await asyncio.gather(*tasks)
        await blocker
        assert model.sizes == [1, 5, 5]  # request 2 straddles two batches
        for i, (n, result) in enumerate(zip(sizes, results, strict=True)):
            np.testing.assert_array_equal(result.outputs["values"], latents(i, n) * 2)


@scenario
async def test_an_expired_deadline_drops_the_latents_before_they_run() -> None:
    model, metrics = Model(), ServiceMetrics()
    async with batching(model, metrics, max_batch_size=4) as batcher:
        blocker = await occupy(batcher, model)
        late = asyncio.create_task(
            batcher.submit(latents(7, 2), KINDS, deadline=time.monotonic() + 0.01)
        )
        await asyncio.sleep(0.05)
        model.release.set()
        with pytest.raises(DeadlineExceeded):
            await late
        await blocker
        assert model.sizes == [1]  # the late latents never reached the model
        assert counter(metrics, "dcgan_dropped_latents_total", reason="deadline") == 2


@scenario
async def test_a_cancelled_request_is_not_computed() -> None:
    model, metrics = Model(), ServiceMetrics()
    async with batching(model, metrics, max_batch_size=4) as batcher:
        blocker = await occupy(batcher, model)
        gone = asyncio.create_task(batcher.submit(latents(5, 3), KINDS))
        kept = asyncio.create_task(batcher.submit(latents(6), KINDS))
        await until(lambda: batcher.queued == 4)
        gone.cancel()
        model.release.set()
        await asyncio.gather(blocker, kept)
        assert model.sizes == [1, 1]
        assert (model.batches[1] == 6).all()
        assert counter(metrics, "dcgan_dropped_latents_total", reason="cancelled") == 3


@scenario
async def test_an_error_fails_exactly_the_requests_of_its_batch() -> None:
    model = Model()
    async with batching(model, max_batch_size=2) as batcher:
        model.fail_on = 3.0
        blocker = await occupy(batcher, model)
        tasks = [asyncio.create_task(batcher.submit(latents(v), KINDS)) for v in (1, 2, 3, 4, 5)]
        await until(lambda: batcher.queued == 5)
        model.release.set()
        results = await asyncio.gather(blocker, *tasks, return_exceptions=True)
        assert model.sizes == [1, 2, 2, 1]  # batches [0] [1 2] [3 4] [5]
        failed = [isinstance(result, ModelFailure) for result in results]
        assert failed == [False, False, False, True, True, False]


@scenario
async def test_a_model_returning_too_few_rows_fails_its_batch() -> None:
    model = Model()
    model.short_by = 1
    async with batching(model) as batcher:
        with pytest.raises(ModelFailure, match="returned 1 values for 2 latents"):
            await batcher.submit(latents(1, 2), KINDS)


@scenario
async def test_a_full_queue_refuses_and_finishes_what_it_accepted() -> None:
    model = Model()
    async with batching(model, max_batch_size=4, max_queue_size=6) as batcher:
        blocker = await occupy(batcher, model)
        accepted = asyncio.create_task(batcher.submit(latents(1, 5), KINDS))
        await until(lambda: batcher.queued == 5)
        with pytest.raises(QueueFull, match="limit of 6"):
            await batcher.submit(latents(2, 2), KINDS)
        model.release.set()
        await asyncio.gather(accepted, blocker)
        np.testing.assert_array_equal(accepted.result().outputs["values"], latents(1, 5) * 2)
        assert batcher.queued == 0
        # room again: the batcher refuses by its queue's size alone, never by a state of its own
        again = await batcher.submit(latents(3, 6), KINDS)
        np.testing.assert_array_equal(again.outputs["values"], latents(3, 6) * 2)


@scenario
async def test_a_wide_lane_takes_lone_latents_and_the_load_spreads_over_instances() -> None:
    model, metrics = Model(), ServiceMetrics()
    async with batching(model, metrics, max_batch_size=4, instances=2, wide_lane=True) as batcher:
        await batcher.submit(latents(0), KINDS)  # call 0, alone: wide, on every core
        lone_done = threading.Event()
        model.gates[1] = lone_done
        model.release.clear()  # calls 2 and later wait for it
        lone = asyncio.create_task(batcher.submit(latents(1), KINDS))
        await until(lambda: len(model.batches) == 2)
        queued = [asyncio.create_task(batcher.submit(latents(v, 3), KINDS)) for v in (2, 3)]
        await until(lambda: batcher.queued == 6)
        assert len(model.batches) == 2  # the wide run holds both instances
        lone_done.set()
        await until(lambda: len(model.batches) == 4)  # both parallel sessions at work at once
        model.release.set()
        await asyncio.gather(lone, *queued)
        # the 6 waiting latents were split 3 + 3 over the two parallel sessions
        assert model.wide == [True, True, False, False] and model.sizes == [1, 1, 3, 3]
        assert counter(metrics, "dcgan_model_runs_total", lane="parallel") == 2
        assert counter(metrics, "dcgan_model_runs_total", lane="wide") == 2


@scenario
async def test_what_a_flush_left_to_the_next_instance_does_not_wait_out_the_delay() -> None:
    model, metrics = Model(), ServiceMetrics()
    async with batching(
        model, metrics, instances=2, max_batch_size=4, max_queue_delay_s=10.0
    ) as batcher:
        blocker = await occupy(batcher, model)
        share_gate = threading.Event()
        model.gates[1] = share_gate
        queued = [asyncio.create_task(batcher.submit(latents(v), KINDS)) for v in range(1, 5)]
        await until(lambda: len(model.batches) == 2)  # a full batch waits: its share starts
        assert model.sizes == [1, 2] and batcher.queued == 2
        share_gate.set()
        await until(lambda: len(model.batches) == 3, timeout=2.0)  # not after 10 s
        assert model.sizes == [1, 2, 1]  # its share of the 2 left, released by the full flush
        assert counter(metrics, "dcgan_batch_flushes_total", reason="full") == 2
        assert counter(metrics, "dcgan_batch_flushes_total", reason="timeout") == 0
        model.release.set()
        results = await asyncio.gather(blocker, *queued)
        assert model.sizes == [1, 2, 1, 1]
        for value, result in enumerate(results):
            np.testing.assert_array_equal(result.outputs["values"], latents(value) * 2)


@scenario
async def test_requests_that_waited_together_count_as_overlapping_calls() -> None:
    model = Model()
    async with batching(model, instances=2, wide_lane=True) as batcher:
        model.release.clear()
        wide = asyncio.create_task(batcher.submit(latents(0), KINDS))
        await until(lambda: len(model.batches) == 1)
        pair = [asyncio.create_task(batcher.submit(latents(v), KINDS)) for v in (1, 2)]
        await until(lambda: batcher.queued == 2)
        model.release.set()
        await asyncio.gather(wide, *pair)
        assert model.lanes == [WIDE, PARALLEL, PARALLEL]  # the pair side by side, no one arriving
        await batcher.submit(latents(3), KINDS)
        assert model.lanes[3] == PARALLEL  # the pair's runs had company: calls still overlap


@scenario
async def test_while_calls_overlap_a_lone_batch_leaves_the_other_instances_free() -> None:
    model, metrics = Model(), ServiceMetrics()
    async with batching(model, metrics, instances=2, wide_lane=True) as batcher:
        await batcher.submit(latents(0), KINDS)  # alone: wide, on every core
        model.release.clear()
        first = asyncio.create_task(batcher.submit(latents(1), KINDS))
        await until(lambda: len(model.batches) == 2)
        second = asyncio.create_task(batcher.submit(latents(2), KINDS))  # during the wide run
        await until(lambda: batcher.queued == 1)
        model.release.set()
        await asyncio.gather(first, second)
        # calls overlap now: a lone batch takes one instance, and one arriving meanwhile the other
        lone_gate, beside_gate = threading.Event(), threading.Event()
        model.gates.update({3: lone_gate, 4: beside_gate})
        lone = asyncio.create_task(batcher.submit(latents(3), KINDS))
        await until(lambda: len(model.batches) == 4)
        beside = asyncio.create_task(batcher.submit(latents(4), KINDS))
        await until(lambda: len(model.batches) == 5)  # started at once, beside the lone run
        beside_gate.set()
        await beside
        lone_gate.set()
        await lone
        assert model.lanes == [WIDE, WIDE, PARALLEL, PARALLEL, PARALLEL]
        for value, result in ((3, lone.result()), (4, beside.result())):
            np.testing.assert_array_equal(result.outputs["values"], latents(value) * 2)
        # WIDE_AFTER lone runs with nobody else arriving: calls come one at a time again
        for value in range(WIDE_AFTER + 1):
            await batcher.submit(latents(value), KINDS)
        assert model.lanes[5:] == [PARALLEL] * WIDE_AFTER + [WIDE]
        assert counter(metrics, "dcgan_model_runs_total", lane="parallel") == 3 + WIDE_AFTER


@scenario
async def test_calls_one_at_a_time_run_inline_until_a_look_on_a_worker_sees_a_second() -> None:
    model, metrics = Model(), ServiceMetrics()
    loop_thread = threading.get_ident()
    async with batching(model, metrics, instances=2, wide_lane=True) as batcher:
        for value in range(QUIET_RUNS):  # lone calls: wide, on a worker, nobody else arrives
            await batcher.submit(latents(value), KINDS)
        assert loop_thread not in model.threads
        inline = [await batcher.submit(latents(v), KINDS) for v in range(PROBE_EVERY - 1)]
        assert model.threads[QUIET_RUNS:] == [loop_thread] * (PROBE_EVERY - 1)
        assert model.lanes == [WIDE] * QUIET_RUNS + [INLINE] * (PROBE_EVERY - 1)
        for value, result in enumerate(inline):
            np.testing.assert_array_equal(result.outputs["values"], latents(value) * 2)
        assert counter(metrics, "dcgan_model_runs_total", lane="inline") == PROBE_EVERY - 1
        assert counter(metrics, "dcgan_model_runs_total", lane="wide") == QUIET_RUNS
        # the next lone run looks again, on a worker; a second caller arrives while it computes
        model.release.clear()
        look = asyncio.create_task(batcher.submit(latents(100), KINDS))
        await until(lambda: len(model.batches) == QUIET_RUNS + PROBE_EVERY)
        assert model.threads[-1] != loop_thread
        second = asyncio.create_task(batcher.submit(latents(101), KINDS))
        await until(lambda: batcher.queued == 1)
        model.release.set()
        await asyncio.gather(look, second)
        # from then on, lone calls run on a worker until QUIET_RUNS pass with nobody arriving
        for value in range(QUIET_RUNS - 1):
            await batcher.submit(latents(value), KINDS)
        assert loop_thread not in model.threads[-QUIET_RUNS - 1 :]
        assert counter(metrics, "dcgan_model_runs_total", lane="inline") == PROBE_EVERY - 1


@scenario
async def test_a_failing_inline_run_fails_its_call_alone() -> None:
    model = Model()
    async with batching(model, instances=2, wide_lane=True) as batcher:
        for value in range(QUIET_RUNS):
            await batcher.submit(latents(value), KINDS)
        model.fail_on = 7.0
        with pytest.raises(ModelFailure):
            await batcher.submit(latents(7), KINDS)
        assert model.threads[-1] == threading.get_ident()  # it ran inline
        after = await batcher.submit(latents(8), KINDS)
        np.testing.assert_array_equal(after.outputs["values"], latents(8) * 2)
        assert model.threads[-1] == threading.get_ident()
