"""`dcgan-serve`: parse flags (or their DCGAN_* environment variables) and run the server.

Defaults come from the option dataclasses of `dcgan.service.options`, written there alone.
Exit codes (dcgan.contract.commands): 0 when stopped by SIGTERM or SIGINT, drained or still
starting; 1 for a model, file, host or port that cannot serve; 2 for a bad option.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from enum import StrEnum
from pathlib import Path
from types import FrameType
from typing import Annotated

import typer

from dcgan.contract.commands import DONE, entry_point, fail, usage_error, version_option
from dcgan.service.options import (
    BatchingOptions,
    RequestLimits,
    RuntimeOptions,
    ServerConfig,
    available_cores,
)

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)

# Every option also reads DCGAN_<OPTION>: --max-queue-delay-us from DCGAN_MAX_QUEUE_DELAY_US.
ENVIRONMENT = {"auto_envvar_prefix": "DCGAN"}

MODEL = "Model"
BATCH = "Batching"
LIMITS = "Limits"
NET = "Network"
SECURITY = "Security"


class ModelControl(StrEnum):
    none = "none"
    poll = "poll"
    explicit = "explicit"


class Device(StrEnum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


DEFAULT_DEVICE = Device(RuntimeOptions.device)
DEFAULT_CONTROL = ModelControl(ServerConfig.model_control)
UINT32_MAX = 2**32 - 1  # what GetModelInfo's fields carry
INT32_MAX = 2**31 - 1  # what grpc's integer settings take
MAX_GRPC_SECONDS = INT32_MAX // 1000  # seconds grpc takes as milliseconds: about 24.8 days
# (a maximum also refuses NaN, which a minimum alone lets through)


class LogLevel(StrEnum):
    DEBUG = "DEBUG"
    INFO = "INFO"
    WARNING = "WARNING"
    ERROR = "ERROR"


def parse_ports(text: str) -> tuple[int, int]:
    """'50051' -> (50051, 1); '56051-56053' -> (56051, 3)."""
    first, _, last = text.partition("-")
    try:
        low, high = int(first), int(last or first)
    except ValueError:
        raise ValueError(f"expected a port or a range A-B, not {text!r}") from None
    if not 0 <= low <= high <= 65535:
        raise ValueError(f"expected ports within 0-65535 with A <= B, not {text!r}")
    return low, high - low + 1


@app.command(context_settings=ENVIRONMENT)
def main(
    model_dir: Annotated[
        Path | None,
        typer.Option(
            help="An export directory written by dcgan-export: a repository of one model.",
            rich_help_panel=MODEL,
        ),
    ] = None,
    model_repository: Annotated[
        Path | None,
        typer.Option(
            help="A repository DIR/<model>/<version>/ of exports (dcgan-export --repository).",
            rich_help_panel=MODEL,
        ),
    ] = None,
    version_policy: Annotated[
        str,
        typer.Option(
            help="Versions served: latest, latest:N, all or specific:A,B.",
            rich_help_panel=MODEL,
        ),
    ] = ServerConfig.version_policy,
    model_control: Annotated[
        ModelControl,
        typer.Option(
            help="none: load at start-up; poll: follow the repository; explicit: LoadModel.",
            rich_help_panel=MODEL,
        ),
    ] = DEFAULT_CONTROL,
    poll_s: Annotated[
        float,
        typer.Option(
            min=0.01,
            max=MAX_GRPC_SECONDS,
            help="Seconds between two scans of the repository (--model-control poll).",
            rich_help_panel=MODEL,
        ),
    ] = ServerConfig.poll_s,
    device: Annotated[
        Device,
        typer.Option(
            help="auto takes CUDA when it truly works, and logs which.",
            rich_help_panel=MODEL,
        ),
    ] = DEFAULT_DEVICE,
    instances: Annotated[
        int,
        typer.Option(
            min=0,
            help="Sessions running batches in parallel under load (0: CPU cores up to 4; CUDA 1).",
            rich_help_panel=MODEL,
        ),
    ] = RuntimeOptions.instances,
    intra_op_threads: Annotated[
        int,
        typer.Option(
            min=0,
            help="CPU threads per session (0: cores / instances).",
            rich_help_panel=MODEL,
        ),
    ] = RuntimeOptions.intra_op_threads,
    spinning: Annotated[
        bool,
        typer.Option(
            "--spinning/--no-spinning",
            help="Calls one at a time: threads spin-wait between operators (off: cores shared).",
            rich_help_panel=MODEL,
        ),
    ] = RuntimeOptions.spinning,
    pin_cores: Annotated[
        bool,
        typer.Option(
            "--pin-cores/--no-pin-cores",
            help="Under load, each one-thread session runs on a core of its own.",
            rich_help_panel=MODEL,
        ),
    ] = RuntimeOptions.pin_cores,
    max_batch_size: Annotated[
        int,
        typer.Option(
            min=1,
            max=UINT32_MAX,
            help="Latents per model run.",
            rich_help_panel=BATCH,
        ),
    ] = BatchingOptions.max_batch_size,
    max_queue_delay_us: Annotated[
        int,
        typer.Option(
            min=0,
            help="Longest wait for a batch to fill while one computes.",
            rich_help_panel=BATCH,
        ),
    ] = round(BatchingOptions.max_queue_delay_s * 1e6),
    max_queue_size: Annotated[
        int,
        typer.Option(
            min=1,
            max=UINT32_MAX,
            help="Latents waiting at most; more get RESOURCE_EXHAUSTED.",
            rich_help_panel=BATCH,
        ),
    ] = BatchingOptions.max_queue_size,
    max_latents_per_request: Annotated[
        int,
        typer.Option(
            min=1,
            max=UINT32_MAX,
            help="Latents one Generate or Interpolate may ask for.",
            rich_help_panel=LIMITS,
        ),
    ] = RequestLimits.max_latents_per_request,
    max_stream_latents: Annotated[
        int,
        typer.Option(
            min=1,
            max=UINT32_MAX,
            help="Latents one GenerateStream, or steps one InterpolateStream, may ask for.",
            rich_help_panel=LIMITS,
        ),
    ] = RequestLimits.max_stream_latents,
    max_response_bytes: Annotated[
        int,
        typer.Option(
            min=65536,
            help="Largest Generate or Interpolate answer; more images must stream.",
            rich_help_panel=LIMITS,
        ),
    ] = RequestLimits.max_response_bytes,
    max_message_bytes: Annotated[
        int,
        typer.Option(
            min=1024,
            max=INT32_MAX,
            help="Largest request message accepted.",
            rich_help_panel=LIMITS,
        ),
    ] = ServerConfig.max_message_bytes,
    max_concurrent_rpcs: Annotated[
        int,
        typer.Option(
            min=0,
            max=INT32_MAX,
            help="RPCs in progress at most (0: no limit).",
            rich_help_panel=LIMITS,
        ),
    ] = ServerConfig.max_concurrent_rpcs or 0,
    host: Annotated[
        str, typer.Option(help="Address to listen on.", rich_help_panel=NET)
    ] = ServerConfig.host,
    port: Annotated[
        str,
        typer.Option(
            help="gRPC port, or a range A-B: the first free one is bound (replicas on one host).",
            rich_help_panel=NET,
        ),
    ] = str(ServerConfig.port),
    port_file: Annotated[
        Path | None,
        typer.Option(help="Write the bound port here.", rich_help_panel=NET),
    ] = None,
    metrics_port: Annotated[
        int,
        typer.Option(
            min=0,
            max=65535,
            help="Prometheus /metrics port, plus the bound port's offset in a range (0: off).",
            rich_help_panel=NET,
        ),
    ] = ServerConfig.metrics_port,
    reuse_port: Annotated[
        bool,
        typer.Option(
            "--reuse-port/--no-reuse-port",
            help="Share the port with other servers (SO_REUSEPORT).",
            rich_help_panel=NET,
        ),
    ] = ServerConfig.reuse_port,
    max_connection_age_s: Annotated[
        float,
        typer.Option(
            min=0,
            max=MAX_GRPC_SECONDS,
            help="Close connections this old: clients re-resolve and find new replicas (0: never).",
            rich_help_panel=NET,
        ),
    ] = ServerConfig.max_connection_age_s or 0.0,
    grace_s: Annotated[
        float,
        typer.Option(
            min=0,
            max=MAX_GRPC_SECONDS,
            help="Seconds a SIGTERM drain may take.",
            rich_help_panel=NET,
        ),
    ] = ServerConfig.grace_s,
    drain_s: Annotated[
        float,
        typer.Option(
            min=0,
            max=MAX_GRPC_SECONDS,
            help="Seconds after SIGTERM of answering new calls UNAVAILABLE (within --grace-s).",
            rich_help_panel=NET,
        ),
    ] = ServerConfig.drain_s,
    tls_cert: Annotated[
        Path | None,
        typer.Option(
            help="PEM certificate chain: serve over TLS.",
            rich_help_panel=SECURITY,
        ),
    ] = None,
    tls_key: Annotated[
        Path | None,
        typer.Option(help="PEM private key of --tls-cert.", rich_help_panel=SECURITY),
    ] = None,
    tls_client_ca: Annotated[
        Path | None,
        typer.Option(
            help="PEM CA: require client certificates (mutual TLS).",
            rich_help_panel=SECURITY,
        ),
    ] = None,
    token_file: Annotated[
        Path | None,
        typer.Option(
            help="Require this bearer token (health checks stay open).",
            rich_help_panel=SECURITY,
        ),
    ] = None,
    token: Annotated[
        str | None,
        typer.Option(hidden=True, help="The bearer token itself (prefer --token-file)."),
    ] = None,
    log_level: Annotated[
        LogLevel, typer.Option(case_sensitive=False, help="DEBUG, INFO, WARNING or ERROR.")
    ] = LogLevel.INFO,
    version: Annotated[bool, version_option("dcgan-serve")] = False,
) -> None:
    """Serve DCGAN generators over gRPC, batching latents from concurrent callers.

    Example: dcgan-serve --model-dir exports/mnist --port 50051 --metrics-port 9090
    Example: dcgan-serve --model-repository models --model-control poll
    """
    logging.basicConfig(
        level=log_level.value, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    check_models(model_dir, model_repository, version_policy, model_control)
    if drain_s > grace_s:
        raise usage_error(
            f"--drain-s {drain_s:g} is longer than --grace-s {grace_s:g}: the drain is part of "
            "the grace, give --grace-s at least as much"
        )
    try:
        first_port, port_count = parse_ports(port)
    except ValueError as error:
        raise usage_error(f"--port: {error}") from None
    if not host.strip():
        raise usage_error("--host is empty: give a name or an address (0.0.0.0: every one)")
    cores = available_cores()
    for name, value in (("--instances", instances), ("--intra-op-threads", intra_op_threads)):
        if value > cores:
            raise usage_error(
                f"{name} {value} is more than the {cores} CPU cores this process may run on"
            )
    required_token = read_token(token_file) if token_file else token
    if required_token is not None:
        check_token(required_token)
    config = ServerConfig(
        model_dir=model_dir,
        model_repository=model_repository,
        version_policy=version_policy,
        model_control=model_control.value,
        poll_s=poll_s,
        host=host,
        port=first_port,
        port_count=port_count,
        port_file=port_file,
        max_connection_age_s=max_connection_age_s or None,
        metrics_port=metrics_port,
        runtime=RuntimeOptions(
            device=device.value,
            instances=instances,
            intra_op_threads=intra_op_threads,
            spinning=spinning,
            pin_cores=pin_cores,
        ),
        batching=BatchingOptions(
            max_batch_size=max_batch_size,
            max_queue_delay_s=max_queue_delay_us / 1e6,
            max_queue_size=max_queue_size,
        ),
        limits=RequestLimits(
            max_latents_per_request=max_latents_per_request,
            max_stream_latents=max_stream_latents,
            max_response_bytes=max_response_bytes,
        ),
        max_message_bytes=max_message_bytes,
        max_concurrent_rpcs=max_concurrent_rpcs or None,
        grace_s=grace_s,
        drain_s=drain_s,
        reuse_port=reuse_port,
        tls_cert=tls_cert,
        tls_key=tls_key,
        tls_client_ca=tls_client_ca,
        token=required_token,
    )
    signalled: list[int] = []  # signals before the server's own handlers: it stops at once

    def record(signum: int, frame: FrameType | None) -> None:
        signalled.append(signum)

    previous = {sig: signal.signal(sig, record) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        still_loading = start_serving(config, signalled)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if still_loading:  # onnxruntime is creating sessions on a thread that cannot be stopped
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(DONE)


def check_models(
    model_dir: Path | None,
    model_repository: Path | None,
    version_policy: str,
    model_control: ModelControl,
) -> None:
    """One source of models, a version policy that parses, a control that fits the source."""
    from dcgan.service.repository import VersionPolicy

    if model_dir is None and model_repository is None:
        raise usage_error(
            "give --model-dir (one export) or --model-repository (DIR/<model>/<version>/)"
        )
    if model_dir is not None and model_repository is not None:
        raise usage_error(
            "give --model-dir or --model-repository, not both "
            "(--model-dir is a repository of one model)"
        )
    try:
        VersionPolicy.parse(version_policy)
    except ValueError as error:
        raise usage_error(f"--version-policy {error}") from None
    if model_dir is not None and model_control != ModelControl.none:
        raise usage_error(
            f"--model-control {model_control.value} needs --model-repository: --model-dir "
            "serves one export for the server's life"
        )


def start_serving(config: ServerConfig, signalled: list[int]) -> bool:
    """Serve until stopped; True when the model was still loading (see server.serve)."""
    from dcgan.service.repository import RepositoryError
    from dcgan.service.runtime import ModelLoadError
    from dcgan.service.server import serve
    from dcgan.service.startup import OptionConflict, StartupError

    try:
        return asyncio.run(serve(config, signalled))
    except ModelLoadError as error:
        source = config.model_dir or config.model_repository
        raise fail(f"cannot serve {source}: {error}") from None
    except RepositoryError as error:
        raise fail(str(error)) from None
    except OptionConflict as error:
        raise usage_error(str(error)) from None
    except StartupError as error:
        raise fail(str(error)) from None


def read_token(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError as error:
        raise fail(f"cannot read the token file {path}: {error.strerror}") from None
    except UnicodeDecodeError:
        raise fail(f"the token file {path} is not text") from None


def check_token(token: str) -> None:
    """A token travels in an HTTP/2 header: printable ASCII, no spaces."""
    if not token:
        raise fail("the bearer token is empty")
    if not all("!" <= character <= "~" for character in token):
        raise fail("the bearer token holds spaces, line breaks or non-ASCII characters")


run = entry_point(app)

if __name__ == "__main__":
    run()
