"""`dcgan-eval`: parse the command line and hand off to evaluate, train_classifier and probe.

dcgan-eval SOURCE ...            score a run directory, checkpoint or export directory
dcgan-eval --target HOST:PORT    score a running dcgan-serve
dcgan-eval train-classifier ...  the digits feature network
dcgan-eval probe CHECKPOINT ...  the paper's discriminator probe
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from dcgan.contract.commands import FAILED, USAGE, entry_point, fail, version_option
from dcgan.eval.errors import EvalError, OptionError


class _ScoreByDefault(TyperGroup):
    """`dcgan-eval SOURCE ...` means `dcgan-eval score SOURCE ...`: scoring is the main job."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ("--help", "-h", "--version"):
            args = ["score", *args]
        return super().parse_args(ctx, args)


app = typer.Typer(
    cls=_ScoreByDefault, add_completion=False, pretty_exceptions_enable=False, no_args_is_help=True,
    help="Measure a DCGAN: FID, KID, precision/recall and Inception or classifier scores "
    "against a data set, and the paper's discriminator probe. "
    "`dcgan-eval SOURCE ...` is short for `dcgan-eval score SOURCE ...`.",
)  # fmt: skip


class Dataset(StrEnum):
    digits = "digits"
    mnist = "mnist"
    fashion_mnist = "fashion-mnist"
    cifar10 = "cifar10"
    folder = "folder"


class Split(StrEnum):
    train = "train"
    test = "test"


class Features(StrEnum):
    inception = "inception"
    digits = "digits"


DatasetOption = Annotated[
    Dataset, typer.Option(help="The real data; digits is embedded and works offline.")
]
DataRootOption = Annotated[
    Path | None, typer.Option(help="Where the data set lives (a folder: class subfolders or not).")
]


@contextmanager
def _exits() -> Iterator[None]:
    """Expected failures as one line and the README's exit code: 2 options, 1 data/environment."""
    try:
        yield
    except OptionError as error:
        raise fail(str(error), USAGE) from None
    except EvalError as error:
        raise fail(str(error), FAILED) from None


def _say(message: str) -> None:
    typer.echo(message, err=True)


@app.callback()
def _version(version: Annotated[bool | None, version_option("dcgan-eval")] = None) -> None:
    """The --version of every command."""


@app.command("score")
def score(
    source: Annotated[
        Path | None,
        typer.Argument(
            help="A run directory or checkpoint (PyTorch), or an export directory (onnxruntime)."
        ),
    ] = None,
    target: Annotated[
        str | None, typer.Option(help="Score a running dcgan-serve at HOST:PORT instead of SOURCE.")
    ] = None,
    dataset: DatasetOption = Dataset.digits,
    data_root: DataRootOption = None,
    download: Annotated[
        bool, typer.Option(help="Let torchvision fetch mnist, fashion-mnist or cifar10.")
    ] = False,
    split: Annotated[
        Split, typer.Option(help="mnist, fashion-mnist, cifar10: the split to compare against.")
    ] = Split.train,
    metrics: Annotated[
        str, typer.Option(help="Comma-separated: fid, kid, prc, is.")
    ] = "fid,kid,prc",
    num_samples: Annotated[int, typer.Option(help="Generated images.")] = 10_000,
    num_real: Annotated[
        int | None,
        typer.Option(help="Real images (drawn with a fixed seed). (default: all of them)"),
    ] = None,
    features: Annotated[
        Features,
        typer.Option(help="inception: Inception-v3 pool features; digits: --classifier's."),
    ] = Features.inception,
    inception_weights: Annotated[
        Path | None,
        typer.Option(
            envvar="DCGAN_INCEPTION_WEIGHTS",
            help="Local Inception-v3: torch-fidelity's .pth or an Inception TorchScript. "
            "(default: torch-fidelity downloads its weights)",
        ),
    ] = None,
    classifier: Annotated[
        Path | None, typer.Option(help="A digits classifier from dcgan-eval train-classifier.")
    ] = None,
    seed: Annotated[
        int, typer.Option(help="Seed of the latents (the server's seeded latents).")
    ] = 0,
    batch_size: Annotated[int, typer.Option(help="Images per feature-network batch.")] = 100,
    json_out: Annotated[
        Path | None, typer.Option("--json", help="Write every number here.")
    ] = None,
    figure: Annotated[
        Path | None,
        typer.Option(
            help="Real beside generated images. (default: real_vs_fake.png beside --json, or here)"
        ),
    ] = None,
    no_figure: Annotated[bool, typer.Option("--no-figure", help="Write no figure.")] = False,
    cache_dir: Annotated[
        Path | None,
        typer.Option(
            envvar="DCGAN_EVAL_CACHE", help="Real features cache. (default: ~/.cache/dcgan-eval)"
        ),
    ] = None,
    timeout: Annotated[
        float, typer.Option(help="Deadline of each call to --target, in seconds.")
    ] = 60.0,
    tls_ca: Annotated[
        Path | None,
        typer.Option(
            help="TLS: the server's CA certificate (--target).", exists=True, dir_okay=False
        ),
    ] = None,
    token_file: Annotated[
        Path | None,
        typer.Option(
            help="A file holding the server's bearer token (--target).", exists=True, dir_okay=False
        ),
    ] = None,
) -> None:
    """Score generated images against a data set.

    Example: dcgan-eval runs/mnist --dataset folder --data-root mnist/png --features digits
    --classifier digits.pt --json eval.json
    """
    from dcgan.eval.evaluate import EvalSettings, check_settings, evaluate, feature_network
    from dcgan.eval.metrics import parse_metrics
    from dcgan.eval.report import metric_table, print_table, save_figure, write_json
    from dcgan.eval.sources import ImageSource, ServedSource, open_source

    with _exits():
        if (source is None) == (target is None):
            raise OptionError(
                "give SOURCE (a run, checkpoint or export directory) or --target HOST:PORT, "
                "one of the two"
            )
        for path, flag in ((json_out, "--json"), (figure, "--figure")):
            if path is not None and path.is_dir():
                raise OptionError(f"{flag} {path} is a directory; name a file")
        settings = EvalSettings(
            dataset=dataset.value, data_root=data_root, download=download, split=split.value,
            metrics=tuple(parse_metrics(metrics)), num_samples=num_samples, num_real=num_real,
            features=features.value, inception_weights=inception_weights, classifier=classifier,
            seed=seed, batch_size=batch_size, cache_dir=cache_dir,
        )  # fmt: skip
        check_settings(settings)
        image_source: ImageSource
        if target is not None:
            tls = None
            if tls_ca is not None:
                from dcgan.clients.client import credentials

                tls = credentials(tls_ca)
            token = token_file.read_text().strip() if token_file else None
            image_source = ServedSource(target, timeout, tls, token)
        else:
            assert source is not None
            image_source = open_source(source)
        try:
            network = feature_network(settings)
            _say(
                f"scoring {image_source.info.describe()}: {settings.num_samples} images against "
                f"{settings.dataset}, in {network.info.description}"
            )
            result, reference, fake = evaluate(image_source, settings, network, say=_say)
        finally:
            image_source.close()
        caption = (
            f"{result.num_generated} generated, {result.num_real} real ({result.dataset}); "
            f"features: {network.info.description}, "
            f"weights sha256 {network.info.weights_sha256[:12]}"
        )
        print_table(metric_table(f"dcgan-eval: {result.source.label()}", result.metrics, caption))
        if result.conversion:
            _say(f"note: {result.conversion}")
        for warning in result.warnings:
            _say(f"warning: {warning}")
        if json_out is not None:
            write_json(json_out, result.to_dict())
            _say(f"wrote {json_out}")
        if not no_figure:
            figure_path = (
                figure or (json_out.parent if json_out else Path(".")) / "real_vs_fake.png"
            )
            save_figure(
                figure_path, reference.images, fake,
                f"real: {result.dataset} ({reference.count} images)",
                f"generated: {result.source.label()}",
            )  # fmt: skip
            _say(f"wrote {figure_path}")


