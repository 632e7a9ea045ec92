"""The real MNIST test set, found beside the project, and small copies of it."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def mnist_dir() -> Path:
    """$DCGAN_MNIST_DIR, else ../shared/data/mnist-test beside the project: the folder with png/."""
    candidates = [
        os.environ.get("DCGAN_MNIST_DIR", ""),
        str(ROOT.parent / "shared" / "data" / "mnist-test"),
    ]
    for candidate in candidates:
        if candidate and (Path(candidate) / "png").is_dir():
            return Path(candidate)
    raise RuntimeError(
        "the MNIST test set was not found: set DCGAN_MNIST_DIR to the folder holding png/ "
        f"(looked in {', '.join(c for c in candidates if c)})"
    )


def copy_mnist_subset(mnist_png: Path, dest: Path, count: int) -> Path:
    """The first `count` MNIST PNGs (sorted, spread over the classes) copied under `dest`."""
    files = sorted(mnist_png.glob("*/*.png"))[:: max(1, 10_000 // count)][:count]
    for file in files:
        target = dest / file.parent.name / file.name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(file, target)
    return dest
