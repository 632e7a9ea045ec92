"""docker-compose.yml for real, in the order a user runs it: train, export, serve, scale out.

The tests of this module share one compose project (tests/e2e/conftest.py) and run in file
order: the scaling tests come last, since scaling recreates the first replica.
"""

from __future__ import annotations

import hashlib
import io
import json
import threading
import time

import grpc
import numpy as np
import pytest
from PIL import Image

from dcgan.clients.client import GeneratorClient
from dcgan.contract.manifest import ONNX_SERVING, Manifest
from dcgan.v1 import generator_pb2 as pb
from dcgan.v1 import generator_pb2_grpc as pb_grpc
from tests.support.compose import (
    MAX_BATCH_SIZE,
    METRICS_PORT,
    PORT,
    TRAIN_STEPS,
    Compose,
    Replica,
    dcgan_variables,
    docker_exec,
    generate_calls_answered,
    inspect,
    process_environ,
    volume_file,
    volume_files,
)

pytestmark = pytest.mark.e2e


# ---------------------------------------------------------------------------- train and export


def test_the_train_job_leaves_a_checkpoint_and_a_sample_grid_in_the_runs_volume(
    compose: Compose, trained: str
) -> None:
    files = volume_files(compose.volume("runs"))
    assert "/v/dcgan/checkpoints/latest.pt" in files
    assert "/v/dcgan/samples/final.png" in files
    grid = Image.open(io.BytesIO(volume_file(compose.volume("runs"), "dcgan/samples/final.png")))
    assert grid.format == "PNG"
    assert len(np.unique(np.asarray(grid))) > 8, "a blank or nearly blank sample grid"


def test_the_export_job_installs_the_serving_graph_its_manifest_names(
    compose: Compose, exported: str
) -> None:
    models = compose.volume("models")
    manifest = Manifest.from_dict(json.loads(volume_file(models, "dcgan/1/manifest.json")))
    name = manifest.file_of(ONNX_SERVING)
    assert name == "generator_serving.onnx"
    graph = volume_file(models, f"dcgan/1/{name}")
    assert hashlib.sha256(graph).hexdigest() == manifest.artifacts[name].sha256
    assert manifest.source.step == TRAIN_STEPS


# ---------------------------------------------------------------------------- serve


def test_serve_comes_up_healthy_and_answers_serving_from_the_host(serving: Replica) -> None:
    assert inspect(serving.container)["State"]["Health"]["Status"] == "healthy"
    with GeneratorClient(serving.target, timeout=10) as client:
        assert client.health() == "SERVING"


def test_the_server_serves_the_exported_model_with_the_settings_compose_passed(
    compose: Compose, serving: Replica
) -> None:
    manifest = Manifest.from_dict(
        json.loads(volume_file(compose.volume("models"), "dcgan/1/manifest.json"))
    )
    with GeneratorClient(serving.target, timeout=10) as client:
        info = client.info()
    assert info["model_sha256"] == manifest.artifacts["generator_serving.onnx"].sha256
    assert (info["model_name"], info["model_version"]) == ("dcgan", 1)
    assert info["source_step"] == TRAIN_STEPS
    assert info["max_batch_size"] == MAX_BATCH_SIZE  # DCGAN_MAX_BATCH_SIZE, set for the tests
    assert info["max_queue_delay_us"] == 0  # the others unset: the server's own defaults
    assert info["max_queue_size"] == 4096


def test_the_server_process_gets_only_the_dcgan_variables_that_are_set(
    serving: Replica,
) -> None:
    assert dcgan_variables(process_environ(serving.container)) == {
        "DCGAN_MODEL_REPOSITORY": "/models",  # docker-compose.yml
        "DCGAN_MODEL_CONTROL": "poll",
        "DCGAN_HOST": "127.0.0.1",  # docker/compose.e2e.yml
        "DCGAN_PORT": f"{PORT}-{PORT}",
        "DCGAN_METRICS_PORT": str(METRICS_PORT),
        "DCGAN_PORT_FILE": "/tmp/dcgan-serve.port",
        "DCGAN_GRACE_S": "2",
        "DCGAN_MAX_BATCH_SIZE": str(MAX_BATCH_SIZE),  # the tests' shell
    }


def test_generate_from_the_host_gives_real_images(serving: Replica) -> None:
    with GeneratorClient(serving.target, timeout=30) as client:
        info = client.info()
        images = client.generate_images(n=16, seed=1)
    size, mode = info["image_size"], {1: "L", 3: "RGB"}[info["channels"]]
    assert len(images) == 16
    assert {(image.size, image.mode) for image in images} == {((size, size), mode)}
    assert all(len(np.unique(np.asarray(image))) > 8 for image in images), "a blank image"
    assert len({image.tobytes() for image in images}) == 16, "16 latents, 16 different images"


