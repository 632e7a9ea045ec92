"""What a live version swap costs: throughput and p99 while versions swap, against the same load
without swaps; and the time from a version landing in the repository to its first answer, with
--model-control explicit (LoadModel) and with --model-control poll.

One dcgan-serve process per model control, serving a model repository of one model; this process
loads it with an asyncio client (grpc.aio, `concurrency` callers, each sending its next Generate
when the last is answered, no retries). Windows alternate, quiet then swapping (A B, B A, ...),
so that a noisy neighbour hits both alike. In a swapping window a new version lands every
`--swap-every-s` (copied beside the repository, renamed into place: as dcgan-export installs
one), followed at once by LoadModel under explicit; under poll the server finds it itself. A
version's landing time is taken at the rename; its first answer is the first response naming
it. A swap still loading when its window ends finishes under the same load before the next
window starts (those calls are not in the window's numbers; their failures are). Every call
that does not end OK is counted: a swap should fail none.
Usage: python benchmarks/model_swap.py [--model-dir DIR] [--json out.json] [-- SERVE_FLAGS]
(without --model-dir: the default 64x64 RGB generator, exported by dcgan-export). The python of
the project's environment runs it (.venv/bin/python).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import grpc
import numpy as np
from oip_overhead import cpu_flags
from serve_throughput import command_path, free_port, wait_serving

from dcgan.contract.manifest import read_manifest
from dcgan.v1 import generator_pb2 as pb
from dcgan.v1 import generator_pb2_grpc as pb_grpc

MODEL = "dcgan"


class Repository:
    """DIR/dcgan/<version>/, each version a copy of one export."""

    def __init__(self, root: Path, export: Path) -> None:
        self.root, self.export, self.newest = root, export, 0
        (root / MODEL).mkdir(parents=True)

    def land(self) -> tuple[int, float]:
        """The next version, staged beside the others and renamed into place; its number and
        the moment it landed. Versions two behind are removed (the server has let them go)."""
        self.newest += 1
        staging = self.root / MODEL / f".{self.newest}.tmp"
        shutil.copytree(self.export, staging)
        os.rename(staging, self.root / MODEL / str(self.newest))
        landed = time.perf_counter()
        shutil.rmtree(self.root / MODEL / str(self.newest - 2), ignore_errors=True)
        return self.newest, landed


async def load(
    stub: pb_grpc.GeneratorStub, requests: list[pb.GenerateRequest], concurrency: int, end: float
) -> tuple[list[float], list[tuple[float, int]], int]:
    """Latencies of the calls answered OK before `end`, (answer time, version) of each, and the
    count of calls that failed."""
    latencies: list[float] = []
    answers: list[tuple[float, int]] = []
    failed = 0

    async def caller(index: int) -> None:
        nonlocal failed
        sent = index
        while time.perf_counter() < end:
            started = time.perf_counter()
            try:
                response = await stub.Generate(requests[sent % len(requests)], timeout=30)
            except grpc.aio.AioRpcError:
                failed += 1
            else:
                answered = time.perf_counter()
                latencies.append(answered - started)
                answers.append((answered, response.model_version))
            sent += concurrency

    await asyncio.gather(*(caller(index) for index in range(concurrency)))
    return latencies, answers, failed


def first_answers(answers: list[tuple[float, int]], landed: dict[int, float]) -> list[float]:
    """Seconds from each version's landing to its first answer."""
    first: dict[int, float] = {}
    for moment, version in answers:
        first[version] = min(moment, first.get(version, moment))
    return [first[version] - moment for version, moment in landed.items() if version in first]


