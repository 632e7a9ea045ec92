"""`dcgan-client`: generate, interpolate, info and health against a dcgan-serve server."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer

from dcgan.clients.options import (
    OUT_PATH,
    UINT32_MAX,
    UINT64_MAX,
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
from dcgan.clients.outputs import (
    OUT_HELP,
    Destination,
    UnsupportedOutput,
    UnwritableOutput,
    destination,
    write_pictures,
)
from dcgan.contract.commands import entry_point, fail, usage_error, version_option

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False, no_args_is_help=True)


class Method(StrEnum):
    linear = "linear"
    slerp = "slerp"


@dataclass(frozen=True)
class Connection:
    """The checked connection settings, and the model asked for, that the subcommands share."""

    options: ConnectionOptions
    credentials: Credentials
    model: ModelOptions


@app.callback()
def main(
    context: typer.Context,
    target: Target = ConnectionOptions.target,
    timeout_s: TimeoutS = ConnectionOptions.timeout_s,
    token_file: TokenFile = None,
    tls_ca: TlsCa = None,
    tls_cert: TlsCert = None,
    tls_key: TlsKey = None,
    model: ModelName = ModelOptions.name,
    model_version: ModelVersion = ModelOptions.version,
    version: Annotated[bool, version_option("dcgan-client")] = False,
) -> None:
    """Call a dcgan-serve server.

    A server of several models needs --model; an unknown model or version exits 1 (NOT_FOUND).

    Example: dcgan-client --target localhost:50051 generate -n 64 --seed 1 --out grid.png
    """
    options = ConnectionOptions(target, timeout_s, token_file, tls_ca, tls_cert, tls_key)
    chosen = ModelOptions(model, model_version)
    try:
        check_model(chosen)
        context.obj = Connection(options, check_connection(options), chosen)
    except OptionError as error:
        raise usage_error(str(error)) from None
    except CredentialError as error:
        raise fail(str(error)) from None


@contextmanager
def _client(context: typer.Context) -> Iterator[Any]:
    """A connected client; RPC errors become one line and exit code 1."""
    import grpc

    from dcgan.clients.client import GeneratorClient

    connection: Connection = context.obj
    target, credentials = connection.options.target, connection.credentials
    try:
        with GeneratorClient(
            target,
            connection.options.timeout_s,
            tls=credentials.channel_credentials(),
            token=credentials.token,
            model=connection.model.name,
            version=connection.model.version,
        ) as client:
            yield client
    except grpc.RpcError as error:
        details = " ".join(str(error.details()).split())  # one line, whatever the server said
        raise fail(f"{target}: {error.code().name}: {details}") from None


def _destination(out: Path) -> Destination:
    """--out, checked before the server is called."""
    try:
        return destination(out)
    except UnsupportedOutput as error:
        raise usage_error(str(error)) from None
    except UnwritableOutput as error:
        raise fail(str(error)) from None


def _check_grid(target: Destination, count: int, info: dict[str, Any], columns: int) -> None:
    try:
        target.check_grid(count, int(info["image_size"]), columns)
    except UnsupportedOutput as error:
        raise usage_error(str(error)) from None


def _write(target: Destination, images: list[Any], source: str, **layout: Any) -> None:
    """Write the images, and say how many of which model and version went where."""
    try:
        write_pictures(target, images, **layout)
    except OSError as error:
        raise fail(f"cannot write {target.path}: {error.strerror or error}") from None
    typer.echo(f"{len(images)} images of {source} -> {target.path}")


def _source(name: str, version: int) -> str:
    return f"model {name} version {version}"


@app.command()
def generate(
    context: typer.Context,
    n: Annotated[
        int, typer.Option("-n", "--count", min=1, max=UINT32_MAX, help="Images to generate.")
    ] = 64,
    seed: Annotated[
        int, typer.Option(min=0, max=UINT64_MAX, help="Seed of the server's latent generator.")
    ] = 0,
    out: Annotated[Path, typer.Option(help=OUT_HELP, **OUT_PATH)] = Path("grid.png"),
    columns: Annotated[
        int, typer.Option(min=1, help="Images per row of the grid (at most N).")
    ] = 8,
) -> None:
    """Generate N images from a seed: a grid, an animation or one PNG each, by --out."""
    from dcgan.clients.codec import to_pil

    target = _destination(out)
    with _client(context) as client:
        info = client.info()
        _check_grid(target, n, info, columns)
        image_bytes = int(info["channels"]) * int(info["image_size"]) ** 2
        fits = n * image_bytes < int(info["max_response_bytes"]) // 2  # leaves room for overhead
        if n <= int(info["max_latents_per_request"]) and fits:
            chunks = [client.generate_response(n=n, seed=seed)]
        else:
            chunks = list(client.generate_stream(n=n, seed=seed))
        images = [image for chunk in chunks for image in to_pil(chunk.images)]
    source = _source(chunks[0].model_name, chunks[0].model_version)
    _write(target, images, source, columns=columns, prefix=str(seed))


@app.command()
def interpolate(
    context: typer.Context,
    start: Annotated[
        int, typer.Option(min=0, max=UINT64_MAX, help="Seed of the first latent.")
    ] = 1,
    end: Annotated[int, typer.Option(min=0, max=UINT64_MAX, help="Seed of the last latent.")] = 2,
    steps: Annotated[
        int, typer.Option(min=2, max=UINT32_MAX, help="Images in the walk, both ends included.")
    ] = 10,
    method: Annotated[Method, typer.Option(help="Straight line, or great circle.")] = Method.slerp,
    out: Annotated[Path, typer.Option(help=OUT_HELP, **OUT_PATH)] = Path("walk.png"),
) -> None:
    """Walk the latent space between two seeds (DCGAN paper, section 6.1).

    As a grid, the walk is one row; as an animation, it goes there and back.
    """
    from dcgan.clients.codec import to_pil

    target = _destination(out)
    with _client(context) as client:
        info = client.info()
        _check_grid(target, steps, info, steps)
        images = to_pil(client.interpolate(start, end, steps, method.value))
    source = _source(info["model_name"], info["model_version"])  # as GetModelInfo resolved it
    _write(target, images, source, columns=steps, prefix=f"{start}-{end}", there_and_back=True)


@app.command()
def info(context: typer.Context) -> None:
    """Print the model's name, version, shapes, identity, provider and batching, as JSON."""
    with _client(context) as client:
        typer.echo(json.dumps(client.info(), indent=2, sort_keys=True))


@app.command()
def health(context: typer.Context) -> None:
    """Print the health status (of --model if given); exit 0 only when SERVING (health checks)."""
    connection: Connection = context.obj
    with _client(context) as client:
        status = client.health(connection.model.name)
    typer.echo(status)
    if status != "SERVING":
        raise typer.Exit(1)


run = entry_point(app)

if __name__ == "__main__":
    run()
