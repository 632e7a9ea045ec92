"""The real side of every comparison: a data set's features, computed once and cached.

FID needs only the mean and covariance of the real features, but KID and precision/recall need
the features themselves, so those are what is cached (float32, 2048 x 4 bytes an image for
Inception), one file per data set, preprocessing and feature network:

    CACHE_DIR/<dataset>-<data sha256[:16]>-<C>x<S>x<S>-n<count>-<network id>.npz

The data fingerprint hashes the data set's files, names and bytes, so changed data never
meets stale statistics. The file also records what it was computed from, which is checked on
every load; a file that is unreadable or does not match is recomputed and replaced atomically.
"""

from __future__ import annotations

import io
import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dcgan.eval.data import fingerprint, real_images
from dcgan.eval.errors import EvalError
from dcgan.eval.features import FeatureNetwork, Features
from dcgan.train.checkpoint import write_atomic
from dcgan.train.data import DataSpec

CACHE_ENV = "DCGAN_EVAL_CACHE"
SELECTION_SEED = 0  # which real images stand in for a data set larger than --num-real


def default_cache_dir() -> Path:
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "dcgan-eval"


@dataclass(frozen=True)
class ReferenceKey:
    """Everything the cached features depend on."""

    dataset: str
    split: str  # train | test, for mnist, fashion-mnist and cifar10
    data_root: str | None
    data_sha256: str
    channels: int
    image_size: int
    count: int | None  # None: every image of the data set
    network: str  # NetworkInfo.id

    def file_name(self) -> str:
        count = "all" if self.count is None else str(self.count)
        size = f"{self.channels}x{self.image_size}x{self.image_size}"
        name = (
            self.dataset if self.dataset in ("digits", "folder") else f"{self.dataset}-{self.split}"
        )
        return f"{name}-{self.data_sha256[:16]}-{size}-n{count}-{self.network}.npz"


@dataclass(frozen=True)
class Reference:
    """A data set's real features in one network, ready for any metric."""

    key: ReferenceKey
    network: FeatureNetwork
    real: Features
    images: torch.Tensor  # a few real images, uint8, for the real_vs_fake figure
    cache_file: Path | None
    cache_hit: bool
    seconds: float  # to load or compute

    @property
    def count(self) -> int:
        return int(self.real.features.shape[0])


def load_reference(
    spec: DataSpec,
    network: FeatureNetwork,
    count: int | None = None,
    cache_dir: Path | None = None,
    batch_size: int = 100,
    figure_images: int = 64,
) -> Reference:
    """The real features of `spec` (at the generator's size and channels) in `network`.

    `count`: how many real images (None: all). `cache_dir`: None for the default
    ($DCGAN_EVAL_CACHE, else ~/.cache/dcgan-eval).
    """
    start = time.perf_counter()
    key = ReferenceKey(
        dataset=spec.dataset,
        split=spec.split,
        data_root=str(spec.root.expanduser().resolve()) if spec.root else None,
        data_sha256=fingerprint(spec),
        channels=spec.channels,
        image_size=spec.image_size,
        count=count,
        network=network.info.id,
    )
    directory = cache_dir or default_cache_dir()
    path = directory / key.file_name()
    cached = _read(path, key)
    if cached is not None:
        features, logits, images = cached
        real = Features(features, logits)
        return Reference(key, network, real, images, path, True, time.perf_counter() - start)
    images = real_images(spec, count, SELECTION_SEED)
    real = network.extract(images, batch_size)
    # The figure's real images: a seeded draw, since a folder's images come sorted by class.
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(SELECTION_SEED))
    shown = images[order[:figure_images]]
    stored = _write(path, key, real, shown)
    return Reference(
        key, network, real, shown, path if stored else None, False, time.perf_counter() - start
    )


def _read(
    path: Path, key: ReferenceKey
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor] | None:
    """The cached arrays, or None when absent, unreadable or computed from something else."""
    try:
        with np.load(path, allow_pickle=False) as data:
            if json.loads(str(data["key"])) != _key_json(key):
                return None
            logits = torch.from_numpy(data["logits"]) if "logits" in data else None
            return torch.from_numpy(data["features"]), logits, torch.from_numpy(data["images"])
    except (OSError, ValueError, KeyError, EOFError):
        return None


def _key_json(key: ReferenceKey) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(json.dumps(asdict(key)))
    return result


def _write(path: Path, key: ReferenceKey, real: Features, images: torch.Tensor) -> bool:
    """Store the features atomically; a cache that cannot be written only costs time later."""
    arrays: dict[str, Any] = {
        "key": np.array(json.dumps(_key_json(key))),
        "features": real.features.numpy(),
        "images": images.numpy(),
    }
    if real.logits is not None:
        arrays["logits"] = real.logits.numpy()
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, lambda handle: handle.write(buffer.getbuffer()))
    except OSError:
        return False
    return True


def check_cache_dir(directory: Path) -> None:
    """Refuse a --cache-dir that is a file, before any work is done."""
    if directory.exists() and not directory.is_dir():
        raise EvalError(f"--cache-dir {directory} is not a directory")
