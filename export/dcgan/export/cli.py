"""`dcgan-export`: parse the command line and hand off to `dcgan.export.export.export_generator`."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from dcgan.contract.check_results import ParityResult, SkippedCheck
from dcgan.contract.commands import PARITY_FAILED, entry_point, fail, usage_error, version_option
from dcgan.contract.manifest import MODEL_NAME
from dcgan.export.shape_defaults import STATE_DICT_DEFAULTS

if TYPE_CHECKING:
    from dcgan.contract.manifest import Manifest

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)

SHAPE = "Shape of a bare state_dict (ours carry theirs)"
REPOSITORY = "Model repository"


def shape_option(text: str, field: str) -> Any:
    """A shape option: None when not given, so a checkpoint's own shape can refuse a contradiction.

    Its help shows the state_dict default that applies when the option is left out.
    """
    return typer.Option(
        help=text, show_default=str(STATE_DICT_DEFAULTS[field]), rich_help_panel=SHAPE
    )


IMAGE_SIZES = (32, 64, 128)  # dcgan.train.model's, repeated here so that --help loads no torch


def path_value(value: str | Path) -> Path:
    """A path's value; an empty one (an unset shell variable) would mean the cwd."""
    if not str(value).strip():
        raise typer.BadParameter("the path is empty")
    return Path(value)


def check_shape_options(shape: dict[str, int | None]) -> None:
    """Values no generator can have, refused as bad options before any file is read."""
    for name, value in shape.items():
        if value is None:
            continue
        option = f"--{name.replace('_', '-')}"
        if name == "channels" and value not in (1, 3):
            raise usage_error(f"{option} must be 1 or 3, not {value}")
        if name == "image_size" and value not in IMAGE_SIZES:
            raise usage_error(f"{option} must be 32, 64 or 128, not {value}")
        if value < 1:
            raise usage_error(f"{option} must be at least 1, not {value}")


@app.command()
def main(
    context: typer.Context,
    checkpoint: Annotated[
        Path,
        typer.Argument(
            help="Our checkpoint, a run directory (its latest), or a generator state_dict (.pth).",
            parser=path_value,
        ),
    ],
    best: Annotated[
        bool,
        typer.Option(
            "--best",
            help="Export the run directory's best.pt: the checkpoint of its best score "
            "(dcgan-train --eval-every).",
        ),
    ] = False,
    onnx: Annotated[
        bool, typer.Option("--onnx", help="Write generator.onnx and generator_serving.onnx.")
    ] = False,
    torchscript: Annotated[
        bool, typer.Option("--torchscript", help="Write generator.ts and generator.pt2.")
    ] = False,
    fp16: Annotated[
        bool, typer.Option("--fp16", help="Also write generator_fp16.onnx (float32 in and out).")
    ] = False,
    out: Annotated[
        Path, typer.Option(help="EXPORT_DIR: created, or replaced with --force.", parser=path_value)
    ] = Path("exports/dcgan"),
    force: Annotated[
        bool, typer.Option("--force", help="Replace an EXPORT_DIR that holds other files.")
    ] = False,
    repository: Annotated[
        Path | None,
        typer.Option(
            help="A model repository (dcgan-serve --model-repository): write the next version "
            "of --name there, DIR/NAME/<newest + 1>/, instead of --out.",
            parser=path_value,
            rich_help_panel=REPOSITORY,
        ),
    ] = None,
    name: Annotated[
        str | None,
        typer.Option(help="The model's folder in --repository.", rich_help_panel=REPOSITORY),
    ] = None,
    nz: Annotated[int | None, shape_option("Latent size.", "nz")] = None,
    ngf: Annotated[int | None, shape_option("Generator width.", "ngf")] = None,
    channels: Annotated[int | None, shape_option("1 or 3.", "channels")] = None,
    image_size: Annotated[int | None, shape_option("32, 64 or 128.", "image_size")] = None,
    version: Annotated[bool, version_option("dcgan-export")] = False,
) -> None:
    """Export a DCGAN generator to ONNX and TorchScript, and prove every artifact's parity.

    Both formats when neither --onnx nor --torchscript is given. Nothing is installed into
    EXPORT_DIR unless every parity check passes.
    Exit codes: 0 done, 1 bad input, 2 bad options, 3 a parity check failed.

    Example: dcgan-export runs/mnist --out exports/mnist
    Example: dcgan-export runs/mnist --repository models --name mnist   (models/mnist/<next>/)
    """
    from dcgan.contract.manifest import ONNX, TORCHSCRIPT
    from dcgan.export.export import ExportError, artifact_kinds, export_generator, export_version
    from dcgan.export.parity import ParityError
    from dcgan.export.sources import SourceError, best_checkpoint

    formats = [kind for kind, wanted in ((ONNX, onnx), (TORCHSCRIPT, torchscript)) if wanted] or [
        ONNX,
        TORCHSCRIPT,
    ]
    try:
        artifact_kinds(formats, fp16)
    except ValueError as error:
        raise usage_error(str(error)) from None
    shape = {"nz": nz, "ngf": ngf, "channels": channels, "image_size": image_size}
    check_shape_options(shape)
    check_repository_options(context, repository, name, force)
    try:
        source = best_checkpoint(checkpoint) if best else checkpoint
        if repository is not None and name is not None:
            manifest, out = export_version(
                source, repository, name, formats, fp16=fp16, shape=shape
            )
        else:
            manifest = export_generator(source, out, formats, fp16=fp16, force=force, shape=shape)
    except (SourceError, ExportError) as error:
        raise fail(str(error)) from None
    except ParityError as error:
        raise fail(f"parity failed, nothing installed: {error}", PARITY_FAILED) from None
    except OSError as error:
        raise fail(f"{error.strerror or error}: {error.filename or ''}".rstrip(": ")) from None
    typer.echo(summary(manifest, out))


