"""A real server on 127.0.0.1 with real onnxruntime sessions: answers, codes, health, metrics."""

from __future__ import annotations

import functools
import io
import logging
import math
import os
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from google.protobuf import descriptor_pool
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families

from dcgan.contract.seeded import seeded_latents
from dcgan.service.batcher import QUIET_RUNS
from dcgan.service.errors import ModelFailure
from dcgan.service.options import BatchingOptions, RuntimeOptions
from dcgan.service.runtime import (
    INLINE,
    LANES,
    PARALLEL,
    PIXELS,
    WIDE,
    ModelRuntime,
    available_cores,
)
from dcgan.v1 import generator_pb2 as pb
from dcgan.v1 import generator_pb2_grpc as pb_grpc
from tests.support.latents import NZ, direct, packed, random_latents
from tests.support.servers import ServerThread, free_port, server_config


def stub(target: str) -> pb_grpc.GeneratorStub:
    return pb_grpc.GeneratorStub(grpc.insecure_channel(target))


def pixels_of(response: pb.GenerateResponse) -> np.ndarray:
    assert response.dtype == "uint8"
    return np.frombuffer(response.data, np.uint8).reshape(tuple(response.shape))


def code_of(call: Any, request: Any, **kwargs: Any) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as raised:
        call(request, **kwargs)
    return raised.value.code(), raised.value.details()


# ------------------------------------------------------------------------------ answers


def test_generate_equals_onnxruntime_for_every_encoding(
    server: ServerThread, export_dir: Path
) -> None:
    latents = random_latents(5)
    image, pixels = direct(export_dir, latents)
    generator = stub(server.target)
    as_pixels = generator.Generate(packed(latents))
    assert list(as_pixels.shape) == [5, 64, 64, 3]
    np.testing.assert_array_equal(pixels_of(as_pixels), pixels)
    as_values = generator.Generate(
        pb.GenerateRequest(
            values=pb.FloatValues(values=latents.ravel()), encoding=pb.ENCODING_FLOAT32_CHW
        )
    )
    assert as_values.dtype == "float32" and list(as_values.shape) == [5, 3, 64, 64]
    np.testing.assert_array_equal(np.frombuffer(as_values.data, "<f4").reshape(5, 3, 64, 64), image)
    as_png = generator.Generate(packed(latents, pb.ENCODING_PNG))
    assert as_png.dtype == "png" and len(as_png.png) == 5
    decoded = np.stack([np.asarray(Image.open(io.BytesIO(data))) for data in as_png.png])
    np.testing.assert_array_equal(decoded, pixels)
    assert as_pixels.model_sha256 and as_pixels.model_id.startswith("dcgan-")
    assert as_pixels.timing.compute_us > 0


@pytest.mark.parametrize("spinning", [True, False])
def test_only_the_inline_lane_spins_and_every_lane_computes_the_same_pixels(
    export_dir: Path, spinning: bool, caplog: pytest.LogCaptureFixture
) -> None:
    runtime = ModelRuntime(export_dir, RuntimeOptions(device="cpu", spinning=spinning))
    with caplog.at_level(logging.INFO, logger="dcgan.service.runtime"):
        runtime.load()
    if not runtime.has_wide_lane:
        pytest.skip("one core: no all-cores lane")
    sessions = {INLINE: runtime._inline, WIDE: runtime._wide}
    spins = {
        lane: session.get_session_options().get_session_config_entry(
            "session.intra_op.allow_spinning"
        )
        for lane, session in sessions.items()
        if session is not None
    }
    assert spins == {INLINE: "1" if spinning else "0", WIDE: "0"}
    assert ("one spinning for calls one at a time" in caplog.text) == spinning
    ran: list[str] = []
    for lane, session in {WIDE: runtime._wide, INLINE: runtime._inline}.items():
        if lane == WIDE or session is not runtime._wide:
            session.run = functools.partial(record, session.run, ran, lane)  # type: ignore[union-attr]
    latents = random_latents(3, seed=9)
    kinds = frozenset({PIXELS})
    pixels = {lane: runtime.run(latents, kinds, lane)[PIXELS] for lane in LANES}
    assert ran == ([INLINE, WIDE] if spinning else [WIDE, WIDE])  # LANES: inline, wide, parallel
    np.testing.assert_array_equal(pixels[INLINE], pixels[PARALLEL])
    np.testing.assert_array_equal(pixels[WIDE], pixels[PARALLEL])
    runtime.close()


