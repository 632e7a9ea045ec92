"""The Open Inference Protocol against a real server, driven by Triton's own client (tritonclient).

The messages are checked against tritonclient's compiled descriptors, field by field, so that a
wrong name or number fails here and not on someone's wire. Answers are checked against dcgan.v1
Generate for the same latents, and every bad request against the code it must get.
"""

from __future__ import annotations

import asyncio
import queue
import shutil
import time
from collections.abc import Iterator
from dataclasses import replace
from importlib import metadata
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
import tritonclient.grpc as triton
import tritonclient.grpc.aio as triton_aio
from google.protobuf import descriptor_pool
from google.protobuf.descriptor import Descriptor, EnumDescriptor
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)
from tritonclient.grpc import service_pb2 as triton_pb
from tritonclient.grpc import service_pb2_grpc as triton_grpc
from tritonclient.utils import InferenceServerException

from dcgan.contract.seeded import seeded_latents
from dcgan.oip import inference_pb2 as oip
from dcgan.service.inference import EXTENSIONS, SERVICE_NAME
from dcgan.service.options import BatchingOptions
from dcgan.v1 import generator_pb2 as pb
from dcgan.v1 import generator_pb2_grpc as pb_grpc
from tests.support.latents import NZ
from tests.support.servers import ServerThread, server_config, stop_in_background

SHAPE = (3, 64, 64)  # the test export: C, H, W
TOKEN = "s3cret"


def client(target: str) -> triton.InferenceServerClient:
    return triton.InferenceServerClient(target)


def model_name(running: ServerThread) -> str:
    (status,) = running.server.plane.list_models().models
    return status.name


def latents_input(latents: np.ndarray) -> triton.InferInput:
    tensor = triton.InferInput("z", list(latents.shape), "FP32")
    tensor.set_data_from_numpy(latents)
    return tensor


