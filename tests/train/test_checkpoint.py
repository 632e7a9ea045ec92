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
from dcgan.train.checkpoint import (
    CheckpointError,
    find_resume_point,
    load_checkpoint,
    save_checkpoint,
)


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


def test_best_pt_is_the_checkpoint_marked_best_and_outlives_its_step_file(
    tmp_path: Path,
) -> None:
    directory = tmp_path / "checkpoints"
    for step in range(1, 7):
        save_checkpoint(tmp_path, make_state(step), keep=2, best=step in (2, 3))
    assert sorted(os.listdir(directory)) == [
        "best.pt", "latest.pt", "step-00000005.pt", "step-00000006.pt",
    ]  # fmt: skip
    best = load_checkpoint(directory / "best.pt")  # its step file is pruned: the data remains
    assert best["step"] == 3
    assert torch.equal(
        best["generator"]["main.0.weight"], make_state(3)["generator"]["main.0.weight"]
    )
    assert not (directory / "best.pt").is_symlink() and os.stat(directory / "best.pt").st_nlink == 1
    # replaced by the next best, as a hard link to its step file
    save_checkpoint(tmp_path, make_state(7), keep=2, best=True)
    assert os.path.samefile(directory / "best.pt", directory / "step-00000007.pt")
    assert load_checkpoint(tmp_path)["step"] == 7  # latest.pt, not best.pt, is what resumes
    assert find_resume_point(tmp_path).file.name == "latest.pt"


def test_best_pt_is_a_copy_where_hard_links_fail(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_links(source: object, target: object) -> None:
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_links)  # as on a file system without hard links
    save_checkpoint(tmp_path, make_state(4), keep=1, best=True)
    best = tmp_path / "checkpoints" / "best.pt"
    assert best.read_bytes() == (tmp_path / "checkpoints" / "step-00000004.pt").read_bytes()
    assert not os.path.samefile(best, tmp_path / "checkpoints" / "step-00000004.pt")
    assert load_checkpoint(best)["step"] == 4
    assert [path.name for path in (tmp_path / "checkpoints").glob(".*")] == []


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


def three_steps(tmp_path: Path) -> Path:
    for step in (1, 2, 3):
        save_checkpoint(tmp_path, make_state(step), keep=3)
    return tmp_path / "checkpoints"


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def test_a_damaged_latest_falls_back_to_the_newest_step_that_verifies(tmp_path: Path) -> None:
    directory = three_steps(tmp_path)
    truncate(directory / "step-00000003.pt")  # what latest.pt points to
    point = find_resume_point(tmp_path)
    assert point.state["step"] == 2 and point.file == directory / "step-00000002.pt"
    assert [bad.file for bad in point.rejected] == [directory / "latest.pt"]
    assert point.run_dir == tmp_path.resolve()
    note = point.fallback_note()
    assert note is not None and len(note.splitlines()) == 1
    assert note.startswith(f"{directory / 'latest.pt'} points to a checkpoint that does not load")
    assert "step-00000003.pt is not a readable PyTorch file" in note
    assert note.endswith(
        f"resuming from {directory / 'step-00000002.pt'}, the newest that verifies"
    )
    # the run directory, its checkpoints directory and latest.pt itself all fall back alike
    for path in (directory, directory / "latest.pt"):
        assert find_resume_point(path).state["step"] == 2
    # load_checkpoint stays strict: latest.pt is what it is asked for
    with pytest.raises(CheckpointError, match="not a readable PyTorch file"):
        load_checkpoint(tmp_path)


def test_a_dangling_or_copied_latest_falls_back(tmp_path: Path) -> None:
    directory = three_steps(tmp_path)
    (directory / "step-00000003.pt").unlink()
    point = find_resume_point(tmp_path)
    assert point.state["step"] == 2
    assert point.rejected[0].reason == (
        f"{directory / 'latest.pt'} points to step-00000003.pt, which does not exist"
    )
    # a latest.pt copied as a plain file (cp -L) and torn: the step files beside it still count
    latest = directory / "latest.pt"
    latest.unlink()
    latest.write_bytes((directory / "step-00000002.pt").read_bytes()[:1000])
    point = find_resume_point(tmp_path)
    assert point.state["step"] == 2 and point.file == directory / "step-00000002.pt"
    assert "latest.pt is not a readable PyTorch file" in (point.fallback_note() or "")


def test_no_fallback_for_a_named_step_file_nor_when_none_verifies(tmp_path: Path) -> None:
    directory = three_steps(tmp_path)
    truncate(directory / "step-00000002.pt")
    with pytest.raises(CheckpointError, match=r"step-00000002\.pt is not a readable"):
        find_resume_point(directory / "step-00000002.pt")
    truncate(directory / "step-00000001.pt")
    truncate(directory / "step-00000003.pt")
    with pytest.raises(CheckpointError) as raised:
        find_resume_point(tmp_path)
    assert "step-00000003.pt is not a readable PyTorch file" in str(raised.value)
    assert "none of the 2 step files beside it loads" in str(raised.value)
    (tmp_path / "elsewhere").mkdir()
    with pytest.raises(CheckpointError, match="holds no checkpoint"):
        find_resume_point(tmp_path / "elsewhere")
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        find_resume_point(tmp_path / "missing")