def test_the_same_seed_gives_the_same_png_bytes_and_another_seed_others(
    serving: Replica,
) -> None:
    with GeneratorClient(serving.target, timeout=30) as client:
        first = client.generate(n=4, seed=1, encoding="png")
        again = client.generate(n=4, seed=1, encoding="png")
        other = client.generate(n=4, seed=2, encoding="png")
    assert all(png.startswith(b"\x89PNG\r\n\x1a\n") for png in first)
    assert first == again
    assert not set(first) & set(other)


def test_metrics_answer_on_the_configured_port_and_count_each_generate(
    serving: Replica,
) -> None:
    before = generate_calls_answered(serving.metrics_port)
    with GeneratorClient(serving.target, timeout=30) as client:
        client.generate(n=2, seed=3)
    assert generate_calls_answered(serving.metrics_port) == before + 1


def test_the_serve_container_has_no_torch_runs_as_uid_10001_and_keeps_no_telemetry_id(
    serving: Replica,
) -> None:
    torch = docker_exec(serving.container, "python", "-c", "import torch")
    assert torch.returncode == 1
    assert "No module named 'torch'" in torch.stderr
    status = docker_exec(serving.container, "cat", "/proc/1/status").stdout
    (uids,) = [line.split()[1:] for line in status.splitlines() if line.startswith("Uid:")]
    assert set(uids) == {"10001"}, f"dcgan-serve runs with uids {uids}"
    # The server has run onnxruntime sessions by now: its home holds no device id.
    home = docker_exec(serving.container, "find", "/home/dcgan", "-mindepth", "1")
    assert home.returncode == 0, home.stderr
    assert "Microsoft" not in home.stdout


def test_the_serve_container_has_a_read_only_root_and_a_read_only_model_volume(
    serving: Replica,
) -> None:
    record = inspect(serving.container)
    assert record["HostConfig"]["ReadonlyRootfs"] is True
    (models,) = [mount for mount in record["Mounts"] if mount["Destination"] == "/models"]
    assert models["RW"] is False


# ---------------------------------------------------------------------------- a new version


def test_a_version_the_export_job_adds_goes_live_under_load_with_no_failed_call(
    compose: Compose, serving: Replica
) -> None:
    """The export job run again while a client that does not retry keeps calling: the server
    polls the `models` volume, loads version 2 beside version 1 and swaps; no call fails."""
    stop = threading.Event()
    outcomes: list[tuple[str, int]] = []

    def call() -> None:
        stub = pb_grpc.GeneratorStub(grpc.insecure_channel(serving.target))
        request = pb.GenerateRequest(seeded=pb.SeededLatents(count=4, seed=1))
        while not stop.is_set():
            try:
                outcomes.append(("OK", stub.Generate(request, timeout=30).model_version))
            except grpc.RpcError as error:
                outcomes.append((error.code().name, 0))

    callers = [threading.Thread(target=call) for _ in range(8)]
    for caller in callers:
        caller.start()
    try:
        compose("run", "--rm", "-T", "export", timeout=300)
        deadline = time.monotonic() + 60  # the poll (DCGAN_POLL_S, 5 s), the load, the warm-up
        while not any(version == 2 for _, version in outcomes[-8:]):
            assert time.monotonic() < deadline, "version 2 never answered"
            time.sleep(0.2)
        time.sleep(1)
    finally:
        stop.set()
        for caller in callers:
            caller.join(60)
    assert [outcome for outcome in outcomes if outcome[0] != "OK"] == []
    assert {version for _, version in outcomes} == {1, 2}
    assert {version for _, version in outcomes[-8:]} == {2}  # only the newest answers now
    assert "/v/dcgan/2/manifest.json" in volume_files(compose.volume("models"))


# ---------------------------------------------------------------------------- scale


def test_two_replicas_bind_the_two_ports_of_the_range_and_are_both_healthy(
    scaled: list[Replica],
) -> None:
    assert [replica.port for replica in scaled] == [PORT, PORT + 1]
    assert [replica.metrics_port for replica in scaled] == [METRICS_PORT, METRICS_PORT + 1]
    for replica in scaled:
        assert inspect(replica.container)["State"]["Health"]["Status"] == "healthy"
        with GeneratorClient(replica.target, timeout=10) as client:
            assert client.health() == "SERVING"


def test_both_replicas_answer_alike(scaled: list[Replica]) -> None:
    answers = []
    for replica in scaled:
        with GeneratorClient(replica.target, timeout=30) as client:
            answers.append(client.generate(n=4, seed=2, encoding="png"))
    assert answers[0] == answers[1]


def test_one_round_robin_client_reaches_both_replicas(scaled: list[Replica]) -> None:
    before = [generate_calls_answered(replica.metrics_port) for replica in scaled]
    target = "ipv4:" + ",".join(replica.target for replica in scaled)
    with GeneratorClient(target, timeout=30) as client:
        grpc.channel_ready_future(client.channel).result(timeout=10)
        for seed in range(20):
            client.generate(n=1, seed=seed)
    after = [generate_calls_answered(replica.metrics_port) for replica in scaled]
    calls = [a - b for a, b in zip(after, before, strict=True)]
    assert sum(calls) == 20
    assert min(calls) > 0, f"round robin reached one replica only: {calls} calls"
