"""Serving benchmark: dcgan-serve and a plain gRPC server against a raw onnxruntime session.

All in one run on the same export: the raw session alone (no server running) before and after
the servers, the better of the two counting; each server in its own process, loaded by
dcgan-bench in another process. Scenarios:
  - concurrency 32, one latent per request, uint8: images/s vs the raw session at batch 32;
  - concurrency 8, 64 latents per request: images/s vs the raw session at batch 64;
  - concurrency 1, one latent: p50 latency minus the raw session's single-image p50;
  - time from process start to SERVING.
Usage: python benchmarks/serve_throughput.py [--model-dir DIR] [--json out.json] [-- SERVE_FLAGS]
(without --model-dir: the default 64x64 RGB generator, exported by dcgan-export). The python
of the project's environment runs it (.venv/bin/python); it need not be activated.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc

from dcgan.contract.manifest import ONNX, read_manifest
from dcgan.contract.providers import ort

HERE = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent  # the environment's commands, activated or not
SCENARIOS = [  # name, concurrency, latents per request, raw batch to compare with
    ("c32 x 1 latent", 32, 1, 32),
    ("c8 x 64 latents", 8, 64, 64),
    ("c1 x 1 latent", 1, 1, 1),
]


def command_path(name: str) -> Path:
    """A console command of the project, beside the python running this script."""
    path = BIN / name
    if not path.exists():
        sys.exit(f"error: {path} not found: run this with the project's python (.venv/bin/python)")
    return path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def raw_session(export_dir: Path) -> tuple[ort.InferenceSession, int]:
    """The bare float graph (generator.onnx), default session options."""
    manifest = read_manifest(export_dir)
    path = export_dir / manifest.file_of(ONNX)
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]), manifest.model.nz


def measure_raw(export_dir: Path, seconds: float) -> dict[int, dict[str, float]]:
    """images/s and p50 latency of the bare session (default options) at each batch size."""
    session, nz = raw_session(export_dir)
    results = {}
    for batch in sorted({scenario[3] for scenario in SCENARIOS}):
        latents = np.random.default_rng(0).standard_normal((batch, nz), dtype=np.float32)
        for _ in range(5):
            session.run(None, {"z": latents})
        times = []
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            start = time.perf_counter()
            session.run(None, {"z": latents})
            times.append(time.perf_counter() - start)
        results[batch] = {
            "images_per_s": batch * len(times) / sum(times),
            "p50_ms": float(np.median(times) * 1e3),
        }
    return results


def wait_serving(target: str, process: subprocess.Popen[bytes], limit_s: float = 60) -> float:
    """Seconds until health says SERVING (polled every millisecond or so)."""
    started = time.perf_counter()
    stub = health_pb2_grpc.HealthStub(grpc.insecure_channel(target))
    while time.perf_counter() - started < limit_s:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}")
        try:
            status = stub.Check(health_pb2.HealthCheckRequest(), timeout=0.05).status
            if status == health_pb2.HealthCheckResponse.SERVING:
                return time.perf_counter() - started
        except grpc.RpcError:
            pass
        time.sleep(0.001)
    raise RuntimeError("server did not become SERVING")


def bench(target: str, concurrency: int, latents: int, duration_s: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as scratch:
        out = Path(scratch) / "bench.json"
        command = [
            str(command_path("dcgan-bench")), "--target", target,
            "-c", str(concurrency), "--latents", str(latents),
            "--duration-s", str(duration_s), "--warmup-s", "2", "--json", str(out),
        ]  # fmt: skip
        subprocess.run(command, check=True, capture_output=True)
        level: dict[str, Any] = json.loads(out.read_text())["levels"][0]
        return level


def run_server(name: str, command: list[str], port: int, duration_s: float) -> dict[str, Any]:
    target = f"127.0.0.1:{port}"
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        startup_s = wait_serving(target, process) if name == "dcgan-serve" else None
        if startup_s is None:
            wait_ready(target, process)
        results = {"startup_s": startup_s}
        for label, concurrency, latents, _ in SCENARIOS:
            results[label] = bench(target, concurrency, latents, duration_s)
        return results
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(30)


def wait_ready(target: str, process: subprocess.Popen[bytes]) -> None:
    """The plain server has no health service: wait until its port accepts a connection."""
    channel = grpc.insecure_channel(target)
    grpc.channel_ready_future(channel).result(timeout=60)
    channel.close()
    if process.poll() is not None:
        raise RuntimeError("plain server exited")


def table(raw: dict[int, dict[str, float]], servers: dict[str, dict[str, Any]]) -> str:
    lines = [
        "raw onnxruntime session: "
        + ", ".join(
            f"batch {b}: {r['images_per_s']:.0f} img/s, p50 {r['p50_ms']:.3f} ms"
            for b, r in raw.items()
        ),
        f"{'server':<12} {'scenario':<16} {'img/s':>8} {'x raw':>6} {'p50 ms':>8} {'p99 ms':>8} "
        f"{'+p50 vs raw':>11}  errors",
    ]
    for name, results in servers.items():
        for label, _, _, batch in SCENARIOS:
            level = results[label]
            ratio = level["images_per_s"] / raw[batch]["images_per_s"]
            p50 = level["latency_ms"]["p50"]
            extra = p50 - raw[batch]["p50_ms"]
            errors = ", ".join(f"{k}={v}" for k, v in level["errors"].items()) or "-"
            lines.append(
                f"{name:<12} {label:<16} {level['images_per_s']:8.1f} {ratio:6.2f} {p50:8.3f} "
                f"{level['latency_ms']['p99']:8.3f} {extra:+11.3f}  {errors}"
            )
        if results.get("startup_s") is not None:
            lines.append(f"{name:<12} process start to SERVING: {results['startup_s']:.2f} s")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model-dir", type=Path, help="an export (default: the default generator)")
    parser.add_argument("--duration-s", type=float, default=10.0)
    parser.add_argument("--raw-s", type=float, default=5.0, help="seconds per raw batch size")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--no-plain", action="store_true", help="skip the plain gRPC baseline")
    parser.add_argument("serve_args", nargs="*", help="extra dcgan-serve flags (after --)")
    args = parser.parse_args()
    for name in ("dcgan-serve", "dcgan-bench"):
        command_path(name)  # before minutes of measuring, not after
    with tempfile.TemporaryDirectory() as scratch:
        if args.model_dir is None:
            from generator_throughput import export_default  # torch, in this process only

            _, args.model_dir = export_default(Path(scratch))
        run(args)


def best(*runs: dict[int, dict[str, float]]) -> dict[int, dict[str, float]]:
    """Per batch size, the faster of the raw runs: the service is held to the hardware's best."""
    return {
        batch: max((run[batch] for run in runs), key=lambda r: r["images_per_s"])
        for batch in runs[0]
    }


def run(args: argparse.Namespace) -> None:
    raw_before = measure_raw(args.model_dir, args.raw_s)
    servers = {}
    port = free_port()
    serve = [
        str(command_path("dcgan-serve")), "--model-dir", str(args.model_dir),
        "--port", str(port), "--metrics-port", "0", "--host", "127.0.0.1", *args.serve_args,
    ]  # fmt: skip
    servers["dcgan-serve"] = run_server("dcgan-serve", serve, port, args.duration_s)
    if not args.no_plain:
        port = free_port()
        plain = [sys.executable, str(HERE / "plain_server.py"), str(args.model_dir), str(port)]
        servers["plain-grpc"] = run_server("plain-grpc", plain, port, args.duration_s)

    raw = best(raw_before, measure_raw(args.model_dir, args.raw_s))
    print(table(raw, servers))
    if args.json:
        record = {
            "raw": raw,
            "servers": servers,
            "cpus": os.cpu_count(),
            "serve_args": args.serve_args,
        }
        args.json.write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
