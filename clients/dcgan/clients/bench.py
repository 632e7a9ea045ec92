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
from dcgan.clients.options import (
    OUT_PATH,
    UINT32_MAX,
    ConnectionOptions,
    CredentialError,
    Credentials,
    ModelName,
    ModelOptions,
    ModelVersion,
    OptionError,
    Target,
    TimeoutS,
    TlsCa,
    TlsCert,
    TlsKey,
    TokenFile,
    check_connection,
    check_model,
)
from dcgan.clients.outputs import UnwritableOutput, check_file, write_file
from dcgan.contract.commands import entry_point, fail, usage_error, version_option
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
    model: str = ModelOptions.name  # the model asked for (empty: the server's only one)
    model_version: int = ModelOptions.version  # its version (0: the newest served)


SWEEP = [1, 4, 16, 64]  # the concurrencies measured when neither -c nor --rate is given
MAX_CONCURRENCY = 10_000  # callers of one level
MAX_RATE = 10_000.0  # requests/s: more than one Python process sends
MAX_CHANNELS = 1_000
MAX_SECONDS = 86_400.0  # of --duration-s and --warmup-s
DRAIN_S = 1.0  # an open loop's requests still in flight at the end get this long to finish


class LoadError(Exception):
    """A run that measured nothing: the server refused the load, or answered none of it."""


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
    unfinished: int = 0  # open loop: requests cancelled DRAIN_S after the end, still unanswered
    latencies: list[float] = field(default_factory=list, repr=False)


class _Recorder:
    def __init__(self, measuring_from: float) -> None:
        self.start = measuring_from
        self.latencies: list[float] = []
        self.queue_us: list[int] = []
        self.compute_us: list[int] = []
        self.errors: Counter[str] = Counter()
        self.first_error = ""  # what the server said of the first refused request
        self.unfinished = 0

    async def call(
        self, stub: pb_grpc.GeneratorStub, request: pb.GenerateRequest, load: _Load
    ) -> None:
        begin = time.perf_counter()
        try:
            response = await stub.Generate(
                request, timeout=load.spec.timeout_s, metadata=load.credentials.metadata
            )
        except asyncio.CancelledError:
            if begin >= self.start:
                self.unfinished += 1
            raise
        except grpc.aio.AioRpcError as error:
            if begin >= self.start:
                self.errors[error.code().name] += 1
                self.first_error = self.first_error or _one_line(error)
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
            unfinished=self.unfinished,
            latencies=self.latencies,
        )


@dataclass(frozen=True)
class _Load:
    """What every caller of a level shares: the spec, the credentials, the channels' stubs."""

    spec: LoadSpec
    credentials: Credentials
    stubs: list[pb_grpc.GeneratorStub]
    nz: int


def _one_line(error: grpc.aio.AioRpcError) -> str:
    return f"{error.code().name}: {' '.join(str(error.details()).split())}"


def _request(spec: LoadSpec, nz: int, seed: int) -> pb.GenerateRequest:
    latents = np.random.default_rng(seed).standard_normal(
        (spec.latents_per_request, nz), dtype=np.float32
    )
    return pb.GenerateRequest(
        packed=latents.tobytes(),
        encoding=ENCODINGS[spec.encoding],
        model_name=spec.model,
        model_version=spec.model_version,
    )


async def _connect(
    spec: LoadSpec, credentials: Credentials
) -> tuple[list[grpc.aio.Channel], _Load]:
    """The channels, and the model's nz; refuses more latents a request than the server takes."""
    tls = credentials.channel_credentials()
    channels = [
        grpc.aio.insecure_channel(spec.target, options=CHANNEL_OPTIONS)
        if tls is None
        else grpc.aio.secure_channel(spec.target, tls, options=CHANNEL_OPTIONS)
        for _ in range(spec.channels)
    ]
    stubs = [pb_grpc.GeneratorStub(channel) for channel in channels]
    try:
        info = await stubs[0].GetModelInfo(
            pb.GetModelInfoRequest(model_name=spec.model, model_version=spec.model_version),
            timeout=spec.timeout_s,
            metadata=credentials.metadata,
        )
    except BaseException:
        for channel in channels:
            await channel.close()
        raise
    if spec.latents_per_request > info.max_latents_per_request:
        for channel in channels:
            await channel.close()
        raise LoadError(
            f"{spec.target} takes at most {info.max_latents_per_request} latents per request, "
            f"not {spec.latents_per_request} (--latents)"
        )
    return channels, _Load(spec, credentials, stubs, info.nz)