@pytest.mark.parametrize("pin_cores", [True, False])
def test_parallel_sessions_run_each_on_a_core_of_its_own(
    export_dir: Path, pin_cores: bool, caplog: pytest.LogCaptureFixture
) -> None:
    if available_cores() < 2:
        pytest.skip("one core: nothing to pin to")
    options = RuntimeOptions(device="cpu", instances=2, intra_op_threads=1, pin_cores=pin_cores)
    runtime = ModelRuntime(export_dir, options)
    with caplog.at_level(logging.INFO, logger="dcgan.service.runtime"):
        runtime.load()
    allowed = os.sched_getaffinity(0)
    seen: list[set[int]] = []  # the running thread's cores, during each run

    def where(run: Callable[..., Any], *args: Any) -> Any:
        seen.append(os.sched_getaffinity(0))
        if len(seen) == 3:
            raise RuntimeError("a failing run")
        return run(*args)

    narrow = [runtime._sessions.get() for _ in range(2)]
    for session, _ in narrow:
        session.run = functools.partial(where, session.run)  # type: ignore[method-assign]
    for pair in narrow:
        runtime._sessions.put(pair)
    latents = random_latents(2, seed=4)
    after: list[set[int]] = []
    failures: list[str] = []

    def worker() -> None:  # as the batcher's worker threads run them
        for _ in range(4):
            try:
                runtime.run(latents, frozenset({PIXELS}), PARALLEL)
            except ModelFailure as failure:
                failures.append(str(failure))
            after.append(os.sched_getaffinity(0))

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join()
    assert failures == ["the model run failed: RuntimeError"]
    assert after == [allowed] * 4  # pinned for the run only, a failing one too
    if pin_cores:
        cores = [next(iter(cores)) for cores in seen[:2]]
        assert seen == [{cores[0]}, {cores[1]}] * 2  # the queue hands the sessions out in turn
        assert cores[0] != cores[1] and set(cores) <= allowed
        assert f"on cores {cores[0]}, {cores[1]}" in caplog.text
    else:
        assert seen == [allowed] * 4
        assert "on cores" not in caplog.text
    runtime.close()


def test_each_runtime_pins_its_sessions_to_the_next_cores(export_dir: Path) -> None:
    """Two models (or versions) of one session each: not both on the same core."""
    if available_cores() < 2:
        pytest.skip("one core: nothing to pin to")
    options = RuntimeOptions(device="cpu", instances=1, intra_op_threads=1)
    runtimes = [ModelRuntime(export_dir, options) for _ in range(2)]
    cores = []
    for runtime in runtimes:
        runtime.load()
        _, core = runtime._sessions.get()
        cores.append(core)
        runtime.close()
    assert None not in cores and cores[0] != cores[1]


def record(run: Callable[..., Any], ran: list[str], lane: str, *args: Any) -> Any:
    ran.append(lane)
    return run(*args)


