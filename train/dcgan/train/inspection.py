"""`dcgan-train inspect`: what a run directory or checkpoint holds, and whether it resumes.

Reads only: the checkpoint with `weights_only=True`, metrics.jsonl. A checkpoint that fails its
checks is still described as far as it can be read, so a user sees what is wrong with it.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dcgan.train.checkpoint import (
    BEST,
    CHECKPOINT_DIR,
    LATEST,
    CheckpointError,
    Rejected,
    ResumePoint,
    find_resume_point,
    load_file,
    resume_candidates,
    state_digest,
)
from dcgan.train.runlog import METRICS, metric_rows, score_rows


@dataclass(frozen=True)
class Checksum:
    digest: str | None  # the sha256 recorded at save time; None: the file carries none
    verifies: bool  # the contents hash to it


@dataclass(frozen=True)
class Inspection:
    path: Path  # as given
    run_dir: Path | None
    checkpoint: Path | None  # the file described: the one a resume uses, else the first it tried
    state: dict[str, Any] = field(default_factory=dict)  # step, epoch, model and train config
    checksum: Checksum | None = None
    resume_from: Path | None = None  # None: it does not resume
    rejected: tuple[Rejected, ...] = ()  # newer checkpoints a resume passes over
    metrics: dict[str, Any] | None = None  # the last line of losses in RUN_DIR/metrics.jsonl
    score: dict[str, Any] | None = None  # its last line of a score (--eval-every)
    problem: str | None = None  # why it does not resume

    @property
    def resumes_by(self) -> str | None:
        """How a resume picks its file: "latest", "fallback" (past a damaged latest), "file"."""
        if self.resume_from is None:
            return None
        if self.rejected:
            return "fallback"
        return "latest" if self.resume_from.name == LATEST else "file"

    def to_json(self) -> str:
        body = {
            "path": str(self.path),
            "run_dir": _text(self.run_dir),
            "checkpoint": _text(self.checkpoint),
            "step": self.state.get("step"),
            "epoch": self.state.get("epoch"),
            "batch_in_epoch": self.state.get("batch_in_epoch"),
            "model": self.state.get("model_config"),
            "config": self.state.get("train_config"),
            "checksum": None
            if self.checksum is None
            else {
                "algorithm": "sha256",
                "digest": self.checksum.digest,
                "verifies": self.checksum.verifies,
            },
            "resumes": self.resume_from is not None,
            "resume_from": _text(self.resume_from),
            "resumes_by": self.resumes_by,
            "rejected": [{"file": str(bad.file), "reason": bad.reason} for bad in self.rejected],
            "metrics": self.metrics,
            "score": self.score,
            "best_score": self.state.get("best_score"),
            "problem": self.problem,
        }
        return json.dumps(body, indent=2, default=str)

    def describe(self) -> str:
        """The report for a person; empty when no checkpoint could be read at all."""
        if self.checkpoint is None:
            return ""
        lines = [_row("checkpoint", str(self.checkpoint))]
        state = self.state
        if "step" in state:
            lines.append(
                _row(
                    "step",
                    f"{state['step']} (epoch {state.get('epoch')}, "
                    f"{state.get('batch_in_epoch')} batches into it)",
                )
            )
        if self.metrics is not None:
            lines.append(_row("losses", _losses(self.metrics)))
        if self.score is not None or state.get("best_score"):
            lines.append(_row("quality", self._quality()))
        if self.checksum is not None:
            seal = self.checksum.digest
            verdict = "verifies" if self.checksum.verifies else "does not match the contents"
            lines.append(
                _row("checksum", f"sha256 {seal[:16]}... {verdict}" if seal else "none recorded")
            )
        if self.resume_from is not None:
            target = self.resume_from
            via = f" -> {os.readlink(target)}" if target.is_symlink() else ""
            kind = " (the newest that verifies)" if self.rejected else ""
            lines.append(_row("resumes", f"yes, from {target}{via}{kind}"))
            lines += [_row("passed over", bad.reason) for bad in self.rejected]
        else:
            lines.append(_row("resumes", f"no: {self.problem}"))
        if isinstance(state.get("model_config"), dict):
            model = state["model_config"]
            lines.append(_row("model", " ".join(f"{key}={value}" for key, value in model.items())))
        if isinstance(state.get("train_config"), dict):
            lines.append("config")
            lines += [f"  {key:<18}{value}" for key, value in sorted(state["train_config"].items())]
        return "\n".join(lines)

    def _quality(self) -> str:
        parts = []
        if self.score is not None:
            row = self.score
            parts.append(f"{row['eval_metric']} {row['eval_value']:.4g} at step {row['step']}")
        best = self.state.get("best_score")
        if isinstance(best, dict):
            where = self.run_dir / CHECKPOINT_DIR / BEST if self.run_dir else BEST
            parts.append(f"best {best['value']:.4g} at step {best['step']} ({where})")
        return "; ".join(parts)


def inspect_path(path: Path) -> Inspection:
    """Describe `path`: a run directory, its checkpoints directory, or one checkpoint file."""
    if not path.exists() and not path.is_symlink():
        return Inspection(path, None, None, problem=f"not found: {path}")
    candidates = resume_candidates(path)
    point: ResumePoint | None = None
    problem: str | None = None
    try:
        point = find_resume_point(path)
    except CheckpointError as error:
        problem = str(error)
    described = point.file if point is not None else (candidates[0] if candidates else None)
    if described is not None and described.exists():
        described = described.resolve()  # latest.pt's own step file
    run_dir = _run_dir(path, described)
    metrics, score = _last_rows(run_dir)
    if described is None:
        return Inspection(path, run_dir, None, metrics=metrics, score=score, problem=problem)
    checksum: Checksum | None
    if point is not None:
        state, checksum = point.state, Checksum(point.state["integrity"]["digest"], True)
    else:
        state, checksum = _read_unverified(described)
    return Inspection(
        path=path,
        run_dir=run_dir,
        checkpoint=described,
        state=_summary(state),
        checksum=checksum,
        resume_from=point.file if point is not None else None,
        rejected=point.rejected if point is not None else (),
        metrics=metrics,
        score=score,
        problem=problem,
    )


def _read_unverified(file: Path) -> tuple[dict[str, Any], Checksum | None]:
    """What a checkpoint that failed its checks still shows, and how its checksum fares."""
    try:
        state = load_file(file)
    except CheckpointError:
        return {}, None
    if not isinstance(state, dict):
        return {}, None
    integrity = state.get("integrity")
    digest = integrity.get("digest") if isinstance(integrity, dict) else None
    return state, Checksum(digest, digest is not None and digest == state_digest(state))


def _summary(state: dict[str, Any]) -> dict[str, Any]:
    keys = ("step", "epoch", "batch_in_epoch", "model_config", "train_config", "best_score")
    return {key: state[key] for key in keys if key in state}


def _run_dir(path: Path, checkpoint: Path | None) -> Path | None:
    """The run directory of `path`: itself, or the one above its checkpoints directory."""
    if path.is_dir():
        return path.parent if path.name == CHECKPOINT_DIR else path
    directory = (checkpoint or path).parent
    return directory.parent if directory.name == CHECKPOINT_DIR else None


def _last_rows(run_dir: Path | None) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """The last line of losses in RUN_DIR/metrics.jsonl, and its last line of a score."""
    if run_dir is None or not (run_dir / METRICS).is_file():
        return None, None
    try:
        rows = metric_rows(run_dir / METRICS)
    except (OSError, UnicodeDecodeError):
        return None, None
    scores = score_rows(rows)
    losses = [row for row in rows if "loss_d" in row]
    return (losses[-1] if losses else None), (scores[-1] if scores else None)


def _losses(row: dict[str, Any]) -> str:
    def number(key: str, digits: int) -> str:
        value = row.get(key)
        return f"{value:.{digits}f}" if isinstance(value, int | float) else "?"

    return (
        f"D {number('loss_d', 3)}  G {number('loss_g', 3)}  D(x) {number('d_x', 2)}  "
        f"D(G(z)) {number('d_g_z1', 2)}/{number('d_g_z2', 2)}  (logged at step {row['step']})"
    )


def _row(name: str, value: str) -> str:
    return f"{name:<12}{value}"


def _text(path: Path | None) -> str | None:
    return None if path is None else str(path)
