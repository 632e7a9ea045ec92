"""`dcgan-train`: parse the command line and hand off to `dcgan.train.train.train`.

`dcgan-train [OPTIONS]` trains (the options are the app callback's, so `python -m dcgan.train`
and torchrun work as they always have); `dcgan-train inspect PATH` describes a run or a
checkpoint. Every option's default is `TrainConfig`'s. Only the options given on the command line
reach `resolve_config`, so a resumed run keeps its own settings for the rest.
"""

from __future__ import annotations

import os
import signal
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer

from dcgan.contract.commands import entry_point, fail, usage_error, version_option
from dcgan.train.config import (
    Dataset,
    Device,
    EvalFeatures,
    EvalMetric,
    Precision,
    Split,
    TrainConfig,
)

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)

DATA = "Data"
MODEL = "Model"
OPTIM = "Optimisation"
SPEED = "Speed"
OUTPUT = "Output"
EVALUATION = "Evaluation (needs dcgan-eval: pip install 'dcgan-train\\[eval]')"  # rich markup


def path_value(value: str | Path) -> Path:
    """A path option's value; an empty one (an unset shell variable) would mean the cwd."""
    if not str(value).strip():
        raise typer.BadParameter("the path is empty")
    return Path(value)


def given_options(ctx: typer.Context) -> dict[str, Any]:
    """The options typed on the command line (even at their default), as TrainConfig values."""
    given: dict[str, Any] = {}
    for name, value in ctx.params.items():
        source = ctx.get_parameter_source(name)
        # click's ParameterSource, told by name: typer vendors click as a private module.
        if source is None or source.name != "COMMANDLINE":
            continue
        if isinstance(value, Enum):
            value = value.value
        elif isinstance(value, Path):
            value = str(value)
        given[name] = value
    return given


@app.callback(invoke_without_command=True)
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
            parser=path_value,
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
    split: Annotated[
        Split,
        typer.Option(
            help="mnist, fashion-mnist, cifar10: train on their test split (MNIST's t10k files).",
            rich_help_panel=DATA,
        ),
    ] = Split(TrainConfig.split),  # noqa: B008 - an enum member, immutable
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
        typer.Option(
            help="Run directory; a resumed run keeps its own.",
            parser=path_value,
            rich_help_panel=OUTPUT,
        ),
    ] = Path(TrainConfig.out),
    resume: Annotated[
        Path | None,
        typer.Option(
            help="Continue a run: a checkpoint file, or a run directory (its latest, or the newest "
            "checkpoint that verifies).",
            parser=path_value,
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
    eval_every: Annotated[
        int,
        typer.Option(
            help="Score the generator every N epochs and at the end; best.pt keeps the best "
            "(0: off).",
            rich_help_panel=EVALUATION,
        ),
    ] = TrainConfig.eval_every,
    eval_metric: Annotated[
        EvalMetric,
        typer.Option(
            help="fid and kid: lower is better; the others: higher.", rich_help_panel=EVALUATION
        ),
    ] = EvalMetric(TrainConfig.eval_metric),  # noqa: B008 - an enum member, immutable
    eval_features: Annotated[
        EvalFeatures | None,
        typer.Option(
            help="The features compared.",
            show_default="digits given --eval-classifier, else inception",
            rich_help_panel=EVALUATION,
        ),
    ] = None,
    eval_classifier: Annotated[
        Path | None,
        typer.Option(
            help="A digits classifier: `dcgan-eval train-classifier ... --out FILE` makes one.",
            show_default="none",
            parser=path_value,
            rich_help_panel=EVALUATION,
        ),
    ] = None,
    inception_weights: Annotated[
        Path | None,
        typer.Option(
            help="torch-fidelity's Inception-v3 .pth, or an Inception TorchScript.",
            show_default="downloaded",
            parser=path_value,
            rich_help_panel=EVALUATION,
        ),
    ] = None,
    eval_samples: Annotated[
        int,
        typer.Option(
            help="Generated images per score, from fixed seeded latents.",
            rich_help_panel=EVALUATION,
        ),
    ] = TrainConfig.eval_samples,
    version: Annotated[bool, version_option("dcgan-train")] = False,
) -> None:
    """Train the DCGAN of Radford et al. (2015); resume exactly from any checkpoint.

    Example: dcgan-train --dataset folder --data-root ~/images --epochs 5 --out runs/mine

    `dcgan-train inspect RUN_DIR` describes a run: its step, losses, settings and checkpoints.
    """
    given = given_options(ctx)
    if ctx.invoked_subcommand is not None:
        if given:
            options = ", ".join(f"--{name.replace('_', '-')}" for name in given)
            raise usage_error(
                f"{options}: training options, which `dcgan-train {ctx.invoked_subcommand}` "
                "does not take"
            )
        return
    train_from_command_line(given)


def train_from_command_line(given: dict[str, Any]) -> None:
    """Resolve the settings, train, and turn each way it can fail into one line and its code."""
    import torch

    from dcgan.train.checkpoint import CheckpointError, find_resume_point
    from dcgan.train.config import ConfigError
    from dcgan.train.data import DataError
    from dcgan.train.evaluation import EvaluationError
    from dcgan.train.train import ResourceError, resolve_config, train

    resume = given.pop("resume", None)
    try:
        point = find_resume_point(Path(resume)) if resume is not None else None
        if point is not None:
            note = point.fallback_note()
            if note is not None and os.environ.get("RANK", "0") == "0":
                typer.echo(f"warning: {note}", err=True)
            given.setdefault("out", str(point.run_dir))
        config = resolve_config(given, point.state["train_config"] if point else None)
        result = train(config, point.state if point else None, point.run_dir if point else None)
    except ConfigError as error:
        raise usage_error(str(error)) from None
    except (DataError, CheckpointError, ResourceError, EvaluationError) as error:
        raise fail(str(error)) from None
    except (MemoryError, torch.OutOfMemoryError) as error:
        detail = str(error).strip().splitlines()[0][:200] if str(error).strip() else "no detail"
        raise fail(f"out of memory ({detail}): lower --batch-size or --image-size") from None
    except OSError as error:
        raise fail(f"{error.strerror or error}: {error.filename or ''}".rstrip(": ")) from None
    except KeyboardInterrupt:
        raise fail(
            "aborted by a second Ctrl-C: nothing was saved since the last checkpoint", 130
        ) from None

    if result.checkpoint is None:  # a resumed run with nothing left to do: train() said so
        return
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
    if result.score is not None:
        typer.echo(result.score.describe(result.step, result.best, result.run_dir))


@app.command("inspect")
def inspect(
    path: Annotated[
        Path,
        typer.Argument(
            metavar="PATH",
            help="A run directory (its latest checkpoint), or one checkpoint file.",
            parser=path_value,
            show_default=False,
        ),
    ],
    as_json: Annotated[
        bool, typer.Option("--json", help="One JSON object on stdout, for machines.")
    ] = False,
) -> None:
    """Describe a run or checkpoint: step, losses, settings, checksum, what it resumes from.

    Exit code 0 when it resumes; 1, after the description, when it does not.
    """
    from dcgan.train.inspection import inspect_path

    report = inspect_path(path)
    text = report.to_json() if as_json else report.describe()
    if text:
        typer.echo(text)
    if report.problem is not None:
        raise fail(report.problem)


run = entry_point(app)

if __name__ == "__main__":
    run()
