"""dcgan-train's options: TrainConfig's defaults in --help, and which options count as given."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import fields
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from dcgan.train.checkpoint import load_checkpoint
from dcgan.train.cli import app
from dcgan.train.config import TrainConfig
from dcgan.train.train import Plan, resolve_config, train
from tests.support.training import TINY

NOT_OPTIONS = {"beta2"}  # fixed at the paper's value: no option
NO_DEFAULT = {"data_root"}  # required for folder, unused by the others
SHOWN = {
    "download": "no-download",
    "channels_last": "channels-last",
    "compile": "no-compile",
    "channels": "(the data set's own)",
    "max_steps": "(none: --epochs decides)",
    "eval_features": "(digits given --eval-classifier, else inception)",
    "eval_classifier": "(none)",
    "inception_weights": "(downloaded)",
}


def test_help_shows_every_default_of_train_config() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "dcgan.train", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "COLUMNS": "200"},
    )
    assert result.returncode == 0, result.stderr
    # each option's row of the rich table: "│ --batch-size  <int>  Global batch ... [default: 128]"
    rows = {
        row.strip("│ ").split()[0]: row
        for row in result.stdout.splitlines()
        if row.strip("│ ").startswith("--")
    }
    checked = []
    for field in fields(TrainConfig):
        if field.name in NOT_OPTIONS | NO_DEFAULT:
            continue
        row = rows[f"--{field.name.replace('_', '-')}"]
        shown = SHOWN.get(field.name, str(field.default))
        assert f"[default: {shown}]" in row, row
        checked.append(field.name)
    assert len(checked) == len(fields(TrainConfig)) - 2
    assert "[default: 128]" in rows["--batch-size"]


def test_the_command_line_module_imports_no_torch() -> None:
    """--help answers at once: TrainConfig lives apart from the training code."""
    probe = "import sys, dcgan.train.cli; print('torch' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=120
    )
    assert result.stdout.strip() == "False", result.stderr


def test_options_given_at_their_default_still_count_on_resume(
    mnist_subset: Path, tmp_path: Path
) -> None:
    run = tmp_path / "run"
    tiny = {"dataset": "folder", "data_root": str(mnist_subset), "image_size": 32, "nz": 16}
    small = {"ngf": 8, "ndf": 8, "batch_size": 32, "workers": 0, "log_every": 4, "samples": 16}
    train(resolve_config({**tiny, **small, "out": str(run), "max_steps": 2}))
    runner = CliRunner()

    # --nz 100 is TrainConfig's default, yet typed on the command line: it contradicts the run
    clash = runner.invoke(app, ["--resume", str(run), "--nz", str(TrainConfig.nz)])
    assert clash.exit_code == 2
    assert "the run being resumed has nz=16; drop --nz" in clash.stderr

    # options not given keep the run's own settings (nz 16, log every 4) ...
    kept = runner.invoke(app, ["--resume", str(run), "--max-steps", "3"])
    assert kept.exit_code == 0, kept.output
    settings = json.loads((run / "config.json").read_text())["train"]
    assert (settings["nz"], settings["log_every"], settings["out"]) == (16, 4, str(run))

    # ... and a changeable option given at its default replaces the run's
    changed = runner.invoke(app, ["--resume", str(run), "--max-steps", "4", "--log-every", "10"])
    assert changed.exit_code == 0, changed.output
    assert json.loads((run / "config.json").read_text())["train"]["log_every"] == 10
    state = load_checkpoint(run)
    assert (state["step"], state["model_config"]["nz"]) == (4, 16)
    assert state["train_config"]["log_every"] == 10


# ----------------------------------------------------------------------------- the contract


def tiny_run(data: Path, run: Path, **overrides: Any) -> Path:
    train(resolve_config({**TINY, "data_root": str(data), "out": str(run), **overrides}))
    return run


def cli_tiny(data: Path, out: Path, *extra: str) -> list[str]:
    args = [f"--{key.replace('_', '-')}={value}" for key, value in TINY.items()]
    return [*args, f"--data-root={data}", f"--out={out}", *extra]


def files_of(root: Path) -> dict[str, tuple[bytes, int]]:
    """Every file under `root` with its bytes and modification time: a rewrite shows."""
    return {
        str(path.relative_to(root)): (path.read_bytes(), path.stat().st_mtime_ns)
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


def one_error_line(result: Result) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.output
    return lines[0]


def test_version_and_the_console_script() -> None:
    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.stdout.strip() == f"dcgan-train {metadata.version('dcgan-train')}"
    scripts = metadata.distribution("dcgan-train").entry_points.select(group="console_scripts")
    # through entry_point: an exception nobody handled still reaches the user as one line
    assert [(script.name, script.value) for script in scripts] == [
        ("dcgan-train", "dcgan.train.cli:run")
    ]
    module = subprocess.run(
        [sys.executable, "-m", "dcgan.train", "--version"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert module.returncode == 0 and module.stdout.startswith("dcgan-train ")


def test_resume_with_epochs_or_max_steps_extends_the_run_and_says_how_far(
    mnist_subset: Path, tmp_path: Path
) -> None:
    run = tiny_run(mnist_subset, tmp_path / "run", max_steps=2)  # 8 steps an epoch
    runner = CliRunner()
    longer = runner.invoke(app, ["--resume", str(run), "--epochs", "2"])
    assert longer.exit_code == 0, longer.output
    assert (
        f"resuming {run} at step 2 (epoch 0): training to step 16 (--epochs 2 of 8 steps)"
        in longer.stdout
    )
    settings = json.loads((run / "config.json").read_text())["train"]
    assert (settings["epochs"], settings["max_steps"]) == (2, None)  # --epochs replaced the limit
    assert load_checkpoint(run)["step"] == 16

    further = runner.invoke(app, ["--resume", str(run), "--max-steps", "18", "--epochs", "3"])
    assert further.exit_code == 0, further.output
    assert "training to step 18 (--max-steps 18)" in further.stdout
    assert load_checkpoint(run)["step"] == 18


def test_a_resumed_run_with_nothing_left_to_do_says_so_and_writes_nothing(
    mnist_subset: Path, tmp_path: Path
) -> None:
    run = tiny_run(mnist_subset, tmp_path / "run", max_steps=2)
    before = files_of(run)
    for extra in ([], ["--max-steps", "2", "--log-every", "1"]):
        result = CliRunner().invoke(app, ["--resume", str(run), *extra])
        assert result.exit_code == 0, result.output
        assert (
            f"{run} is at step 2, and --max-steps 2 ends it at step 2: nothing to do"
            in result.stdout
        )
        assert "trained to step" not in result.stdout
        assert files_of(run) == before  # config.json, metrics, grids, checkpoints: untouched


def test_the_plan_names_the_setting_that_ends_the_run() -> None:
    config = TrainConfig(epochs=5, max_steps=100)
    plan = Plan.of(config, batches_per_epoch=8)
    assert (plan.total_steps, plan.limit) == (40, "--epochs 5 of 8 steps, before --max-steps 100")
    assert plan.describe(Path("runs/x"), 40, 5, resumed=True) == (
        "runs/x is at step 40, and --epochs 5 of 8 steps, before --max-steps 100 ends it at "
        "step 40: nothing to do (a larger --max-steps or --epochs trains on)"
    )
    assert Plan.of(TrainConfig(epochs=5, max_steps=30), 8).limit == "--max-steps 30"
    assert Plan.of(TrainConfig(epochs=2), 8).describe(Path("r"), 0, 0, resumed=False) == (
        "training r to step 16 (--epochs 2 of 8 steps)"
    )


def test_a_damaged_latest_resumes_from_the_newest_good_checkpoint_and_says_so(
    mnist_subset: Path, tmp_path: Path
) -> None:
    run = tiny_run(mnist_subset, tmp_path / "run", max_steps=3, save_every=1)
    checkpoints = run / "checkpoints"
    newest = checkpoints / "step-00000003.pt"
    newest.write_bytes(newest.read_bytes()[:4000])  # a torn write that latest.pt points to
    result = CliRunner().invoke(app, ["--resume", str(run), "--max-steps", "4"])
    assert result.exit_code == 0, result.output
    (warning,) = result.stderr.strip().splitlines()
    assert warning.startswith(f"warning: {checkpoints / 'latest.pt'} points to a checkpoint")
    assert f"{newest} is not a readable PyTorch file" in warning
    assert f"resuming from {checkpoints / 'step-00000002.pt'}" in warning
    assert f"resuming {run} at step 2 (epoch 0): training to step 4" in result.stdout
    assert load_checkpoint(run)["step"] == 4


BAD_OPTIONS = [
    (["--lr", "-1"], "--lr must be a positive number, not -1.0"),
    (["--lr", "nan"], "--lr must be a positive number, not nan"),
    (["--beta1", "2"], "--beta1 must be at least 0 and below 1, not 2.0"),
    (["--workers", "-1"], "--workers must be at least 0, not -1"),
    (["--workers", "100000"], "--workers must be at most 128, not 100000"),
    (["--save-every", "-1"], "--save-every must be at least 0, not -1"),
    (["--preload-limit-mb", "-1"], "--preload-limit-mb must be a finite number of at least 0"),
    (["--preload-limit-mb", "inf"], "--preload-limit-mb must be a finite number of at least 0"),
    (["--seed", "-1"], "--seed must be between 0 and 4294967295, not -1"),
    (["--samples", "5000"], "--samples must be at most 1024, not 5000"),
    (["--max-steps", "0"], "--max-steps must be at least 1, not 0"),
    (["--nz", "0"], "nz must be at least 1, not 0"),
    (["--split", "test"], "--split test is for mnist, fashion-mnist, cifar10"),
]


@pytest.mark.parametrize(
    ("extra", "message"), BAD_OPTIONS, ids=[" ".join(e) for e, _ in BAD_OPTIONS]
)
def test_bad_options_exit_2_with_our_words_before_anything_is_created(
    mnist_subset: Path, tmp_path: Path, extra: list[str], message: str
) -> None:
    out = tmp_path / "new" / "run"
    result = CliRunner().invoke(app, cli_tiny(mnist_subset, out, *extra))
    assert result.exit_code == 2, result.output
    assert message in one_error_line(result)
    assert not (tmp_path / "new").exists()


def test_bad_data_and_environments_exit_1_before_anything_is_created(
    mnist_subset: Path, tmp_path: Path
) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("a file")
    runner = CliRunner()
    cases = [
        (cli_tiny(mnist_subset, notes / "run"), f"cannot write to {notes / 'run'}: {notes}"),
        (cli_tiny(mnist_subset, notes), f"cannot write to {notes}: it is a file"),
        (cli_tiny(tmp_path / "nowhere", tmp_path / "new" / "a"), "does not exist"),
        (
            cli_tiny(mnist_subset, tmp_path / "new" / "b", "--batch-size=1024"),
            "fewer than one batch",
        ),
        (
            cli_tiny(mnist_subset, tmp_path / "new" / "c", f"--nz={10**12}"),
            "GiB for weights, gradients and Adam's state; the cpu has",
        ),
        (
            cli_tiny(tmp_path / "no-mnist", tmp_path / "new" / "d", "--dataset=mnist"),
            "--split train needs train-images-idx3-ubyte",
        ),
    ]
    for args, message in cases:
        result = runner.invoke(app, args)
        assert result.exit_code == 1, (args, result.output)
        assert message in one_error_line(result), args
    assert not (tmp_path / "new").exists() and notes.read_text() == "a file"


def test_a_new_run_refuses_a_directory_of_other_files(mnist_subset: Path, tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / "config.json").write_text('{"mine": true}')
    (home / "notes.txt").write_text("mine too")
    result = CliRunner().invoke(app, cli_tiny(mnist_subset, home))
    assert result.exit_code == 2
    assert "holds files that are not a run's (config.json, notes.txt)" in one_error_line(result)
    assert sorted(path.name for path in home.iterdir()) == ["config.json", "notes.txt"]
    assert (home / "config.json").read_text() == '{"mine": true}'
    # what a run killed before its first checkpoint leaves is a run's: a new run starts there
    (home / "notes.txt").unlink()
    partial = tiny_run(mnist_subset, tmp_path / "partial", max_steps=1)
    shutil.rmtree(partial / "checkpoints")
    (partial / "metrics.jsonl").write_text('{"step": 1, "epoch": 0}\n{"step": 2, "ep')
    again = CliRunner().invoke(app, cli_tiny(mnist_subset, partial, "--max-steps=2"))
    assert again.exit_code == 0, again.output
    rows = (partial / "metrics.jsonl").read_text().splitlines()
    # the killed run's lines (one of them torn) are gone; the new run logged its last step, 2
    assert [json.loads(row)["step"] for row in rows] == [2]


def test_the_mnist_test_split_trains(mnist_png: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    args = ["--dataset=mnist", f"--data-root={mnist_png.parent}", "--split=test", "--image-size=32"]
    small = ["--nz=4", "--ngf=4", "--ndf=4", "--batch-size=500", "--max-steps=1", "--workers=0"]
    result = CliRunner().invoke(app, [*args, *small, "--samples=4", f"--out={run}"])
    assert result.exit_code == 0, result.output
    assert f"training {run} to step 1 (--max-steps 1)" in result.stdout
    state = load_checkpoint(run)
    assert (state["step"], state["train_config"]["split"]) == (1, "test")
    clash = CliRunner().invoke(app, ["--resume", str(run), "--split=train"])
    assert clash.exit_code == 2 and "has split='test'" in one_error_line(clash)


def test_a_metrics_line_cut_short_by_a_kill_does_not_stop_a_resume(
    mnist_subset: Path, tmp_path: Path
) -> None:
    run = tiny_run(mnist_subset, tmp_path / "run", max_steps=4)
    with (run / "metrics.jsonl").open("a") as handle:
        handle.write('{"step": 5, "epoch": 0, "loss_d": 1.3')
    result = CliRunner().invoke(app, ["--resume", str(run), "--max-steps", "8"])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [row["step"] for row in rows] == [4, 8]
    assert (run / "loss.png").stat().st_size > 1000