def test_an_image_alone_equals_the_same_latent_inside_a_batch_of_64(server: ServerThread) -> None:
    latents = random_latents(64, seed=3)
    generator = stub(server.target)
    results: list[Any] = [None] * 64

    def call(index: int) -> None:
        results[index] = generator.Generate(packed(latents[index : index + 1]))

    threads = [threading.Thread(target=call, args=(i,)) for i in range(64)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    together = pixels_of(generator.Generate(packed(latents)))
    alone = np.concatenate([pixels_of(result) for result in results])
    np.testing.assert_array_equal(alone, together)


def independent_seeded(seed: int, count: int, nz: int) -> np.ndarray:
    """The generator documented in generator.proto, written from its text in plain Python."""
    mask = (1 << 64) - 1
    gamma = 0x9E3779B97F4A7C15

    def mix(x: int) -> int:
        x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & mask
        x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & mask
        return x ^ (x >> 31)

    def uniform(j: int) -> float:
        return ((mix((seed + (j + 1) * gamma) & mask) >> 11) + 1) / 2.0**53

    values = []
    for k in range(count * nz):
        i = k // 2
        r = math.sqrt(-2.0 * math.log(uniform(2 * i)))
        t = 2.0 * math.pi * uniform(2 * i + 1)
        values.append(r * math.cos(t) if k % 2 == 0 else r * math.sin(t))
    return np.array(values, dtype=np.float32).reshape(count, nz)


@pytest.mark.parametrize("seed", [0, 1, 2**63 + 5])
def test_seeded_latents_follow_the_documented_generator(seed: int) -> None:
    np.testing.assert_array_equal(seeded_latents(seed, 3, NZ), independent_seeded(seed, 3, NZ))
    np.testing.assert_array_equal(seeded_latents(seed, 1, 7), independent_seeded(seed, 3, 7)[:1])


def test_seeds_are_reproducible_across_restarts(fresh_server: Any, export_dir: Path) -> None:
    answers = []
    for _ in range(2):
        running = fresh_server()
        answers.append(
            pixels_of(
                stub(running.target).Generate(
                    pb.GenerateRequest(seeded=pb.SeededLatents(count=4, seed=42))
                )
            )
        )
        running.stop()
    np.testing.assert_array_equal(answers[0], answers[1])
    np.testing.assert_array_equal(answers[0], direct(export_dir, seeded_latents(42, 4, NZ))[1])


def test_interpolation_ends_are_the_plain_generations(server: ServerThread) -> None:
    generator = stub(server.target)
    for method in (pb.INTERPOLATION_METHOD_LINEAR, pb.INTERPOLATION_METHOD_SLERP):
        walk = generator.Interpolate(
            pb.InterpolateRequest(
                start=pb.Endpoint(seed=1), end=pb.Endpoint(seed=2), steps=7, method=method
            )
        )
        images = pixels_of(walk)
        assert images.shape[0] == 7
        first = pixels_of(
            generator.Generate(pb.GenerateRequest(seeded=pb.SeededLatents(count=1, seed=1)))
        )
        last = pixels_of(
            generator.Generate(pb.GenerateRequest(seeded=pb.SeededLatents(count=1, seed=2)))
        )
        np.testing.assert_array_equal(images[0], first[0])
        np.testing.assert_array_equal(images[-1], last[0])
        assert not np.array_equal(images[3], images[0])
    a, b = random_latents(2, seed=9)
    walk = generator.Interpolate(
        pb.InterpolateRequest(
            start=pb.Endpoint(packed=a.tobytes()), end=pb.Endpoint(packed=b.tobytes()), steps=3,
            encoding=pb.ENCODING_FLOAT32_CHW,
        )
    )  # fmt: skip
    values = np.frombuffer(walk.data, "<f4").reshape(3, 3, 64, 64)
    ends = np.frombuffer(
        generator.Generate(packed(np.stack([a, b]), pb.ENCODING_FLOAT32_CHW)).data, "<f4"
    )
    np.testing.assert_array_equal(values[[0, 2]].ravel(), ends)


def test_stream_chunks_reassemble_to_the_whole(server: ServerThread, export_dir: Path) -> None:
    latents = random_latents(300, seed=5)
    chunks = list(stub(server.target).GenerateStream(packed(latents)))
    assert len(chunks) > 1 and [c.offset for c in chunks] == sorted(c.offset for c in chunks)
    whole = np.concatenate([pixels_of(chunk) for chunk in chunks])
    np.testing.assert_array_equal(whole, direct(export_dir, latents)[1])


def test_model_info_says_what_is_served(server: ServerThread) -> None:
    info = stub(server.target).GetModelInfo(pb.GetModelInfoRequest())
    assert (info.nz, info.channels, info.image_size) == (100, 3, 64)
    assert (info.output_min, info.output_max) == (-1.0, 1.0)
    assert info.execution_provider == "CPUExecutionProvider"
    assert info.opset == 18 and info.source_step == 1
    assert len(info.model_sha256) == 64 and info.model_id == f"dcgan-{info.model_sha256[:12]}"
    # the settings of server_config(), and the CPU's instances (cores, at most 4)
    assert (info.max_batch_size, info.max_queue_delay_us, info.max_queue_size) == (64, 2000, 4096)
    assert info.instances == min(available_cores(), 4)
    assert (info.max_latents_per_request, info.max_stream_latents) == (256, 4096)
    assert info.max_response_bytes == 4 * 2**20


# ------------------------------------------------------------------------------ bad input


BAD_REQUESTS = [
    ("wrong length", pb.GenerateRequest(packed=b"\x00" * 12), "not a multiple of nz * 4 = 400"),
    (
        "values wrong length",
        pb.GenerateRequest(values=pb.FloatValues(values=[1.0] * 150)),
        "not a multiple of nz",
    ),
    ("nan", packed(np.full((1, NZ), np.nan, np.float32)), "latent 0 holds NaN or infinity"),
    (
        "infinity",
        packed(np.concatenate([random_latents(1), np.full((1, NZ), np.inf, np.float32)])),
        "latent 1 holds NaN",
    ),
    (
        "count 0",
        pb.GenerateRequest(seeded=pb.SeededLatents(count=0, seed=1)),
        "count must be between 1 and 256",
    ),
    ("count too big", pb.GenerateRequest(seeded=pb.SeededLatents(count=257, seed=1)), "not 257"),
    ("too many latents", packed(random_latents(300)), "300 latents requested; at most 256"),
    ("no latents", pb.GenerateRequest(), "holds no latents"),
    ("empty packed", pb.GenerateRequest(packed=b""), "holds no latents"),
    (
        "unknown encoding",
        pb.GenerateRequest(seeded=pb.SeededLatents(count=1), encoding=42),
        "unknown encoding 42 (known: uint8, float32, png)",
    ),
]


@pytest.mark.parametrize(
    ("name", "request_", "detail"), BAD_REQUESTS, ids=[b[0] for b in BAD_REQUESTS]
)
def test_bad_generate_requests_get_invalid_argument(
    server: ServerThread, name: str, request_: Any, detail: str
) -> None:
    code, message = code_of(stub(server.target).Generate, request_)
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert detail in message


BAD_WALKS = [
    (
        "one step",
        pb.InterpolateRequest(start=pb.Endpoint(seed=1), end=pb.Endpoint(seed=2), steps=1),
        "steps must be between 2",
    ),
    (
        "no steps",
        pb.InterpolateRequest(start=pb.Endpoint(seed=1), end=pb.Endpoint(seed=2)),
        "not 0",
    ),
    (
        "too many steps",
        pb.InterpolateRequest(start=pb.Endpoint(seed=1), end=pb.Endpoint(seed=2), steps=10_000),
        "not 10000",
    ),
    (
        "no start",
        pb.InterpolateRequest(end=pb.Endpoint(seed=2), steps=3),
        "the start of the walk is missing",
    ),
    (
        "short latent",
        pb.InterpolateRequest(
            start=pb.Endpoint(packed=b"\x00" * 8), end=pb.Endpoint(seed=2), steps=3
        ),
        "not a multiple of nz * 4",
    ),
    (
        "two latents",
        pb.InterpolateRequest(
            start=pb.Endpoint(seed=2), end=pb.Endpoint(packed=b"\x00" * 800), steps=3
        ),
        "the end latent must hold nz = 100",
    ),
    (
        "bad method",
        pb.InterpolateRequest(
            start=pb.Endpoint(seed=1), end=pb.Endpoint(seed=2), steps=3, method=9
        ),
        "unknown interpolation method 9 (known: linear, slerp)",
    ),
    (
        "bad encoding",
        pb.InterpolateRequest(
            start=pb.Endpoint(seed=1), end=pb.Endpoint(seed=2), steps=3, encoding=5
        ),
        "unknown encoding 5 (known: uint8, float32, png)",
    ),
]


@pytest.mark.parametrize(("name", "request_", "detail"), BAD_WALKS, ids=[b[0] for b in BAD_WALKS])
def test_bad_walks_get_invalid_argument(
    server: ServerThread, name: str, request_: Any, detail: str
) -> None:
    code, message = code_of(stub(server.target).Interpolate, request_)
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert detail in message


def test_a_stream_with_an_unknown_encoding_gets_invalid_argument(server: ServerThread) -> None:
    request = pb.GenerateRequest(seeded=pb.SeededLatents(count=1), encoding=9)
    code, message = code_of(lambda r: list(stub(server.target).GenerateStream(r)), request)
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert message == "unknown encoding 9 (known: uint8, float32, png)"


def test_undecodable_bytes_get_invalid_argument(server: ServerThread) -> None:
    channel = grpc.insecure_channel(server.target)
    raw = channel.unary_unary("/dcgan.v1.Generator/Generate")
    code, message = code_of(raw, b"\xff\xff\xff\xff not protobuf")
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "not a valid message" in message


def test_a_message_too_large_is_resource_exhausted(fresh_server: Any) -> None:
    running = fresh_server(max_message_bytes=10_000)
    code, _ = code_of(stub(running.target).Generate, packed(random_latents(30)))
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_a_full_queue_is_resource_exhausted_and_the_server_recovers(fresh_server: Any) -> None:
    running = fresh_server(batching=BatchingOptions(max_batch_size=8, max_queue_size=16))
    generator = stub(running.target)
    futures = [generator.Generate.future(packed(random_latents(16, seed=i))) for i in range(8)]
    codes = []
    for future in futures:
        try:
            future.result()
            codes.append(grpc.StatusCode.OK)
        except grpc.RpcError as error:
            codes.append(error.code())
    assert grpc.StatusCode.RESOURCE_EXHAUSTED in codes and grpc.StatusCode.OK in codes
    assert set(codes) == {grpc.StatusCode.OK, grpc.StatusCode.RESOURCE_EXHAUSTED}
    assert pixels_of(generator.Generate(packed(random_latents(2)))).shape[0] == 2


def test_a_passed_deadline_is_deadline_exceeded(server: ServerThread) -> None:
    generator = stub(server.target)
    busy = [generator.Generate.future(packed(random_latents(256, seed=i))) for i in range(4)]
    code, _ = code_of(generator.Generate, packed(random_latents(1)), timeout=0.005)
    assert code == grpc.StatusCode.DEADLINE_EXCEEDED
    for future in busy:
        future.result()


def test_the_server_survives_every_bad_request(server: ServerThread, export_dir: Path) -> None:
    generator = stub(server.target)
    for _, request, _ in BAD_REQUESTS:
        assert code_of(generator.Generate, request)[0] == grpc.StatusCode.INVALID_ARGUMENT
    for _, request, _ in BAD_WALKS:
        assert code_of(generator.Interpolate, request)[0] == grpc.StatusCode.INVALID_ARGUMENT
    raw = grpc.insecure_channel(server.target).unary_unary("/dcgan.v1.Generator/Generate")
    assert code_of(raw, b"\xff\xff\xff\xff not protobuf")[0] == grpc.StatusCode.INVALID_ARGUMENT
    assert health_status(server.target) == health_pb2.HealthCheckResponse.SERVING
    latents = random_latents(3, seed=11)
    np.testing.assert_array_equal(
        pixels_of(generator.Generate(packed(latents))), direct(export_dir, latents)[1]
    )


# ------------------------------------------------------------------------------ lifecycle


def health_status(target: str, service: str = "") -> int:
    health = health_pb2_grpc.HealthStub(grpc.insecure_channel(target))
    return health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5).status


