"""Real servers for the tests: a GeneratorServer on 127.0.0.1, port 0, on its own event loop."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from concurrent.futures import Future
from dataclasses import replace
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from dcgan.service.options import BatchingOptions, RequestLimits, RuntimeOptions, ServerConfig
from dcgan.service.server import GeneratorServer


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
    """The tests' server: CPU, any free ports, small batches, a short grace."""
    config = ServerConfig(
        model_dir=model_dir,
        host="127.0.0.1",
        port=0,
        metrics_port=0,
        runtime=RuntimeOptions(device="cpu", warmup_batch_sizes=(1,)),
        batching=BatchingOptions(max_batch_size=64, max_queue_delay_s=0.002),
        limits=RequestLimits(max_latents_per_request=256, max_stream_latents=4096),
        grace_s=5.0,
        drain_s=0.0,  # the lame-duck period: the drain tests set their own
    )
    return replace(config, **changes)


def stop_in_background(running: ServerThread, service: str = "") -> threading.Thread:
    """running.stop() on a thread of its own; returns once `service`'s health is NOT_SERVING."""
    stopping = threading.Thread(target=running.stop)
    stopping.start()
    health = health_pb2_grpc.HealthStub(grpc.insecure_channel(running.target))
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            request = health_pb2.HealthCheckRequest(service=service)
            status = health.Check(request, timeout=1).status
        except grpc.RpcError:
            break
        if status == health_pb2.HealthCheckResponse.NOT_SERVING:
            break
        time.sleep(0.005)
    return stopping
