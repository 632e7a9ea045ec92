"""Hostile and malformed input against the Open Inference Protocol of a live server.

As for dcgan.v1 (test_hostile_input.py): ModelInfer requests drawn by hypothesis get the status
an independent oracle of the rules expects, and every method of inference.GRPCInferenceService
is fuzzed with broken bytes; never INTERNAL or UNKNOWN, and the server stays healthy.
"""

from __future__ import annotations

import random
from collections import Counter
from typing import Any

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tritonclient.grpc import service_pb2 as triton_pb

from dcgan.oip import inference_pb2 as oip
from tests.support.latents import NZ
from tests.support.messages import mutated
from tests.support.servers import ServerThread

LIMIT = 256  # max_latents_per_request of the test server
PER_IMAGE = {"image": 4 * 3 * 64 * 64, "pixels": 3 * 64 * 64}  # bytes of one image per output
MAX_RESPONSE = 4 * 2**20
OK, INVALID = grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT
EXHAUSTED = grpc.StatusCode.RESOURCE_EXHAUSTED
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))


def model_name(running: ServerThread) -> str:
    (status,) = running.server.plane.list_models().models
    return status.name


@st.composite
def infer_requests(draw: st.DrawFn) -> dict[str, Any]:
    """What a request holds, as plain values the oracle reads and `build` turns into protobuf."""
    case: dict[str, Any] = {
        "outputs": draw(st.lists(st.sampled_from(["image", "pixels", "mask", ""]), max_size=3)),
        "mode": draw(st.sampled_from(["raw", "typed", "seeded", "none", "raw and seeded"])),
        "input": draw(st.sampled_from(["z", "z", "z", "x"])),
        "datatype": draw(st.sampled_from(["FP32", "FP32", "FP16", "UINT8", ""])),
        "count": draw(st.integers(0, LIMIT + 3)),
        "width": draw(st.sampled_from([NZ, NZ, NZ - 1, 1])),
        "rank": draw(st.sampled_from([2, 2, 2, 1, 3])),
        "shape_count": draw(st.sampled_from(["same", "same", "same", "other"])),
        "tail": draw(st.sampled_from([0, 0, 0, 1, 3])),  # bytes too many
        "bad_value": draw(st.sampled_from([None, None, float("nan"), float("inf")])),
        "seed": draw(st.integers(-5, 2**64 - 1)),
        "seed_kind": draw(st.sampled_from(["int64", "uint64", "string", "absent"])),
    }
    return case


