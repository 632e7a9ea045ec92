"""Generator inference: onnxruntime CPU against PyTorch eager and TorchScript, in one run.

Exports a default 64x64 generator (nz=100, ngf=64, the paper's init; weights do not change the
speed) with dcgan-export, parity checks and all, then times each runtime on the same latents:
median latency per batch over repeats after a warm-up, and images/s = batch / median latency.
The onnxruntime float graph on the CPU provider is the figure the service is held against.
Usage: python benchmarks/generator_throughput.py [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dcgan.contract.manifest import ONNX, TORCHSCRIPT
from dcgan.contract.providers import ort
from dcgan.export.export import export_generator, library_versions
from dcgan.train.model import Generator, ModelConfig, init_weights

BATCH_SIZES = (1, 8, 64)
ORT_FLOAT = "onnxruntime CPU, generator.onnx (image)"
ORT_PIXELS = "onnxruntime CPU, generator_serving.onnx (pixels)"
EAGER = "PyTorch eager"
TORCHSCRIPT_RUN = "TorchScript (generator.ts)"


def export_default(directory: Path) -> tuple[Generator, Path]:
    torch.manual_seed(1)
    generator = Generator(ModelConfig())
    generator.apply(init_weights)
    source = directory / "netG.pth"
    torch.save(generator.state_dict(), source)
    export_generator(source, directory / "export", (ONNX, TORCHSCRIPT))
    return generator.eval(), directory / "export"


def runners(generator: Generator, export: Path) -> dict[str, Callable[[np.ndarray], Any]]:
    """One callable per runtime, each taking float32 latents [batch, 100]."""
    cpu = ["CPUExecutionProvider"]
    float_graph = ort.InferenceSession(str(export / "generator.onnx"), providers=cpu)
    serving_graph = ort.InferenceSession(str(export / "generator_serving.onnx"), providers=cpu)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # TorchScript is deprecated for .pt2
        scripted = torch.jit.load(str(export / "generator.ts"))  # type: ignore[no-untyped-call]

    def in_torch(module: Callable[[torch.Tensor], torch.Tensor]) -> Callable[[np.ndarray], Any]:
        def run(z: np.ndarray) -> Any:
            with torch.inference_mode():
                return module(torch.from_numpy(z))

        return run

    return {
        ORT_FLOAT: lambda z: float_graph.run(["image"], {"z": z}),
        ORT_PIXELS: lambda z: serving_graph.run(["pixels"], {"z": z}),
        EAGER: in_torch(generator),
        TORCHSCRIPT_RUN: in_torch(scripted),
    }


def time_runner(
    run: Callable[[np.ndarray], Any], z: np.ndarray, seconds: float
) -> dict[str, float]:
    """Median and p90 latency over at least 20 calls and `seconds`, after a warm-up of as long."""
    warm = time.perf_counter() + seconds / 2
    while time.perf_counter() < warm:
        run(z)
    latencies: list[float] = []
    end = time.perf_counter() + seconds
    while len(latencies) < 20 or time.perf_counter() < end:
        start = time.perf_counter()
        run(z)
        latencies.append(time.perf_counter() - start)
    median = statistics.median(latencies)
    return {
        "latency_ms": median * 1e3,
        "p90_ms": statistics.quantiles(latencies, n=10)[-1] * 1e3,
        "images_per_s": z.shape[0] / median,
        "calls": len(latencies),
    }


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--seconds", type=float, default=3.0, help="timed seconds per runtime and batch"
    )
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    load = os.getloadavg()[0]
    if load > 0.5:
        print(f"warning: load average {load:.2f}: other work shares the CPU, figures will be low")
    with tempfile.TemporaryDirectory() as scratch:
        generator, export = export_default(Path(scratch))
        timed = runners(generator, export)
        results: list[dict[str, Any]] = []
        for batch_size in BATCH_SIZES:
            z = np.random.default_rng(batch_size).standard_normal(
                (batch_size, 100), dtype=np.float32
            )
            for name, run in timed.items():
                results.append(
                    {"runtime": name, "batch_size": batch_size, **time_runner(run, z, args.seconds)}
                )

    cores = len(os.sched_getaffinity(0))
    print(
        f"\n{cpu_name()}, {cores} cores; torch threads {torch.get_num_threads()}; load {load:.2f}"
    )
    print("| runtime | batch | latency ms (median) | p90 ms | images/s | vs onnxruntime |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for row in results:
        base = next(
            r for r in results if r["runtime"] == ORT_FLOAT and r["batch_size"] == row["batch_size"]
        )
        ratio = row["images_per_s"] / base["images_per_s"]
        latency = f"{row['latency_ms']:.2f} | {row['p90_ms']:.2f}"
        speed = f"{row['images_per_s']:,.0f} | {ratio:.2f}x"
        print(f"| {row['runtime']} | {row['batch_size']} | {latency} | {speed} |")
    if args.json:
        record = {
            "machine": {
                "cpu": cpu_name(),
                "cores": cores,
                "torch_threads": torch.get_num_threads(),
            },
            "load_average_before": load,
            "versions": library_versions(),
            "results": results,
        }
        args.json.write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