async def measure(
    target: str, repository: Repository, control: str, args: argparse.Namespace
) -> dict[str, Any]:
    nz = read_manifest(repository.export).model.nz
    rng = np.random.default_rng(0)
    requests = [
        pb.GenerateRequest(
            packed=rng.standard_normal((args.latents, nz), dtype=np.float32).tobytes()
        )
        for _ in range(64)
    ]
    windows: dict[str, dict[str, Any]] = {
        kind: {"latencies": [], "seconds": 0.0, "failed": 0, "swaps": 0}
        for kind in ("quiet", "swapping")
    }
    to_first_answer: list[float] = []
    async with grpc.aio.insecure_channel(target) as channel:
        stub = pb_grpc.GeneratorStub(channel)
        models = pb_grpc.ModelRepositoryStub(channel)
        await load(stub, requests, args.concurrency, time.perf_counter() + 1.0)  # warm-up
        for round_number in range(args.rounds):
            order = ["quiet", "swapping"][:: -1 if round_number % 2 else 1]
            for kind in order:
                started = time.perf_counter()
                end = started + args.window_s
                calls = asyncio.ensure_future(load(stub, requests, args.concurrency, end))
                landed: dict[int, float] = {}
                while kind == "swapping" and time.perf_counter() + args.swap_every_s < end:
                    await asyncio.sleep(args.swap_every_s / 2)
                    version, moment = await asyncio.to_thread(repository.land)
                    landed[version] = moment
                    if control == "explicit":
                        await models.LoadModel(pb.LoadModelRequest(model_name=MODEL), timeout=60)
                    await asyncio.sleep(args.swap_every_s / 2)
                latencies, answers, failed = await calls
                window = windows[kind]
                window["latencies"] += latencies
                window["seconds"] += time.perf_counter() - started
                window["failed"] += failed
                window["swaps"] += len(landed)
                while landed and max(landed) not in {version for _, version in answers}:
                    # a swap still loading: it ends before the next window, under load, uncounted
                    more = await load(stub, requests, args.concurrency, time.perf_counter() + 0.2)
                    answers += more[1]
                    window["failed"] += more[2]
                to_first_answer += first_answers(answers, landed)
    results: dict[str, Any] = {}
    for kind, window in windows.items():
        latencies = window["latencies"]
        results[kind] = {
            "images_per_s": args.latents * len(latencies) / window["seconds"],
            "p50_ms": float(np.percentile(latencies, 50) * 1e3),
            "p99_ms": float(np.percentile(latencies, 99) * 1e3),
            "calls": len(latencies),
            "failed": window["failed"],
            "swaps": window["swaps"],
        }
    results["to_first_answer_s"] = {
        "median": float(np.median(to_first_answer)),
        "max": float(np.max(to_first_answer)),
        "versions": len(to_first_answer),
    }
    return results


def run_control(control: str, export: Path, scratch: Path, args: argparse.Namespace) -> Any:
    repository = Repository(scratch / f"repository-{control}", export)
    repository.land()
    port = free_port()
    target = f"127.0.0.1:{port}"
    serve = [
        str(command_path("dcgan-serve")), "--model-repository", str(repository.root),
        "--model-control", control, "--poll-s", str(args.poll_s), "--port", str(port),
        "--metrics-port", "0", "--host", "127.0.0.1", *args.serve_args,
    ]  # fmt: skip
    process = subprocess.Popen(serve, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_serving(target, process)
        return asyncio.run(measure(target, repository, control, args))
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(30)


def table(results: dict[str, dict[str, Any]], poll_s: float) -> str:
    lines = [
        f"{'control':<9} {'load':<9} {'img/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'calls':>7} "
        f"{'failed':>6} {'swaps':>5}"
    ]
    for control, result in results.items():
        for kind in ("quiet", "swapping"):
            level = result[kind]
            lines.append(
                f"{control:<9} {kind:<9} {level['images_per_s']:8.1f} {level['p50_ms']:8.2f} "
                f"{level['p99_ms']:8.2f} {level['calls']:7d} {level['failed']:6d} "
                f"{level['swaps']:5d}"
            )
    for control, result in results.items():
        first = result["to_first_answer_s"]
        how = f"poll every {poll_s:g} s" if control == "poll" else "LoadModel at once"
        lines.append(
            f"{control:<9} landing to first answer ({how}): median {first['median']:.3f} s, "
            f"max {first['max']:.3f} s over {first['versions']} versions"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model-dir", type=Path, help="an export (default: the default generator)")
    parser.add_argument("--concurrency", type=int, default=32, help="callers")
    parser.add_argument("--latents", type=int, default=1, help="latents per request")
    parser.add_argument("--window-s", type=float, default=6.0, help="seconds per window")
    parser.add_argument("--rounds", type=int, default=4, help="quiet/swapping pairs per control")
    parser.add_argument("--swap-every-s", type=float, default=1.5, help="seconds between swaps")
    parser.add_argument("--poll-s", type=float, default=1.0, help="the server's --poll-s")
    parser.add_argument("--json", type=Path)
    parser.add_argument("serve_args", nargs="*", help="extra dcgan-serve flags (after --)")
    args = parser.parse_args()
    command_path("dcgan-serve")  # before minutes of measuring, not after
    with tempfile.TemporaryDirectory() as scratch:
        export = args.model_dir
        if export is None:
            from generator_throughput import export_default  # torch, in this process only

            _, export = export_default(Path(scratch))
        results = {
            control: run_control(control, export, Path(scratch), args)
            for control in ("explicit", "poll")
        }
    print(table(results, args.poll_s))
    print(f"cpu: {cpu_flags()}; {os.cpu_count()} cores; serve flags: {args.serve_args or '-'}")
    if args.json:
        record = {
            "results": results,
            "cpu": cpu_flags(),
            "cpus": os.cpu_count(),
            "args": vars(args),
        }
        args.json.write_text(json.dumps(record, indent=2, default=str) + "\n")


if __name__ == "__main__":
    main()
