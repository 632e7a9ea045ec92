"""A real export and real servers on 127.0.0.1 for the service and client tests."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator
from concurrent.futures import Future
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from dcgan.service.options import BatchingOptions, RequestLimits, RuntimeOptions, ServerConfig
from dcgan.service.server import GeneratorServer


def make_export(out: Path, seed: int = 0) -> Path:
    """A real pipeline in miniature: one training step (64x64 RGB, ngf 16), then dcgan-export."""
    from dcgan.contract.manifest import ONNX
    from dcgan.export.export import export_generator
    from dcgan.train.train import resolve_config, train

    run = out.parent / f"{out.name}-run"
    settings = {
        "dataset": "fake",
        "ngf": 16,
        "ndf": 16,
        "batch_size": 16,
        "max_steps": 1,
        "seed": seed,
    }
    train(resolve_config({**settings, "out": str(run), "workers": 0, "samples": 4}))
    export_generator(run, out, formats=[ONNX])
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
        if not self.server.stopped:
            self.call(self.server.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


def free_port() -> int:
    """A port nothing listens on now, on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


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
