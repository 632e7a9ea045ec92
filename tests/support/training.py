"""Real training runs in miniature: the tiny configuration, its command line, scored runs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch

from dcgan.eval.classifier import train_classifier
from dcgan.train.config import TrainConfig
from dcgan.train.data import DataSpec
from dcgan.train.train import TrainResult, resolve_config, train

TINY = {
    "dataset": "folder",
    "image_size": 32,
    "nz": 16,
    "ngf": 8,
    "ndf": 8,
    "batch_size": 32,
    "workers": 0,
    "log_every": 4,
    "samples": 16,
}  # 256 images / 32 = 8 steps an epoch
TINY_SCORED = {**TINY, "eval_every": 1, "eval_samples": 200}  # a score at each epoch's end
TIMINGS = ("images_per_s", "eval_seconds")  # what differs between two runs of the same steps

# The shape of the evaluation tests' GANs: small enough to train a few hundred steps in a minute.
SMALL_GAN = ("--image-size", "32", "--nz", "32", "--ngf", "16", "--ndf", "16", "--workers", "0")


def tiny(data: Path, out: Path, **overrides: Any) -> TrainConfig:
    return resolve_config({**TINY, "data_root": str(data), "out": str(out), **overrides})


def cli_args(data: Path, out: Path, *extra: str) -> list[str]:
    """TINY as dcgan-train's options."""
    args = [f"--{key.replace('_', '-')}={value}" for key, value in TINY.items()]
    return [*args, f"--data-root={data}", f"--out={out}", *extra]


def run_cli(*args: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dcgan.train", *args],
        capture_output=True,
        text=True,
        timeout=300,
        **kwargs,
    )


def train_run(data: Path, out: Path, *options: str) -> Path:
    """A real dcgan-train run (through its command line) on `data`; returns the run directory."""
    command = [sys.executable, "-m", "dcgan.train", "--dataset", "folder", "--data-root", str(data)]
    command += [*SMALL_GAN, "--samples", "16", "--out", str(out), *options]
    completed = subprocess.run(command, capture_output=True, text=True, timeout=900)
    assert completed.returncode == 0, completed.stderr[-2000:]
    return out


def assert_same_training_state(a: dict[str, Any], b: dict[str, Any]) -> None:
    """Two checkpoints hold the same networks, optimiser slots and position, bit for bit."""
    for key in ("generator", "discriminator"):
        for name, tensor in a[key].items():
            assert torch.equal(tensor, b[key][name]), f"{key}.{name} differs"
    for key in ("optimizer_g", "optimizer_d"):
        for index, slots in a[key]["state"].items():
            for slot, tensor in slots.items():
                assert torch.equal(tensor, b[key]["state"][index][slot]), (
                    f"{key} {index} {slot} differs"
                )
    assert (a["step"], a["epoch"], a["batch_in_epoch"]) == (
        b["step"],
        b["epoch"],
        b["batch_in_epoch"],
    )


def digits_classifier(out: Path) -> Path:
    """A digits classifier trained for one epoch on the embedded digits: features, quickly."""
    train_classifier(DataSpec("digits", None, 32, 1, workers=0), out, epochs=1)
    return out


def scored_run(data: Path, out: Path, classifier: Path, **overrides: Any) -> TrainResult:
    """A tiny real run on `data` that scores fid in `classifier`'s features every epoch."""
    settings = {**TINY_SCORED, "data_root": str(data), "out": str(out)}
    return train(resolve_config({**settings, "eval_classifier": str(classifier), **overrides}))


def rows(path: Path) -> list[dict[str, Any]]:
    """The records of a .jsonl file."""
    return [json.loads(line) for line in path.read_text().splitlines()]


def without_timings(lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{key: value for key, value in row.items() if key not in TIMINGS} for row in lines]
