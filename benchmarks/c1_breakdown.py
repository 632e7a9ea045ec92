"""Where a lone request's time goes: one latent, one caller, each layer of dcgan-serve alone.

In one process, on the same export, rounds alternating the stages (A B C ..., then again), so that
a noisy neighbour hits every stage alike; each stage's mean per call is the median over rounds.
  - raw float graph:    generator.onnx, default session options, every output (the benchmark's raw);
  - raw float graph, threads set: the same with intra_op_num_threads = cores, which, unlike the
                        default (0), leaves onnxruntime's threads unpinned;
  - raw serving graph:  generator_serving.onnx, default options, the uint8 pixels only;
  - runtime wide:       dcgan.service.runtime's all-cores session of the WIDE lane, direct;
  - runtime inline lane: its all-cores session of the INLINE lane (spinning unless --no-spinning);
  - runtime narrow:     one of its one-thread sessions (the lane under load), direct;
  - executor hand-off:  an empty function through the batcher's kind of thread pool, from asyncio;
  - batcher, on a worker: DynamicBatcher.submit of one latent on the real runtime, its run on a
                        worker thread (two hand-offs, the queue);
  - batcher, inline:    the same once calls came one at a time: the run on the event loop itself;
  - protobuf:           parse a GenerateRequest, build and serialise its GenerateResponse.
The gRPC stack's part is the health round trip and Generate under h2load in serve_throughput.py;
Generate's mean there minus the batcher's here is what gRPC and the servicer add.
Usage: python benchmarks/c1_breakdown.py --model-dir EXPORT [--rounds 5] [--seconds 2]
       [--no-spinning]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from machine import describe_machine, machine

from dcgan.contract.manifest import ONNX, ONNX_SERVING, read_manifest
from dcgan.contract.providers import ort
from dcgan.service.batcher import QUIET_RUNS, DynamicBatcher
from dcgan.service.metrics import ServiceMetrics, VersionMetrics
from dcgan.service.options import BatchingOptions, RuntimeOptions
from dcgan.service.runtime import INLINE, PARALLEL, PIXELS, WIDE, ModelRuntime
from dcgan.v1 import generator_pb2 as pb

PIXELS_ONLY = frozenset({PIXELS})


def timed(call: Callable[[], object], seconds: float) -> float:
    """Mean seconds per call of `call`, run back to back for `seconds`."""
    for _ in range(5):
        call()
    count, end = 0, time.perf_counter() + seconds
    started = time.perf_counter()
    while time.perf_counter() < end:
        call()
        count += 1
    return (time.perf_counter() - started) / count


def timed_async(
    loop: asyncio.AbstractEventLoop, make: Callable[[], object], seconds: float
) -> float:
    async def calls() -> float:
        for _ in range(5):
            await make()  # type: ignore[misc]
        count, end = 0, time.perf_counter() + seconds
        started = time.perf_counter()
        while time.perf_counter() < end:
            await make()  # type: ignore[misc]
            count += 1
        return (time.perf_counter() - started) / count

    return loop.run_until_complete(calls())


def stages(export_dir: Path, spinning: bool) -> dict[str, Callable[[float], float]]:
    manifest = read_manifest(export_dir)
    nz = manifest.model.nz
    latents = np.random.default_rng(1).standard_normal((1, nz), dtype=np.float32)
    cpu = ["CPUExecutionProvider"]
    raw_float = ort.InferenceSession(str(export_dir / manifest.file_of(ONNX)), providers=cpu)
    options = ort.SessionOptions()
    options.intra_op_num_threads = os.cpu_count() or 1
    raw_set = ort.InferenceSession(str(export_dir / manifest.file_of(ONNX)), options, providers=cpu)
    raw_serving = ort.InferenceSession(
        str(export_dir / manifest.file_of(ONNX_SERVING)), providers=cpu
    )
    runtime = ModelRuntime(export_dir, RuntimeOptions(device="cpu", spinning=spinning))
    runtime.load()
    loop = asyncio.new_event_loop()
    executor = ThreadPoolExecutor(runtime.instances)
    metrics = VersionMetrics(ServiceMetrics(), "bench", 1)
    batchers = {
        lane: DynamicBatcher(
            runtime.run,
            BatchingOptions(),
            metrics,
            instances=runtime.instances,
            wide_lane=runtime.has_wide_lane,
            inline_after=inline_after,
        )
        for lane, inline_after in (("worker", None), ("inline", QUIET_RUNS))
    }
    request = pb.GenerateRequest(packed=latents.tobytes()).SerializeToString()
    pixels = runtime.run(latents, PIXELS_ONLY, WIDE)[PIXELS]

    def protobuf() -> bytes:
        parsed = pb.GenerateRequest.FromString(request)
        np.frombuffer(parsed.packed, dtype="<f4").reshape(-1, nz)
        response = pb.GenerateResponse(
            shape=pixels.shape, dtype="uint8", data=pixels.tobytes(), model_id="dcgan-0123456789ab"
        )
        response.timing.queue_us, response.timing.compute_us = 20, 2500
        return response.SerializeToString()

    measured: dict[str, Callable[[float], float]] = {
        "raw float graph": lambda s: timed(lambda: raw_float.run(None, {"z": latents}), s),
        "raw float, threads set": lambda s: timed(lambda: raw_set.run(None, {"z": latents}), s),
        "raw serving graph": lambda s: timed(
            lambda: raw_serving.run(["pixels"], {"z": latents}), s
        ),
        "runtime wide": lambda s: timed(lambda: runtime.run(latents, PIXELS_ONLY, WIDE), s),
        "runtime inline lane": lambda s: timed(
            lambda: runtime.run(latents, PIXELS_ONLY, INLINE), s
        ),
        "runtime narrow": lambda s: timed(lambda: runtime.run(latents, PIXELS_ONLY, PARALLEL), s),
        "executor hand-off": lambda s: timed_async(
            loop, lambda: loop.run_in_executor(executor, int), s
        ),
        "batcher, on a worker": lambda s: timed_async(
            loop, lambda: batchers["worker"].submit(latents, PIXELS_ONLY), s
        ),
        "batcher, inline": lambda s: timed_async(
            loop, lambda: batchers["inline"].submit(latents, PIXELS_ONLY), s
        ),
        "protobuf": lambda s: timed(protobuf, s),
    }
    return measured


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model-dir", type=Path, required=True)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=2.0, help="per stage and round")
    parser.add_argument("--no-spinning", action="store_true", help="the runtime's --no-spinning")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    print(describe_machine(machine()), flush=True)
    measured = stages(args.model_dir, not args.no_spinning)
    rounds: dict[str, list[float]] = {name: [] for name in measured}
    names = list(measured)
    for round_number in range(args.rounds):
        for name in names[::-1] if round_number % 2 else names:
            rounds[name].append(measured[name](args.seconds) * 1e3)
    header = f"{'stage':<22} {'mean ms':>8} {'lowest':>8} {'highest':>8}"
    print(f"{header}  (median round of {args.rounds})")
    for name, values in rounds.items():
        print(f"{name:<22} {np.median(values):8.3f} {min(values):8.3f} {max(values):8.3f}")
    print(describe_machine(machine()))
    if args.json:
        args.json.write_text(json.dumps({"rounds_ms": rounds, "machine": machine()}, indent=2))


if __name__ == "__main__":
    main()
