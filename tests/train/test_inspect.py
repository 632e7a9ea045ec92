"""dcgan-train inspect: a run's step, losses, settings, checksum and resume point, read only."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from dcgan.train.checkpoint import load_checkpoint
from dcgan.train.cli import app
from dcgan.train.train import resolve_config, train
from tests.support.training import TINY


@pytest.fixture
def run(mnist_subset: Path, tmp_path: Path) -> Path:
    """A run of 3 steps with a checkpoint at each, its metrics logged at every step."""
    out = tmp_path / "run"
    settings = {"data_root": str(mnist_subset), "out": str(out), "log_every": 1}
    train(resolve_config({**TINY, **settings, "max_steps": 3, "save_every": 1}))
    return out


def files_of(root: Path) -> dict[str, tuple[bytes, int]]:
    return {
        str(path.relative_to(root)): (path.read_bytes(), path.stat().st_mtime_ns)
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


def inspect_json(path: Path) -> tuple[int, dict[str, Any], str]:
    result = CliRunner().invoke(app, ["inspect", str(path), "--json"])
    return result.exit_code, json.loads(result.stdout), result.stderr


def test_a_run_directory_is_described_from_its_latest_checkpoint(run: Path) -> None:
    before = files_of(run)
    result = CliRunner().invoke(app, ["inspect", str(run)])
    assert result.exit_code == 0, result.output
    state = load_checkpoint(run)
    last = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    rows = [line.split(None, 1) for line in result.stdout.splitlines() if line[:1] != " "]
    lines = dict(row for row in rows if len(row) == 2)
    assert "config" in result.stdout.splitlines()
    assert lines["checkpoint"] == str((run / "checkpoints" / "step-00000003.pt").resolve())
    assert lines["step"] == "3 (epoch 0, 3 batches into it)"
    assert lines["losses"].startswith(f"D {last['loss_d']:.3f}  G {last['loss_g']:.3f}")
    assert lines["losses"].endswith("(logged at step 3)")
    digest = state["integrity"]["digest"]
    assert lines["checksum"] == f"sha256 {digest[:16]}... verifies"
    assert lines["resumes"] == f"yes, from {run / 'checkpoints' / 'latest.pt'} -> step-00000003.pt"
    assert lines["model"] == "nz=16 ngf=8 ndf=8 channels=1 image_size=32"
    assert "  batch_size        32" in result.stdout.splitlines()

    code, report, _ = inspect_json(run)
    assert code == 0
    assert (report["step"], report["epoch"], report["batch_in_epoch"]) == (3, 0, 3)
    assert report["model"] == state["model_config"]
    assert report["config"] == state["train_config"]
    assert report["checksum"] == {"algorithm": "sha256", "digest": digest, "verifies": True}
    assert (report["resumes"], report["resumes_by"], report["rejected"]) == (True, "latest", [])
    assert report["metrics"] == last and report["problem"] is None
    assert files_of(run) == before  # inspect reads, never writes


def test_a_damaged_latest_is_described_with_the_checkpoint_it_resumes_from(run: Path) -> None:
    newest = run / "checkpoints" / "step-00000003.pt"
    newest.write_bytes(newest.read_bytes()[:3000])
    with (run / "metrics.jsonl").open("a") as handle:
        handle.write('{"step": 4, "loss_d": 1.2')  # a line a kill cut short
    code, report, stderr = inspect_json(run)
    assert code == 0 and stderr == ""
    assert report["checkpoint"] == str((run / "checkpoints" / "step-00000002.pt").resolve())
    assert (report["step"], report["resumes"], report["resumes_by"]) == (2, True, "fallback")
    assert report["resume_from"] == str(run / "checkpoints" / "step-00000002.pt")
    (rejected,) = report["rejected"]
    assert rejected["file"] == str(run / "checkpoints" / "latest.pt")
    assert f"{newest} is not a readable PyTorch file" in rejected["reason"]
    assert report["metrics"]["step"] == 3
    text = CliRunner().invoke(app, ["inspect", str(run)]).stdout
    assert "(the newest that verifies)" in text and "passed over" in text


def test_a_checkpoint_that_fails_its_checksum_is_shown_and_exits_1(run: Path) -> None:
    tampered = run / "tampered.pt"
    data = bytearray((run / "checkpoints" / "step-00000002.pt").read_bytes())
    data[len(data) // 2] ^= 0x01
    tampered.write_bytes(bytes(data))
    code, report, stderr = inspect_json(tampered)
    if report["step"] is None:  # the flipped byte broke the zip structure instead
        assert "not a readable PyTorch file" in str(report["problem"])
    else:
        assert report["step"] == 2
        assert report["checksum"]["verifies"] is False
        assert "corrupted or was modified" in str(report["problem"])
    assert code == 1 and report["resumes"] is False
    (line,) = stderr.strip().splitlines()
    assert line == f"error: {report['problem']}"


def empty_dir(tmp: Path) -> Path:
    (tmp / "empty").mkdir()
    return tmp / "empty"


def text_file(tmp: Path) -> Path:
    (tmp / "notes.txt").write_text("hello")
    return tmp / "notes.txt"


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda tmp: tmp / "missing", "not found: "),
        (empty_dir, "holds no checkpoint"),
        (text_file, "is not a readable PyTorch file"),
    ],
    ids=["missing", "empty directory", "a text file"],
)
def test_what_is_no_checkpoint_exits_1_with_one_error_line(
    tmp_path: Path, make: Callable[[Path], Path], message: str
) -> None:
    path = make(tmp_path)
    result = CliRunner().invoke(app, ["inspect", str(path)])
    assert result.exit_code == 1 and "Traceback" not in result.output
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("error: ") and message in line
    if result.stdout:  # a file that is there is named, with why it does not resume
        assert result.stdout.splitlines() == [f"checkpoint  {path}", f"resumes     no: {line[7:]}"]


def test_training_options_do_not_go_with_inspect(run: Path) -> None:
    result = CliRunner().invoke(app, ["--epochs", "3", "--nz", "4", "inspect", str(run)])
    assert result.exit_code == 2
    assert result.stderr.strip() == (
        "error: --epochs, --nz: training options, which `dcgan-train inspect` does not take"
    )
