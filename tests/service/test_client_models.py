"""The clients against a server of several models: each model by name and a version pinned, from
the Python clients, dcgan-client and dcgan-bench; an unknown model as NOT_FOUND and a request
that names none as the server's INVALID_ARGUMENT, one line each; and client-side health checking,
which takes a replica out of the round the moment it says NOT_SERVING (a drain begun), so that
not one call reaches it to be refused.

The repository: model "rgb" in two versions (the session's export, then a pytorch/examples
generator of other weights, both 64x64 RGB, nz 100) and model "gray" (64x64, one channel, nz 16),
served under the version policy `all`.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2
from PIL import Image
from typer.testing import CliRunner, Result

from dcgan.clients import bench, cli
from dcgan.clients.client import AsyncGeneratorClient, GeneratorClient
from dcgan.contract.manifest import ONNX
from dcgan.contract.seeded import seeded_latents
from dcgan.export.export import export_generator
from tests.support.exports import examples_state_dict
from tests.support.latents import direct
from tests.support.servers import ServerThread, server_config

GRAY = {"nz": 16, "ngf": 8, "nc": 1}
MODELS = "gray, rgb"


def small_export(root: Path, name: str, nz: int, ngf: int, nc: int, seed: int) -> Path:
    """dcgan-export's ONNX export of a pytorch/examples generator, parity proved at batch 1."""
    source = examples_state_dict(root / f"{name}.pth", nz=nz, ngf=ngf, nc=nc, seed=seed)
    shape = {"nz": nz, "ngf": ngf, "channels": nc, "image_size": 64}
    export_generator(source, root / name, formats=[ONNX], shape=shape, batch_sizes=(1,))
    return root / name


