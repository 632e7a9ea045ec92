"""Stopping a server: accepted calls finish (a stream sends every chunk), new ones are refused,
and the grace's end stops the rest with a status that says so."""

from __future__ import annotations

import gc
import itertools
import logging
import threading
import time
from collections import Counter
from typing import Any

import grpc
import numpy as np
import pytest

from dcgan.service.options import RequestLimits
from dcgan.v1 import generator_pb2 as pb
from dcgan.v1 import generator_pb2_grpc as pb_grpc
from tests.support.servers import ServerThread, stop_in_background

STREAM = 4096  # images: many chunks of 64, seconds of work on 2 cores


def in_flight(running: ServerThread, method: str) -> float:
    value = running.server.metrics.registry.get_sample_value(
        "dcgan_in_flight_calls", {"method": method}
    )
    return -1.0 if value is None else value


def never_retrieved(records: list[logging.LogRecord]) -> list[str]:
    gc.collect()  # asyncio reports an unread task exception when the task is collected
    return [r.getMessage() for r in records if "never retrieved" in r.getMessage()]


def test_a_drain_lets_an_accepted_stream_send_every_chunk(
    fresh_server: Any, caplog: pytest.LogCaptureFixture
) -> None:
    running = fresh_server(
        grace_s=60.0, limits=RequestLimits(max_stream_latents=STREAM, max_latents_per_request=256)
    )
    generator = pb_grpc.GeneratorStub(grpc.insecure_channel(running.target))
    stream = generator.GenerateStream(
        pb.GenerateRequest(seeded=pb.SeededLatents(count=STREAM, seed=3)), timeout=120
    )
    first = next(stream)
    assert in_flight(running, "GenerateStream") == 1
    stopping = stop_in_background(running)
    with pytest.raises(grpc.RpcError) as refused:  # a new call, once the drain began
        generator.Generate(pb.GenerateRequest(seeded=pb.SeededLatents(count=1)), timeout=10)
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "draining" in refused.value.details()
    chunks = [first, *stream]  # the accepted stream goes on to its end, and ends OK
    assert stream.code() == grpc.StatusCode.OK
    assert sum(chunk.shape[0] for chunk in chunks) == STREAM
    assert [chunk.offset for chunk in chunks] == list(range(0, STREAM, first.shape[0]))
    stopping.join(60)
    assert not stopping.is_alive()
    assert in_flight(running, "GenerateStream") == 0
    counted = running.server.metrics.registry.get_sample_value
    assert counted("dcgan_requests_total", {"method": "GenerateStream", "code": "OK"}) == 1
    assert counted("dcgan_requests_total", {"method": "Generate", "code": "UNAVAILABLE"}) >= 1
    assert never_retrieved(caplog.records) == []


def test_the_grace_s_end_stops_a_stream_with_a_status_that_says_so(
    fresh_server: Any, caplog: pytest.LogCaptureFixture
) -> None:
    running = fresh_server(
        grace_s=0.5, limits=RequestLimits(max_stream_latents=STREAM, max_latents_per_request=256)
    )
    generator = pb_grpc.GeneratorStub(grpc.insecure_channel(running.target))
    stream = generator.GenerateStream(
        pb.GenerateRequest(seeded=pb.SeededLatents(count=STREAM, seed=3)), timeout=120
    )
    received = [next(stream)]
    started = time.monotonic()
    stopping = stop_in_background(running)
    with pytest.raises(grpc.RpcError) as stopped:
        for chunk in stream:
            received.append(chunk)
    assert stopped.value.code() == grpc.StatusCode.UNAVAILABLE
    detail = stopped.value.details()
    assert "its drain grace of 0.5 s ran out before this call finished" in detail
    assert f"after {len(received)} messages" in detail
    assert 0 < sum(chunk.shape[0] for chunk in received) < STREAM
    stopping.join(30)
    assert time.monotonic() - started < 5  # the grace, and the moment the status takes to send
    counted = running.server.metrics.registry.get_sample_value
    assert counted("dcgan_requests_total", {"method": "GenerateStream", "code": "UNAVAILABLE"}) == 1
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert "grace period of 0.5 s over: stopped 1 GenerateStream" in warnings
    assert never_retrieved(caplog.records) == []


def test_accepted_unary_calls_finish_and_new_ones_are_refused(fresh_server: Any) -> None:
    running = fresh_server(grace_s=60.0)
    generator = pb_grpc.GeneratorStub(grpc.insecure_channel(running.target))
    latents = np.random.default_rng(0).standard_normal((256, 100), dtype=np.float32)
    accepted = [
        generator.Generate.future(pb.GenerateRequest(packed=latents.tobytes()), timeout=120)
        for _ in range(6)
    ]
    deadline = time.monotonic() + 10
    while in_flight(running, "Generate") < 6 and time.monotonic() < deadline:
        time.sleep(0.005)
    stopping = stop_in_background(running)
    with pytest.raises(grpc.RpcError) as refused:
        generator.Generate(pb.GenerateRequest(seeded=pb.SeededLatents(count=1)), timeout=10)
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    for future in accepted:
        assert future.result().shape == [256, 64, 64, 3]
    stopping.join(60)
    assert not stopping.is_alive()


def test_a_drain_under_load_ends_every_call_of_a_plain_client_ok_or_unavailable(
    fresh_server: Any,
) -> None:
    """600 calls at concurrency 64 from grpcio with no retries, the stop 0.3 s in: during the
    lame-duck period every call that arrives is answered, so none ends CANCELLED (grpc-python
    cancels those that reached its core undispatched when a server stops)."""
    running = fresh_server(grace_s=10.0, drain_s=3.0)
    generator = pb_grpc.GeneratorStub(grpc.insecure_channel(running.target))
    request = pb.GenerateRequest(seeded=pb.SeededLatents(count=1))
    issued = itertools.count()
    codes: list[grpc.StatusCode] = []

    def call_until_600() -> None:
        while next(issued) < 600:
            try:
                generator.Generate(request, timeout=30)
            except grpc.RpcError as error:
                codes.append(error.code())
            else:
                codes.append(grpc.StatusCode.OK)

    callers = [threading.Thread(target=call_until_600) for _ in range(64)]
    for caller in callers:
        caller.start()
    time.sleep(0.3)
    stopping = threading.Thread(target=running.stop)
    stopping.start()
    for caller in callers:
        caller.join(60)
    stopping.join(30)
    assert not stopping.is_alive()
    counts = Counter(codes)
    assert sum(counts.values()) == 600  # none lost
    assert set(counts) <= {grpc.StatusCode.OK, grpc.StatusCode.UNAVAILABLE}, counts
    assert counts[grpc.StatusCode.OK] > 0 and counts[grpc.StatusCode.UNAVAILABLE] > 0
    counted = running.server.metrics.registry.get_sample_value
    # every call the server accepted was completed, and the client saw it so
    assert (
        counted("dcgan_requests_total", {"method": "Generate", "code": "OK"})
        == counts[grpc.StatusCode.OK]
    )
    assert in_flight(running, "Generate") == 0
