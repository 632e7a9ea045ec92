"""`dcgan-serve`: parse flags (or their DCGAN_* environment variables) and run the server.

Defaults come from the option dataclasses of `dcgan.service.options`, written there alone.
"""

from __future__ import annotations

import asyncio
import logging
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from dcgan.contract.commands import entry_point, version_option
from dcgan.service.options import BatchingOptions, RequestLimits, RuntimeOptions, ServerConfig

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)

# Every option also reads DCGAN_<OPTION>: --max-queue-delay-us from DCGAN_MAX_QUEUE_DELAY_US.
ENVIRONMENT = {"auto_envvar_prefix": "DCGAN"}

MODEL = "Model"
BATCH = "Batching"
LIMITS = "Limits"
NET = "Network"
SECURITY = "Security"


class Device(StrEnum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


DEFAULT_DEVICE = Device(RuntimeOptions.device)


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
        Path,
        typer.Option(
            help="An export directory written by dcgan-export.",
            rich_help_panel=MODEL,
        ),
    ],
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
            help="Let CPU threads spin between runs.",
            rich_help_panel=MODEL,
        ),
    ] = RuntimeOptions.spinning,
    max_batch_size: Annotated[
        int,
        typer.Option(
            min=1,
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
            help="Latents waiting at most; more get RESOURCE_EXHAUSTED.",
            rich_help_panel=BATCH,
        ),
    ] = BatchingOptions.max_queue_size,
    max_latents_per_request: Annotated[
        int,
        typer.Option(
            min=1,
            help="Latents one Generate or Interpolate may ask for.",
            rich_help_panel=LIMITS,
        ),
    ] = RequestLimits.max_latents_per_request,
    max_stream_latents: Annotated[
        int,
        typer.Option(
            min=1,
            help="Latents one GenerateStream may ask for.",
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
            help="Largest request message accepted.",
            rich_help_panel=LIMITS,
        ),
    ] = ServerConfig.max_message_bytes,
    max_concurrent_rpcs: Annotated[
        int,
        typer.Option(
            min=0,
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
            help="Close connections this old: clients re-resolve and find new replicas (0: never).",
            rich_help_panel=NET,
        ),
    ] = ServerConfig.max_connection_age_s or 0.0,
    grace_s: Annotated[
        float,
        typer.Option(
            min=0,
            help="Seconds a SIGTERM drain may take.",
            rich_help_panel=NET,
        ),
    ] = ServerConfig.grace_s,
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
    log_level: Annotated[str, typer.Option(help="DEBUG, INFO, WARNING or ERROR.")] = "INFO",
    version: Annotated[bool, version_option("dcgan-serve")] = False,
) -> None:
    """Serve a DCGAN generator over gRPC, batching latents from concurrent callers.

    Example: dcgan-serve --model-dir exports/mnist --port 50051 --metrics-port 9090
    """
    from dcgan.service.runtime import ModelLoadError
    from dcgan.service.server import serve

    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        required_token = token_file.read_text().strip() if token_file else token
    except OSError as error:
        typer.echo(f"error: cannot read the token file {token_file}: {error.strerror}", err=True)
        raise typer.Exit(1) from None
    if required_token == "":
        typer.echo("error: the bearer token is empty", err=True)
        raise typer.Exit(1)
    try:
        first_port, port_count = parse_ports(port)
    except ValueError as error:
        typer.echo(f"error: --port: {error}", err=True)
        raise typer.Exit(2) from None
    config = ServerConfig(
        model_dir=model_dir,
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
        reuse_port=reuse_port,
        tls_cert=tls_cert,
        tls_key=tls_key,
        tls_client_ca=tls_client_ca,
        token=required_token,
    )
    try:
        asyncio.run(serve(config))
    except ModelLoadError as error:
        typer.echo(f"error: cannot serve {model_dir}: {error}", err=True)
        raise typer.Exit(1) from None
    except (OSError, ValueError, RuntimeError) as error:  # unreadable TLS files, a port taken
        detail = str(error)
        if isinstance(error, OSError):
            detail = (
                f"{error.strerror}: {error.filename}" if error.filename else str(error.strerror)
            )
        typer.echo(f"error: {detail}", err=True)
        raise typer.Exit(1) from None


run = entry_point(app)

if __name__ == "__main__":
    run()