def build(name: str, case: dict[str, Any]) -> triton_pb.ModelInferRequest:
    request = triton_pb.ModelInferRequest(model_name=name)
    for output in case["outputs"]:
        request.outputs.add(name=output)
    count, width = case["count"], case["width"]
    values = np.zeros((count, width), np.float32)
    if case["bad_value"] is not None and count:
        values[count // 2, width // 2] = case["bad_value"]
    if case["mode"] in ("raw", "typed", "raw and seeded"):
        shape = [count if case["shape_count"] == "same" else count + 1, width]
        shape = {1: [shape[0] * width], 2: shape, 3: [*shape, 1]}[case["rank"]]
        tensor = request.inputs.add(name=case["input"], datatype=case["datatype"], shape=shape)
        if case["mode"] == "typed":
            tensor.contents.fp32_contents.extend(values.ravel().tolist())
        else:
            request.raw_input_contents.append(values.tobytes() + b"\x00" * case["tail"])
    if case["mode"] in ("seeded", "raw and seeded"):
        request.parameters["count"].int64_param = count
        seed, kind = case["seed"], case["seed_kind"]
        if kind == "int64" and -(2**63) <= seed < 2**63:
            request.parameters["seed"].int64_param = seed
        elif kind == "uint64" and seed >= 0:
            request.parameters["seed"].uint64_param = seed
        elif kind == "string":
            request.parameters["seed"].string_param = str(seed)
    return request


def expected(case: dict[str, Any]) -> grpc.StatusCode:
    """The oracle: the code the protocol's rules give a request."""
    outputs = case["outputs"] or ["image", "pixels"]
    if not set(outputs) <= set(PER_IMAGE) or len(set(outputs)) < len(outputs):
        return INVALID
    mode, count = case["mode"], case["count"]
    if mode in ("none", "raw and seeded"):
        return INVALID
    if mode == "seeded":
        seed, kind = case["seed"], case["seed_kind"]
        if kind == "string" or (kind != "absent" and seed < 0):
            return INVALID
    else:
        if case["input"] != "z" or case["datatype"] != "FP32" or case["rank"] != 2:
            return INVALID
        if case["width"] != NZ or case["shape_count"] != "same":
            return INVALID
        if mode == "raw" and case["tail"]:
            return INVALID
        if case["bad_value"] is not None and count:
            return INVALID
    if not 1 <= count <= LIMIT:
        return INVALID
    size = count * sum(PER_IMAGE[output] for output in outputs) + 4096
    return EXHAUSTED if size > MAX_RESPONSE else OK


@SETTINGS
@given(case=infer_requests())
def test_model_infer_answers_what_the_rules_say(server: ServerThread, case: dict[str, Any]) -> None:
    stub = grpc.insecure_channel(server.target).unary_unary(
        "/inference.GRPCInferenceService/ModelInfer",
        request_serializer=triton_pb.ModelInferRequest.SerializeToString,
        response_deserializer=triton_pb.ModelInferResponse.FromString,
    )
    try:
        response, code = stub(build(model_name(server), case), timeout=30), OK
    except grpc.RpcError as error:
        response, code = error.details(), error.code()
    assert code == expected(case), (case, response)
    if code == OK:
        outputs = case["outputs"] or ["image", "pixels"]
        assert [output.name for output in response.outputs] == outputs
        for output, raw in zip(response.outputs, response.raw_output_contents, strict=True):
            assert output.shape[0] == case["count"]
            assert len(raw) == case["count"] * PER_IMAGE[output.name]


# ------------------------------------------------------------------------------ fuzz

METHODS = [
    method.name for method in oip.DESCRIPTOR.services_by_name["GRPCInferenceService"].methods
]
# a model or version that does not exist, loads on a server whose model control is not explicit
ALLOWED = {
    OK,
    INVALID,
    EXHAUSTED,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.FAILED_PRECONDITION,
}


def seeds(name: str) -> list[bytes]:
    """Valid messages of each method to break: inference with raw, typed and seeded latents."""
    raw = oip.ModelInferRequest(model_name=name, raw_input_contents=[bytes(4 * NZ)])
    raw.inputs.add(name="z", datatype="FP32", shape=[1, NZ])
    typed = oip.ModelInferRequest(model_name=name)
    typed.inputs.add(name="z", datatype="FP32", shape=[1, NZ]).contents.fp32_contents.extend(
        [0.5] * NZ
    )
    seeded = oip.ModelInferRequest(model_name=name)
    seeded.parameters["count"].int64_param = 2
    seeded.parameters["seed"].int64_param = 9
    seeded.outputs.add(name="pixels")
    return [
        raw.SerializeToString(),
        typed.SerializeToString(),
        seeded.SerializeToString(),
        oip.ModelMetadataRequest(name=name, version="1").SerializeToString(),
        oip.RepositoryModelLoadRequest(model_name=name).SerializeToString(),
    ]


def test_live_fuzz_of_every_method(
    server: ServerThread, capsys: pytest.CaptureFixture[str]
) -> None:
    channel = grpc.insecure_channel(server.target)
    rng = random.Random(20261202)
    valid = seeds(model_name(server))
    outcomes: Counter[str] = Counter()
    for method in METHODS:
        rpc = channel.unary_unary(f"/inference.GRPCInferenceService/{method}")
        for _ in range(150):
            data = mutated(rng, valid)
            try:
                rpc(data, timeout=30)
                code = OK
            except grpc.RpcError as error:
                code = error.code()
            assert code in ALLOWED, (method, data[:60], code)
            outcomes[f"{method} {code.name}"] += 1
    health = health_pb2_grpc.HealthStub(channel)
    assert (
        health.Check(health_pb2.HealthCheckRequest()).status
        == health_pb2.HealthCheckResponse.SERVING
    )
    assert outcomes["ModelInfer OK"] > 0 and outcomes["ModelInfer INVALID_ARGUMENT"] > 0, outcomes
    with capsys.disabled():
        summary = ", ".join(f"{key}: {value}" for key, value in sorted(outcomes.items()))
        print(f"\ninference fuzz: {sum(outcomes.values())} cases, server healthy; {summary}")
