"""Helpers of the training tests that score runs: a real digits classifier, real scored runs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from dcgan.eval.classifier import train_classifier
from dcgan.train.data import DataSpec
from dcgan.train.train import TrainResult, resolve_config, train

TINY_SCORED = {
    "dataset": "folder",
    "image_size": 32,
    "nz": 16,
    "ngf": 8,
    "ndf": 8,
    "batch_size": 32,
    "workers": 0,
    "log_every": 4,
    "samples": 16,
    "eval_every": 1,
    "eval_samples": 200,
}  # 256 images / 32 = 8 steps an epoch, a score at each epoch's end
TIMINGS = ("images_per_s", "eval_seconds")  # what differs between two runs of the same steps


def digits_classifier(out: Path) -> Path:
    """A digits classifier trained for one epoch on the embedded digits: features, quickly."""
    train_classifier(DataSpec("digits", None, 32, 1, workers=0), out, epochs=1)
    return out


def scored_run(data: Path, out: Path, classifier: Path, **overrides: Any) -> TrainResult:
    """A tiny real run on `data` that scores fid in `classifier`'s features every epoch."""
    settings = {**TINY_SCORED, "data_root": str(data), "out": str(out)}
    return train(resolve_config({**settings, "eval_classifier": str(classifier), **overrides}))


def rows(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def without_timings(lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{key: value for key, value in row.items() if key not in TIMINGS} for row in lines]
