"""What the Open Inference Protocol costs against dcgan.v1: ModelInfer against Generate, one run.

One dcgan-serve process; this process loads it over both protocols with the same asyncio client
(grpc.aio, `concurrency` callers each sending its next request when the last is answered). The
requests are serialised once beforehand and the answers read as bytes, so that the client does
the same work for both and what differs is the server's: decoding the request, the tensors'
checks, encoding the answer. Same latents, same outputs (uint8 pixels only), same batcher.
Rounds alternate between the protocols (A B, B A, A B ...), so that a noisy neighbour and the
order hit both alike; each round's pair gives a ratio, and the median ratio is reported too.
Scenarios, as benchmarks/serve_throughput.py's:
  - concurrency 32, one latent per request (the target: ModelInfer within 5% of Generate);
  - concurrency 8, 64 latents per request;
  - concurrency 1, one latent: p50 latency.
Usage: python benchmarks/oip_overhead.py [--model-dir DIR] [--json out.json] [-- SERVE_FLAGS]
(without --model-dir: the default 64x64 RGB generator, exported by dcgan-export). The python
of the project's environment runs it (.venv/bin/python).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import grpc
import numpy as np
from serve_throughput import command_path, free_port, wait_serving

from dcgan.contract.manifest import read_manifest
from dcgan.oip import inference_pb2 as oip
from dcgan.v1 import generator_pb2 as pb

SCENARIOS = [("c32 x 1 latent", 32, 1), ("c8 x 64 latents", 8, 64), ("c1 x 1 latent", 1, 1)]
GENERATE = "/dcgan.v1.Generator/Generate"
MODEL_INFER = "/inference.GRPCInferenceService/ModelInfer"
PROTOCOLS = {"dcgan.v1 Generate": GENERATE, "OIP ModelInfer": MODEL_INFER}


def requests(model: str, nz: int, latents: int, count: int = 64) -> dict[str, list[bytes]]:
    """`count` different requests of `latents` latents each, serialised, per protocol."""
    rng = np.random.default_rng(0)
    made: dict[str, list[bytes]] = {GENERATE: [], MODEL_INFER: []}
    for _ in range(count):
        z = rng.standard_normal((latents, nz), dtype=np.float32)
        made[GENERATE].append(
            pb.GenerateRequest(packed=z.tobytes(), encoding=pb.ENCODING_UINT8_HWC)
            .SerializeToString()
        )  # fmt: skip
        infer = oip.ModelInferRequest(model_name=model, raw_input_contents=[z.tobytes()])
        infer.inputs.add(name="z", datatype="FP32", shape=[latents, nz])
        infer.outputs.add(name="pixels")
        made[MODEL_INFER].append(infer.SerializeToString())
    return made


async def load(
    channel: grpc.aio.Channel, method: str, bodies: list[bytes], concurrency: int, seconds: float
) -> list[float]:
    """Latencies (s) of every call answered within `seconds`, from `concurrency` callers."""
    call = channel.unary_unary(method)  # bytes in, bytes out
    latencies: list[float] = []
    end = time.perf_counter() + seconds

    async def caller(index: int) -> None:
        sent = index
        while time.perf_counter() < end:
            started = time.perf_counter()
            await call(bodies[sent % len(bodies)], timeout=30)
            latencies.append(time.perf_counter() - started)
            sent += concurrency

    await asyncio.gather(*(caller(index) for index in range(concurrency)))
    return latencies


async def measure(
    target: str, model: str, nz: int, seconds: float, rounds: int
) -> dict[str, dict[str, Any]]:
    results: dict[str, dict[str, Any]] = {}
    options = [("grpc.max_receive_message_length", 64 * 2**20)]
    async with grpc.aio.insecure_channel(target, options=options) as channel:
        for label, concurrency, latents in SCENARIOS:
            bodies = requests(model, nz, latents)
            for method in PROTOCOLS.values():  # warm-up: connections, batcher, caches
                await load(channel, method, bodies[method], concurrency, 1.0)
            times: dict[str, list[float]] = {name: [] for name in PROTOCOLS}
            spent = dict.fromkeys(PROTOCOLS, 0.0)
            ratios = []  # each round's ModelInfer calls/s over its Generate calls/s
            for round_number in range(rounds):
                rates = {}
                order = list(PROTOCOLS.items())
                for name, method in order[::-1] if round_number % 2 else order:
                    started = time.perf_counter()
                    answered = await load(
                        channel, method, bodies[method], concurrency, seconds / rounds
                    )
                    elapsed = time.perf_counter() - started
                    times[name] += answered
                    spent[name] += elapsed
                    rates[method] = len(answered) / elapsed
                ratios.append(rates[MODEL_INFER] / rates[GENERATE])
            results[label] = {
                name: {
                    "images_per_s": latents * len(times[name]) / spent[name],
                    "p50_ms": float(np.percentile(times[name], 50) * 1e3),
                    "p99_ms": float(np.percentile(times[name], 99) * 1e3),
                    "calls": len(times[name]),
                }
                for name in PROTOCOLS
            }
            results[label]["round_ratios"] = {"each": ratios, "median": float(np.median(ratios))}
    return results


def table(results: dict[str, dict[str, Any]]) -> str:
    lines = [
        f"{'scenario':<16} {'protocol':<18} {'img/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'calls':>7}"
    ]
    for label, by_protocol in results.items():
        for name in PROTOCOLS:
            level = by_protocol[name]
            lines.append(
                f"{label:<16} {name:<18} {level['images_per_s']:9.1f} {level['p50_ms']:8.3f} "
                f"{level['p99_ms']:8.3f} {level['calls']:7d}"
            )
        generate, infer = (by_protocol[name]["images_per_s"] for name in PROTOCOLS)
        rounds = by_protocol["round_ratios"]
        lines.append(
            f"{label:<16} ModelInfer / Generate throughput: {infer / generate:.3f} overall, "
            f"{rounds['median']:.3f} the median of {len(rounds['each'])} paired rounds "
            f"({min(rounds['each']):.3f} to {max(rounds['each']):.3f})"
        )
    return "\n".join(lines)


def cpu_flags() -> str:
    """The CPU model and its vector extensions, as /proc/cpuinfo tells them."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor()
    fields = dict(line.split(":", 1) for line in info.splitlines() if ":" in line and line.strip())
    fields = {key.strip(): value.strip() for key, value in fields.items()}
    wanted = ("avx", "avx2", "avx512f", "avx512_vnni", "amx_tile", "fma", "sse4_2")
    flags = [flag for flag in fields.get("flags", "").split() if flag in wanted]
    return f"{fields.get('model name', platform.processor())}; {' '.join(flags)}"


