"""`dcgan-client`: generate, interpolate, info and health against a dcgan-serve server."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import grpc
import typer

from dcgan.clients.options import ConnectionOptions

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False, no_args_is_help=True)

# The connection options also read DCGAN_<OPTION> (--timeout-s from DCGAN_TIMEOUT_S). The prefix
# would name every subcommand's options too (DCGAN_GENERATE_N): those come from the command line.
ENVIRONMENT = {"auto_envvar_prefix": "DCGAN"}
LOCAL: dict[str, Any] = {"allow_from_autoenv": False}
# Checked by click when the command line is parsed: a usage error, not a traceback.
READABLE: dict[str, Any] = {"exists": True, "dir_okay": False, "readable": True}


class Method(StrEnum):
    linear = "linear"
    slerp = "slerp"


@app.callback(context_settings=ENVIRONMENT)
def main(
    context: typer.Context,
    target: Annotated[
        str, typer.Option(help="host:port, or dns:///name:port to spread calls over every replica.")
    ] = ConnectionOptions.target,
    timeout_s: Annotated[
        float, typer.Option(min=0.001, help="Deadline of each call.")
    ] = ConnectionOptions.timeout_s,
    token_file: Annotated[
        Path | None, typer.Option(help="Bearer token for servers that ask for one.", **READABLE)
    ] = None,
    tls_ca: Annotated[
        Path | None, typer.Option(help="CA certificate: connect with TLS.", **READABLE)
    ] = None,
    tls_cert: Annotated[
        Path | None, typer.Option(help="Client certificate, for mutual TLS.", **READABLE)
    ] = None,
    tls_key: Annotated[
        Path | None, typer.Option(help="Client key, for mutual TLS.", **READABLE)
    ] = None,
) -> None:
    """Call a dcgan-serve server.

    Example: dcgan-client --target localhost:50051 generate -n 64 --seed 1 --out grid.png
    """
    context.obj = ConnectionOptions(
        target=target,
        timeout_s=timeout_s,
        token_file=token_file,
        tls_ca=tls_ca,
        tls_cert=tls_cert,
        tls_key=tls_key,
    )


@contextmanager
def _client(context: typer.Context) -> Iterator[Any]:
    """A connected client; RPC errors become one line and exit code 1."""
    from dcgan.clients.client import GeneratorClient, credentials

    options: ConnectionOptions = context.obj
    token = options.token_file.read_text().strip() if options.token_file else None
    tls = None
    if options.tls_ca or options.tls_cert:
        tls = credentials(options.tls_ca, options.tls_cert, options.tls_key)
    try:
        with GeneratorClient(options.target, options.timeout_s, tls=tls, token=token) as client:
            yield client
    except grpc.RpcError as error:
        typer.echo(f"error: {options.target}: {error.code().name}: {error.details()}", err=True)
        raise typer.Exit(1) from None


def _grid(images: list[Any], columns: int) -> Any:
    from PIL import Image

    width, height = images[0].size
    rows = (len(images) + columns - 1) // columns
    grid = Image.new(images[0].mode, (columns * (width + 2) + 2, rows * (height + 2) + 2))
    for index, image in enumerate(images):
        grid.paste(
            image, (2 + (index % columns) * (width + 2), 2 + (index // columns) * (height + 2))
        )
    return grid


@app.command()
def generate(
    context: typer.Context,
    n: Annotated[
        int, typer.Option("-n", "--count", min=1, help="Images to generate.", **LOCAL)
    ] = 64,
    seed: Annotated[
        int, typer.Option(min=0, help="Seed of the server's latent generator.", **LOCAL)
    ] = 0,
    out: Annotated[
        Path, typer.Option(help="A grid PNG, or a directory for one PNG per image.", **LOCAL)
    ] = Path("grid.png"),
    columns: Annotated[int, typer.Option(min=1, help="Images per row of the grid.", **LOCAL)] = 8,
) -> None:
    """Generate N images from a seed, as a grid (or one file each when --out is a directory)."""
    from dcgan.clients.codec import to_pil

    with _client(context) as client:
        info = client.info()
        image_bytes = int(info["channels"]) * int(info["image_size"]) ** 2
        fits = n * image_bytes < int(info["max_response_bytes"]) // 2  # leaves room for overhead
        if n <= int(info["max_latents_per_request"]) and fits:
            chunks = [client.generate_response(n=n, seed=seed)]
        else:
            chunks = list(client.generate_stream(n=n, seed=seed))
        images = [image for chunk in chunks for image in to_pil(chunk.images)]
    if out.suffix.lower() == ".png":
        _grid(images, columns).save(out)
    else:
        out.mkdir(parents=True, exist_ok=True)
        for index, image in enumerate(images):
            image.save(out / f"{seed}-{index:05d}.png")
    typer.echo(f"{len(images)} images -> {out}")


@app.command()
def interpolate(
    context: typer.Context,
    start: Annotated[int, typer.Option(min=0, help="Seed of the first latent.", **LOCAL)] = 1,
    end: Annotated[int, typer.Option(min=0, help="Seed of the last latent.", **LOCAL)] = 2,
    steps: Annotated[
        int, typer.Option(min=2, help="Images in the walk, both ends included.", **LOCAL)
    ] = 10,
    method: Annotated[
        Method, typer.Option(help="Straight line, or great circle.", **LOCAL)
    ] = Method.slerp,
    out: Annotated[
        Path, typer.Option(help="A strip PNG, or an animated GIF (.gif).", **LOCAL)
    ] = Path("walk.png"),
) -> None:
    """Walk the latent space between two seeds (DCGAN paper, section 6.1)."""
    from dcgan.clients.codec import to_pil

    with _client(context) as client:
        images = to_pil(client.interpolate(start, end, steps, method.value))
    if out.suffix.lower() == ".gif":
        frames = images + images[-2:0:-1]  # there and back again
        frames[0].save(out, save_all=True, append_images=frames[1:], duration=120, loop=0)
    else:
        _grid(images, len(images)).save(out)
    typer.echo(f"{len(images)} images -> {out}")


@app.command()
def info(context: typer.Context) -> None:
    """Print the served model's shapes, identity, execution provider and batching, as JSON."""
    with _client(context) as client:
        typer.echo(json.dumps(client.info(), indent=2, sort_keys=True))


@app.command()
def health(context: typer.Context) -> None:
    """Print the health status; exit 0 only when SERVING (for container health checks)."""
    with _client(context) as client:
        status = client.health()
    typer.echo(status)
    if status != "SERVING":
        raise typer.Exit(1)


if __name__ == "__main__":
    app()
