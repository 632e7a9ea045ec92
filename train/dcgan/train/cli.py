"""`dcgan-train`: parse the command line and hand off to `dcgan.train.train.train`."""

from __future__ import annotations

import signal
from enum import Enum, StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)


class Dataset(StrEnum):
    digits = "digits"
    mnist = "mnist"
    fashion_mnist = "fashion-mnist"
    cifar10 = "cifar10"
    folder = "folder"
    fake = "fake"


class Device(StrEnum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


class Precision(StrEnum):
    auto = "auto"
    fp32 = "fp32"
    bf16 = "bf16"
    fp16 = "fp16"


DATA = "Data"
MODEL = "Model"
OPTIM = "Optimisation"
SPEED = "Speed"
OUTPUT = "Output"


def fail(message: str, code: int) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


@app.command()
def main(
    dataset: Annotated[
        Dataset | None,
        typer.Option(
            help="Training data; digits is embedded and works offline. [default: digits]",
            rich_help_panel=DATA,
        ),
    ] = None,
    data_root: Annotated[
        Path | None,
        typer.Option(
            help="Where the data set lives (required for folder: every image under it).",
            rich_help_panel=DATA,
        ),
    ] = None,
    download: Annotated[
        bool | None,
        typer.Option(
            "--download/--no-download",
            help="Let torchvision fetch mnist, fashion-mnist or cifar10 into --data-root.",
            rich_help_panel=DATA,
        ),
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option(help="Image decoding processes. [default: 2]", rich_help_panel=DATA),
    ] = None,
    preload_limit_mb: Annotated[
        float | None,
        typer.Option(
            help="Hold the decoded data set in (GPU) memory up to this size. [default: 4096]",
            rich_help_panel=DATA,
        ),
    ] = None,
    image_size: Annotated[
        int | None, typer.Option(help="32, 64 or 128. [default: 64]", rich_help_panel=MODEL)
    ] = None,
    channels: Annotated[
        int | None,
        typer.Option(help="1 or 3. [default: the data set's own]", rich_help_panel=MODEL),
    ] = None,
    nz: Annotated[
        int | None, typer.Option(help="Latent size. [default: 100]", rich_help_panel=MODEL)
    ] = None,
    ngf: Annotated[
        int | None, typer.Option(help="Generator width. [default: 64]", rich_help_panel=MODEL)
    ] = None,
    ndf: Annotated[
        int | None, typer.Option(help="Discriminator width. [default: 64]", rich_help_panel=MODEL)
    ] = None,
    batch_size: Annotated[
        int | None,
        typer.Option(help="Global batch, split over ranks. [default: 128]", rich_help_panel=OPTIM),
    ] = None,
    epochs: Annotated[
        int | None, typer.Option(help="Passes over the data. [default: 5]", rich_help_panel=OPTIM)
    ] = None,
    max_steps: Annotated[
        int | None, typer.Option(help="Stop after this many steps in all.", rich_help_panel=OPTIM)
    ] = None,
    lr: Annotated[
        float | None,
        typer.Option(help="Adam learning rate. [default: 0.0002]", rich_help_panel=OPTIM),
    ] = None,
    beta1: Annotated[
        float | None, typer.Option(help="Adam beta1. [default: 0.5]", rich_help_panel=OPTIM)
    ] = None,
    seed: Annotated[
        int | None,
        typer.Option(
            help="Seeds weights, data order and noise. [default: 1]", rich_help_panel=OPTIM
        ),
    ] = None,
    device: Annotated[
        Device | None,
        typer.Option(help="auto takes CUDA when present. [default: auto]", rich_help_panel=SPEED),
    ] = None,
    precision: Annotated[
        Precision | None,
        typer.Option(
            help="auto: bf16 on CUDA and on CPUs with native bf16, else fp32. [default: auto]",
            rich_help_panel=SPEED,
        ),
    ] = None,
    channels_last: Annotated[
        bool | None,
        typer.Option(
            "--channels-last/--no-channels-last",
            help="NHWC activations. [default: on]",
            rich_help_panel=SPEED,
        ),
    ] = None,
    compile: Annotated[
        bool | None,
        typer.Option(
            "--compile/--no-compile",
            help="torch.compile both networks. [default: off]",
            rich_help_panel=SPEED,
        ),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(
            help="Run directory. [default: runs/dcgan, or the resumed run's]",
            rich_help_panel=OUTPUT,
        ),
    ] = None,
    resume: Annotated[
        Path | None,
        typer.Option(
            help="Continue a run: a checkpoint file or a run directory (its latest).",
            rich_help_panel=OUTPUT,
        ),
    ] = None,
    save_every: Annotated[
        int | None,
        typer.Option(
            help="Also checkpoint every N steps. [default: epoch ends only]", rich_help_panel=OUTPUT
        ),
    ] = None,
    keep: Annotated[
        int | None,
        typer.Option(help="Step checkpoints to keep. [default: 3]", rich_help_panel=OUTPUT),
    ] = None,
    log_every: Annotated[
        int | None,
        typer.Option(help="Log metrics every N steps. [default: 10]", rich_help_panel=OUTPUT),
    ] = None,
    samples: Annotated[
        int | None,
        typer.Option(help="Images in each sample grid. [default: 64]", rich_help_panel=OUTPUT),
    ] = None,
) -> None:
    """Train the DCGAN of Radford et al. (2015); resume exactly from any checkpoint.

    Example: dcgan-train --dataset folder --data-root ~/images --epochs 5 --out runs/mine
    """
    options = {name: value for name, value in locals().items() if value is not None}
    given: dict[str, Any] = {
        name: value.value
        if isinstance(value, Enum)
        else str(value)
        if isinstance(value, Path)
        else value
        for name, value in options.items()
        if name != "resume"
    }
    from dcgan.train.checkpoint import CheckpointError
    from dcgan.train.data import DataError
    from dcgan.train.train import ConfigError, load_resume, resolve_config, train

    try:
        state, run_dir = load_resume(resume) if resume is not None else (None, None)
        if run_dir is not None:
            given.setdefault("out", str(run_dir))
        config = resolve_config(given, state["train_config"] if state else None)
        result = train(config, state, run_dir)
    except (ConfigError, ValueError) as error:
        raise fail(str(error), 2) from None
    except (DataError, CheckpointError) as error:
        raise fail(str(error), 1) from None
    except OSError as error:
        raise fail(f"{error.strerror or error}: {error.filename or ''}".rstrip(": "), 1) from None
    except KeyboardInterrupt:
        raise fail(
            "aborted by a second Ctrl-C: nothing was saved since the last checkpoint", 130
        ) from None

    if result.stopped_by is not None:
        name = signal.Signals(result.stopped_by).name
        typer.echo(
            f"stopped by {name} at step {result.step}; saved {result.checkpoint}\n"
            f"resume with: dcgan-train --resume {result.run_dir}",
            err=True,
        )
        raise typer.Exit(128 + result.stopped_by)
    typer.echo(
        f"trained to step {result.step} (epoch {result.epoch}); checkpoint {result.checkpoint}; "
        f"samples {result.run_dir / 'samples' / 'final.png'}"
    )