def run(args: argparse.Namespace) -> None:
    manifest = read_manifest(args.model_dir)
    port = free_port()
    target = f"127.0.0.1:{port}"
    serve = [
        str(command_path("dcgan-serve")), "--model-dir", str(args.model_dir),
        "--port", str(port), "--metrics-port", "0", "--host", "127.0.0.1", *args.serve_args,
    ]  # fmt: skip
    process = subprocess.Popen(serve, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_serving(target, process)
        model = Path(os.path.abspath(args.model_dir)).name  # --model-dir X serves model X
        results = asyncio.run(
            measure(target, model, manifest.model.nz, args.duration_s, args.rounds)
        )
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(30)
    print(table(results))
    print(f"cpu: {cpu_flags()}; {os.cpu_count()} cores; serve flags: {args.serve_args or '-'}")
    if args.json:
        record = {
            "results": results,
            "cpu": cpu_flags(),
            "cpus": os.cpu_count(),
            "serve_args": args.serve_args,
        }
        args.json.write_text(json.dumps(record, indent=2) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model-dir", type=Path, help="an export (default: the default generator)")
    parser.add_argument("--duration-s", type=float, default=10.0, help="seconds per protocol")
    parser.add_argument("--rounds", type=int, default=5, help="alternations per scenario")
    parser.add_argument("--json", type=Path)
    parser.add_argument("serve_args", nargs="*", help="extra dcgan-serve flags (after --)")
    args = parser.parse_args()
    command_path("dcgan-serve")  # before minutes of measuring, not after
    with tempfile.TemporaryDirectory() as scratch:
        if args.model_dir is None:
            from generator_throughput import export_default  # torch, in this process only

            _, args.model_dir = export_default(Path(scratch))
        run(args)


if __name__ == "__main__":
    main()
