"""dcgan-train's options: TrainConfig's defaults in --help, and which options count as given."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

from typer.testing import CliRunner

from dcgan.train.checkpoint import load_checkpoint
from dcgan.train.cli import app
from dcgan.train.config import TrainConfig
from dcgan.train.train import resolve_config, train

NOT_OPTIONS = {"beta2"}  # fixed at the paper's value: no option
NO_DEFAULT = {"data_root"}  # required for folder, unused by the others
SHOWN = {
    "download": "no-download",
    "channels_last": "channels-last",
    "compile": "no-compile",
    "channels": "(the data set's own)",
    "max_steps": "(none: --epochs decides)",
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
