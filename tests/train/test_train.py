"""Real training runs on real MNIST images: outputs, exact resume, signals, DDP, compile."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from dcgan.train.checkpoint import find_resume_point, load_checkpoint
from dcgan.train.train import ConfigError, resolve_config, train
from tests.support.training import assert_same_training_state, cli_args, run_cli, tiny


def test_a_run_leaves_checkpoints_grids_metrics_and_logs(
    mnist_subset: Path, tmp_path: Path
) -> None:
    run = tmp_path / "run"
    result = train(tiny(mnist_subset, run, epochs=2, keep=1))
    assert (result.step, result.epoch) == (16, 2)
    assert sorted(os.listdir(run / "checkpoints")) == ["latest.pt", "step-00000016.pt"]
    state = load_checkpoint(run)
    assert state["model_config"] == {"nz": 16, "ngf": 8, "ndf": 8, "channels": 1, "image_size": 32}
    assert state["train_config"]["batch_size"] == 32
    assert set(state["rng"]) == {"python", "numpy", "torch", "cuda"}
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [row["step"] for row in rows] == [4, 8, 12, 16]
    assert {"loss_d", "loss_g", "d_x", "d_g_z1", "d_g_z2", "images_per_s"} <= set(rows[0])
    assert all(0.0 <= row["d_x"] <= 1.0 and row["images_per_s"] > 0 for row in rows)
    # every step's losses, fetched from the device at log time: the logged steps' are the same
    losses = [json.loads(line) for line in (run / "losses.jsonl").read_text().splitlines()]
    assert [row["step"] for row in losses] == list(range(1, 17))
    by_step = {row["step"]: row for row in losses}
    for row in rows:
        assert by_step[row["step"]]["loss_d"] == pytest.approx(row["loss_d"], rel=1e-6)
        assert by_step[row["step"]]["loss_g"] == pytest.approx(row["loss_g"], rel=1e-6)
    for name in (
        "real.png",
        "loss.png",
        "samples/epoch-0001.png",
        "samples/epoch-0002.png",
        "samples/final.png",
    ):
        assert (run / name).stat().st_size > 1000, name
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))
    assert json.loads((run / "config.json").read_text())["model"]["image_size"] == 32


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_resume_is_bitwise_exact_across_an_epoch_boundary(
    mnist_subset: Path, tmp_path: Path, precision: str
) -> None:
    straight = train(tiny(mnist_subset, tmp_path / "straight", max_steps=12, precision=precision))
    first = train(tiny(mnist_subset, tmp_path / "split", max_steps=6, precision=precision))
    assert first.step == 6
    point = find_resume_point(tmp_path / "split")
    state = point.state
    assert (state["epoch"], state["batch_in_epoch"]) == (0, 6)
    second = train(resolve_config({"max_steps": 12}, state["train_config"]), state, point.run_dir)
    assert second.step == straight.step == 12
    assert_same_training_state(
        load_checkpoint(tmp_path / "straight"), load_checkpoint(tmp_path / "split")
    )
    # the resumed run's metrics continue the first half's (which logged its last step, 6)
    rows = (tmp_path / "split" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(row)["step"] for row in rows] == [4, 6, 8, 12]


def test_resume_keeps_the_run_identity(mnist_subset: Path, tmp_path: Path) -> None:
    train(tiny(mnist_subset, tmp_path / "run", max_steps=2))
    state = find_resume_point(tmp_path / "run").state
    with pytest.raises(ConfigError, match="has nz=16; drop --nz"):
        resolve_config({"nz": 32}, state["train_config"])
    assert resolve_config({"max_steps": 9}, state["train_config"]).nz == 16


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_saves_a_checkpoint_that_resumes(
    mnist_subset: Path, tmp_path: Path, signum: int
) -> None:
    run = tmp_path / "run"
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "dcgan.train",
            *cli_args(mnist_subset, run, "--epochs=1000", "--log-every=1"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    while (
        not (run / "metrics.jsonl").exists()
        or len((run / "metrics.jsonl").read_text().splitlines()) < 3
    ):
        assert process.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    process.send_signal(signum)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 128 + signum
    assert f"stopped by {signal.Signals(signum).name}" in stderr and "Traceback" not in stderr
    state = load_checkpoint(run)
    assert state["step"] >= 3
    resumed = run_cli("--resume", str(run), f"--max-steps={state['step'] + 2}")
    assert resumed.returncode == 0, resumed.stderr
    assert load_checkpoint(run)["step"] == state["step"] + 2


@pytest.mark.parametrize(
    ("extra", "code", "message"),
    [
        (["--dataset=imagenet"], 2, "'imagenet' is not one of"),
        (["--image-size=48"], 2, "image size must be one of 32, 64, 128, not 48"),
        (["--batch-size=0"], 2, "--batch-size must be at least 1"),
        (["--channels=2"], 2, "channels must be 1 or 3"),
        (["--device=cuda"], 2, "CUDA is not available"),
    ],
)
def test_bad_options_get_one_line_and_exit_2(
    mnist_subset: Path, tmp_path: Path, extra: list[str], code: int, message: str
) -> None:
    result = run_cli(*cli_args(mnist_subset, tmp_path / "run"), *extra)
    assert result.returncode == code
    assert message in result.stderr and "Traceback" not in result.stderr


def test_bad_data_gets_one_line_and_exit_1(mnist_subset: Path, tmp_path: Path) -> None:
    missing = run_cli(*cli_args(tmp_path / "nowhere", tmp_path / "a"))
    assert missing.returncode == 1 and "does not exist" in missing.stderr
    (tmp_path / "empty").mkdir()
    empty = run_cli(*cli_args(tmp_path / "empty", tmp_path / "b"))
    assert empty.returncode == 1 and "no images found under" in empty.stderr
    (mnist_subset / "0" / "torn.png").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00")
    unreadable = run_cli(*cli_args(mnist_subset, tmp_path / "c"))
    assert unreadable.returncode == 1 and "cannot read image" in unreadable.stderr
    assert "torn.png" in unreadable.stderr
    for result in (missing, empty, unreadable):
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_bad_checkpoints_and_out_dirs_damage_nothing(mnist_subset: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    train(tiny(mnist_subset, run, max_steps=2))
    before = {path: path.read_bytes() for path in run.rglob("*") if path.is_file()}

    again = run_cli(*cli_args(mnist_subset, run, "--max-steps=2"))
    assert again.returncode == 2 and "already holds a run" in again.stderr

    notes = tmp_path / "notes.txt"
    notes.write_text("not a checkpoint")
    assert "not a readable PyTorch file" in run_cli("--resume", str(notes)).stderr

    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes((run / "checkpoints" / "latest.pt").read_bytes()[:5000])
    result = run_cli("--resume", str(truncated))
    assert result.returncode == 1 and "truncated or corrupted" in result.stderr

    tampered = tmp_path / "tampered" / "checkpoints"
    shutil.copytree(run / "checkpoints", tampered, symlinks=False)
    data = bytearray((tampered / "step-00000002.pt").read_bytes())
    data[len(data) // 2] ^= 0x01
    (tampered / "step-00000002.pt").write_bytes(bytes(data))
    result = run_cli("--resume", str(tampered / "step-00000002.pt"))
    assert result.returncode == 1 and (
        "corrupted" in result.stderr or "not a readable" in result.stderr
    )

    unwritable = run_cli(*cli_args(mnist_subset, notes / "run"))
    assert unwritable.returncode == 1 and "cannot write to" in unwritable.stderr
    assert not (notes / "run").exists() and notes.read_text() == "not a checkpoint"

    after = {path: path.read_bytes() for path in run.rglob("*") if path.is_file()}
    assert after == before


@pytest.mark.slow
def test_ddp_on_two_gloo_processes_resumes_exactly(mnist_subset: Path, tmp_path: Path) -> None:
    def torchrun(*args: str) -> None:
        command = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc-per-node=2",
        ]
        result = subprocess.run(
            [*command, "-m", "dcgan.train", *args], capture_output=True, text=True, timeout=300
        )
        assert result.returncode == 0, result.stderr[-3000:]

    torchrun(*cli_args(mnist_subset, tmp_path / "straight", "--max-steps=6", "--device=cpu"))
    torchrun(*cli_args(mnist_subset, tmp_path / "split", "--max-steps=3", "--device=cpu"))
    torchrun("--resume", str(tmp_path / "split"), "--max-steps=6")
    straight = load_checkpoint(tmp_path / "straight")
    assert straight["step"] == 6
    assert_same_training_state(straight, load_checkpoint(tmp_path / "split"))
    # rank 0 alone logs: each logged step appears once
    rows = (tmp_path / "straight" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(row)["step"] for row in rows] == [4, 6]
    # DDP trained with the global batch split over ranks: weights moved from a 1-process run's
    single = train(tiny(mnist_subset, tmp_path / "single", max_steps=6, device="cpu"))
    assert single.step == 6
    one = load_checkpoint(tmp_path / "single")["generator"]["main.0.weight"]
    assert not torch.equal(one, straight["generator"]["main.0.weight"])


@pytest.mark.slow
def test_compiled_networks_train(mnist_subset: Path, tmp_path: Path) -> None:
    result = train(tiny(mnist_subset, tmp_path / "run", max_steps=3, compile=True))
    assert result.step == 3
    state = load_checkpoint(tmp_path / "run")
    assert all(torch.isfinite(tensor).all() for tensor in state["generator"].values())
    # compile wraps the modules, but the checkpoint keeps plain keys that load into Generator
    assert "main.0.weight" in state["generator"]