def test_health_is_not_serving_until_the_model_is_warm(export_dir: Path) -> None:
    thread = ServerThread(server_config(export_dir), start=False)
    try:
        thread.call(thread.server.open())
        assert health_status(thread.target) == health_pb2.HealthCheckResponse.NOT_SERVING
        assert (
            health_status(thread.target, "dcgan.v1.Generator")
            == health_pb2.HealthCheckResponse.NOT_SERVING
        )
        code, detail = code_of(stub(thread.target).Generate, packed(random_latents(1)))
        assert code == grpc.StatusCode.UNAVAILABLE and "loading" in detail
        code, detail = code_of(stub(thread.target).GetModelInfo, pb.GetModelInfoRequest())
        assert code == grpc.StatusCode.UNAVAILABLE and "loading" in detail
        thread.call(thread.server.load_model())
        assert health_status(thread.target) == health_pb2.HealthCheckResponse.SERVING
    finally:
        thread.stop()


def test_reflection_lists_the_services(server: ServerThread) -> None:
    database = ProtoReflectionDescriptorDatabase(grpc.insecure_channel(server.target))
    services = set(database.get_services())
    assert {"dcgan.v1.Generator", "grpc.health.v1.Health"} <= services
    service = descriptor_pool.DescriptorPool(database).FindServiceByName("dcgan.v1.Generator")
    assert [method.name for method in service.methods] == [
        "Generate",
        "GenerateStream",
        "Interpolate",
        "InterpolateStream",
        "GetModelInfo",
    ]


