"""Training checkpoints: one file each, written atomically, verified on load.

A checkpoint is a plain `torch.save` dict (tensors, numbers, strings, lists, dicts), loaded with
`weights_only=True` so that a file can never run code. A sha256 digest of its contents is stored
inside it: torch's zip format does not notice flipped bytes in tensor data, this does.
Files live in RUN_DIR/checkpoints as `step-00001234.pt`, with `latest.pt` a symlink to the newest
and, in a run that scores itself, `best.pt` a hard link to the checkpoint of the best score (it
outlives the pruning of its step file).
A run resumes from `latest.pt`, or, when that is damaged or dangling, from the newest step file
that verifies.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import os
import pickle
import re
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import torch

FORMAT = "dcgan-serving/checkpoint"
VERSION = 1
LATEST = "latest.pt"
BEST = "best.pt"
CHECKPOINT_DIR = "checkpoints"
REQUIRED_KEYS = (
    "model_config",
    "train_config",
    "generator",
    "discriminator",
    "optimizer_g",
    "optimizer_d",
    "grad_scaler",
    "step",
    "epoch",
    "batch_in_epoch",
    "rng",
)
_STEP_FILE = re.compile(r"^step-(\d{8,})\.pt$")


class CheckpointError(Exception):
    """A checkpoint that cannot be read, is not ours, or fails its integrity check."""


# ----------------------------------------------------------------------------- writing


def write_atomic(path: Path, write: Callable[[IO[bytes]], object]) -> None:
    """Write through a temporary file in the same directory, fsync, then rename over `path`.

    A crash at any moment leaves either the old file or the new one, never a torn one.
    """
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as error:
        raise OSError(error.errno, error.strerror, str(path)) from None
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException as error:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        if isinstance(error, OSError) and error.filename is None:  # name the file being written
            raise OSError(error.errno, error.strerror, str(path)) from None
        raise
    fsync_dir(path.parent)


def fsync_dir(directory: Path) -> None:
    """Make a rename or a new file in `directory` durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def state_digest(state: dict[str, Any]) -> str:
    """sha256 over every value in `state` (bar its own `integrity` entry), in a fixed order."""
    digest = hashlib.sha256()
    _hash_value(digest, {key: value for key, value in state.items() if key != "integrity"})
    return digest.hexdigest()


def _hash_value(digest: Any, value: Any) -> None:
    if isinstance(value, torch.Tensor):
        flat = value.detach().cpu().contiguous().reshape(-1)
        digest.update(f"tensor:{flat.dtype}:{tuple(value.shape)}:".encode())
        digest.update(flat.view(torch.uint8).numpy().tobytes())
    elif isinstance(value, dict):
        digest.update(f"dict:{len(value)}:".encode())
        for key in sorted(value, key=repr):
            digest.update(f"{key!r}=".encode())
            _hash_value(digest, value[key])
    elif isinstance(value, list | tuple):
        digest.update(f"{type(value).__name__}:{len(value)}:".encode())
        for item in value:
            _hash_value(digest, item)
    else:
        digest.update(f"{type(value).__name__}:{value!r};".encode())


def save_checkpoint(run_dir: Path, state: dict[str, Any], keep: int, best: bool = False) -> Path:
    """Write `state` as checkpoints/step-N.pt, point latest.pt at it, keep the newest `keep`.

    `best`: make best.pt this checkpoint too.
    """
    directory = run_dir / CHECKPOINT_DIR
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"step-{int(state['step']):08d}.pt"
    sealed = {**state, "format": FORMAT, "version": VERSION}
    sealed["integrity"] = {"algorithm": "sha256", "digest": state_digest(sealed)}
    # Serialised in memory first: a failing disk then fails a plain write with its real errno
    # (ENOSPC, EROFS ...), where torch's zip writer would raise an internal RuntimeError.
    buffer = io.BytesIO()
    torch.save(sealed, buffer)
    write_atomic(path, lambda handle: handle.write(buffer.getbuffer()))
    if best:
        _point_best(directory, path, buffer)
    _point_latest(directory, path.name)
    _prune(directory, keep, protect=path.name)
    return path