@pytest.fixture(scope="module")
def exports(export_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Each model version's export, by `name/version`."""
    root = tmp_path_factory.mktemp("model-exports")
    return {
        "rgb/1": export_dir,
        "rgb/2": small_export(root, "rgb2", nz=100, ngf=8, nc=3, seed=1),
        "gray/1": small_export(root, "gray", **GRAY, seed=2),
    }


@pytest.fixture(scope="module")
def models_server(
    exports: dict[str, Path], export_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerThread]:
    repository = tmp_path_factory.mktemp("repository")
    for place, export in exports.items():
        shutil.copytree(export, repository / place)
    config = server_config(export_dir)  # export_dir: a placeholder, replaced
    running = ServerThread(
        replace(config, model_dir=None, model_repository=repository, version_policy="all")
    )
    try:
        yield running
    finally:
        running.stop()


def pixels(exports: dict[str, Path], place: str, seed: int, count: int) -> Any:
    """What the serving graph of `place` (name/version) makes of the server's seeded latents,
    run directly."""
    nz = GRAY["nz"] if place.startswith("gray/") else 100
    return direct(exports[place], seeded_latents(seed, count, nz))[1]


def client(*args: str, **env: str) -> Result:
    clean: dict[str, str | None] = {name: None for name in os.environ if name.startswith("DCGAN_")}
    return CliRunner(env={**clean, **env}).invoke(cli.app, list(args))


def run_bench(*args: str) -> Result:
    clean = {name: None for name in os.environ if name.startswith("DCGAN_")}
    return CliRunner(env=clean).invoke(bench.app, list(args))


def one_error_line(result: Result) -> str:
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    return lines[0]


# ------------------------------------------------------------------------------ Python clients


def test_the_sync_client_asks_each_model_by_name_and_a_version_pinned(
    models_server: ServerThread, exports: dict[str, Path]
) -> None:
    with GeneratorClient(models_server.target, model="gray") as gray:
        answer = gray.generate_response(n=3, seed=5)
        assert (answer.model_name, answer.model_version) == ("gray", 1)
        np.testing.assert_array_equal(answer.images, pixels(exports, "gray/1", 5, 3))
        info = gray.info()
        assert (info["model_name"], info["model_version"], info["nz"], info["channels"]) == (
            "gray",
            1,
            16,
            1,
        )
        walk = gray.interpolate(5, 6, steps=3)
        np.testing.assert_array_equal(walk[0], answer.images[0])
        chunks = list(gray.generate_stream(n=300, seed=5))  # more than one answer carries
        assert {(chunk.model_name, chunk.model_version) for chunk in chunks} == {("gray", 1)}
        newest = gray.using("rgb")  # the same channel, another model: its newest version
        answer = newest.generate_response(n=2, seed=5)
        assert (answer.model_name, answer.model_version) == ("rgb", 2)
        np.testing.assert_array_equal(answer.images, pixels(exports, "rgb/2", 5, 2))
        pinned = gray.using("rgb", 1)
        assert pinned.info()["model_version"] == 1
        np.testing.assert_array_equal(pinned.generate(n=2, seed=5), pixels(exports, "rgb/1", 5, 2))
        assert gray.info()["model_name"] == "gray"  # using() left this client as it was
    with GeneratorClient(models_server.target, model="rgb", version=1) as rgb:
        assert rgb.generate_response(n=1, seed=0).model_version == 1


def test_an_unknown_model_or_version_is_not_found_and_no_model_named_is_invalid(
    models_server: ServerThread,
) -> None:
    cases = [
        ("nope", 0, grpc.StatusCode.NOT_FOUND, "no model 'nope' on this server (models: gray, rgb)"),
        ("rgb", 3, grpc.StatusCode.NOT_FOUND, "model rgb has no version 3 being served"),
        ("", 0, grpc.StatusCode.INVALID_ARGUMENT, "this server serves 2 models (gray, rgb)"),
    ]  # fmt: skip
    for model, version, code, details in cases:
        with GeneratorClient(models_server.target, model=model, version=version) as asking:
            for call in (lambda: asking.generate(n=1), asking.info):
                with pytest.raises(grpc.RpcError) as refused:
                    call()
                assert refused.value.code() == code, (model, version)
                assert details in str(refused.value.details())


def test_the_clients_refuse_a_name_or_version_no_request_can_carry() -> None:
    for model, version, message in [
        ("a b", 0, "model 'a b' is not a model name"),
        ("-rgb", 0, "model '-rgb' is not a model name"),
        ("x" * 129, 0, "is not a model name"),
        ("rgb", -1, "version -1 is not 0 (the newest) or a version"),
        ("rgb", 2**63, f"version {2**63} is not 0"),
    ]:
        with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
            GeneratorClient("127.0.0.1:1", model=model, version=version)
    with (
        GeneratorClient("127.0.0.1:1") as unnamed,
        pytest.raises(ValueError, match="version -2 is not 0"),
    ):
        unnamed.using("rgb", -2)


def test_the_async_client_asks_each_model_by_name(
    models_server: ServerThread, exports: dict[str, Path]
) -> None:
    async def scenario() -> dict[str, Any]:
        async with AsyncGeneratorClient(models_server.target, model="gray") as gray:
            pinned = gray.using("rgb", 1)
            gray_answer, rgb_answer = await asyncio.gather(
                gray.generate_response(n=2, seed=9), pinned.generate_response(n=2, seed=9)
            )
            chunks = [chunk async for chunk in pinned.generate_stream(n=2, seed=9)]
            with pytest.raises(grpc.RpcError) as refused:
                await gray.using("nope").info()
            return {
                "gray": gray_answer,
                "rgb": rgb_answer,
                "chunks": chunks,
                "info": await pinned.info(),
                "refused": refused.value.code(),
            }

    result = asyncio.run(scenario())
    assert (result["gray"].model_name, result["rgb"].model_name) == ("gray", "rgb")
    np.testing.assert_array_equal(result["gray"].images, pixels(exports, "gray/1", 9, 2))
    np.testing.assert_array_equal(result["rgb"].images, pixels(exports, "rgb/1", 9, 2))
    assert [(c.model_name, c.model_version) for c in result["chunks"]] == [("rgb", 1)]
    assert (result["info"]["model_name"], result["info"]["model_version"]) == ("rgb", 1)
    assert result["refused"] == grpc.StatusCode.NOT_FOUND


# ------------------------------------------------------------------------------ dcgan-client


def test_dcgan_client_generates_from_each_model_by_name_and_version(
    models_server: ServerThread, exports: dict[str, Path], tmp_path: Path
) -> None:
    target = models_server.target
    gray_out = tmp_path / "gray.png"
    made = client("--target", target, "--model", "gray", "generate", "-n", "2", "--seed", "4",
                  "--columns", "2", "--out", str(gray_out))  # fmt: skip
    assert made.exit_code == 0, made.output
    assert made.output == f"2 images of model gray version 1 -> {gray_out}\n"
    grid = np.asarray(Image.open(gray_out))
    assert grid.shape == (68, 2 * 66 + 2)  # one channel: a grayscale grid
    np.testing.assert_array_equal(grid[2:66, 2:66], pixels(exports, "gray/1", 4, 1)[0, :, :, 0])
    walk_out = tmp_path / "walk"
    walked = client("--target", target, "--model", "rgb", "--model-version", "1",
                    "interpolate", "--start", "4", "--end", "5", "--steps", "3",
                    "--out", str(walk_out))  # fmt: skip
    assert walked.exit_code == 0, walked.output
    assert walked.output == f"3 images of model rgb version 1 -> {walk_out}\n"
    first = np.asarray(Image.open(walk_out / "4-5-00000.png"))
    np.testing.assert_array_equal(first, pixels(exports, "rgb/1", 4, 1)[0])
    from_environment = client("--target", target, "info", DCGAN_MODEL="rgb")
    assert from_environment.exit_code == 0, from_environment.output
    info = json.loads(from_environment.output)
    assert (info["model_name"], info["model_version"], info["nz"]) == ("rgb", 2, 100)
    pinned = client("--target", target, "info", DCGAN_MODEL="rgb", DCGAN_MODEL_VERSION="1")
    assert json.loads(pinned.output)["model_version"] == 1
    healthy = client("--target", target, "--model", "gray", "health")
    assert (healthy.exit_code, healthy.output) == (0, "SERVING\n")


def test_dcgan_client_says_in_one_line_what_the_server_refused(
    models_server: ServerThread, tmp_path: Path
) -> None:
    target = models_server.target
    out = tmp_path / "out.png"
    refusals = {
        ("--model", "nope"): f"error: {target}: NOT_FOUND: no model 'nope' on this server "
        f"(models: {MODELS})",
        ("--model", "rgb", "--model-version", "7"): f"error: {target}: NOT_FOUND: model rgb has "
        "no version 7 being served (serving: 1, 2)",
        (): f"error: {target}: INVALID_ARGUMENT: this server serves 2 models ({MODELS}): "
        "name one in model_name",
    }
    for options, expected in refusals.items():
        for command in (["info"], ["generate", "-n", "1", "--out", str(out)], ["interpolate",
                        "--steps", "2", "--out", str(out)]):  # fmt: skip
            result = client("--target", target, *options, *command)
            assert result.exit_code == 1, (options, command, result.output)
            assert one_error_line(result) == expected, (options, command)
    assert not out.exists()
    unknown = client("--target", target, "--model", "nope", "health")
    assert unknown.exit_code == 1
    assert one_error_line(unknown).startswith(f"error: {target}: NOT_FOUND")


def test_dcgan_client_refuses_a_bad_model_or_version_before_any_call() -> None:
    for options, reason in [
        (["--model", "a/b"], "--model 'a/b' is not a model name"),
        (["--model", " "], "--model ' ' is not a model name"),
    ]:
        result = client("--target", "127.0.0.1:1", *options, "info")
        assert result.exit_code == 2, result.output
        assert one_error_line(result).startswith(f"error: {reason}")
    for value in ("-1", str(2**63), "abc", "1.5"):
        result = client("--target", "127.0.0.1:1", "--model-version", value, "info")
        assert result.exit_code == 2, (value, result.output)
        assert "Invalid value for '--model-version'" in result.output
    from_environment = client("--target", "127.0.0.1:1", "info", DCGAN_MODEL_VERSION="-3")
    assert from_environment.exit_code == 2, from_environment.output


# ------------------------------------------------------------------------------ dcgan-bench


def test_dcgan_bench_loads_the_model_named_and_refuses_others_in_one_line(
    models_server: ServerThread, tmp_path: Path
) -> None:
    target = models_server.target
    report = tmp_path / "bench.json"
    measured = run_bench("--target", target, "--model", "gray", "--model-version", "1", "-c", "2",
                         "--duration-s", "0.3", "--warmup-s", "0", "--json", str(report))  # fmt: skip
    assert measured.exit_code == 0, measured.output
    written = json.loads(report.read_text())
    assert (written["spec"]["model"], written["spec"]["model_version"]) == ("gray", 1)
    (level,) = written["levels"]
    assert level["requests"] > 0 and level["errors"] == {}
    short = ["--duration-s", "0.2", "--warmup-s", "0", "-c", "1"]
    unknown = run_bench("--target", target, "--model", "nope", *short)
    assert unknown.exit_code == 1
    assert one_error_line(unknown) == (
        f"error: {target}: NOT_FOUND: no model 'nope' on this server (models: {MODELS})"
    )
    unnamed = run_bench("--target", target, *short)
    assert unnamed.exit_code == 1
    assert one_error_line(unnamed).startswith(f"error: {target}: INVALID_ARGUMENT: this server")
    bad_name = run_bench("--target", target, "--model", "a b", *short)
    assert bad_name.exit_code == 2
    assert one_error_line(bad_name).startswith("error: --model 'a b' is not a model name")


# ------------------------------------------------------------------------------ health checking


def answered_generate(running: ServerThread) -> int:
    """Generate calls the server answered OK, by its own count."""
    entries = running.server.answered().split(", ")  # "Generate OK=12, ..." or "none"
    counts = dict(entry.rsplit("=", 1) for entry in entries if "=" in entry)
    return int(counts.get("Generate OK", 0))


def test_a_replica_that_turns_not_serving_gets_no_more_calls_then_rejoins(
    fresh_server: Any,
) -> None:
    replicas: list[ServerThread] = [fresh_server(), fresh_server()]
    leaving = replicas[0]
    target = "ipv4:" + ",".join(replica.target for replica in replicas)
    with GeneratorClient(target, timeout=10) as spread:
        grpc.channel_ready_future(spread.channel).result(timeout=10)
        for seed in range(20):
            spread.generate(n=1, seed=seed)
        assert min(answered_generate(replica) for replica in replicas) > 0  # both in the round
        # NOT_SERVING while still answering: only health checking keeps calls away from it
        not_serving = health_pb2.HealthCheckResponse.NOT_SERVING
        leaving.call(leaving.server.health.set("", not_serving))
        time.sleep(0.5)  # the Watch stream carries the change to the client's balancer
        before = [answered_generate(replica) for replica in replicas]
        for seed in range(30):
            spread.generate(n=1, seed=seed)
        after = [answered_generate(replica) for replica in replicas]
        assert [a - b for a, b in zip(after, before, strict=True)] == [0, 30]
        assert spread.health() in ("SERVING", "NOT_SERVING")  # Check still reaches either
        leaving.call(leaving.server.health.set("", health_pb2.HealthCheckResponse.SERVING))
        deadline = time.monotonic() + 10
        rejoined = answered_generate(leaving)
        while answered_generate(leaving) == rejoined and time.monotonic() < deadline:
            spread.generate(n=1, seed=0)
        assert answered_generate(leaving) > rejoined, "the replica never rejoined the round"


def test_health_check_reports_a_not_serving_server_rather_than_failing(
    fresh_server: Any,
) -> None:
    running: ServerThread = fresh_server()
    running.call(running.server.health.set("", health_pb2.HealthCheckResponse.NOT_SERVING))
    with GeneratorClient(running.target, timeout=5) as lone:
        assert lone.health() == "NOT_SERVING"
        with pytest.raises(grpc.RpcError) as refused:  # no replica to route the call to
            lone.generate(n=1)
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "backend unhealthy" in str(refused.value.details())
    result = client("--target", running.target, "health")
    assert (result.exit_code, result.output) == (1, "NOT_SERVING\n")


def test_a_draining_replica_is_left_at_once_not_asked_and_refused(fresh_server: Any) -> None:
    draining: ServerThread = fresh_server(drain_s=2.0)  # refuses new calls for 2 s of its stop
    replicas = [draining, fresh_server()]
    with GeneratorClient("ipv4:" + ",".join(r.target for r in replicas), timeout=10) as spread:
        grpc.channel_ready_future(spread.channel).result(timeout=10)
        for seed in range(10):
            spread.generate(n=1, seed=seed)
        assert answered_generate(draining) > 0
        before = draining.server.answered()
        stopping = asyncio.run_coroutine_threadsafe(draining.server.stop(), draining.loop)
        time.sleep(0.5)  # the drain's NOT_SERVING reaches the client's balancer
        for seed in range(30):
            spread.generate(n=1, seed=seed)
        during = draining.server.answered()
        stopping.result(timeout=10)
    assert during == before  # not one call reached it, not even one refused with UNAVAILABLE
