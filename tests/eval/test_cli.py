"""Bad input: one clear line, exit 2 for options and 1 for data or environment, nothing half written."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from dcgan.eval.classifier import ClassifierReport
from dcgan.eval.cli import app
from dcgan.train.model import Generator, ModelConfig
from tests.support.data import copy_mnist_subset
from tests.support.models import inception_torchscript
from tests.support.servers import free_port


def run(*arguments: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(arguments))
    return result.exit_code, result.output


def assert_one_line_error(output: str, *phrases: str) -> None:
    errors = [line for line in output.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, output
    assert "Traceback" not in output, output
    for phrase in phrases:
        assert phrase in errors[0], (phrase, errors[0])


def digits(classifier: ClassifierReport, data: Path, tmp_path: Path) -> list[str]:
    return [
        "--dataset", "folder", "--data-root", str(data), "--features", "digits",
        "--classifier", str(classifier.path), "--cache-dir", str(tmp_path / "cache"),
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("arguments", "phrase"),
    [
        ([], "give SOURCE"),
        (["RUN", "--target", "127.0.0.1:1"], "one of the two"),
        (["RUN", "--metrics", "fid,sharpness"], "unknown metric sharpness"),
        (["RUN", "--num-samples", "5"], "--num-samples must be at least 10"),
        (["RUN", "--features", "digits"], "--features digits needs --classifier FILE"),
    ],
)
def test_bad_options_exit_2_with_one_line(
    arguments: list[str], phrase: str, trained_run: Path, tmp_path: Path
) -> None:
    arguments = [str(trained_run) if word == "RUN" else word for word in arguments]
    code, output = run("score", *arguments, "--json", str(tmp_path / "eval.json"))
    assert code == 2, output
    assert_one_line_error(output, phrase)
    assert not (tmp_path / "eval.json").exists()


def test_a_missing_source_and_an_empty_data_root_exit_1(
    classifier: ClassifierReport, trained_run: Path, tmp_path: Path
) -> None:
    code, output = run(str(tmp_path / "nowhere"), *digits(classifier, tmp_path, tmp_path))
    assert code == 1
    assert_one_line_error(output, "source not found", "nowhere")
    empty = tmp_path / "empty"
    empty.mkdir()
    json_out = tmp_path / "out" / "eval.json"
    code, output = run(
        str(trained_run), *digits(classifier, empty, tmp_path), "--json", str(json_out)
    )
    assert code == 1
    assert_one_line_error(output, "no images found under", str(empty))
    assert not json_out.parent.exists()  # nothing written, not even the folder


@pytest.mark.parametrize("kind", ["missing", "truncated", "text", "tensors", "foreign-script"])
def test_a_bad_inception_weights_file_says_where_it_looked_and_how_to_supply_one(
    kind: str, trained_run: Path, mnist_png: Path, tmp_path: Path
) -> None:
    weights = tmp_path / f"{kind}.pt"
    if kind == "truncated":
        weights.write_bytes(inception_torchscript().read_bytes()[: 1 << 20])
    elif kind == "text":
        weights.write_text("inception, trust me\n")
    elif kind == "tensors":
        torch.save({"fc.weight": torch.zeros(10, 20)}, weights)
    elif kind == "foreign-script":
        torch.jit.save(torch.jit.script(torch.nn.Linear(4, 2)), str(weights))
    code, output = run(
        str(trained_run), "--dataset", "folder", "--data-root", str(mnist_png),
        "--inception-weights", str(weights), "--cache-dir", str(tmp_path / "cache"),
    )  # fmt: skip
    assert code == 1, output
    assert_one_line_error(output, str(weights), "--inception-weights PATH")


@pytest.mark.parametrize("kind", ["missing", "truncated", "generator"])
def test_a_bad_classifier_file_exits_1(
    kind: str, classifier: ClassifierReport, trained_run: Path, mnist_png: Path, tmp_path: Path
) -> None:
    path = tmp_path / "digits.pt"
    if kind == "truncated":
        path.write_bytes(classifier.path.read_bytes()[:1000])
    elif kind == "generator":
        torch.save(Generator(ModelConfig(channels=1, image_size=32)).state_dict(), path)
    arguments = digits(classifier, mnist_png, tmp_path)
    arguments[arguments.index(str(classifier.path))] = str(path)
    code, output = run(str(trained_run), *arguments)
    assert code == 1, output
    assert_one_line_error(output, str(path), "dcgan-eval train-classifier")


def test_a_target_that_is_not_serving_exits_1(
    classifier: ClassifierReport, mnist_png: Path, tmp_path: Path
) -> None:
    target = f"127.0.0.1:{free_port()}"
    code, output = run(
        "--target", target, "--timeout", "3", *digits(classifier, mnist_png, tmp_path)
    )
    assert code == 1, output
    assert_one_line_error(output, f"{target} is not serving", "UNAVAILABLE")


def test_the_inception_score_needs_logits_a_torchscript_lacks(
    trained_run: Path, mnist_png: Path, tmp_path: Path
) -> None:
    code, output = run(
        str(trained_run), "--dataset", "folder", "--data-root", str(mnist_png),
        "--inception-weights", str(inception_torchscript()), "--metrics", "fid,is",
        "--cache-dir", str(tmp_path / "cache"),
    )  # fmt: skip
    assert code == 2, output
    assert_one_line_error(output, "--metrics is needs class logits")


def test_few_samples_and_converted_images_are_said_plainly(
    classifier: ClassifierReport, mnist_png: Path, trained_export: Path, tmp_path: Path
) -> None:
    data = copy_mnist_subset(mnist_png, tmp_path / "data", 100)
    code, output = run(
        str(trained_export), *digits(classifier, data, tmp_path), "--num-samples", "50",
        "--json", str(tmp_path / "eval.json"), "--no-figure",
    )  # fmt: skip
    assert code == 0, output
    assert "warning: fid from 50 generated and 100 real samples: below 129 a side" in output
    assert not (tmp_path / "real_vs_fake.png").exists()
    assert (tmp_path / "eval.json").exists()


def test_a_64x64_rgb_generator_is_converted_for_the_digits_network_and_it_says_so(
    classifier: ClassifierReport, mnist_png: Path, tmp_path: Path
) -> None:
    """A pytorch/examples netG (64x64 RGB) against grey 32x32 digits features."""
    path = tmp_path / "netG_epoch_0.pth"
    torch.save(Generator(ModelConfig()).state_dict(), path)
    data = copy_mnist_subset(mnist_png, tmp_path / "data", 100)
    json_out = tmp_path / "eval.json"
    code, output = run(
        str(path), *digits(classifier, data, tmp_path), "--num-samples", "20", "--no-figure",
        "--json", str(json_out),
    )  # fmt: skip
    assert code == 0, output
    note = (
        "3x64x64 images: RGB turned to grey (ITU-R 601 luma), resized 64x64 -> 32x32, "
        "for digits-classifier"
    )
    assert f"note: {note}" in output
    record = json.loads(json_out.read_text())
    assert record["conversion"] == note
    assert record["source"]["channels"] == 3 and record["source"]["image_size"] == 64


def test_the_command_prints_its_version_and_turns_a_bad_source_into_one_line(
    tmp_path: Path,
) -> None:
    version = subprocess.run(
        [sys.executable, "-m", "dcgan.eval", "--version"], capture_output=True, text=True
    )
    assert version.returncode == 0 and version.stdout.strip() == "dcgan-eval 0.1.0"
    missing = tmp_path / "no-such-run"
    failed = subprocess.run(
        [sys.executable, "-m", "dcgan.eval", str(missing)], capture_output=True, text=True
    )
    assert failed.returncode == 1
    assert (
        failed.stderr.strip()
        == f"error: source not found: {missing} (a run directory, checkpoint or export directory)"
    )