def random_latents(count: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((count, NZ), dtype=np.float32)


def generate(target: str, request: pb.GenerateRequest) -> np.ndarray:
    response = pb_grpc.GeneratorStub(grpc.insecure_channel(target)).Generate(request)
    dtype = np.uint8 if response.dtype == "uint8" else np.float32
    return np.frombuffer(response.data, dtype).reshape(tuple(response.shape))


def status_of(call: Any, *args: Any, **kwargs: Any) -> tuple[str, str]:
    with pytest.raises(InferenceServerException) as raised:
        call(*args, **kwargs)
    return str(raised.value.status()), str(raised.value.message())


# ------------------------------------------------------------------------------ the messages


def _fields(message: Descriptor) -> dict[str, tuple[Any, ...]]:
    return {
        field.name: (
            field.number,
            field.type,
            field.is_repeated,
            field.message_type.full_name if field.message_type else None,
            field.enum_type.full_name if field.enum_type else None,
            field.containing_oneof.name if field.containing_oneof else None,
        )
        for field in message.fields
    }


def _messages(message: Descriptor) -> list[Descriptor]:
    return [message, *(each for nested in message.nested_types for each in _messages(nested))]


def _enums(file: Any) -> list[EnumDescriptor]:
    enums = list(file.enum_types_by_name.values())
    for message in file.message_types_by_name.values():
        for each in _messages(message):
            enums += each.enum_types
    return enums


def test_every_field_has_the_name_number_and_type_of_tritons() -> None:
    theirs = descriptor_pool.Default()  # where tritonclient's stubs register
    compared = 0
    for top in oip.DESCRIPTOR.message_types_by_name.values():
        for message in _messages(top):
            reference = theirs.FindMessageTypeByName(message.full_name)
            ours, known = _fields(message), _fields(reference)
            for name, facts in ours.items():
                assert known.get(name) == facts, f"{message.full_name}.{name}"
                compared += 1
    for enum in _enums(oip.DESCRIPTOR):
        reference_enum = theirs.FindEnumTypeByName(enum.full_name)
        values = {value.name: value.number for value in reference_enum.values}
        assert {value.name: value.number for value in enum.values} == values, enum.full_name
    assert compared > 100
    service = theirs.FindServiceByName(SERVICE_NAME)
    for method in oip.DESCRIPTOR.services_by_name["GRPCInferenceService"].methods:
        reference_method = service.FindMethodByName(method.name)
        assert reference_method.input_type.full_name == method.input_type.full_name
        assert reference_method.output_type.full_name == method.output_type.full_name
        assert not reference_method.client_streaming and not reference_method.server_streaming


def test_our_messages_live_in_a_pool_of_their_own() -> None:
    assert oip.DESCRIPTOR.pool is oip.POOL
    assert oip.POOL is not descriptor_pool.Default()
    assert triton_pb.ModelInferRequest.DESCRIPTOR.file.pool is descriptor_pool.Default()


# ------------------------------------------------------------------------------ health, metadata


def test_liveness_and_readiness_of_the_server_and_its_model(server: ServerThread) -> None:
    triton_client, name = client(server.target), model_name(server)
    assert triton_client.is_server_live()
    assert triton_client.is_server_ready()
    assert triton_client.is_model_ready(name)
    assert triton_client.is_model_ready(name, "1")
    assert not triton_client.is_model_ready(name, "2")
    assert not triton_client.is_model_ready("no-such-model")
    assert status_of(triton_client.is_model_ready, name, "one")[0] == "StatusCode.INVALID_ARGUMENT"


def test_server_metadata_lists_the_extensions_implemented(server: ServerThread) -> None:
    answer = client(server.target).get_server_metadata()
    assert answer.name == "dcgan-serve"
    assert answer.version == metadata.version("dcgan-serve")
    assert list(answer.extensions) == list(EXTENSIONS)
    assert set(EXTENSIONS) == {
        "model_configuration",
        "model_repository",
        "statistics",
        "parameters",
    }


def test_model_metadata_gives_the_tensors(server: ServerThread) -> None:
    name = model_name(server)
    answer = client(server.target).get_model_metadata(name, as_json=True)
    assert answer["name"] == name
    assert answer["versions"] == ["1"]
    assert answer["platform"] == "onnxruntime_onnx"
    assert answer["inputs"] == [{"name": "z", "datatype": "FP32", "shape": ["-1", str(NZ)]}]
    c, h, w = SHAPE
    assert answer["outputs"] == [
        {"name": "image", "datatype": "FP32", "shape": ["-1", str(c), str(h), str(w)]},
        {"name": "pixels", "datatype": "UINT8", "shape": ["-1", str(h), str(w), str(c)]},
    ]
    code, message = status_of(client(server.target).get_model_metadata, "no-such-model")
    assert code == "StatusCode.NOT_FOUND" and "no-such-model" in message


def test_model_config_says_how_the_server_batches(server: ServerThread) -> None:
    name = model_name(server)
    config = client(server.target).get_model_config(name).config
    info = server.server.plane.model_info(name, 0)
    assert config.name == name
    assert config.platform == "onnxruntime_onnx" and config.backend == "onnxruntime"
    assert config.max_batch_size == 64
    assert config.dynamic_batching.max_queue_delay_microseconds == 2000
    assert config.WhichOneof("scheduling_choice") == "dynamic_batching"
    assert [(t.name, t.data_type, list(t.dims)) for t in config.input] == [
        ("z", triton.model_config_pb2.TYPE_FP32, [NZ])
    ]
    c, h, w = SHAPE
    assert [(t.name, t.data_type, list(t.dims)) for t in config.output] == [
        ("image", triton.model_config_pb2.TYPE_FP32, [c, h, w]),
        ("pixels", triton.model_config_pb2.TYPE_UINT8, [h, w, c]),
    ]
    (group,) = config.instance_group
    assert group.count == info.instances
    assert group.kind == triton.model_config_pb2.ModelInstanceGroup.KIND_CPU
    assert config.version_policy.latest.num_versions == 1


# ------------------------------------------------------------------------------ inference


def test_pixels_and_images_equal_dcgan_v1_generate(server: ServerThread) -> None:
    latents = random_latents(5)
    triton_client, name = client(server.target), model_name(server)
    pixels = triton_client.infer(name, [latents_input(latents)], outputs=[
        triton.InferRequestedOutput("pixels")
    ])  # fmt: skip
    expected = generate(server.target, pb.GenerateRequest(packed=latents.tobytes()))
    assert pixels.as_numpy("pixels").dtype == np.uint8
    np.testing.assert_array_equal(pixels.as_numpy("pixels"), expected)
    assert pixels.as_numpy("image") is None  # only what was asked for is sent
    assert [output.name for output in pixels.get_response().outputs] == ["pixels"]
    image = triton_client.infer(name, [latents_input(latents)], outputs=[
        triton.InferRequestedOutput("image")
    ])  # fmt: skip
    values = generate(
        server.target,
        pb.GenerateRequest(packed=latents.tobytes(), encoding=pb.ENCODING_FLOAT32_CHW),
    )
    np.testing.assert_array_equal(image.as_numpy("image"), values)
    assert image.as_numpy("pixels") is None
    both = triton_client.infer(name, [latents_input(latents)], request_id="call-7")
    assert both.get_response().id == "call-7"
    assert both.get_response().model_version == "1"
    np.testing.assert_array_equal(both.as_numpy("pixels"), expected)
    np.testing.assert_array_equal(both.as_numpy("image"), values)


def test_typed_fp32_contents_are_accepted_as_raw_bytes_are(server: ServerThread) -> None:
    latents = random_latents(3, seed=4)
    name = model_name(server)
    stub = triton_grpc.GRPCInferenceServiceStub(grpc.insecure_channel(server.target))
    request = triton_pb.ModelInferRequest(model_name=name)
    request.inputs.add(name="z", datatype="FP32", shape=[3, NZ]).contents.fp32_contents.extend(
        latents.ravel().tolist()
    )
    request.outputs.add(name="pixels")
    response = stub.ModelInfer(request)
    assert [o.name for o in response.outputs] == ["pixels"]
    assert list(response.outputs[0].shape) == [3, 64, 64, 3]
    pixels = np.frombuffer(response.raw_output_contents[0], np.uint8).reshape(3, 64, 64, 3)
    expected = generate(server.target, pb.GenerateRequest(packed=latents.tobytes()))
    np.testing.assert_array_equal(pixels, expected)


@pytest.mark.parametrize("seed", [0, 7, 2**63 + 5])
def test_seed_and_count_parameters_draw_dcgan_v1s_seeded_latents(
    server: ServerThread, seed: int
) -> None:
    name = model_name(server)
    stub = triton_grpc.GRPCInferenceServiceStub(grpc.insecure_channel(server.target))
    request = triton_pb.ModelInferRequest(model_name=name)
    request.parameters["seed"].uint64_param = seed
    request.parameters["count"].int64_param = 4
    response = stub.ModelInfer(request)
    names = [o.name for o in response.outputs]
    pixels = np.frombuffer(response.raw_output_contents[names.index("pixels")], np.uint8)
    latents = seeded_latents(seed, 4, NZ)
    expected = generate(server.target, pb.GenerateRequest(packed=latents.tobytes()))
    np.testing.assert_array_equal(pixels.reshape(expected.shape), expected)
    seeded = pb.GenerateRequest(seeded=pb.SeededLatents(seed=seed, count=4))
    np.testing.assert_array_equal(generate(server.target, seeded), expected)
    if seed < 2**63:  # tritonclient sends a Python int as int64
        answer = client(server.target).infer(name, [], parameters={"seed": seed, "count": 4})
        np.testing.assert_array_equal(answer.as_numpy("pixels"), expected)


def test_async_infer_answers_each_callback(server: ServerThread) -> None:
    triton_client, name = client(server.target), model_name(server)
    answers: queue.Queue[tuple[Any, Any]] = queue.Queue()
    batches = [random_latents(count, seed=count) for count in (1, 2, 8)]
    for latents in batches:
        triton_client.async_infer(
            name,
            [latents_input(latents)],
            lambda result, error: answers.put((result, error)),
            outputs=[triton.InferRequestedOutput("pixels")],
        )
    received = [answers.get(timeout=30) for _ in batches]
    assert all(error is None for _, error in received)
    by_count = {len(result.as_numpy("pixels")): result.as_numpy("pixels") for result, _ in received}
    for latents in batches:
        expected = generate(server.target, pb.GenerateRequest(packed=latents.tobytes()))
        np.testing.assert_array_equal(by_count[len(latents)], expected)


def test_the_asyncio_client_gets_the_same_answers(server: ServerThread) -> None:
    latents = random_latents(3, seed=11)
    name = model_name(server)

    async def ask() -> np.ndarray:
        async with triton_aio.InferenceServerClient(server.target) as asyncio_client:
            assert await asyncio_client.is_model_ready(name)
            result = await asyncio_client.infer(name, [latents_input(latents)])
            return result.as_numpy("pixels")

    expected = generate(server.target, pb.GenerateRequest(packed=latents.tobytes()))
    np.testing.assert_array_equal(asyncio.run(ask()), expected)


def test_what_is_not_served_is_unimplemented(server: ServerThread) -> None:
    stub = triton_grpc.GRPCInferenceServiceStub(grpc.insecure_channel(server.target))
    calls = [
        lambda: stub.SystemSharedMemoryStatus(triton_pb.SystemSharedMemoryStatusRequest()),
        lambda: stub.LogSettings(triton_pb.LogSettingsRequest()),
        lambda: list(stub.ModelStreamInfer(iter([triton_pb.ModelInferRequest()]))),
    ]
    for call in calls:
        with pytest.raises(grpc.RpcError) as raised:
            call()
        assert raised.value.code() == grpc.StatusCode.UNIMPLEMENTED


# ------------------------------------------------------------------------------ bad input


def _infer_request(model: str, **changes: Any) -> triton_pb.ModelInferRequest:
    """A valid request for two latents, then `changes`: what is wrong with it."""
    request = triton_pb.ModelInferRequest(model_name=model)
    request.inputs.add(name="z", datatype="FP32", shape=[2, NZ])
    request.raw_input_contents.append(random_latents(2).tobytes())
    for field, value in changes.items():
        if field == "shape":
            del request.inputs[0].shape[:]
            request.inputs[0].shape.extend(value)
        elif field == "raw":
            request.raw_input_contents[0] = value
        elif field == "outputs":
            for output in value:
                request.outputs.add(name=output)
        elif field == "parameters":
            for key, parameter in value.items():
                request.parameters[key].CopyFrom(parameter)
        elif field == "no_inputs":
            del request.inputs[:]
            del request.raw_input_contents[:]
        elif field == "contents_too":
            request.inputs[0].contents.fp32_contents.extend([0.0] * 2 * NZ)
        elif field == "extra_input":
            request.inputs.add(name="y", datatype="FP32", shape=[1, NZ])
            request.raw_input_contents.append(random_latents(1).tobytes())
        else:
            setattr(request.inputs[0] if field in ("name", "datatype") else request, field, value)
    return request


def _integer(value: int) -> triton_pb.InferParameter:
    return triton_pb.InferParameter(int64_param=value)


INVALID, NOT_FOUND, EXHAUSTED = "INVALID_ARGUMENT", "NOT_FOUND", "RESOURCE_EXHAUSTED"
NAN = np.full((2, NZ), np.nan, np.float32).tobytes()
BAD_REQUESTS: list[tuple[str, dict[str, Any], str, str]] = [
    ("wrong datatype", {"datatype": "FP16"}, INVALID, "is FP32, not FP16"),
    ("no datatype", {"datatype": ""}, INVALID, "not unset"),
    ("wrong nz", {"shape": [2, NZ - 1]}, INVALID, f"[-1, {NZ}]"),
    ("one dimension", {"shape": [2 * NZ]}, INVALID, f"[-1, {NZ}]"),
    ("negative batch", {"shape": [-1, NZ]}, INVALID, f"[-1, {NZ}]"),
    ("bytes short", {"raw": b"\x00" * (8 * NZ - 4)}, INVALID, "bytes"),
    ("NaN", {"raw": NAN}, INVALID, "NaN"),
    ("unknown input", {"name": "x"}, INVALID, "'x'"),
    ("two inputs", {"extra_input": True}, INVALID, "'z', 'y'"),
    ("no input", {"no_inputs": True}, INVALID, "none"),
    ("raw and contents", {"contents_too": True}, INVALID, "raw_input_contents"),
    ("unknown output", {"outputs": ["mask"]}, INVALID, "'mask'"),
    ("output twice", {"outputs": ["pixels", "pixels"]}, INVALID, "twice"),
    ("bad version", {"model_version": "one"}, INVALID, "'one'"),
    ("unknown version", {"model_version": "7"}, NOT_FOUND, "no version 7"),
    ("unknown model", {"model_name": "no-such-model"}, NOT_FOUND, "no-such-model"),
    (
        "seed and z",
        {"parameters": {"seed": _integer(1), "count": _integer(1)}},
        INVALID,
        "not both",
    ),
    (
        "seed as text",
        {"no_inputs": True, "parameters": {"seed": triton_pb.InferParameter(string_param="1")}},
        INVALID,
        "integer",
    ),
    (
        "count 0",
        {"no_inputs": True, "parameters": {"count": _integer(0)}},
        INVALID,
        "between 1 and 256",
    ),
    (
        "count 257",
        {"no_inputs": True, "parameters": {"count": _integer(257)}},
        INVALID,
        "between 1 and 256",
    ),
    (
        "negative seed",
        {"no_inputs": True, "parameters": {"seed": _integer(-1), "count": _integer(1)}},
        INVALID,
        "seed",
    ),
    (
        "257 latents",
        {"shape": [257, NZ], "raw": random_latents(257).tobytes()},
        INVALID,
        "at most 256",
    ),
    (
        "answer too large",
        {"shape": [256, NZ], "raw": random_latents(256).tobytes(), "outputs": ["image"]},
        EXHAUSTED,
        "at most",
    ),
]


@pytest.mark.parametrize(
    ("changes", "code", "detail"),
    [case[1:] for case in BAD_REQUESTS],
    ids=[case[0] for case in BAD_REQUESTS],
)
def test_each_bad_request_gets_its_code(
    server: ServerThread, changes: dict[str, Any], code: str, detail: str
) -> None:
    stub = triton_grpc.GRPCInferenceServiceStub(grpc.insecure_channel(server.target))
    with pytest.raises(grpc.RpcError) as raised:
        stub.ModelInfer(_infer_request(model_name(server), **changes))
    assert raised.value.code().name == code
    assert detail in raised.value.details()
    assert client(server.target).is_server_ready()


def test_a_good_request_of_the_bad_requests_table_is_answered(server: ServerThread) -> None:
    stub = triton_grpc.GRPCInferenceServiceStub(grpc.insecure_channel(server.target))
    response = stub.ModelInfer(_infer_request(model_name(server)))
    assert [o.name for o in response.outputs] == ["image", "pixels"]


def test_undecodable_bytes_get_invalid_argument(server: ServerThread) -> None:
    channel = grpc.insecure_channel(server.target)
    call = channel.unary_unary(f"/{SERVICE_NAME}/ModelInfer")
    with pytest.raises(grpc.RpcError) as raised:
        call(b"\xff\xff\xff garbage")
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_a_full_queue_is_resource_exhausted(fresh_server: Any) -> None:
    running = fresh_server(batching=BatchingOptions(max_batch_size=4, max_queue_size=4))
    code, message = status_of(
        client(running.target).infer, model_name(running), [latents_input(random_latents(8))]
    )
    assert code == "StatusCode.RESOURCE_EXHAUSTED" and "queue" in message


def test_a_draining_server_answers_unavailable(fresh_server: Any) -> None:
    running = fresh_server(drain_s=3.0, grace_s=5.0)
    triton_client, name = client(running.target), model_name(running)
    assert triton_client.is_server_ready()
    stopping = stop_in_background(running, SERVICE_NAME)
    code, message = status_of(triton_client.infer, name, [latents_input(random_latents(1))])
    assert code == "StatusCode.UNAVAILABLE" and "draining" in message
    stopping.join(30)


# ------------------------------------------------------------------------------ statistics


def test_statistics_count_what_was_sent(fresh_server: Any) -> None:
    running = fresh_server()
    triton_client, name = client(running.target), model_name(running)
    before_ms = time.time_ns() // 1_000_000
    for count in (1, 2, 5):
        triton_client.infer(name, [latents_input(random_latents(count))])
    status_of(triton_client.infer, name, [latents_input(random_latents(1))], model_version="one")
    bad_nz = triton.InferInput("z", [1, NZ + 1], "FP32")
    bad_nz.set_data_from_numpy(np.zeros((1, NZ + 1), np.float32))
    status_of(triton_client.infer, name, [bad_nz])
    (stats,) = triton_client.get_inference_statistics(name).model_stats
    assert (stats.name, stats.version) == (name, "1")
    assert stats.inference_count == 8
    assert 3 <= stats.execution_count <= 8
    infer = stats.inference_stats
    assert infer.success.count == 3 and infer.success.ns > 0
    assert infer.fail.count == 1  # the bad version never reached a model version
    for part in (infer.queue, infer.compute_input, infer.compute_infer, infer.compute_output):
        assert part.count == 3
    assert 0 < infer.compute_infer.ns < infer.success.ns
    assert infer.queue.ns + infer.compute_infer.ns <= infer.success.ns
    assert before_ms <= stats.last_inference <= time.time_ns() // 1_000_000
    everything = triton_client.get_inference_statistics().model_stats
    assert [s.name for s in everything] == [name]
    same = triton_client.get_inference_statistics(name, "1").model_stats
    assert same[0].inference_stats.success.count == 3
    code, _ = status_of(triton_client.get_inference_statistics, name, "2")
    assert code == "StatusCode.NOT_FOUND"
    code, _ = status_of(triton_client.get_inference_statistics, "no-such-model")
    assert code == "StatusCode.NOT_FOUND"


# ------------------------------------------------------------------------------ repository


@pytest.fixture
def repository_server(tmp_path: Path, export_dir: Path) -> Iterator[Any]:
    """Start servers of a repository of one model, `gen`, in versions 1 and 2 (the same export
    twice); all are stopped at the end."""
    repository = tmp_path / "repository"
    for version in ("1", "2"):
        shutil.copytree(export_dir, repository / "gen" / version)
    started: list[ServerThread] = []

    def start(**changes: Any) -> ServerThread:
        config = replace(server_config(export_dir), model_dir=None, model_repository=repository)
        running = ServerThread(replace(config, **changes))
        started.append(running)
        return running

    yield start
    for running in started:
        running.stop()


def test_versions_are_addressed_by_number(repository_server: Any) -> None:
    running = repository_server(version_policy="all")
    triton_client = client(running.target)
    assert triton_client.get_model_metadata("gen").versions == ["1", "2"]
    assert triton_client.get_model_metadata("gen", "1").versions == ["1"]
    latents = random_latents(2)
    for version, answered in (("1", "1"), ("2", "2"), ("", "2")):
        result = triton_client.infer("gen", [latents_input(latents)], model_version=version)
        assert result.get_response().model_version == answered
    assert triton_client.get_model_config("gen").config.version_policy.HasField("all")
    assert {s.version for s in triton_client.get_inference_statistics("gen").model_stats} == {
        "1",
        "2",
    }


def test_repository_index_load_and_unload(repository_server: Any) -> None:
    running = repository_server(model_control="explicit", token=TOKEN)
    triton_client = client(running.target)
    headers = {"authorization": f"Bearer {TOKEN}"}
    index = triton_client.get_model_repository_index(headers=headers).models
    assert [(m.name, m.version, m.state) for m in index] == [
        ("gen", "1", "UNAVAILABLE"),
        ("gen", "2", "READY"),
    ]
    assert "version policy" in index[0].reason
    ready = triton_client.get_model_repository_index(headers=headers, as_json=True)
    assert ready["models"][1]["state"] == "READY"
    triton_client.unload_model("gen", headers=headers)
    assert not triton_client.is_model_ready("gen", headers=headers)
    states = {
        m.version: m.state for m in triton_client.get_model_repository_index(headers=headers).models
    }
    assert states == {"1": "UNAVAILABLE", "2": "UNAVAILABLE"}
    code, _ = status_of(
        triton_client.infer, "gen", [latents_input(random_latents(1))], headers=headers
    )
    assert code == "StatusCode.NOT_FOUND"
    triton_client.load_model("gen", headers=headers)
    assert triton_client.is_model_ready("gen", "2", headers=headers)
    result = triton_client.infer("gen", [latents_input(random_latents(1))], headers=headers)
    assert result.as_numpy("pixels").shape == (1, 64, 64, 3)
    code, message = status_of(triton_client.load_model, "gen", headers=headers, config="{}")
    assert code == "StatusCode.INVALID_ARGUMENT" and "config" in message
    code, _ = status_of(triton_client.load_model, "", headers=headers)
    assert code == "StatusCode.INVALID_ARGUMENT"
    code, message = status_of(triton_client.load_model, "no-such-model", headers=headers)
    assert code == "StatusCode.NOT_FOUND" and "no-such-model" in message
    code, _ = status_of(triton_client.get_model_repository_index)
    assert code == "StatusCode.UNAUTHENTICATED"
    code, _ = status_of(triton_client.load_model, "gen")
    assert code == "StatusCode.UNAUTHENTICATED"


def test_load_and_unload_need_explicit_model_control(server: ServerThread) -> None:
    code, message = status_of(client(server.target).unload_model, model_name(server))
    assert code == "StatusCode.FAILED_PRECONDITION" and "explicit" in message


# ------------------------------------------------------------------------------ reflection, health


def test_reflection_and_health_include_the_service(server: ServerThread) -> None:
    channel = grpc.insecure_channel(server.target)
    database = ProtoReflectionDescriptorDatabase(channel)
    assert {SERVICE_NAME, "dcgan.v1.Generator", "grpc.health.v1.Health"} <= set(
        database.get_services()
    )
    service = descriptor_pool.DescriptorPool(database).FindServiceByName(SERVICE_NAME)
    assert [method.name for method in service.methods] == [
        method.name for method in oip.DESCRIPTOR.services_by_name["GRPCInferenceService"].methods
    ]
    health = health_pb2_grpc.HealthStub(channel)
    answer = health.Check(health_pb2.HealthCheckRequest(service=SERVICE_NAME))
    assert answer.status == health_pb2.HealthCheckResponse.SERVING
