"""The paper's probe: D's features under a linear SVM, beside a random D and raw pixels."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from dcgan.eval.cli import app
from dcgan.eval.probe import probe, split_folder
from dcgan.train.model import Generator, ModelConfig
from tests.support.training import train_run


def rows_by_features(rows: list[dict], per_class: int) -> dict[str, dict]:  # type: ignore[type-arg]
    return {row["features"]: row for row in rows if row["labels_per_class"] == per_class}


def test_the_probe_reports_d_random_d_and_pixels_with_c_chosen_on_validation(
    trained_run: Path, mnist_png: Path, tmp_path: Path
) -> None:
    json_out = tmp_path / "probe.json"
    result = CliRunner().invoke(
        app,
        [
            "probe", str(trained_run), "--dataset", "folder", "--data-root", str(mnist_png),
            "--labels-per-class", "10", "--validation-per-class", "50", "--json", str(json_out),
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    record = json.loads(json_out.read_text())
    rows = rows_by_features(record["rows"], 10)
    assert set(rows) == {"dcgan-discriminator", "random-discriminator", "raw-pixels"}
    # ndf 16 at 32x32: 16x16x16, 32x8x8 and 64x4x4 activations, each max-pooled to 4x4.
    assert rows["dcgan-discriminator"]["dims"] == (16 + 32 + 64) * 16
    assert rows["random-discriminator"]["dims"] == rows["dcgan-discriminator"]["dims"]
    assert rows["raw-pixels"]["dims"] == 32 * 32
    for row in rows.values():
        assert row["train_images"] == 100 and row["test_images"] == 10_000 - 100 - 500
        assert row["test_accuracy"] > 0.3, row  # chance is 0.1
        assert row["c"] in (1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0)
    assert "step 300" in result.output and "test accuracy" in result.output


def test_a_probe_without_a_discriminator_says_so(
    trained_export: Path, mnist_png: Path, tmp_path: Path
) -> None:
    bare = tmp_path / "netG_epoch_1.pth"
    torch.save(Generator(ModelConfig()).state_dict(), bare)
    for source, phrase in (
        (trained_export, "the export directory"),
        (bare, "not a dcgan-train checkpoint"),
    ):
        result = CliRunner().invoke(
            app,
            [
                "probe",
                str(source),
                "--dataset",
                "folder",
                "--data-root",
                str(mnist_png),
                "--labels-per-class",
                "10",
            ],
        )
        assert result.exit_code == 1, result.output
        assert result.output.startswith("error: the probe needs a discriminator"), result.output
        assert "holds only a generator" in result.output and phrase in result.output


def test_a_probe_on_unlabeled_images_or_too_few_per_class_exits_1(
    trained_run: Path, mnist_png: Path, tmp_path: Path
) -> None:
    flat = tmp_path / "flat"
    flat.mkdir()
    for file in sorted(mnist_png.glob("*/*.png"))[:20]:
        (flat / f"{file.parent.name}-{file.name}").symlink_to(file)
    result = CliRunner().invoke(
        app,
        [
            "probe",
            str(trained_run),
            "--dataset",
            "folder",
            "--data-root",
            str(flat),
            "--labels-per-class",
            "10",
        ],
    )
    assert result.exit_code == 1 and "class subfolder" in result.output, result.output
    result = CliRunner().invoke(
        app,
        [
            "probe",
            str(trained_run),
            "--dataset",
            "folder",
            "--data-root",
            str(mnist_png),
            "--labels-per-class",
            "2000",
        ],
    )
    assert result.exit_code == 1 and "fewer than 2000 to train" in result.output, result.output


@pytest.mark.slow
def test_a_trained_discriminator_beats_chance_and_raw_pixels_on_held_out_mnist(
    mnist_png: Path, tmp_path: Path
) -> None:
    """The protocol on the shared MNIST: the GAN on one half (labels unused), the probe on the other.

    A random D of the same shape is as good as the trained one here (within about a point either
    way, at ndf 16 and 64 alike): on MNIST, random convolutions max-pooled to 4x4 already separate
    the digits. What training must give is features well above chance and raw pixels, and no
    worse than random ones.
    """
    parts = split_folder(mnist_png, tmp_path / "split", {"gan": 0.5, "probe": 0.5}, seed=0)
    run = train_run(parts["gan"], tmp_path / "run", "--batch-size", "64", "--epochs", "4")
    result = probe(run, "folder", parts["probe"], [10, 100], validation_per_class=50, seed=0)
    for per_class in (10, 100):
        rows = {row.features: row for row in result.rows if row.labels_per_class == per_class}
        trained = rows["dcgan-discriminator"].test_accuracy
        assert trained > 0.5, rows  # chance is 0.1
        assert trained > rows["raw-pixels"].test_accuracy + 0.03, rows
        assert trained > rows["random-discriminator"].test_accuracy - 0.05, rows
