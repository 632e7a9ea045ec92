"""Scoring real generators three ways: PyTorch, onnxruntime as served, and a running dcgan-serve."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from dcgan.eval.classifier import ClassifierReport
from dcgan.eval.cli import app
from tests.support.servers import ServerThread

SAMPLES = "1000"


def score(
    source: list[str], classifier: ClassifierReport, mnist_png: Path, out: Path, cache: Path
) -> dict:  # type: ignore[type-arg]
    """dcgan-eval on the MNIST test set in the digits features; the JSON it wrote."""
    arguments = [
        *source, "--dataset", "folder", "--data-root", str(mnist_png),
        "--features", "digits", "--classifier", str(classifier.path),
        "--metrics", "fid,kid,prc", "--num-samples", SAMPLES, "--num-real", "2000",
        "--cache-dir", str(cache), "--json", str(out),
    ]  # fmt: skip
    result = CliRunner().invoke(app, arguments)
    assert result.exit_code == 0, result.output
    record: dict = json.loads(out.read_text())  # type: ignore[type-arg]
    assert (out.parent / "real_vs_fake.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    return record


def test_a_trained_checkpoint_scores_better_than_an_untrained_one(
    trained_run: Path,
    untrained_run: Path,
    classifier: ClassifierReport,
    mnist_png: Path,
    tmp_path: Path,
) -> None:
    cache = tmp_path / "cache"
    trained = score([str(trained_run)], classifier, mnist_png, tmp_path / "a" / "eval.json", cache)
    untrained = score(
        [str(untrained_run)], classifier, mnist_png, tmp_path / "b" / "eval.json", cache
    )
    assert trained["source"]["kind"] == "pytorch" and trained["source"]["step"] == 300
    assert untrained["source"]["step"] == 1
    assert trained["metrics"]["fid"] < untrained["metrics"]["fid"] / 2, (trained, untrained)
    assert trained["metrics"]["kid_mean"] < untrained["metrics"]["kid_mean"]
    assert (
        trained["metrics"]["classifier_score_mean"] > untrained["metrics"]["classifier_score_mean"]
    )
    assert trained["features"]["kind"] == "digits-classifier"
    assert trained["features"]["weights_sha256"] == untrained["features"]["weights_sha256"]
    assert trained["samples"] == {"generated": 1000, "real": 2000}
    assert (trained["reference_cache"]["hit"], untrained["reference_cache"]["hit"]) == (False, True)


def test_the_served_score_equals_the_exports_for_the_same_latents(
    server: ServerThread,
    trained_export: Path,
    trained_run: Path,
    classifier: ClassifierReport,
    mnist_png: Path,
    tmp_path: Path,
) -> None:
    cache = tmp_path / "cache"
    served = score(
        ["--target", server.target], classifier, mnist_png, tmp_path / "s" / "e.json", cache
    )
    export = score([str(trained_export)], classifier, mnist_png, tmp_path / "o" / "e.json", cache)
    torch_run = score([str(trained_run)], classifier, mnist_png, tmp_path / "t" / "e.json", cache)
    assert served["source"]["kind"] == "served" and export["source"]["kind"] == "onnxruntime"
    assert served["source"]["sha256"] == export["source"]["sha256"]  # the same serving graph
    for name in ("fid", "kid_mean", "precision", "recall", "classifier_score_mean"):
        # The same graph on the same latents: equal up to onnxruntime's thread scheduling.
        assert (
            abs(served["metrics"][name] - export["metrics"][name])
            <= 1e-3 * abs(export["metrics"][name]) + 1e-6
        ), name
    # PyTorch eager against the folded ONNX graph: a pixel may round the other way.
    assert (
        abs(torch_run["metrics"]["fid"] - export["metrics"]["fid"])
        <= 0.02 * export["metrics"]["fid"]
    )


def test_the_mnist_test_split_is_read_from_its_idx_files(
    trained_run: Path, classifier: ClassifierReport, mnist_png: Path, tmp_path: Path
) -> None:
    """The shared folder holds MNIST's t10k IDX files beside png/: --split test reads them."""
    out = tmp_path / "eval.json"
    arguments = [
        str(trained_run), "--dataset", "mnist", "--split", "test", "--data-root", str(mnist_png.parent),
        "--features", "digits", "--classifier", str(classifier.path), "--num-samples", "200",
        "--num-real", "500", "--cache-dir", str(tmp_path / "cache"), "--json", str(out), "--no-figure",
    ]  # fmt: skip
    result = CliRunner().invoke(app, arguments)
    assert result.exit_code == 0, result.output
    record = json.loads(out.read_text())
    assert record["data"]["dataset"] == "mnist" and record["data"]["split"] == "test"
    assert record["samples"]["real"] == 500
    assert Path(record["reference_cache"]["file"]).name.startswith("mnist-test-")
    result = CliRunner().invoke(app, [*arguments[:4], "train", *arguments[5:]])
    assert result.exit_code == 1, result.output  # the training split is not in the shared folder
    assert "mnist not found under" in result.output