def _point_latest(directory: Path, target: str) -> None:
    tmp = directory / f".{LATEST}.{os.getpid()}.tmp"
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    os.symlink(target, tmp)
    os.replace(tmp, directory / LATEST)
    fsync_dir(directory)


# A file system without hard links: best.pt is then a copy.
_NO_HARD_LINKS = {errno.EPERM, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK}


def _point_best(directory: Path, checkpoint: Path, contents: io.BytesIO) -> None:
    """Make best.pt a hard link to `checkpoint`, replaced atomically (a copy where links fail)."""
    tmp = directory / f".{BEST}.{os.getpid()}.tmp"
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    try:
        os.link(checkpoint, tmp)
    except OSError as error:
        if error.errno not in _NO_HARD_LINKS:
            raise
        write_atomic(directory / BEST, lambda handle: handle.write(contents.getbuffer()))
        return
    os.replace(tmp, directory / BEST)
    fsync_dir(directory)


def _prune(directory: Path, keep: int, protect: str) -> None:
    """Delete all but the newest `keep` step files, and temporary files a crash left behind."""
    steps = sorted(path for path in directory.iterdir() if _STEP_FILE.match(path.name))
    for path in steps[: max(0, len(steps) - keep)]:
        if path.name != protect:
            path.unlink()
    for path in directory.glob(".*.tmp"):
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


# ----------------------------------------------------------------------------- reading


def resolve_checkpoint(path: Path) -> Path:
    """A checkpoint file as given, or the `latest` of a run directory or checkpoints directory."""
    if path.is_dir():
        for candidate in (path / CHECKPOINT_DIR / LATEST, path / LATEST):
            if candidate.exists():
                return candidate
        raise CheckpointError(
            f"{path} holds no checkpoint (looked for {path / CHECKPOINT_DIR / LATEST})"
        )
    if not path.exists():
        raise CheckpointError(f"checkpoint not found: {path}")
    return path