async def closed_loop(spec: LoadSpec, concurrency: int, credentials: Credentials) -> LevelResult:
    channels, load = await _connect(spec, credentials)
    begin = time.perf_counter()
    measuring_from = begin + spec.warmup_s
    end = measuring_from + spec.duration_s
    recorder = _Recorder(measuring_from)

    async def caller(index: int) -> None:
        stub = load.stubs[index % len(load.stubs)]
        request = _request(spec, load.nz, index)
        while time.perf_counter() < end:
            await recorder.call(stub, request, load)

    await asyncio.gather(*(caller(index) for index in range(concurrency)))
    elapsed = time.perf_counter() - measuring_from
    for channel in channels:
        await channel.close()
    return _measured(recorder, concurrency, None, elapsed, spec)


async def open_loop(spec: LoadSpec, rate: float, credentials: Credentials) -> LevelResult:
    channels, load = await _connect(spec, credentials)
    requests = [_request(spec, load.nz, index) for index in range(64)]
    begin = time.perf_counter()
    measuring_from = begin + spec.warmup_s
    end = measuring_from + spec.duration_s
    recorder = _Recorder(measuring_from)
    tasks: set[asyncio.Task[None]] = set()
    sent = 0
    while (now := time.perf_counter()) < end:
        # Sleep until the next request is due (never past the end), and yield to the calls in
        # flight even when behind: a loop that never awaits would only pile up tasks.
        await asyncio.sleep(max(0.0, min(begin + sent / rate, end) - now))
        if time.perf_counter() >= end:
            break
        stub = load.stubs[sent % len(load.stubs)]
        task = asyncio.create_task(recorder.call(stub, requests[sent % 64], load))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        sent += 1
    if tasks:  # a server slower than the rate is not waited for: the run lasts what it says
        _, late = await asyncio.wait(tasks, timeout=DRAIN_S)
        for task in late:
            task.cancel()
        await asyncio.gather(*late, return_exceptions=True)
    elapsed = time.perf_counter() - measuring_from
    for channel in channels:
        await channel.close()
    return _measured(recorder, None, rate, elapsed, spec)


def _measured(
    recorder: _Recorder, concurrency: int | None, rate: float | None, elapsed: float, spec: LoadSpec
) -> LevelResult:
    """The level's result; a level with no successful request measured nothing, and says why."""
    result = recorder.result(concurrency, rate, elapsed, spec.latents_per_request)
    if result.requests == 0:
        load = f"c={concurrency}" if concurrency is not None else f"rate {rate:g}/s"
        if recorder.errors:
            counts = ", ".join(f"{code} x{n}" for code, n in sorted(result.errors.items()))
            raise LoadError(
                f"every request at {load} failed ({counts}); the first: {recorder.first_error}"
            )
        raise LoadError(
            f"no request at {load} was answered in the {spec.duration_s:g} s measured "
            f"({result.unfinished} still in flight {DRAIN_S:g} s after it)"
        )
    return result


