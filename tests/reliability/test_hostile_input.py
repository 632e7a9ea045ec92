"""Hostile and malformed input against a live server: property tests with an oracle, and fuzz.

Every answer must be the status an independent oracle expects (or a correct image batch), never
INTERNAL or UNKNOWN, and the server must stay healthy throughout.
"""

from __future__ import annotations

import math
import random
import struct
from collections import Counter
from typing import Any

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dcgan.v1 import generator_pb2 as pb
from dcgan.v1 import generator_pb2_grpc as pb_grpc
from tests.support.latents import NZ
from tests.support.messages import mutated, varint
from tests.support.servers import ServerThread

LIMIT = 256  # max_latents_per_request of the test server
OK, INVALID = grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))

finite_or_not = st.floats(width=32, allow_nan=True, allow_infinity=True)
latent_values = st.lists(finite_or_not, max_size=3 * NZ + 7)


@st.composite
def generate_requests(draw: st.DrawFn) -> pb.GenerateRequest:
    request = pb.GenerateRequest(encoding=draw(st.integers(0, 6)))
    kind = draw(st.sampled_from(["none", "packed", "values", "seeded"]))
    if kind == "packed":
        values = draw(latent_values)
        tail = draw(st.binary(max_size=3))  # lengths that are not whole floats
        request.packed = struct.pack(f"<{len(values)}f", *values) + tail
    elif kind == "values":
        request.values.values.extend(draw(latent_values))
    elif kind == "seeded":
        request.seeded.count = draw(st.integers(0, LIMIT + 20))
        request.seeded.seed = draw(st.integers(0, 2**64 - 1))
    return request


IMAGE_BYTES = {0: 3 * 64 * 64, 1: 3 * 64 * 64, 2: 4 * 3 * 64 * 64, 3: 3 * 64 * 64 + 512}


def fits(count: int, encoding: int) -> grpc.StatusCode:
    """Answers over 4 MiB (what a default client accepts) are refused before computing."""
    too_large = count * IMAGE_BYTES[encoding] + 4096 > 4 * 2**20
    return grpc.StatusCode.RESOURCE_EXHAUSTED if too_large else OK