def load_file(path: Path) -> Any:
    """`torch.load(weights_only=True)` with each failure turned into one clear line."""
    try:
        handle = open(path, "rb")  # noqa: SIM115 - closed below; its OSError is told apart
    except OSError as error:
        raise CheckpointError(f"cannot read {path}: {error.strerror or error}") from None
    with handle:
        try:
            return torch.load(handle, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as error:
            if "GLOBAL" not in str(error):  # torch names the global it refused to import
                raise CheckpointError(
                    f"{path} is not a readable PyTorch file: {_first_line(error)}"
                ) from None
            raise CheckpointError(
                f"{path} was refused: it holds pickled code or objects, not plain tensors "
                "(loaded with weights_only=True)"
            ) from None
        except Exception as error:  # whatever a damaged file makes the zip or pickle reader raise
            raise CheckpointError(
                f"{path} is not a readable PyTorch file (truncated or corrupted?): "
                f"{_first_line(error)}"
            ) from None


def _first_line(error: BaseException) -> str:
    """The line that says why: torch's weights_only errors put it after a long preamble."""
    text = str(error)
    if "WeightsUnpickler error:" in text:
        text = text.split("WeightsUnpickler error:", 1)[1]
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[0][:200] if lines else type(error).__name__


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Load and verify one of our checkpoints (a file or a run directory's latest)."""
    path = resolve_checkpoint(path)
    state = load_file(path)
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(
            f"{path} is not a dcgan-serving training checkpoint "
            "(a bare generator state_dict can be exported with dcgan-export)"
        )
    if state.get("version") != VERSION:
        raise CheckpointError(
            f"{path} has checkpoint version {state.get('version')!r}; this dcgan-serving "
            f"reads version {VERSION}"
        )
    missing = [key for key in REQUIRED_KEYS if key not in state]
    if missing:
        raise CheckpointError(f"{path} is incomplete: missing {', '.join(missing)}")
    integrity = state.get("integrity")
    if not isinstance(integrity, dict) or integrity.get("digest") != state_digest(state):
        raise CheckpointError(
            f"{path} is corrupted or was modified: its contents do not match the sha256 "
            "recorded when it was saved"
        )
    return state


# ----------------------------------------------------------------------------- resuming


@dataclass(frozen=True)
class Rejected:
    """A checkpoint passed over on the way to one that loads."""

    file: Path
    reason: str  # the CheckpointError's line, which names the file


@dataclass(frozen=True)
class ResumePoint:
    state: dict[str, Any]  # verified by load_checkpoint
    file: Path  # the checkpoint it came from
    rejected: tuple[Rejected, ...]  # newer candidates that did not load, latest.pt first

    @property
    def run_dir(self) -> Path:
        """The run the checkpoint belongs to: RUN_DIR for RUN_DIR/checkpoints/*.pt."""
        directory = self.file.parent.resolve()
        return directory.parent if directory.name == CHECKPOINT_DIR else directory

    def fallback_note(self) -> str | None:
        """One line naming the damaged latest and the checkpoint used instead; None if none."""
        if not self.rejected:
            return None
        first, others = self.rejected[0], len(self.rejected) - 1
        damaged_target = first.file.is_symlink() and first.file.exists()
        via = f"{first.file} points to a checkpoint that does not load: " if damaged_target else ""
        more = (
            f" (and {others} newer step file{'s' * (others > 1)} that fail too)" if others else ""
        )
        return f"{via}{first.reason}{more}; resuming from {self.file}, the newest that verifies"


def step_files(directory: Path) -> list[Path]:
    """The step checkpoints in `directory`, newest first."""
    if not directory.is_dir():
        return []
    found = [path for path in directory.iterdir() if _STEP_FILE.match(path.name)]
    return sorted(found, key=lambda path: int(path.name[5:-3]), reverse=True)


def resume_candidates(path: Path) -> list[Path]:
    """Where a run resumes from, best first: `path` itself when it names a step file; for a
    run directory, a checkpoints directory or a latest.pt, that latest and then its step files.
    """
    if path.is_dir():
        directory = path / CHECKPOINT_DIR if (path / CHECKPOINT_DIR).is_dir() else path
    elif path.name == LATEST:
        directory = path.parent
    else:
        return [path]
    latest = directory / LATEST
    head = [latest] if latest.exists() or latest.is_symlink() else []
    return head + step_files(directory)


def find_resume_point(path: Path) -> ResumePoint:
    """The checkpoint to resume `path` from (see resume_candidates), loaded and verified.

    Falls back past a latest.pt that is truncated, corrupted or dangling; a step file named
    explicitly gets no fallback. Raises CheckpointError, naming the first problem, when none loads.
    """
    candidates = resume_candidates(path)
    if not candidates:
        if path.is_dir():
            resolve_checkpoint(path)  # raises its "holds no checkpoint" line
        raise CheckpointError(f"checkpoint not found: {path}")
    rejected: list[Rejected] = []
    tried: set[Path] = set()
    for candidate in candidates:
        target = candidate.resolve()
        if target in tried:  # latest.pt's own target, already refused through latest.pt
            continue
        tried.add(target)
        try:
            state = load_checkpoint(_existing(candidate))
        except CheckpointError as error:
            rejected.append(Rejected(candidate, str(error)))
            continue
        return ResumePoint(state, candidate, tuple(rejected))
    first = rejected[0].reason
    more = len(rejected) - 1
    beside = f"; and none of the {more} step files beside it loads" if more else ""
    raise CheckpointError(f"{first}{beside}")


def _existing(path: Path) -> Path:
    """The file `path` names (latest.pt's target, so that errors name it), or CheckpointError."""
    if path.is_symlink():
        if not path.exists():
            raise CheckpointError(f"{path} points to {os.readlink(path)}, which does not exist")
        return path.resolve()
    if not path.exists():
        raise CheckpointError(f"checkpoint not found: {path}")
    return path
