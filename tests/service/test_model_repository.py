"""A model repository served: versions swapped under load with no failed call, broken versions
that displace nothing, a plain copy that poll never serves half-written, models of different
shapes side by side, an unload that finishes its calls, and memory that returns after swaps.

The models are tiny (nz 8, 1x32x32, ngf 4) bare state_dicts exported with dcgan-export's own
code, beside the session's 64x64 RGB export; versions are added as dcgan-export adds them
(staged in a hidden folder, renamed into place), unless a test copies one in plainly.
"""

from __future__ import annotations

import ctypes
import gc
import itertools
import json
import os
import shutil
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
import torch
from grpc_health.v1 import health_pb2, health_pb2_grpc

from dcgan.contract.manifest import ONNX_SERVING, file_sha256, read_manifest
from dcgan.contract.providers import ort
from dcgan.contract.seeded import seeded_latents
from dcgan.v1 import generator_pb2 as pb
from dcgan.v1 import generator_pb2_grpc as pb_grpc
from tests.support.servers import ServerThread, server_config

TINY = {"nz": 8, "ngf": 4, "channels": 1, "image_size": 32}
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def tiny_export(out: Path, seed: int) -> Path:
    """dcgan-export's ONNX export of a tiny generator's state_dict, parity proved at batch 1."""
    from dcgan.contract.manifest import ONNX
    from dcgan.export.export import export_generator
    from dcgan.train.model import Generator, ModelConfig

    torch.manual_seed(seed)
    state_dict = out.parent / f"{out.name}.pth"
    torch.save(Generator(ModelConfig(**TINY)).state_dict(), state_dict)
    export_generator(state_dict, out, formats=[ONNX], shape=dict(TINY), batch_sizes=(1,))
    return out


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Two tiny exports of different weights: versions alternate between them."""
    root = tmp_path_factory.mktemp("tiny")
    return [tiny_export(root / f"seed{seed}", seed) for seed in (0, 1)]


def serving_sha(export: Path) -> str:
    return file_sha256(export / read_manifest(export).file_of(ONNX_SERVING))


def add_version(repository: Path, model: str, version: int, export: Path) -> Path:
    """As dcgan-export installs a version: copied whole into a hidden folder, then renamed."""
    staging = repository / model / f".{version}.staging.tmp"
    shutil.copytree(export, staging)
    target = repository / model / str(version)
    os.rename(staging, target)
    return target


def start(repository: Path, export_dir: Path, **changes: Any) -> ServerThread:
    config = server_config(export_dir, **changes)  # export_dir: a placeholder, replaced
    return ServerThread(replace(config, model_dir=None, model_repository=repository))


@pytest.fixture
def servers() -> Iterator[list[ServerThread]]:
    started: list[ServerThread] = []
    yield started
    for running in started:
        running.stop()


def stubs(running: ServerThread) -> tuple[pb_grpc.GeneratorStub, pb_grpc.ModelRepositoryStub]:
    channel = grpc.insecure_channel(running.target)
    return pb_grpc.GeneratorStub(channel), pb_grpc.ModelRepositoryStub(channel)


def versions(repository: pb_grpc.ModelRepositoryStub, model: str) -> dict[int, Any]:
    (status,) = repository.ListModels(pb.ListModelsRequest(model_name=model), timeout=10).models
    return {each.version: each for each in status.versions}


def wait_for(condition: Callable[[], bool], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


class Load:
    """`workers` threads calling Generate back to back, no retries, until stopped: every
    outcome recorded, in order per thread."""

    def __init__(self, target: str, workers: int, request: pb.GenerateRequest) -> None:
        self._channel = grpc.insecure_channel(target)
        self._stub = pb_grpc.GeneratorStub(self._channel)
        self._request = request
        self._stop = threading.Event()
        self.outcomes: list[list[tuple[grpc.StatusCode, str, int]]] = [[] for _ in range(workers)]
        self._threads = [
            threading.Thread(target=self._work, args=(log,), daemon=True) for log in self.outcomes
        ]
        for thread in self._threads:
            thread.start()

    def _work(self, log: list[tuple[grpc.StatusCode, str, int]]) -> None:
        while not self._stop.is_set():
            try:
                answer = self._stub.Generate(self._request, timeout=30)
            except grpc.RpcError as error:
                log.append((error.code(), error.details() or "", 0))
            else:
                log.append((grpc.StatusCode.OK, answer.model_sha256, answer.model_version))

    def stop(self) -> list[tuple[grpc.StatusCode, str, int]]:
        self._stop.set()
        for thread in self._threads:
            thread.join(60)
        self._channel.close()
        return [outcome for log in self.outcomes for outcome in log]


# ------------------------------------------------------------------------------ the swap


def test_ten_swaps_under_load_from_a_client_that_does_not_retry_fail_no_call(
    tiny: list[Path], export_dir: Path, tmp_path: Path, servers: list[ServerThread]
) -> None:
    repository = tmp_path / "models"
    add_version(repository, "tiny", 1, tiny[0])
    servers.append(running := start(repository, export_dir, model_control="explicit"))
    _, models = stubs(running)
    request = pb.GenerateRequest(seeded=pb.SeededLatents(count=2, seed=7))
    load = Load(running.target, 32, request)
    try:
        for version in range(2, 12):
            time.sleep(0.1)  # load on the serving version before each swap
            add_version(repository, "tiny", version, tiny[version % 2])
            status = models.LoadModel(pb.LoadModelRequest(model_name="tiny"), timeout=60)
            assert status.serving_version == version
        time.sleep(0.1)
    finally:
        outcomes = load.stop()
    failed = [outcome for outcome in outcomes if outcome[0] != grpc.StatusCode.OK]
    assert failed == [], failed[:5]
    assert len(outcomes) > 100
    shas = {serving_sha(export) for export in tiny}
    assert {sha for _, sha, _ in outcomes} <= shas
    assert len({version for _, _, version in outcomes}) >= 5  # the swaps happened under load
    for log in load.outcomes:  # a caller never goes back to an older version
        served = [version for _, _, version in log]
        assert served == sorted(served)
    generator, _ = stubs(running)
    for _ in range(5):  # only the newest answers now
        answer = generator.Generate(request, timeout=10)
        assert (answer.model_version, answer.model_sha256) == (11, serving_sha(tiny[1]))
    wait_for(lambda: versions(models, "tiny")[10].state == pb.VERSION_STATE_UNLOADED)
    states = versions(models, "tiny")
    assert states[11].state == pb.VERSION_STATE_READY
    assert {states[v].state for v in range(1, 11)} == {pb.VERSION_STATE_UNLOADED}


def break_version(version: Path, kind: str) -> str:
    """Damage one copied version as `kind` says; returns what its reason must say."""
    manifest = json.loads((version / "manifest.json").read_text())
    serving = version / "generator_serving.onnx"
    if kind == "sha256":
        data = bytearray(serving.read_bytes())
        data[len(data) // 2] ^= 0xFF
        serving.write_bytes(bytes(data))
        return "does not match its manifest"
    if kind == "graph":  # bytes that match a manifest rewritten for them, but no graph
        serving.write_bytes(b"not an onnx graph" * 64)
        record = manifest["artifacts"]["generator_serving.onnx"]
        record["sha256"], record["bytes"] = file_sha256(serving), serving.stat().st_size
        (version / "manifest.json").write_text(json.dumps(manifest))
        return "onnxruntime cannot load"
    if kind == "manifest":  # the graph as exported, a manifest that tells another shape
        manifest["model"]["nz"] = 9
        (version / "manifest.json").write_text(json.dumps(manifest))
        return "manifest.json disagrees"
    (version / "generator.onnx").unlink()
    return "is missing"


BROKEN = ("sha256", "graph", "manifest", "missing")


def test_a_broken_version_of_each_kind_never_displaces_the_serving_one(
    tiny: list[Path], export_dir: Path, tmp_path: Path, servers: list[ServerThread]
) -> None:
    repository = tmp_path / "models"
    add_version(repository, "tiny", 1, tiny[0])
    servers.append(running := start(repository, export_dir, model_control="explicit"))
    generator, models = stubs(running)
    why = {}
    for version, kind in enumerate(BROKEN, start=2):
        why[version] = break_version(add_version(repository, "tiny", version, tiny[1]), kind)
    with pytest.raises(grpc.RpcError) as refused:
        models.LoadModel(pb.LoadModelRequest(model_name="tiny"), timeout=60)
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "version 1 still serves" in (refused.value.details() or "")
    answer = generator.Generate(pb.GenerateRequest(seeded=pb.SeededLatents(count=1)), timeout=10)
    assert (answer.model_version, answer.model_sha256) == (1, serving_sha(tiny[0]))
    states = versions(models, "tiny")
    assert states[1].state == pb.VERSION_STATE_READY
    for version, reason in why.items():
        assert states[version].state == pb.VERSION_STATE_FAILED
        assert reason in states[version].reason, (BROKEN[version - 2], states[version].reason)
    sample = running.server.metrics.registry.get_sample_value
    for version in why:
        labels = {"model": "tiny", "version": str(version)}
        assert sample("dcgan_model_load_failures_total", labels) == 1
        assert sample("dcgan_model_version_state", {**labels, "state": "failed"}) == 1


def test_poll_never_serves_a_version_still_being_copied_in_plainly(
    tiny: list[Path], export_dir: Path, tmp_path: Path, servers: list[ServerThread]
) -> None:
    repository = tmp_path / "models"
    add_version(repository, "tiny", 1, tiny[0])
    servers.append(running := start(repository, export_dir, model_control="poll", poll_s=0.02))
    _, models = stubs(running)
    load = Load(running.target, 4, pb.GenerateRequest(seeded=pb.SeededLatents(count=1)))
    copying = repository / "tiny" / "2"
    seen_while_copying: set[int] = set()
    try:
        copying.mkdir()  # a plain cp -r: the manifest first, then the graphs, bit by bit
        shutil.copy(tiny[1] / "manifest.json", copying / "manifest.json")
        pieces = []
        for name in ("generator_serving.onnx", "generator.onnx"):
            data = (tiny[1] / name).read_bytes()
            step = len(data) // 4 + 1
            pieces += [(name, data[at : at + step]) for at in range(0, len(data), step)]
        for name, piece in pieces:
            states = versions(models, "tiny")  # every state of the copy before this piece
            assert states.get(2) is None or states[2].state != pb.VERSION_STATE_READY
            seen_while_copying |= {v for _, _, v in itertools.chain(*load.outcomes)}
            with open(copying / name, "ab") as handle:
                handle.write(piece)
            time.sleep(0.15)  # several polls see each partial state
        wait_for(lambda: versions(models, "tiny").get(2, None) is not None
                 and versions(models, "tiny")[2].state == pb.VERSION_STATE_READY)  # fmt: skip
        time.sleep(0.2)
    finally:
        outcomes = load.stop()
    assert seen_while_copying == {1}
    assert [o for o in outcomes if o[0] != grpc.StatusCode.OK] == []
    answered = {(version, sha) for _, sha, version in outcomes}
    assert answered == {(1, serving_sha(tiny[0])), (2, serving_sha(tiny[1]))}


# ------------------------------------------------------------------------------ several models


def direct_pixels(export: Path, latents: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(
        str(export / "generator_serving.onnx"), providers=["CPUExecutionProvider"]
    )
    (pixels,) = session.run(["pixels"], {"z": latents})
    return np.asarray(pixels)


def test_two_models_of_different_shapes_serve_side_by_side_each_as_its_own_onnxruntime(
    tiny: list[Path], export_dir: Path, tmp_path: Path, servers: list[ServerThread]
) -> None:
    repository = tmp_path / "models"
    add_version(repository, "tiny", 1, tiny[0])
    add_version(repository, "rgb", 3, export_dir)
    servers.append(running := start(repository, export_dir))
    channel = grpc.insecure_channel(running.target)
    generator = pb_grpc.GeneratorStub(channel)
    for name, export, nz, shape in (("tiny", tiny[0], 8, [3, 32, 32, 1]),
                                    ("rgb", export_dir, 100, [3, 64, 64, 3])):  # fmt: skip
        info = generator.GetModelInfo(pb.GetModelInfoRequest(model_name=name), timeout=10)
        assert (info.nz, info.model_name) == (nz, name)
        answer = generator.Generate(
            pb.GenerateRequest(model_name=name, seeded=pb.SeededLatents(count=3, seed=5)),
            timeout=10,
        )
        assert list(answer.shape) == shape
        assert answer.model_version == (1 if name == "tiny" else 3)
        pixels = np.frombuffer(answer.data, dtype=np.uint8).reshape(shape)
        np.testing.assert_array_equal(pixels, direct_pixels(export, seeded_latents(5, 3, nz)))
    refusals = {
        "": grpc.StatusCode.INVALID_ARGUMENT,  # two models: the request must name one
        "nope": grpc.StatusCode.NOT_FOUND,
    }
    for name, code in refusals.items():
        with pytest.raises(grpc.RpcError) as refused:
            generator.Generate(
                pb.GenerateRequest(model_name=name, seeded=pb.SeededLatents(count=1)), timeout=10
            )
        assert refused.value.code() == code
    with pytest.raises(grpc.RpcError) as refused:
        generator.Generate(
            pb.GenerateRequest(model_name="rgb", model_version=2, seeded=pb.SeededLatents(count=1)),
            timeout=10,
        )
    assert refused.value.code() == grpc.StatusCode.NOT_FOUND
    health = health_pb2_grpc.HealthStub(channel)
    for service in ("", "tiny", "rgb"):
        check = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
        assert check.status == SERVING
    listed = pb_grpc.ModelRepositoryStub(channel).ListModels(pb.ListModelsRequest(), timeout=10)
    assert [(m.name, m.serving_version) for m in listed.models] == [("rgb", 3), ("tiny", 1)]
    assert (listed.model_control, listed.version_policy) == ("none", "latest")


def test_an_unload_finishes_the_calls_in_flight_then_the_model_is_not_found(
    export_dir: Path, tmp_path: Path, servers: list[ServerThread]
) -> None:
    repository = tmp_path / "models"
    add_version(repository, "rgb", 1, export_dir)
    servers.append(running := start(repository, export_dir, model_control="explicit"))
    generator, models = stubs(running)
    latents = np.random.default_rng(0).standard_normal((256, 100), dtype=np.float32)
    in_flight = [
        generator.Generate.future(pb.GenerateRequest(packed=latents.tobytes()), timeout=120)
        for _ in range(6)
    ]
    sample = running.server.metrics.registry.get_sample_value
    labels = {"model": "rgb", "version": "1"}
    wait_for(lambda: (sample("dcgan_model_calls_in_flight", labels) or 0) >= 3)
    status = models.UnloadModel(pb.UnloadModelRequest(model_name="rgb"), timeout=120)
    for future in in_flight:  # accepted before the unload: each finished, none failed
        assert list(future.result().shape) == [256, 64, 64, 3]
    assert status.serving_version == 0
    assert [v.state for v in status.versions] == [pb.VERSION_STATE_UNLOADED]
    with pytest.raises(grpc.RpcError) as gone:
        generator.Generate(pb.GenerateRequest(seeded=pb.SeededLatents(count=1)), timeout=10)
    assert gone.value.code() == grpc.StatusCode.UNAVAILABLE  # the only model: none serves
    assert "rgb: version 1 unloaded: unloaded by UnloadModel" in (gone.value.details() or "")
    with pytest.raises(grpc.RpcError) as gone:
        generator.Generate(
            pb.GenerateRequest(model_name="rgb", seeded=pb.SeededLatents(count=1)), timeout=10
        )
    assert gone.value.code() == grpc.StatusCode.NOT_FOUND
    health = health_pb2_grpc.HealthStub(grpc.insecure_channel(running.target))
    assert health.Check(health_pb2.HealthCheckRequest(service="rgb")).status == NOT_SERVING
    assert sample("dcgan_model_calls_in_flight", labels) is None  # its gauges went with it
    models.LoadModel(pb.LoadModelRequest(model_name="rgb"), timeout=60)
    answer = generator.Generate(pb.GenerateRequest(seeded=pb.SeededLatents(count=1)), timeout=10)
    assert answer.model_version == 1
    assert health.Check(health_pb2.HealthCheckRequest(service="rgb")).status == SERVING


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks",
                     "uordblks", "fordblks", "keepcost")
    ]  # fmt: skip


def heap_in_use_mib() -> float:
    """The bytes the process holds allocated (glibc's mallinfo2: in use in its arenas, plus
    mmapped blocks): what a leak grows. Resident memory is no measure here: glibc keeps freed
    pages in per-thread arenas, which swings it by tens of MiB with no leak at all."""
    gc.collect()
    libc = ctypes.CDLL("libc.so.6")
    libc.mallinfo2.restype = _MallInfo2
    info = libc.mallinfo2()
    return (info.uordblks + info.hblkhd) / 2**20


def test_memory_after_twenty_swaps_is_within_a_few_mib_of_after_the_first(
    export_dir: Path, tmp_path: Path, servers: list[ServerThread]
) -> None:
    repository = tmp_path / "models"
    add_version(repository, "rgb", 1, export_dir)
    servers.append(running := start(repository, export_dir, model_control="explicit"))
    generator, models = stubs(running)
    request = pb.GenerateRequest(seeded=pb.SeededLatents(count=16, seed=1))

    def swap(version: int) -> None:
        add_version(repository, "rgb", version, export_dir)
        models.LoadModel(pb.LoadModelRequest(model_name="rgb"), timeout=60)
        assert generator.Generate(request, timeout=10).model_version == version
        wait_for(lambda: versions(models, "rgb")[version - 1].state == pb.VERSION_STATE_UNLOADED)
        shutil.rmtree(repository / "rgb" / str(version - 1))

    retired = [weakref.ref(running.server.models.resolve("rgb", 0).runtime)]
    swap(2)
    after_first = heap_in_use_mib()
    for version in range(3, 22):
        retired.append(weakref.ref(running.server.models.resolve("rgb", 0).runtime))
        swap(version)
    grown = heap_in_use_mib() - after_first
    assert abs(grown) < 4, f"{grown:.1f} MiB more after 20 swaps than after the first"
    gc.collect()
    assert [ref() for ref in retired] == [None] * 20  # every retired version's sessions went
    states = {version: status.state for version, status in versions(models, "rgb").items()}
    assert states == {20: pb.VERSION_STATE_UNLOADED, 21: pb.VERSION_STATE_READY}