def expected_generate(request: pb.GenerateRequest) -> tuple[grpc.StatusCode, int]:
    """The oracle: the status the API's rules give, and the number of images if OK."""
    if request.encoding > 3:
        return INVALID, 0
    which = request.WhichOneof("latents")
    if which == "seeded":
        count = request.seeded.count
        return (fits(count, request.encoding), count) if 1 <= count <= LIMIT else (INVALID, 0)
    if which == "packed":
        if len(request.packed) % (4 * NZ):
            return INVALID, 0
        values = list(struct.unpack(f"<{len(request.packed) // 4}f", request.packed))
    elif which == "values":
        values = list(request.values.values)
    else:
        return INVALID, 0
    if len(values) % NZ or not values or len(values) // NZ > LIMIT:
        return INVALID, 0
    if not all(math.isfinite(value) for value in values):
        return INVALID, 0
    return fits(len(values) // NZ, request.encoding), len(values) // NZ


def call(method: Any, request: Any) -> tuple[grpc.StatusCode, Any]:
    try:
        return OK, method(request, timeout=30)
    except grpc.RpcError as error:
        return error.code(), error.details()


@SETTINGS
@given(request=generate_requests())
def test_generate_answers_what_the_rules_say(
    server: ServerThread, request: pb.GenerateRequest
) -> None:
    code, answer = call(
        pb_grpc.GeneratorStub(grpc.insecure_channel(server.target)).Generate, request
    )
    expected, count = expected_generate(request)
    assert code == expected, answer
    if code == OK:
        shapes = {0: [count, 64, 64, 3], 1: [count, 64, 64, 3], 2: [count, 3, 64, 64], 3: [count]}
        assert list(answer.shape) == shapes[request.encoding]
        if request.encoding == 3:
            assert len(answer.png) == count
        else:
            width = 4 if request.encoding == 2 else 1
            assert len(answer.data) == count * 3 * 64 * 64 * width


@st.composite
def endpoints(draw: st.DrawFn) -> pb.Endpoint | None:
    kind = draw(st.sampled_from(["none", "seed", "packed"]))
    if kind == "seed":
        return pb.Endpoint(seed=draw(st.integers(0, 2**64 - 1)))
    if kind == "packed":
        values = draw(st.lists(finite_or_not, min_size=NZ - 1, max_size=NZ + 1))
        return pb.Endpoint(packed=struct.pack(f"<{len(values)}f", *values))
    return None


def valid_endpoint(endpoint: pb.Endpoint | None) -> bool:
    if endpoint is None:
        return False
    if endpoint.WhichOneof("latent") == "seed":
        return True
    values = struct.unpack(f"<{len(endpoint.packed) // 4}f", endpoint.packed)
    return len(values) == NZ and all(math.isfinite(v) for v in values)


@SETTINGS
@given(start=endpoints(), end=endpoints(), steps=st.integers(0, LIMIT + 5),
       method=st.integers(0, 4), encoding=st.integers(0, 5))  # fmt: skip
def test_interpolate_answers_what_the_rules_say(
    server: ServerThread, start: Any, end: Any, steps: int, method: int, encoding: int
) -> None:
    request = pb.InterpolateRequest(steps=steps, method=method, encoding=encoding)
    if start is not None:
        request.start.CopyFrom(start)
    if end is not None:
        request.end.CopyFrom(end)
    code, answer = call(
        pb_grpc.GeneratorStub(grpc.insecure_channel(server.target)).Interpolate, request
    )
    valid = (
        encoding <= 3
        and method <= 2
        and 2 <= steps <= LIMIT
        and valid_endpoint(start)
        and valid_endpoint(end)
    )
    assert code == (fits(steps, encoding) if valid else INVALID), answer
    if code == OK:
        assert answer.shape[0] == steps


# ------------------------------------------------------------------------------ fuzz

METHODS = {
    "/dcgan.v1.Generator/Generate": "unary",
    "/dcgan.v1.Generator/Interpolate": "unary",
    "/dcgan.v1.Generator/GetModelInfo": "unary",
    "/dcgan.v1.Generator/GenerateStream": "stream",
    "/dcgan.v1.Generator/InterpolateStream": "stream",
    "/dcgan.v1.ModelRepository/ListModels": "unary",
}
SEEDS = [
    pb.GenerateRequest(seeded=pb.SeededLatents(count=2, seed=1)).SerializeToString(),
    pb.GenerateRequest(
        packed=np.zeros((1, NZ), np.float32).tobytes(), encoding=2
    ).SerializeToString(),
    pb.InterpolateRequest(
        start=pb.Endpoint(seed=1), end=pb.Endpoint(seed=2), steps=3
    ).SerializeToString(),
    pb.GenerateRequest(values=pb.FloatValues(values=[0.5] * NZ)).SerializeToString(),
]


def fuzz_case(rng: random.Random) -> bytes:
    """A damaged message, or one whose repeated field goes far past the message limit."""
    if rng.randrange(6):
        return mutated(rng, SEEDS)
    # huge repeated field: values (field 2, a FloatValues message) far past the message limit
    count = rng.choice([10, 1_000, 2_000_000])
    inner = b"\x0a" + varint(4 * count) + b"\x00" * (4 * count)
    return b"\x12" + varint(len(inner)) + inner


# NOT_FOUND: bytes that decode to a model_name or model_version the server does not serve
ALLOWED = {OK, INVALID, grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.NOT_FOUND}


def test_live_fuzz_of_every_rpc(server: ServerThread, capsys: pytest.CaptureFixture[str]) -> None:
    channel = grpc.insecure_channel(server.target)
    rng = random.Random(20261124)
    outcomes: Counter[str] = Counter()
    cases = 0
    for method, kind in METHODS.items():
        rpc = channel.unary_unary(method) if kind == "unary" else channel.unary_stream(method)
        for _ in range(600):
            data = fuzz_case(rng)
            try:
                answer = rpc(data, timeout=30)
                if kind == "stream":
                    list(answer)
                code = OK
            except grpc.RpcError as error:
                code = error.code()
            assert code in ALLOWED, (method, data[:60], code)
            outcomes[f"{method.rsplit('/', 1)[1]} {code.name}"] += 1
            cases += 1
    health = health_pb2_grpc.HealthStub(channel)
    assert (
        health.Check(health_pb2.HealthCheckRequest()).status
        == health_pb2.HealthCheckResponse.SERVING
    )
    for method in METHODS:  # the fuzz reached both what a handler accepts and what it refuses
        name = method.rsplit("/", 1)[1]
        assert outcomes[f"{name} OK"] > 0 and outcomes[f"{name} INVALID_ARGUMENT"] > 0, outcomes
    with capsys.disabled():
        summary = ", ".join(f"{key}: {value}" for key, value in sorted(outcomes.items()))
        print(f"\nfuzz: {cases} cases, server healthy after all; {summary}")