def test_graceful_stop_finishes_accepted_work_and_refuses_the_rest(fresh_server: Any) -> None:
    running = fresh_server(grace_s=20.0)
    generator = stub(running.target)
    in_flight = [generator.Generate.future(packed(random_latents(256, seed=i))) for i in range(6)]
    time.sleep(0.05)
    stopping = threading.Thread(target=running.stop)
    stopping.start()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            if health_status(running.target) == health_pb2.HealthCheckResponse.NOT_SERVING:
                break
        except grpc.RpcError:
            break
        time.sleep(0.005)
    try:
        generator.Generate(packed(random_latents(1)), timeout=5)
        refused = None
    except grpc.RpcError as error:
        refused = error.code()
    assert refused == grpc.StatusCode.UNAVAILABLE
    for future in in_flight:
        assert pixels_of(future.result()).shape == (256, 64, 64, 3)
    stopping.join(30)
    assert not stopping.is_alive()


def test_calls_one_at_a_time_run_inline_and_equal_the_same_latents_batched(
    fresh_server: Any,
) -> None:
    running = fresh_server(metrics_port=free_port())
    latents = random_latents(24, seed=5)
    generator = stub(running.target)
    lone = [pixels_of(generator.Generate(packed(latents[i : i + 1]))) for i in range(24)]
    lanes = exposed(metrics_page(running))
    (name,) = running.server.models.served_models
    version = {"model": name, "version": "1"}
    if running.server.plane.model_info(name, 0).instances > 1:  # a wide lane: 2 cores or more
        assert lanes("dcgan_model_runs_total", lane="inline", **version) >= 24 - QUIET_RUNS - 2
    together = pixels_of(generator.Generate(packed(latents)))
    np.testing.assert_array_equal(np.concatenate(lone), together)


