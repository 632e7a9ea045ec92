"""Checkpoint files: atomic writes, rotation, and every way a file can be wrong."""

from __future__ import annotations

import errno
import os
import resource
import signal
from pathlib import Path
from typing import Any

import pytest
import torch

from dcgan.train import checkpoint as ckpt
from dcgan.train.checkpoint import CheckpointError, load_checkpoint, save_checkpoint


def make_state(step: int) -> dict[str, Any]:
    torch.manual_seed(step)
    return {
        "model_config": {"nz": 4, "ngf": 2, "ndf": 2, "channels": 1, "image_size": 32},
        "train_config": {"dataset": "fake"},
        "generator": {"main.0.weight": torch.randn(4, 8, 4, 4)},
        "discriminator": {"main.0.weight": torch.randn(2, 1, 4, 4)},
        "optimizer_g": {"state": {0: {"step": torch.tensor(float(step))}}, "param_groups": []},
        "optimizer_d": {"state": {}, "param_groups": []},
        "grad_scaler": {},
        "step": step,
        "epoch": 0,
        "batch_in_epoch": step,
        "rng": {"torch": torch.get_rng_state(), "python": (3, (1, 2), None)},
    }


def test_round_trip_and_latest(tmp_path: Path) -> None:
    path = save_checkpoint(tmp_path, make_state(5), keep=3)
    assert path == tmp_path / "checkpoints" / "step-00000005.pt"
    latest = tmp_path / "checkpoints" / "latest.pt"
    assert latest.is_symlink() and latest.resolve() == path.resolve()
    for source in (path, latest, tmp_path, tmp_path / "checkpoints"):
        state = load_checkpoint(source)
        assert state["step"] == 5
        assert torch.equal(
            state["generator"]["main.0.weight"], make_state(5)["generator"]["main.0.weight"]
        )


def test_keeps_the_last_k_and_leaves_no_temporary_files(tmp_path: Path) -> None:
    for step in range(1, 7):
        save_checkpoint(tmp_path, make_state(step), keep=2)
    names = sorted(os.listdir(tmp_path / "checkpoints"))
    assert names == ["latest.pt", "step-00000005.pt", "step-00000006.pt"]
    assert load_checkpoint(tmp_path)["step"] == 6


def test_a_failing_disk_keeps_the_previous_checkpoint(tmp_path: Path) -> None:
    save_checkpoint(tmp_path, make_state(1), keep=3)
    size = (tmp_path / "checkpoints" / "step-00000001.pt").stat().st_size
    # Files may not grow past half a checkpoint: the write fails as on a full disk (EFBIG).
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (size // 2, hard))
    try:
        with pytest.raises(OSError) as raised:
            save_checkpoint(tmp_path, make_state(2), keep=3)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, previous)
    assert raised.value.errno == errno.EFBIG
    assert raised.value.filename == str(tmp_path / "checkpoints" / "step-00000002.pt")
    assert sorted(os.listdir(tmp_path / "checkpoints")) == ["latest.pt", "step-00000001.pt"]
    assert load_checkpoint(tmp_path)["step"] == 1


def test_truncated_file_is_refused(tmp_path: Path) -> None:
    path = save_checkpoint(tmp_path, make_state(1), keep=3)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="not a readable PyTorch file"):
        load_checkpoint(path)


def test_flipped_byte_in_tensor_data_is_detected(tmp_path: Path) -> None:
    path = save_checkpoint(tmp_path, make_state(1), keep=3)
    data = bytearray(path.read_bytes())
    # Flip a byte inside the generator weights (torch's zip format would not notice).
    raw = make_state(1)["generator"]["main.0.weight"].numpy().tobytes()
    offset = bytes(data).index(raw[:64]) + 100
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="corrupted or was modified"):
        load_checkpoint(path)


def test_malicious_pickle_runs_nothing(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self) -> tuple[Any, ...]:
            return (os.system, (f"touch {marker}",))

    path = tmp_path / "evil.pt"
    torch.save({"generator": Payload()}, path)
    with pytest.raises(CheckpointError, match="refused"):
        load_checkpoint(path)
    assert not marker.exists()


def test_other_files_are_not_checkpoints(tmp_path: Path) -> None:
    bare = tmp_path / "netG_epoch_0.pth"
    torch.save({"main.0.weight": torch.zeros(1)}, bare)
    with pytest.raises(CheckpointError, match="not a dcgan-serving training checkpoint"):
        load_checkpoint(bare)
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(CheckpointError, match="not a readable PyTorch file"):
        load_checkpoint(text)
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        load_checkpoint(tmp_path / "missing.pt")
    with pytest.raises(CheckpointError, match="holds no checkpoint"):
        load_checkpoint(tmp_path)


def test_checkpoint_missing_a_key_is_refused(tmp_path: Path) -> None:
    state = make_state(1)
    del state["optimizer_d"]
    sealed = {**state, "format": ckpt.FORMAT, "version": ckpt.VERSION}
    sealed["integrity"] = {"algorithm": "sha256", "digest": ckpt.state_digest(sealed)}
    path = tmp_path / "incomplete.pt"
    torch.save(sealed, path)
    with pytest.raises(CheckpointError, match="missing optimizer_d"):
        load_checkpoint(path)