@app.command("train-classifier")
def train_classifier_command(
    out: Annotated[Path, typer.Option(help="The classifier file to write.")],
    dataset: DatasetOption = Dataset.digits,
    data_root: DataRootOption = None,
    download: Annotated[
        bool, typer.Option(help="Let torchvision fetch mnist or fashion-mnist.")
    ] = False,
    epochs: Annotated[int, typer.Option(help="Passes over the training part.")] = 10,
    seed: Annotated[int, typer.Option(help="Seeds the split, the weights and the order.")] = 0,
) -> None:
    """Train the digits feature network and report its held-out accuracy.

    Example: dcgan-eval train-classifier --dataset folder --data-root mnist/png --out digits.pt
    """
    from dcgan.eval.classifier import train_classifier
    from dcgan.train.data import DataSpec

    with _exits():
        if epochs < 1:
            raise OptionError("--epochs must be at least 1")
        if out.is_dir():
            raise OptionError(f"--out {out} is a directory; name a file")
        spec = DataSpec(dataset.value, data_root, 32, 1, download=download, workers=0)
        report = train_classifier(spec, out, epochs=epochs, seed=seed)
        typer.echo(report.describe())


@app.command("probe")
def probe_command(
    checkpoint: Annotated[Path, typer.Argument(help="A dcgan-train checkpoint or run directory.")],
    labels_per_class: Annotated[
        list[int], typer.Option(help="Labeled images a class for the SVM; repeat for several.")
    ],
    dataset: DatasetOption = Dataset.digits,
    data_root: DataRootOption = None,
    validation_per_class: Annotated[
        int, typer.Option(help="Labeled images a class to choose C on.")
    ] = 100,
    seed: Annotated[int, typer.Option(help="Seeds the splits and the random discriminator.")] = 0,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write the table here.")] = None,
) -> None:
    """The paper's probe: a linear SVM on D's features, beside a random D and raw pixels.

    Example: dcgan-eval probe runs/mnist --dataset folder --data-root mnist/png
    --labels-per-class 10 --labels-per-class 100
    """
    from rich.console import Console
    from rich.table import Table

    from dcgan.eval.probe import probe
    from dcgan.eval.report import write_json

    with _exits():
        if any(k < 1 for k in labels_per_class) or validation_per_class < 1:
            raise OptionError("--labels-per-class and --validation-per-class must be at least 1")
        result = probe(
            checkpoint, dataset.value, data_root, labels_per_class, validation_per_class, seed
        )
        table = Table(title=f"probe: {result.checkpoint} (step {result.step})")
        for column in ("labels/class", "features", "dims", "C", "validation", "test accuracy"):
            table.add_column(column, justify="left" if column == "features" else "right")
        for row in result.rows:
            table.add_row(
                str(row.labels_per_class), row.features, str(row.dims), f"{row.c:g}",
                f"{row.validation_accuracy:.2%}", f"{row.test_accuracy:.2%}",
            )  # fmt: skip
        Console().print(table)
        if json_out is not None:
            write_json(json_out, result.to_dict())
            _say(f"wrote {json_out}")


main = entry_point(app)  # the console script: no traceback ever reaches a user
