"""A real export and real servers on 127.0.0.1 for the service and client tests."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from concurrent.futures import Future
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from dcgan.service.batcher import BatchingOptions
from dcgan.service.dataplane import RequestLimits
from dcgan.service.runtime import RuntimeOptions
from dcgan.service.server import GeneratorServer, ServerConfig


def make_export(out: Path, channels: int = 3, ngf: int = 16, seed: int = 0) -> Path:
    """A random-weight generator exported the way dcgan-export does it."""
    import datetime
    import warnings

    import torch
    from torch import nn

    from dcgan.export import manifest as m
    from dcgan.train.model import Generator, ModelConfig, init_weights

    warnings.filterwarnings("ignore")
    config = ModelConfig(ngf=ngf, channels=channels)
    torch.manual_seed(seed)
    generator = Generator(config)
    generator.apply(init_weights)
    generator.eval()

    class Serving(nn.Module):
        def __init__(self, g: nn.Module) -> None:
            super().__init__()
            self.g = g

        def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            image = self.g(z)
            pixels = ((image + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1)
            return image, pixels

    out.mkdir(parents=True, exist_ok=True)
    path = out / m.ARTIFACT_FILES[m.ONNX_SERVING]
    torch.onnx.export(
        Serving(generator), (torch.randn(2, config.nz),), str(path), input_names=["z"],
        output_names=["image", "pixels"], dynamic_shapes={"z": {0: torch.export.Dim("batch")}},
        opset_version=18, external_data=False, verbose=False,
    )  # fmt: skip
    manifest = m.Manifest(
        model=m.ModelInfo(config.nz, config.ngf, config.channels, config.image_size),
        onnx=m.OnnxInterface(opset=18),
        artifacts={path.name: m.artifact_record(path, m.ONNX_SERVING)},
        source=m.Source("state_dict", "random", "0" * 64, 12),
        versions={},
        parity=[],
        created=datetime.datetime.now(datetime.UTC).isoformat(),
    )
    (out / m.MANIFEST).write_text(manifest.to_json())
    return out


@pytest.fixture(scope="session")
def export_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_export(tmp_path_factory.mktemp("export"))


class ServerThread:
    """A GeneratorServer on its own event loop in a background thread."""

    def __init__(self, config: ServerConfig, start: bool = True) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.server = GeneratorServer(config)
        if start:
            self.call(self.server.start())

    def call(self, coroutine: Any, timeout: float = 60) -> Any:
        future: Future[Any] = asyncio.run_coroutine_threadsafe(coroutine, self.loop)
        return future.result(timeout)

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.server.port}"

    def stop(self) -> None:
        if not self.server._stopped.is_set():
            self.call(self.server.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


def server_config(model_dir: Path, **changes: Any) -> ServerConfig:
    config = ServerConfig(
        model_dir=model_dir,
        host="127.0.0.1",
        port=0,
        metrics_port=0,
        runtime=RuntimeOptions(device="cpu", warmup_batch_sizes=(1,)),
        batching=BatchingOptions(max_batch_size=64, max_queue_delay_s=0.002),
        limits=RequestLimits(max_latents_per_request=256, max_stream_latents=4096),
        grace_s=5.0,
    )
    return replace(config, **changes)


@pytest.fixture(scope="module")
def server(export_dir: Path) -> Iterator[ServerThread]:
    """One server shared by a module's tests that leave it as they found it."""
    running = ServerThread(server_config(export_dir))
    yield running
    running.stop()


@pytest.fixture
def fresh_server(export_dir: Path) -> Iterator[Any]:
    """Start servers with settings of the test's own; all are stopped at the end."""
    started: list[ServerThread] = []

    def start(**changes: Any) -> ServerThread:
        running = ServerThread(server_config(export_dir, **changes))
        started.append(running)
        return running

    yield start
    for running in started:
        running.stop()
