"""`dcgan-train`: parse the command line and hand off to `dcgan.train.train.train`.

Every option's default is `TrainConfig`'s. Only the options given on the command line reach
`resolve_config`, so a resumed run keeps its own settings for the rest.
"""

from __future__ import annotations

import signal
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer

from dcgan.train.config import Dataset, Device, Precision, TrainConfig

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)

DATA = "Data"
MODEL = "Model"
OPTIM = "Optimisation"
SPEED = "Speed"
OUTPUT = "Output"


def fail(message: str, code: int) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


def given_options(ctx: typer.Context) -> dict[str, Any]:
    """The options typed on the command line (even at their default), as TrainConfig values."""
    given: dict[str, Any] = {}
    for name, value in ctx.params.items():
        source = ctx.get_parameter_source(name)
        # click's ParameterSource, told by name: typer vendors click as a private module.
        if name == "resume" or source is None or source.name != "COMMANDLINE":
            continue
        if isinstance(value, Enum):
            value = value.value
        elif isinstance(value, Path):
            value = str(value)
        given[name] = value
    return given


@app.command()
def main(
    ctx: typer.Context,
    dataset: Annotated[
        Dataset,
        typer.Option(
            help="Training data; digits is embedded and works offline.", rich_help_panel=DATA
        ),
    ] = Dataset(TrainConfig.dataset),  # noqa: B008 - an enum member, immutable
    data_root: Annotated[
        Path | None,
        typer.Option(
            help="Where the data set lives (required for folder: every image under it).",
            rich_help_panel=DATA,
        ),
    ] = None,
    download: Annotated[
        bool,
        typer.Option(
            "--download/--no-download",
            help="Let torchvision fetch mnist, fashion-mnist or cifar10 into --data-root.",
            rich_help_panel=DATA,
        ),
    ] = TrainConfig.download,
    workers: Annotated[
        int, typer.Option(help="Image decoding processes.", rich_help_panel=DATA)
    ] = TrainConfig.workers,
    preload_limit_mb: Annotated[
        float,
        typer.Option(
            help="Hold the decoded data set in (GPU) memory up to this size.",
            rich_help_panel=DATA,
        ),
    ] = TrainConfig.preload_limit_mb,
    image_size: Annotated[
        int, typer.Option(help="32, 64 or 128.", rich_help_panel=MODEL)
    ] = TrainConfig.image_size,
    channels: Annotated[
        int | None,
        typer.Option(help="1 or 3.", show_default="the data set's own", rich_help_panel=MODEL),
    ] = TrainConfig.channels,
    nz: Annotated[int, typer.Option(help="Latent size.", rich_help_panel=MODEL)] = TrainConfig.nz,
    ngf: Annotated[
        int, typer.Option(help="Generator width.", rich_help_panel=MODEL)
    ] = TrainConfig.ngf,
    ndf: Annotated[
        int, typer.Option(help="Discriminator width.", rich_help_panel=MODEL)
    ] = TrainConfig.ndf,
    batch_size: Annotated[
        int, typer.Option(help="Global batch, split over ranks.", rich_help_panel=OPTIM)
    ] = TrainConfig.batch_size,
    epochs: Annotated[
        int, typer.Option(help="Passes over the data.", rich_help_panel=OPTIM)
    ] = TrainConfig.epochs,
    max_steps: Annotated[
        int | None,
        typer.Option(
            help="Stop after this many steps in all.",
            show_default="none: --epochs decides",
            rich_help_panel=OPTIM,
        ),
    ] = TrainConfig.max_steps,
    lr: Annotated[
        float, typer.Option(help="Adam learning rate.", rich_help_panel=OPTIM)
    ] = TrainConfig.lr,
    beta1: Annotated[
        float, typer.Option(help="Adam beta1.", rich_help_panel=OPTIM)
    ] = TrainConfig.beta1,
    seed: Annotated[
        int, typer.Option(help="Seeds weights, data order and noise.", rich_help_panel=OPTIM)
    ] = TrainConfig.seed,
    device: Annotated[
        Device, typer.Option(help="auto takes CUDA when present.", rich_help_panel=SPEED)
    ] = Device(TrainConfig.device),  # noqa: B008 - an enum member, immutable
    precision: Annotated[
        Precision,
        typer.Option(
            help="auto: bf16 on CUDA and on CPUs with native bf16, else fp32.",
            rich_help_panel=SPEED,
        ),
    ] = Precision(TrainConfig.precision),  # noqa: B008 - an enum member, immutable
    channels_last: Annotated[
        bool,
        typer.Option(
            "--channels-last/--no-channels-last",
            help="NHWC activations.",
            rich_help_panel=SPEED,
        ),
    ] = TrainConfig.channels_last,
    compile: Annotated[
        bool,
        typer.Option(
            "--compile/--no-compile", help="torch.compile both networks.", rich_help_panel=SPEED
        ),
    ] = TrainConfig.compile,
    out: Annotated[
        Path,
        typer.Option(help="Run directory; a resumed run keeps its own.", rich_help_panel=OUTPUT),
    ] = Path(TrainConfig.out),
    resume: Annotated[
        Path | None,
        typer.Option(
            help="Continue a run: a checkpoint file or a run directory (its latest).",
            rich_help_panel=OUTPUT,
        ),
    ] = None,
    save_every: Annotated[
        int,
        typer.Option(
            help="Also checkpoint every N steps (0: at epoch ends only).", rich_help_panel=OUTPUT
        ),
    ] = TrainConfig.save_every,
    keep: Annotated[
        int, typer.Option(help="Step checkpoints to keep.", rich_help_panel=OUTPUT)
    ] = TrainConfig.keep,
    log_every: Annotated[
        int, typer.Option(help="Log metrics every N steps.", rich_help_panel=OUTPUT)
    ] = TrainConfig.log_every,
    samples: Annotated[
        int, typer.Option(help="Images in each sample grid.", rich_help_panel=OUTPUT)
    ] = TrainConfig.samples,
) -> None:
    """Train the DCGAN of Radford et al. (2015); resume exactly from any checkpoint.

    Example: dcgan-train --dataset folder --data-root ~/images --epochs 5 --out runs/mine
    """
    given = given_options(ctx)
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