def run_sweep(
    spec: LoadSpec,
    concurrencies: list[int],
    rates: list[float],
    credentials: Credentials,
) -> list[LevelResult]:
    """Every level in turn; raises LoadError at the first that measured nothing."""
    results = [asyncio.run(closed_loop(spec, c, credentials)) for c in concurrencies]
    results += [asyncio.run(open_loop(spec, r, credentials)) for r in rates]
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
        counts = {**r.errors, **({"unfinished": r.unfinished} if r.unfinished else {})}
        errors = ", ".join(f"{code}={n}" for code, n in sorted(counts.items())) or "-"
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
    target: Target = ConnectionOptions.target,
    concurrency: Annotated[
        list[int] | None,
        typer.Option(
            "--concurrency",
            "-c",
            min=1,
            max=MAX_CONCURRENCY,
            help="Callers in a closed loop; repeat for a sweep (none with --rate alone).",
            show_default=" ".join(map(str, SWEEP)),
        ),
    ] = None,
    rate: Annotated[
        list[float] | None,
        typer.Option(
            min=0.01, max=MAX_RATE, help="Requests per second in an open loop; repeat for several."
        ),
    ] = None,
    latents: Annotated[
        int, typer.Option("--latents", "-n", min=1, max=UINT32_MAX, help="Latents per request.")
    ] = LoadSpec.latents_per_request,
    encoding: Annotated[str, typer.Option(help="uint8, float32 or png.")] = LoadSpec.encoding,
    duration_s: Annotated[
        float, typer.Option(min=0.1, max=MAX_SECONDS, help="Seconds measured per level.")
    ] = LoadSpec.duration_s,
    warmup_s: Annotated[
        float, typer.Option(min=0, max=MAX_SECONDS, help="Seconds of load before measuring.")
    ] = LoadSpec.warmup_s,
    timeout_s: TimeoutS = LoadSpec.timeout_s,
    channels: Annotated[
        int, typer.Option(min=1, max=MAX_CHANNELS, help="Connections the callers share.")
    ] = LoadSpec.channels,
    json_out: Annotated[
        Path | None, typer.Option("--json", help="Also write the results here.", **OUT_PATH)
    ] = None,
    token_file: TokenFile = None,
    tls_ca: TlsCa = None,
    tls_cert: TlsCert = None,
    tls_key: TlsKey = None,
    model: ModelName = LoadSpec.model,
    model_version: ModelVersion = LoadSpec.model_version,
    version: Annotated[bool, version_option("dcgan-client")] = False,
) -> None:
    """Measure throughput and latency of a dcgan-serve server.

    Exits 1, with the reason, when a level measured nothing (every request failed), or when the
    server has no such --model or --model-version (NOT_FOUND).

    Example: dcgan-bench --target localhost:50051 -c 1 -c 8 -c 32 --duration-s 10 --json b.json
    """
    if encoding not in ENCODINGS:
        raise usage_error(f"--encoding must be one of {', '.join(ENCODINGS)}, not {encoding!r}")
    options = ConnectionOptions(target, timeout_s, token_file, tls_ca, tls_cert, tls_key)
    try:
        check_model(ModelOptions(model, model_version))
        credentials = check_connection(options)
        if json_out is not None:
            check_file(json_out, "--json")
    except OptionError as error:
        raise usage_error(str(error)) from None
    except (CredentialError, UnwritableOutput) as error:
        raise fail(str(error)) from None
    spec = LoadSpec(
        target=target,
        latents_per_request=latents,
        encoding=encoding,
        duration_s=duration_s,
        warmup_s=warmup_s,
        timeout_s=timeout_s,
        channels=channels,
        model=model,
        model_version=model_version,
    )
    levels = concurrency if concurrency or rate else SWEEP
    try:
        results = run_sweep(spec, list(levels or []), list(rate or []), credentials)
    except grpc.aio.AioRpcError as error:
        raise fail(f"{target}: {_one_line(error)}") from None
    except LoadError as error:
        raise fail(str(error)) from None
    typer.echo(format_table(spec, results))
    if json_out is not None:
        try:
            write_file(json_out, (json.dumps(report(spec, results), indent=2) + "\n").encode())
        except OSError as error:
            raise fail(f"cannot write --json {json_out}: {error.strerror or error}") from None


run = entry_point(app)

if __name__ == "__main__":
    run()
