"""`dcgan-serve`: parse flags (or their DCGAN_* environment variables) and run the server."""

from __future__ import annotations

import asyncio
import logging
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)

MODEL = "Model"
BATCH = "Batching"
LIMITS = "Limits"
NET = "Network"
SECURITY = "Security"


class Device(StrEnum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


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


@app.command()
def main(
    model_dir: Annotated[
        Path,
        typer.Option(
            envvar="DCGAN_MODEL_DIR",
            help="An export directory written by dcgan-export.",
            rich_help_panel=MODEL,
        ),
    ],
    device: Annotated[
        Device,
        typer.Option(
            envvar="DCGAN_DEVICE",
            help="auto takes CUDA when it truly works, and logs which.",
            rich_help_panel=MODEL,
        ),
    ] = Device.auto,
    instances: Annotated[
        int,
        typer.Option(
            envvar="DCGAN_INSTANCES",
            min=0,
            help="Sessions running batches in parallel under load (0: CPU cores up to 4; CUDA 1).",
            rich_help_panel=MODEL,
        ),
    ] = 0,
    intra_op_threads: Annotated[
        int,
        typer.Option(
            envvar="DCGAN_INTRA_OP_THREADS",
            min=0,
            help="CPU threads per session (0: cores / instances).",
            rich_help_panel=MODEL,
        ),
    ] = 0,
    spinning: Annotated[
        bool,
        typer.Option(
            "--spinning/--no-spinning",
            envvar="DCGAN_SPINNING",
            help="Let CPU threads spin between runs.",
            rich_help_panel=MODEL,
        ),
    ] = True,
    max_batch_size: Annotated[
        int,
        typer.Option(
            envvar="DCGAN_MAX_BATCH_SIZE",
            min=1,
            help="Latents per model run.",
            rich_help_panel=BATCH,
        ),
    ] = 64,
    max_queue_delay_us: Annotated[
        int,
        typer.Option(
            envvar="DCGAN_MAX_QUEUE_DELAY_US",
            min=0,
            help="Longest wait for a batch to fill while one computes.",
            rich_help_panel=BATCH,
        ),
    ] = 2000,
    max_queue_size: Annotated[
        int,
        typer.Option(
            envvar="DCGAN_MAX_QUEUE_SIZE",
            min=1,
            help="Latents waiting at most; more get RESOURCE_EXHAUSTED.",
            rich_help_panel=BATCH,
        ),
    ] = 4096,
    max_latents_per_request: Annotated[
        int,
        typer.Option(
            envvar="DCGAN_MAX_LATENTS_PER_REQUEST",
            min=1,
            help="Latents one Generate or Interpolate may ask for.",
            rich_help_panel=LIMITS,
        ),
    ] = 256,
    max_stream_latents: Annotated[
        int,
        typer.Option(
            envvar="DCGAN_MAX_STREAM_LATENTS",
            min=1,
            help="Latents one GenerateStream may ask for.",
            rich_help_panel=LIMITS,
        ),
    ] = 65536,
    max_response_bytes: Annotated[
        int,
        typer.Option(
            envvar="DCGAN_MAX_RESPONSE_BYTES",
            min=65536,
            help="Largest Generate or Interpolate answer; more images must stream.",
            rich_help_panel=LIMITS,
        ),
    ] = 4 * 2**20,
    max_message_bytes: Annotated[
        int,
        typer.Option(
            envvar="DCGAN_MAX_MESSAGE_BYTES",
            min=1024,
            help="Largest request message accepted.",
            rich_help_panel=LIMITS,
        ),
    ] = 4 * 2**20,
    max_concurrent_rpcs: Annotated[
        int,
        typer.Option(
            envvar="DCGAN_MAX_CONCURRENT_RPCS",
            min=0,
            help="RPCs in progress at most (0: no limit).",
            rich_help_panel=LIMITS,
        ),
    ] = 0,
    host: Annotated[
        str, typer.Option(envvar="DCGAN_HOST", help="Address to listen on.", rich_help_panel=NET)
    ] = "0.0.0.0",
    port: Annotated[
        str,
        typer.Option(
            envvar="DCGAN_PORT",
            help="gRPC port, or a range A-B: the first free one is bound (replicas on one host).",
            rich_help_panel=NET,
        ),
    ] = "50051",
    port_file: Annotated[
        Path | None,
        typer.Option(
            envvar="DCGAN_PORT_FILE", help="Write the bound port here.", rich_help_panel=NET
        ),
    ] = None,
    metrics_port: Annotated[
        int,
        typer.Option(
            envvar="DCGAN_METRICS_PORT",
            min=0,
            max=65535,
            help="Prometheus /metrics port, plus the bound port's offset in a range (0: off).",
            rich_help_panel=NET,
        ),
    ] = 9090,
    reuse_port: Annotated[
        bool,
        typer.Option(
            "--reuse-port/--no-reuse-port",
            envvar="DCGAN_REUSE_PORT",
            help="Share the port with other servers (SO_REUSEPORT).",
            rich_help_panel=NET,
        ),
    ] = False,
    max_connection_age_s: Annotated[
        float,
        typer.Option(
            envvar="DCGAN_MAX_CONNECTION_AGE_S",
            min=0,
            help="Close connections this old: clients re-resolve and find new replicas (0: never).",
            rich_help_panel=NET,
        ),
    ] = 0.0,
    grace_s: Annotated[
        float,
        typer.Option(
            envvar="DCGAN_GRACE_S",
            min=0,
            help="Seconds a SIGTERM drain may take.",
            rich_help_panel=NET,
        ),
    ] = 10.0,
    tls_cert: Annotated[
        Path | None,
        typer.Option(
            envvar="DCGAN_TLS_CERT",
            help="PEM certificate chain: serve over TLS.",
            rich_help_panel=SECURITY,
        ),
    ] = None,
    tls_key: Annotated[
        Path | None,
        typer.Option(
            envvar="DCGAN_TLS_KEY", help="PEM private key of --tls-cert.", rich_help_panel=SECURITY
        ),
    ] = None,
    tls_client_ca: Annotated[
        Path | None,
        typer.Option(
            envvar="DCGAN_TLS_CLIENT_CA",
            help="PEM CA: require client certificates (mutual TLS).",
            rich_help_panel=SECURITY,
        ),
    ] = None,
    token_file: Annotated[
        Path | None,
        typer.Option(
            envvar="DCGAN_TOKEN_FILE",
            help="Require this bearer token (health checks stay open).",
            rich_help_panel=SECURITY,
        ),
    ] = None,
    token: Annotated[
        str | None,
        typer.Option(
            envvar="DCGAN_TOKEN", hidden=True, help="The bearer token itself (prefer --token-file)."
        ),
    ] = None,
    log_level: Annotated[
        str, typer.Option(envvar="DCGAN_LOG_LEVEL", help="DEBUG, INFO, WARNING or ERROR.")
    ] = "INFO",
) -> None:
    """Serve a DCGAN generator over gRPC, batching latents from concurrent callers.

    Example: dcgan-serve --model-dir exports/mnist --port 50051 --metrics-port 9090
    """
    from dcgan.service.batcher import BatchingOptions
    from dcgan.service.dataplane import RequestLimits
    from dcgan.service.runtime import ModelLoadError, RuntimeOptions
    from dcgan.service.server import ServerConfig, serve

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
        runtime=RuntimeOptions(device.value, instances, intra_op_threads, spinning),
        batching=BatchingOptions(max_batch_size, max_queue_delay_us / 1e6, max_queue_size),
        limits=RequestLimits(max_latents_per_request, max_stream_latents, max_response_bytes),
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


if __name__ == "__main__":
    app()