def test_metrics_count_requests_batches_and_drops(fresh_server: Any) -> None:
    running = fresh_server(metrics_port=0)
    assert running.server.metrics_port == 0  # 0 means off
    running = fresh_server(metrics_port=free_port())
    generator = stub(running.target)
    for count in (1, 3, 70):
        generator.Generate(packed(random_latents(count)))
    code_of(generator.Generate, pb.GenerateRequest(packed=b"\x00"))
    text = (
        urllib.request.urlopen(f"http://127.0.0.1:{running.server.metrics_port}/metrics", timeout=5)
        .read()
        .decode()
    )
    assert 'dcgan_requests_total{code="OK",method="Generate"} 3.0' in text
    assert 'dcgan_requests_total{code="INVALID_ARGUMENT",method="Generate"} 1.0' in text
    (name,) = running.server.models.served_models  # the export's folder, version 1
    version = {"model": name, "version": "1"}
    assert f'dcgan_images_generated_total{{model="{name}",version="1"}} 74.0' in text
    value = exposed(text)
    # each request arrived at an idle server: 1 and 3 latents flushed as idle, 70 as full
    flushes = {
        reason: value("dcgan_batch_flushes_total", reason=reason, **version) for reason in FLUSHES
    }
    assert flushes["idle"] >= 2 and flushes["full"] >= 1
    runs = sum(flushes.values())
    assert value("dcgan_batch_size_count", **version) == runs
    assert value("dcgan_batch_size_sum", **version) == 74
    assert value("dcgan_compute_seconds_count", **version) == runs
    lanes = ("inline", "wide", "parallel")
    assert sum(value("dcgan_model_runs_total", lane=lane, **version) for lane in lanes) == runs
    # once per request, at its first run
    assert value("dcgan_queue_wait_seconds_count", **version) == 3
    assert value("dcgan_queue_depth", **version) == 0  # all answered: nothing left waiting
    # every latent was computed, none dropped
    assert value("dcgan_dropped_latents_total", reason="deadline", **version) == 0
    assert value("dcgan_dropped_latents_total", reason="cancelled", **version) == 0
    # the four calls were routed to the version (the bad one too), none holds it now
    assert value("dcgan_model_requests_total", **version) == 4
    assert value("dcgan_model_calls_in_flight", **version) == 0
    assert value("dcgan_model_version_state", state="ready", **version) == 1
    assert value("dcgan_model_version_state", state="failed", **version) == 0


