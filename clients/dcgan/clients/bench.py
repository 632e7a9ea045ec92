"""`dcgan-bench`: a load generator for the Generate RPC, in the manner of Triton's perf_analyzer.

Closed loop: at each concurrency of a sweep, that many callers send requests back to back for
`--duration-s`. Open loop (`--rate`): requests start at a fixed rate whatever the answers do.
Reports throughput (images/s, requests/s), latency percentiles, errors by status code, and the
server's own account of each request (time queued, time computing).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Annotated, Any

import grpc
import numpy as np
import typer

from dcgan.clients.codec import CHANNEL_OPTIONS, ENCODINGS
from dcgan.clients.options import ConnectionOptions
from dcgan.v1 import generator_pb2 as pb
from dcgan.v1 import generator_pb2_grpc as pb_grpc

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)


@dataclass(frozen=True)
class LoadSpec:
    target: str = ConnectionOptions.target
    latents_per_request: int = 1
    encoding: str = "uint8"
    duration_s: float = 10.0  # measured per level
    warmup_s: float = 1.0  # of load before measuring
    timeout_s: float = ConnectionOptions.timeout_s  # each request's deadline
    channels: int = 1  # HTTP/2 connections the callers share


SWEEP = [1, 4, 16, 64]  # the concurrencies measured when neither -c nor --rate is given


@dataclass
class LevelResult:
    """One point of the sweep: a concurrency (closed loop) or a rate (open loop)."""

    concurrency: int | None
    rate: float | None
    duration_s: float
    requests: int
    images: int
    errors: dict[str, int]
    requests_per_s: float
    images_per_s: float
    latency_ms: dict[str, float]  # p50, p90, p99, mean, max of successful requests
    server_queue_us: float  # mean, from the responses
    server_compute_us: float
    latencies: list[float] = field(default_factory=list, repr=False)


class _Recorder:
    def __init__(self, measuring_from: float) -> None:
        self.start = measuring_from
        self.latencies: list[float] = []
        self.queue_us: list[int] = []
        self.compute_us: list[int] = []
        self.errors: Counter[str] = Counter()

    async def call(
        self, stub: pb_grpc.GeneratorStub, request: pb.GenerateRequest, spec: LoadSpec
    ) -> None:
        begin = time.perf_counter()
        try:
            response = await stub.Generate(request, timeout=spec.timeout_s)
        except grpc.aio.AioRpcError as error:
            if begin >= self.start:
                self.errors[error.code().name] += 1
            return
        if begin >= self.start:
            self.latencies.append(time.perf_counter() - begin)
            self.queue_us.append(response.timing.queue_us)
            self.compute_us.append(response.timing.compute_us)

    def result(
        self, concurrency: int | None, rate: float | None, elapsed: float, per_request: int
    ) -> LevelResult:
        latencies = np.array(self.latencies) * 1e3
        ok = len(latencies)
        summary = (
            {
                "p50": float(np.percentile(latencies, 50)),
                "p90": float(np.percentile(latencies, 90)),
                "p99": float(np.percentile(latencies, 99)),
                "mean": float(latencies.mean()),
                "max": float(latencies.max()),
            }
            if ok
            else {}
        )
        return LevelResult(
            concurrency=concurrency,
            rate=rate,
            duration_s=elapsed,
            requests=ok,
            images=ok * per_request,
            errors=dict(self.errors),
            requests_per_s=ok / elapsed,
            images_per_s=ok * per_request / elapsed,
            latency_ms=summary,
            server_queue_us=float(np.mean(self.queue_us)) if ok else 0.0,
            server_compute_us=float(np.mean(self.compute_us)) if ok else 0.0,
            latencies=self.latencies,
        )


def _request(spec: LoadSpec, nz: int, seed: int) -> pb.GenerateRequest:
    latents = np.random.default_rng(seed).standard_normal(
        (spec.latents_per_request, nz), dtype=np.float32
    )
    return pb.GenerateRequest(packed=latents.tobytes(), encoding=ENCODINGS[spec.encoding])


async def _stubs(spec: LoadSpec) -> tuple[list[grpc.aio.Channel], list[pb_grpc.GeneratorStub], int]:
    channels = [
        grpc.aio.insecure_channel(spec.target, options=CHANNEL_OPTIONS)
        for _ in range(spec.channels)
    ]
    stubs = [pb_grpc.GeneratorStub(channel) for channel in channels]
    info = await stubs[0].GetModelInfo(pb.GetModelInfoRequest(), timeout=spec.timeout_s)
    return channels, stubs, info.nz


async def closed_loop(spec: LoadSpec, concurrency: int) -> LevelResult:
    channels, stubs, nz = await _stubs(spec)
    begin = time.perf_counter()
    measuring_from = begin + spec.warmup_s
    end = measuring_from + spec.duration_s
    recorder = _Recorder(measuring_from)

    async def caller(index: int) -> None:
        stub = stubs[index % len(stubs)]
        request = _request(spec, nz, index)
        while time.perf_counter() < end:
            await recorder.call(stub, request, spec)

    await asyncio.gather(*(caller(index) for index in range(concurrency)))
    elapsed = time.perf_counter() - measuring_from
    for channel in channels:
        await channel.close()
    return recorder.result(concurrency, None, elapsed, spec.latents_per_request)


async def open_loop(spec: LoadSpec, rate: float) -> LevelResult:
    channels, stubs, nz = await _stubs(spec)
    requests = [_request(spec, nz, index) for index in range(64)]
    begin = time.perf_counter()
    measuring_from = begin + spec.warmup_s
    end = measuring_from + spec.duration_s
    recorder = _Recorder(measuring_from)
    tasks: set[asyncio.Task[None]] = set()
    sent = 0
    while (now := time.perf_counter()) < end:
        due = begin + sent / rate
        if due > now:
            await asyncio.sleep(due - now)
        task = asyncio.create_task(
            recorder.call(stubs[sent % len(stubs)], requests[sent % 64], spec)
        )
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        sent += 1
    if tasks:
        await asyncio.wait(tasks)
    elapsed = time.perf_counter() - measuring_from
    for channel in channels:
        await channel.close()
    return recorder.result(None, rate, elapsed, spec.latents_per_request)


def run_sweep(spec: LoadSpec, concurrencies: list[int], rates: list[float]) -> list[LevelResult]:
    results = [asyncio.run(closed_loop(spec, c)) for c in concurrencies]
    results += [asyncio.run(open_loop(spec, r)) for r in rates]
    return results


def format_table(spec: LoadSpec, results: list[LevelResult]) -> str:
    lines = [
        f"target {spec.target}: {spec.latents_per_request} latent(s)/request, {spec.encoding}, "
        f"{spec.duration_s:g} s per level",
        f"{'load':>10} {'req/s':>9} {'img/s':>9} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8} "
        f"{'queue us':>9} {'compute us':>10}  errors",
    ]
    for r in results:
        load = f"c={r.concurrency}" if r.concurrency is not None else f"r={r.rate:g}/s"
        lat = r.latency_ms
        errors = ", ".join(f"{code}={n}" for code, n in sorted(r.errors.items())) or "-"
        lines.append(
            f"{load:>10} {r.requests_per_s:9.1f} {r.images_per_s:9.1f} {lat.get('p50', 0):8.2f} "
            f"{lat.get('p90', 0):8.2f} {lat.get('p99', 0):8.2f} {r.server_queue_us:9.0f} "
            f"{r.server_compute_us:10.0f}  {errors}"
        )
    return "\n".join(lines)


def report(spec: LoadSpec, results: list[LevelResult]) -> dict[str, Any]:
    levels = []
    for result in results:
        level = asdict(result)
        del level["latencies"]
        levels.append(level)
    return {"spec": asdict(spec), "levels": levels}


@app.command()
def main(
    target: Annotated[
        str,
        typer.Option(
            envvar="DCGAN_TARGET", help="host:port, or dns:///name:port for all replicas."
        ),
    ] = LoadSpec.target,
    concurrency: Annotated[
        list[int] | None,
        typer.Option(
            "--concurrency",
            "-c",
            help="Callers in a closed loop; repeat for a sweep (none with --rate alone).",
            show_default=" ".join(map(str, SWEEP)),
        ),
    ] = None,
    rate: Annotated[
        list[float] | None,
        typer.Option(help="Requests per second in an open loop; repeat for several."),
    ] = None,
    latents: Annotated[
        int, typer.Option("--latents", "-n", min=1, help="Latents per request.")
    ] = LoadSpec.latents_per_request,
    encoding: Annotated[str, typer.Option(help="uint8, float32 or png.")] = LoadSpec.encoding,
    duration_s: Annotated[
        float, typer.Option(min=0.1, help="Seconds measured per level.")
    ] = LoadSpec.duration_s,
    warmup_s: Annotated[
        float, typer.Option(min=0, help="Seconds of load before measuring.")
    ] = LoadSpec.warmup_s,
    timeout_s: Annotated[
        float, typer.Option(min=0.001, help="Each request's deadline.")
    ] = LoadSpec.timeout_s,
    channels: Annotated[
        int, typer.Option(min=1, help="Connections the callers share.")
    ] = LoadSpec.channels,
    json_out: Annotated[
        Path | None, typer.Option("--json", help="Also write the results here.")
    ] = None,
) -> None:
    """Measure throughput and latency of a dcgan-serve server.

    Example: dcgan-bench --target localhost:50051 -c 1 -c 8 -c 32 --duration-s 10 --json b.json
    """
    if encoding not in ENCODINGS:
        typer.echo(f"error: encoding must be one of {', '.join(ENCODINGS)}", err=True)
        raise typer.Exit(2)
    spec = LoadSpec(
        target=target,
        latents_per_request=latents,
        encoding=encoding,
        duration_s=duration_s,
        warmup_s=warmup_s,
        timeout_s=timeout_s,
        channels=channels,
    )
    levels = concurrency if concurrency or rate else SWEEP
    try:
        results = run_sweep(spec, list(levels or []), list(rate or []))
    except grpc.aio.AioRpcError as error:
        typer.echo(f"error: {target}: {error.code().name}: {error.details()}", err=True)
        raise typer.Exit(1) from None
    typer.echo(format_table(spec, results))
    if json_out is not None:
        json_out.write_text(json.dumps(report(spec, results), indent=2) + "\n")


if __name__ == "__main__":
    app()