def check_repository_options(
    context: typer.Context, repository: Path | None, name: str | None, force: bool
) -> None:
    """--repository and --name go together, and exclude --out and --force (a version is new)."""
    if repository is None and name is None:
        return
    if repository is None or name is None:
        given, missing = (
            ("--name", "--repository") if repository is None else ("--repository", "--name")
        )
        raise usage_error(f"{given} needs {missing}: a version is written to DIR/NAME/<next>/")
    source = context.get_parameter_source("out")
    if source is not None and source.name != "DEFAULT":  # given on the command line or by env
        raise usage_error("give --out or --repository, not both")
    if force:
        raise usage_error("--force replaces an EXPORT_DIR; --repository always adds a new version")
    if not MODEL_NAME.fullmatch(name):
        raise usage_error(
            f"--name {name!r} is no model name: letters, digits, '_', '.' and '-', "
            "starting with a letter or digit, at most 128"
        )


def summary(manifest: Manifest, out: Path) -> str:
    """What was exported, from what, and how each artifact fared against eager."""
    model, source = manifest.model, manifest.source
    origin = f"step {source.step}" if source.step is not None else "a bare state_dict"
    ran = [result for result in manifest.parity if not isinstance(result, SkippedCheck)]
    compared = [result for result in ran if isinstance(result, ParityResult)]
    worst: dict[str, float] = {}
    for result in compared:
        if result.pixels is None:  # pixel comparisons count levels, not an error in [-1, 1]
            key = f"{result.artifact} on {result.runtime}"
            worst[key] = max(worst.get(key, 0.0), result.max_abs_error)
    batch_sizes = sorted({result.batch_size for result in compared})
    notes = dict.fromkeys(result.note for result in compared if result.note is not None)
    skipped = dict.fromkeys(
        result.reason for result in manifest.parity if isinstance(result, SkippedCheck)
    )
    return "\n".join(
        [
            f"exported {', '.join(manifest.artifacts)} and manifest.json to {out}",
            f"  generator: nz={model.nz}, {model.channels}x{model.image_size}x{model.image_size} "
            f"in [-1, 1], from {origin} (sha256 {source.sha256[:12]})",
            f"  parity: {len(ran)} checks passed, batch sizes {', '.join(map(str, batch_sizes))}",
            *(f"    {name}: max abs error {error:.2g}" for name, error in worst.items()),
            *(f"  note: {note}" for note in notes),
            *(f"  not checked: CUDA ({reason})" for reason in skipped),
        ]
    )


run = entry_point(app)

if __name__ == "__main__":
    run()