FLUSHES = ("full", "idle", "timeout")


def exposed(text: str) -> Callable[..., float]:
    """A lookup of the samples in a /metrics page: value(name, **labels); absent ones fail."""
    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }

    def value(name: str, **labels: str) -> float:
        return samples[name, tuple(sorted(labels.items()))]

    return value


def test_an_answer_too_large_for_one_message_is_refused_before_computing(
    server: ServerThread,
) -> None:
    generator = stub(server.target)
    request = pb.GenerateRequest(
        seeded=pb.SeededLatents(count=100, seed=1), encoding=pb.ENCODING_FLOAT32_CHW
    )
    code, detail = code_of(generator.Generate, request)
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "ask for at most 85, or use GenerateStream" in detail
    chunks = list(generator.GenerateStream(request))
    assert sum(chunk.shape[0] for chunk in chunks) == 100
    info = generator.GetModelInfo(pb.GetModelInfoRequest())
    assert info.max_response_bytes == 4 * 2**20


def test_a_port_range_binds_the_first_free_port_and_writes_it(
    fresh_server: Any, tmp_path: Path
) -> None:
    first = free_port()
    taken = fresh_server(port=first)
    assert taken.server.port == first
    port_file = tmp_path / "port"
    second = fresh_server(port=first, port_count=3, port_file=port_file)
    assert second.server.port != first and first < second.server.port < first + 3
    assert port_file.read_text().strip() == str(second.server.port)
    assert pixels_of(stub(second.target).Generate(packed(random_latents(1)))).shape[0] == 1


