"""`dcgan-sample`: pictures from an export, a run directory or a checkpoint, with no server."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer

from dcgan.clients.options import OUT_PATH, UINT64_MAX, given_path
from dcgan.clients.outputs import (
    OUT_HELP,
    UnsupportedOutput,
    UnwritableOutput,
    destination,
    write_pictures,
)
from dcgan.contract.commands import entry_point, fail, usage_error, version_option
from dcgan.export.cli import shape_option

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)

MAX_IMAGES = 65_536  # as many as one GenerateStream of a default server
COUNT, SEED, COLUMNS = 64, 0, 8  # what dcgan-client generate draws by default
STEPS = 10


class Method(StrEnum):
    linear = "linear"
    slerp = "slerp"


@app.command()
def main(
    source: Annotated[
        Path,
        typer.Argument(
            help="An export directory, a run directory (its latest checkpoint) or a checkpoint.",
            parser=given_path,
        ),
    ],
    n: Annotated[
        int | None,
        typer.Option(
            "-n", "--count", min=1, max=MAX_IMAGES, help="Images to draw.", show_default=str(COUNT)
        ),
    ] = None,
    seed: Annotated[
        int | None,
        typer.Option(
            min=0, max=UINT64_MAX, help="Seed of the latent generator.", show_default=str(SEED)
        ),
    ] = None,
    walk: Annotated[
        tuple[int, int] | None,
        typer.Option(
            min=0,
            max=UINT64_MAX,
            metavar="START END",
            help="Walk from the latent of seed START to that of seed END, in place of -n.",
        ),
    ] = None,
    steps: Annotated[
        int | None,
        typer.Option(
            min=2,
            max=MAX_IMAGES,
            help="Images in the walk, both ends included.",
            show_default=str(STEPS),
        ),
    ] = None,
    method: Annotated[
        Method | None,
        typer.Option(help="The walk's path: straight line, or great circle.", show_default="slerp"),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(help=OUT_HELP, show_default="grid.png; walk.png with --walk", **OUT_PATH),
    ] = None,
    columns: Annotated[
        int | None,
        typer.Option(
            min=1, help="Images per row of a grid (at most N).", show_default=str(COLUMNS)
        ),
    ] = None,
    nz: Annotated[int | None, shape_option("Latent size.", "nz")] = None,
    ngf: Annotated[int | None, shape_option("Generator width.", "ngf")] = None,
    channels: Annotated[int | None, shape_option("1 or 3.", "channels")] = None,
    image_size: Annotated[int | None, shape_option("32, 64 or 128.", "image_size")] = None,
    version: Annotated[bool, version_option("dcgan-export")] = False,
) -> None:
    """Draw images from a generator with no server: a grid, an animation, or one PNG each.

    The latents are the server's for the same seed, and an export runs as the server runs it, so
    `dcgan-sample EXPORT -n 64 --seed 1 --out grid.png` writes the same bytes as
    `dcgan-client generate -n 64 --seed 1 --out grid.png` against a server of EXPORT.

    Examples: dcgan-sample exports/mnist -n 64 --seed 1 --out grid.png;
    dcgan-sample runs/mnist --walk 1 2 --steps 16 --out walk.gif
    """
    from dcgan.clients.codec import to_pil
    from dcgan.export.sample import SampleError, open_source, seeded
    from dcgan.export.sample import walk as walk_latents

    if walk is not None:
        stray = [
            name
            for name, value in (("-n", n), ("--seed", seed), ("--columns", columns))
            if value is not None
        ]
        if stray:
            raise usage_error(f"{stray[0]} does not apply to --walk, which draws a walk")
    elif steps is not None or method is not None:
        name = "--steps" if steps is not None else "--method"
        raise usage_error(f"{name} applies to a walk only: give --walk START END")
    out = out or Path("walk.png" if walk else "grid.png")
    try:
        target = destination(out)
    except UnsupportedOutput as error:
        raise usage_error(str(error)) from None
    except UnwritableOutput as error:
        raise fail(str(error)) from None

    shape = {"nz": nz, "ngf": ngf, "channels": channels, "image_size": image_size}
    try:
        sampler = open_source(source, shape)
    except SampleError as error:
        raise fail(str(error)) from None
    layout: dict[str, Any]
    if walk is None:
        count, first_seed = n or COUNT, SEED if seed is None else seed
        latents = seeded(sampler, first_seed, count)
        layout = {"columns": columns or COLUMNS, "prefix": str(first_seed)}
    else:
        count, walk_method = steps or STEPS, method or Method.slerp
        latents = walk_latents(sampler, walk[0], walk[1], count, walk_method.value)
        layout = {"columns": count, "prefix": f"{walk[0]}-{walk[1]}", "there_and_back": True}
    try:
        target.check_grid(count, sampler.image_size, layout["columns"])
    except UnsupportedOutput as error:
        raise usage_error(str(error)) from None
    images = to_pil(sampler.pixels(latents))
    try:
        write_pictures(target, images, **layout)
    except OSError as error:
        raise fail(f"cannot write {out}: {error.strerror or error}") from None
    typer.echo(f"{len(images)} images from {sampler.source} -> {out}")


run = entry_point(app)

if __name__ == "__main__":
    run()
