"""Quality measured while training (--eval-every): scores, best.pt, exact resume, bad options."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from typer.testing import CliRunner

from dcgan.eval.metrics import MIN_SAMPLES, VALUES
from dcgan.eval.quality import digits_reference, score_generator
from dcgan.train.checkpoint import load_checkpoint
from dcgan.train.cli import app
from dcgan.train.config import LOWER_IS_BETTER, EvalMetric
from dcgan.train.evaluation import EVAL_SEED, MIN_EVAL_SAMPLES, open_evaluator
from dcgan.train.inspection import inspect_path
from dcgan.train.model import Generator, ModelConfig, init_weights
from dcgan.train.runlog import score_rows
from dcgan.train.train import resolve_config, train
from tests.support.training import (
    TINY,
    TINY_SCORED,
    assert_same_training_state,
    rows,
    scored_run,
    without_timings,
)


def test_the_metric_choices_are_those_dcgan_eval_computes() -> None:
    assert [metric.value for metric in EvalMetric] == list(VALUES)
    assert MIN_EVAL_SAMPLES == MIN_SAMPLES
    assert {"fid", "kid"} == LOWER_IS_BETTER


def test_a_scored_run_keeps_as_best_pt_the_checkpoint_of_its_lowest_fid(
    mnist_subset: Path, classifier: Path, tmp_path: Path
) -> None:
    run = tmp_path / "run"
    result = scored_run(mnist_subset, run, classifier, epochs=4, keep=1)
    assert result.step == 32
    scores = score_rows(rows(run / "metrics.jsonl"))
    assert [row["step"] for row in scores] == [8, 16, 24, 32]
    assert all(row["eval_metric"] == "fid" and row["eval_samples"] == 200 for row in scores)
    values = [row["eval_value"] for row in scores]
    assert all(value > 0 for value in values)
    lowest = scores[values.index(min(values))]
    # each score says whether it was the best so far, by the values alone
    assert [row["eval_best"] for row in scores] == [
        value == min(values[: index + 1]) for index, value in enumerate(values)
    ]
    # keep=1 pruned the step files of earlier scores: best.pt outlives them and verifies
    checkpoints = run / "checkpoints"
    assert sorted(os.listdir(checkpoints)) == ["best.pt", "latest.pt", "step-00000032.pt"]
    best = load_checkpoint(checkpoints / "best.pt")
    assert best["step"] == lowest["step"]
    if lowest["step"] == 32:
        assert os.path.samefile(checkpoints / "best.pt", checkpoints / "step-00000032.pt")
    latest = load_checkpoint(run)
    assert latest["best_score"]["step"] == lowest["step"]
    assert latest["best_score"]["value"] == lowest["eval_value"]
    # an independent score of best.pt's generator is the logged one
    generator = Generator(ModelConfig.from_dict(best["model_config"]))
    generator.load_state_dict(best["generator"])
    reference = digits_reference("folder", mnist_subset, classifier, 32, channels=1)
    again = score_generator(generator, reference, "fid", num_samples=200, seed=EVAL_SEED)
    assert again == pytest.approx(lowest["eval_value"], rel=1e-3)
    # TensorBoard, the plot, the end-of-run result and inspect carry it too
    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    assert [event.step for event in events.Scalars("eval/fid")] == [8, 16, 24, 32]
    assert (run / "quality.png").stat().st_size > 1000
    assert result.score is not None and result.score.value == values[-1]
    assert result.best is not None and result.best.step == lowest["step"]
    report = inspect_path(run).describe()
    assert f"best {lowest['eval_value']:.4g} at step {lowest['step']}" in report


def test_scoring_changes_nothing_the_run_trains_with(
    mnist_subset: Path, classifier: Path, tmp_path: Path
) -> None:
    scored_run(mnist_subset, tmp_path / "scored", classifier, epochs=2)
    train(
        resolve_config(
            {**TINY, "data_root": str(mnist_subset), "out": str(tmp_path / "plain"), "epochs": 2}
        )
    )
    scored, plain = load_checkpoint(tmp_path / "scored"), load_checkpoint(tmp_path / "plain")
    assert_same_training_state(scored, plain)  # weights, BatchNorm statistics, Adam's moments
    assert torch.equal(scored["rng"]["torch"], plain["rng"]["torch"])
    assert torch.equal(scored["rng"]["numpy"][1], plain["rng"]["numpy"][1])
    assert scored["rng"]["numpy"][2:] == plain["rng"]["numpy"][2:]
    assert scored["rng"]["python"] == plain["rng"]["python"]
    assert (tmp_path / "scored" / "losses.jsonl").read_text() == (
        tmp_path / "plain" / "losses.jsonl"
    ).read_text()


def test_a_score_leaves_the_generator_its_mode_statistics_and_the_random_state(
    mnist_subset: Path, classifier: Path
) -> None:
    config = resolve_config(
        {**TINY_SCORED, "data_root": str(mnist_subset), "eval_classifier": str(classifier)}
    )
    evaluator = open_evaluator(config, channels=1)
    generator = Generator(ModelConfig(16, 8, 8, 1, 32))
    generator.apply(init_weights)
    generator(torch.randn(4, 16))  # BatchNorm's running statistics move off their initial values
    before = {name: tensor.clone() for name, tensor in generator.state_dict().items()}
    torch.manual_seed(7)
    expected = torch.rand(3)
    torch.manual_seed(7)
    score = evaluator.score(generator, None)
    assert score.best and score.value > 0
    assert torch.equal(torch.rand(3), expected)
    assert generator.training
    for name, tensor in generator.state_dict().items():
        assert torch.equal(tensor, before[name]), name


def test_a_resumed_run_logs_and_keeps_what_an_uninterrupted_one_does(
    mnist_subset: Path, classifier: Path, tmp_path: Path
) -> None:
    straight = tmp_path / "straight"
    scored_run(mnist_subset, straight, classifier, epochs=3, save_every=5, keep=10)
    # The run as a kill after step 17 leaves it: checkpoints to step 15 (in mid-epoch, after
    # the score at step 8), best.pt at step 8, lines logged after the checkpoint.
    split = tmp_path / "split"
    shutil.copytree(straight, split, symlinks=True)
    checkpoints = split / "checkpoints"
    for path in checkpoints.glob("step-*.pt"):
        if int(path.stem[5:]) > 15:
            path.unlink()
    (checkpoints / "latest.pt").unlink()
    (checkpoints / "latest.pt").symlink_to("step-00000015.pt")
    (checkpoints / "best.pt").unlink()
    os.link(checkpoints / "step-00000008.pt", checkpoints / "best.pt")
    state = load_checkpoint(split)
    assert (state["step"], state["epoch"], state["best_score"]["step"]) == (15, 1, 8)
    resumed = train(resolve_config({"out": str(split)}, state["train_config"]), state, split)
    assert resumed.step == 24
    assert_same_training_state(load_checkpoint(straight), load_checkpoint(split))
    assert without_timings(rows(split / "metrics.jsonl")) == without_timings(
        rows(straight / "metrics.jsonl")
    )
    assert (split / "losses.jsonl").read_text() == (straight / "losses.jsonl").read_text()
    assert [row["step"] for row in rows(split / "losses.jsonl")] == list(range(1, 25))
    best_straight = load_checkpoint(straight / "checkpoints" / "best.pt")
    best_split = load_checkpoint(split / "checkpoints" / "best.pt")
    assert best_split["step"] == best_straight["step"]
    assert_same_training_state(best_straight, best_split)


# ----------------------------------------------------------------------------- bad input


def invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args))
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    return result.exit_code, lines[0]


@pytest.mark.parametrize(
    ("extra", "code", "message"),
    [
        (["--eval-classifier", "{classifier}"], 2, "--eval-classifier needs --eval-every N"),
        (
            ["--eval-every", "1", "--eval-features", "inception", "--inception-weights", "{text}"],
            1,
            "not a readable PyTorch file",
        ),
        (
            [
                "--eval-every",
                "1",
                "--eval-classifier",
                "{classifier}",
                "--inception-weights",
                "{text}",
            ],
            2,
            "--inception-weights is for --eval-features inception, not digits",
        ),
        (["--eval-every", "1", "--eval-features", "digits"], 2, "needs --eval-classifier FILE"),
        (["--eval-every", "1", "--eval-classifier", "{missing}"], 1, "classifier not found"),
        (["--eval-every", "1", "--eval-classifier", "{text}"], 1, "not a readable PyTorch file"),
        (
            [
                "--eval-every",
                "1",
                "--eval-classifier",
                "{classifier}",
                "--eval-features",
                "inception",
            ],
            2,
            "--eval-classifier is for --eval-features digits",
        ),
        (
            [
                "--eval-every",
                "1",
                "--eval-classifier",
                "{classifier}",
                "--eval-metric",
                "inception_score",
            ],
            2,
            "--eval-metric inception_score needs --eval-features inception",
        ),
        (
            ["--eval-every", "1", "--eval-classifier", "{classifier}", "--eval-samples", "9"],
            2,
            "--eval-samples must be between 10 and 50000",
        ),
        (
            ["--eval-every", "-1", "--eval-classifier", "{classifier}"],
            2,
            "--eval-every must be at least 0",
        ),
        (
            ["--eval-every", "1", "--eval-classifier", "{classifier}", "--dataset", "fake"],
            2,
            "--dataset fake is noise",
        ),
    ],
)
def test_bad_evaluation_settings_get_one_line_and_write_nothing(
    mnist_subset: Path,
    classifier: Path,
    tmp_path: Path,
    extra: list[str],
    code: int,
    message: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    (tmp_path / "notes.txt").write_text("not a classifier")
    places = {
        "classifier": classifier,
        "missing": tmp_path / "nope.pt",
        "text": tmp_path / "notes.txt",
    }
    args = [part.format(**places) for part in extra]
    base = [f"--{key.replace('_', '-')}={value}" for key, value in TINY.items()]
    run = tmp_path / "run"
    got = invoke(*base, f"--data-root={mnist_subset}", f"--out={run}", *args)
    assert got[0] == code and message in got[1], got
    assert not run.exists()


def test_without_dcgan_eval_a_run_trains_and_eval_every_says_how_to_install_it(
    mnist_subset: Path, classifier: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in [name for name in sys.modules if name.startswith("dcgan.eval")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "dcgan.eval", None)  # `import dcgan.eval...` now fails
    base = [f"--{key.replace('_', '-')}={value}" for key, value in TINY.items()]
    data = f"--data-root={mnist_subset}"
    code, line = invoke(
        *base, data, f"--out={tmp_path / 'scored'}", "--eval-every=1",
        f"--eval-classifier={classifier}",
    )  # fmt: skip
    assert code == 1 and "pip install 'dcgan-train[eval]'" in line
    assert not (tmp_path / "scored").exists()
    plain = CliRunner().invoke(app, [*base, data, f"--out={tmp_path / 'plain'}", "--max-steps=2"])
    assert plain.exit_code == 0, plain.output


@pytest.mark.slow
def test_under_ddp_rank_0_alone_scores_and_the_ranks_train_as_unscored(
    mnist_subset: Path, classifier: Path, tmp_path: Path
) -> None:
    def torchrun(out: Path, *extra: str) -> None:
        command = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc-per-node=2",
        ]
        args = [f"--{key.replace('_', '-')}={value}" for key, value in TINY.items()]
        args += [f"--data-root={mnist_subset}", f"--out={out}", "--epochs=2", "--device=cpu"]
        result = subprocess.run(
            [*command, "-m", "dcgan.train", *args, *extra],
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert result.returncode == 0, result.stderr[-3000:]

    torchrun(
        tmp_path / "scored",
        "--eval-every=1",
        f"--eval-classifier={classifier}",
        "--eval-samples=100",
    )
    torchrun(tmp_path / "plain")
    scores = score_rows(rows(tmp_path / "scored" / "metrics.jsonl"))
    assert [row["step"] for row in scores] == [8, 16]  # once each: rank 0 writes
    assert (tmp_path / "scored" / "checkpoints" / "best.pt").is_file()
    assert_same_training_state(
        load_checkpoint(tmp_path / "scored"), load_checkpoint(tmp_path / "plain")
    )