def test_serve_reports_a_range_with_no_free_port(export_dir: Path, fresh_server: Any) -> None:
    import subprocess
    import sys

    port = free_port()
    fresh_server(port=port)
    result = subprocess.run(
        [sys.executable, "-m", "dcgan.service.cli", "--model-dir", str(export_dir), "--host", "127.0.0.1",
         "--port", f"{port}-{port}", "--metrics-port", "0"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == f"error: port {port} is in use on 127.0.0.1"
    bad = subprocess.run(
        [sys.executable, "-m", "dcgan.service.cli", "--model-dir", str(export_dir), "--port", "9-1"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert bad.returncode == 2 and "expected ports within 0-65535 with A <= B" in bad.stderr


# ------------------------------------------------------------------------------ streamed walks


def walk_request(steps: int, **fields: Any) -> pb.InterpolateRequest:
    return pb.InterpolateRequest(
        start=pb.Endpoint(seed=1), end=pb.Endpoint(seed=2), steps=steps, **fields
    )


def test_a_streamed_walk_is_the_walk_in_chunks(server: ServerThread) -> None:
    generator = stub(server.target)
    for method in (pb.INTERPOLATION_METHOD_LINEAR, pb.INTERPOLATION_METHOD_SLERP):
        whole = pixels_of(generator.Interpolate(walk_request(200, method=method)))
        chunks = list(generator.InterpolateStream(walk_request(200, method=method)))
        assert len(chunks) > 1 and [c.offset for c in chunks] == sorted(c.offset for c in chunks)
        np.testing.assert_array_equal(np.concatenate([pixels_of(c) for c in chunks]), whole)
    # longer than Interpolate takes: the ends are still the seeds' own images
    long_walk = np.concatenate(
        [pixels_of(c) for c in generator.InterpolateStream(walk_request(700))]
    )
    assert long_walk.shape == (700, 64, 64, 3)
    ends = pixels_of(
        generator.Generate(pb.GenerateRequest(seeded=pb.SeededLatents(count=1, seed=2)))
    )
    np.testing.assert_array_equal(long_walk[-1], ends[0])


def test_walks_too_large_for_interpolate_are_pointed_at_interpolate_stream(
    server: ServerThread,
) -> None:
    generator = stub(server.target)
    code, detail = code_of(generator.Interpolate, walk_request(300))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert detail == "steps must be between 2 and 256, not 300: InterpolateStream walks up to 4096"
    code, detail = code_of(
        generator.Interpolate, walk_request(100, encoding=pb.ENCODING_FLOAT32_CHW)
    )
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert detail.endswith("ask for at most 85, or use InterpolateStream")
    chunks = list(generator.InterpolateStream(walk_request(100, encoding=pb.ENCODING_FLOAT32_CHW)))
    assert sum(chunk.shape[0] for chunk in chunks) == 100 and chunks[0].dtype == "float32"
    # the stream has its own limit, max_stream_latents
    code, detail = code_of(lambda r: list(generator.InterpolateStream(r)), walk_request(5000))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert detail == "steps must be between 2 and 4096, not 5000"
    code, detail = code_of(
        lambda r: list(generator.InterpolateStream(r)), walk_request(3, method=7)
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "unknown interpolation method 7" in detail


# ------------------------------------------------------------------------------ metrics, callers gone


def metrics_page(running: ServerThread) -> str:
    url = f"http://127.0.0.1:{running.server.metrics_port}/metrics"
    return urllib.request.urlopen(url, timeout=5).read().decode()


def test_metrics_show_the_process_the_model_and_the_calls_in_flight(fresh_server: Any) -> None:
    running = fresh_server(metrics_port=free_port())
    generator = stub(running.target)
    stream = generator.GenerateStream(pb.GenerateRequest(seeded=pb.SeededLatents(count=4096)))
    next(stream)
    value = exposed(metrics_page(running))
    assert value("dcgan_in_flight_calls", method="GenerateStream") == 1
    assert value("dcgan_in_flight_calls", method="Generate") == 0
    stream.cancel()
    info = generator.GetModelInfo(pb.GetModelInfoRequest())
    text = metrics_page(running)
    value = exposed(text)
    assert value(
        "dcgan_model_info", model=info.model_name, version="1", model_id=info.model_id,
        sha256=info.model_sha256, provider="CPUExecutionProvider", nz="100", shape="3x64x64",
    ) == 1  # fmt: skip
    assert value("process_resident_memory_bytes") > 10 * 2**20
    assert value("process_cpu_seconds_total") > 0 and value("process_open_fds") > 0
    assert "python_info{" in text
    deadline = time.monotonic() + 5
    while value("dcgan_in_flight_calls", method="GenerateStream") and time.monotonic() < deadline:
        time.sleep(0.05)
        value = exposed(metrics_page(running))
    assert value("dcgan_in_flight_calls", method="GenerateStream") == 0
    assert value("dcgan_requests_total", method="GenerateStream", code="CANCELLED") == 1


SLOW_READER = """
import sys, time, grpc
from dcgan.v1 import generator_pb2 as pb, generator_pb2_grpc as pb_grpc
channel = grpc.insecure_channel(sys.argv[1], options=[("grpc.max_receive_message_length", 2**28)])
request = pb.GenerateRequest(seeded=pb.SeededLatents(count=4096), encoding=pb.ENCODING_FLOAT32_CHW)
for chunk in pb_grpc.GeneratorStub(channel).GenerateStream(request):
    print(chunk.offset, flush=True)
    time.sleep(1)  # the server's writes wait for this reader: flow control
"""


def test_a_caller_that_dies_mid_stream_is_one_debug_line_and_counted_cancelled(
    fresh_server: Any, caplog: pytest.LogCaptureFixture
) -> None:
    import subprocess
    import sys

    running = fresh_server()
    caplog.set_level(logging.DEBUG, logger="dcgan.service.interceptors")
    for _ in range(2):
        reader = subprocess.Popen(
            [sys.executable, "-c", SLOW_READER, running.target], stdout=subprocess.PIPE, text=True
        )
        assert reader.stdout is not None
        reader.stdout.readline()
        reader.stdout.readline()  # two chunks read: the server is blocked writing more
        reader.kill()
        reader.wait()
    registry = running.server.metrics.registry

    def cancelled() -> float | None:
        labels = {"method": "GenerateStream", "code": "CANCELLED"}
        return registry.get_sample_value("dcgan_requests_total", labels)

    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and cancelled() != 2:
        time.sleep(0.05)
    assert cancelled() == 2
    assert registry.get_sample_value("dcgan_in_flight_calls", {"method": "GenerateStream"}) == 0
    problems = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert problems == [], [r.getMessage() for r in problems]
    quiet = [r.getMessage() for r in caplog.records if r.name == "dcgan.service.interceptors"]
    assert quiet == ["GenerateStream ended early: CANCELLED"] * 2
