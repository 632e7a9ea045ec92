"""Fixtures shared by every part's tests: the real MNIST test set, and small copies of it."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def mnist_dir() -> Path:
    """../shared/data/mnist-test from the project root (or $DCGAN_MNIST_DIR)."""
    candidates = [
        os.environ.get("DCGAN_MNIST_DIR", ""),
        str(ROOT.parent / "shared" / "data" / "mnist-test"),
        "/work/shared/data/mnist-test",
    ]
    for candidate in candidates:
        if candidate and (Path(candidate) / "png").is_dir():
            return Path(candidate)
    raise RuntimeError(
        "the MNIST test set was not found: set DCGAN_MNIST_DIR to the folder holding png/ "
        f"(looked in {', '.join(c for c in candidates if c)})"
    )


@pytest.fixture(scope="session")
def mnist_png() -> Path:
    """The 10,000 MNIST test PNGs as an ImageFolder (class subfolders 0..9)."""
    return mnist_dir() / "png"


def copy_mnist_subset(mnist_png: Path, dest: Path, count: int) -> Path:
    """The first `count` MNIST PNGs (sorted, spread over the classes) copied under `dest`."""
    files = sorted(mnist_png.glob("*/*.png"))[:: max(1, 10_000 // count)][:count]
    for file in files:
        target = dest / file.parent.name / file.name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(file, target)
    return dest


@pytest.fixture
def mnist_subset(mnist_png: Path, tmp_path: Path) -> Path:
    """256 real MNIST PNGs in class folders: enough for a few quick training steps."""
    return copy_mnist_subset(mnist_png, tmp_path / "mnist256", 256)
