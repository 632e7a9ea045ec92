"""The paper's probe (Radford et al. 2015, section 5.1): a trained D as a feature extractor.

Each convolutional layer's activations (after its LeakyReLU) are max-pooled to a 4 x 4 grid,
flattened and concatenated; an L2-regularised linear SVM (scikit-learn's LinearSVC, on
standardised features) is fitted on K labeled images a class, C is chosen on a validation
split, and the test accuracy is reported beside two baselines measured the same way: a randomly
initialised discriminator of the same shape, and the raw pixels.

Splits are drawn per class with a seed: K a class to train on, `validation_per_class` a class to
choose C, and every remaining image to test.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F
from torch import nn

from dcgan.contract.manifest import MANIFEST
from dcgan.eval.data import Labeled, labeled_images
from dcgan.eval.errors import EvalError
from dcgan.train.checkpoint import (
    FORMAT,
    CheckpointError,
    load_checkpoint,
    load_file,
    resolve_checkpoint,
)
from dcgan.train.data import DataSpec
from dcgan.train.model import Discriminator, ModelConfig, init_weights

POOL_GRID = 4
# Standardised features number in the thousands: small C wins, and large C only costs time.
C_GRID = (1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0)
NO_DISCRIMINATOR = (
    "the probe needs a discriminator, and {what} holds only a generator: pass a training "
    "checkpoint or run directory of dcgan-train (they hold both networks)"
)


@dataclass(frozen=True)
class ProbeRow:
    features: str  # dcgan-discriminator | random-discriminator | raw-pixels
    dims: int
    labels_per_class: int
    c: float  # the regularisation chosen on the validation split
    validation_accuracy: float
    test_accuracy: float
    train_images: int
    test_images: int


@dataclass(frozen=True)
class ProbeResult:
    checkpoint: str
    step: int
    dataset: str
    data_root: str | None
    rows: list[ProbeRow]
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "checkpoint": self.checkpoint,
            "step": self.step,
            "dataset": self.dataset,
            "data_root": self.data_root,
            "rows": [row.__dict__ for row in self.rows],
            "seconds": round(self.seconds, 1),
        }


def split_folder(root: Path, out: Path, parts: dict[str, float], seed: int = 0) -> dict[str, Path]:
    """Split a labeled folder (ROOT/<label>/*) into disjoint parts of links, class by class.

    The probe's protocol: train the GAN on one part (its labels unused), probe on another.
    `parts` maps a name to its fraction of each class; returns name -> OUT/name.
    """
    folders = sorted(path for path in root.iterdir() if path.is_dir())
    if not folders:
        raise EvalError(f"{root} has no class subfolders to split")
    rng = np.random.default_rng(seed)
    for folder in folders:
        files = sorted(path for path in folder.iterdir() if path.is_file())
        order = rng.permutation(len(files))
        start = 0
        for name, fraction in parts.items():
            count = round(fraction * len(files))
            target = out / name / folder.name
            target.mkdir(parents=True, exist_ok=True)
            for index in order[start : start + count]:
                (target / files[index].name).symlink_to(files[index].resolve())
            start += count
    return {name: out / name for name in parts}


def load_discriminator(path: Path) -> tuple[Discriminator, ModelConfig, Path, int]:
    """The trained D of a checkpoint (or a run directory's latest), in eval mode."""
    if not path.exists():
        raise EvalError(f"checkpoint not found: {path}")
    if path.is_dir() and (path / MANIFEST).exists():
        raise EvalError(NO_DISCRIMINATOR.format(what=f"the export directory {path}"))
    try:
        file = resolve_checkpoint(path).resolve()
        raw = load_file(file)
        if not isinstance(raw, dict) or raw.get("format") != FORMAT:
            raise EvalError(NO_DISCRIMINATOR.format(what=f"{file} (not a dcgan-train checkpoint)"))
        state = load_checkpoint(file)  # verifies the digest recorded at save time
    except CheckpointError as error:
        raise EvalError(str(error)) from None
    config = ModelConfig.from_dict(state["model_config"])
    discriminator = Discriminator(config)
    discriminator.load_state_dict(state["discriminator"])
    return discriminator.eval(), config, file, int(state["step"])


def random_discriminator(config: ModelConfig, seed: int) -> Discriminator:
    torch.manual_seed(seed)
    discriminator = Discriminator(config)
    discriminator.apply(init_weights)
    return discriminator.eval()


def discriminator_features(
    discriminator: Discriminator, images: torch.Tensor, batch_size: int = 256
) -> npt.NDArray[np.float32]:
    """uint8 images -> every conv layer's activations, max-pooled to 4 x 4, concatenated."""
    activations = [layer for layer in discriminator.main if isinstance(layer, nn.LeakyReLU)]
    captured: list[torch.Tensor] = []
    hooks = [
        layer.register_forward_hook(
            lambda _m, _i, output: captured.append(
                F.adaptive_max_pool2d(output, POOL_GRID).flatten(1)
            )
        )
        for layer in activations
    ]
    parts = []
    try:
        with torch.inference_mode():
            for batch in torch.split(images, batch_size):
                captured.clear()
                discriminator(batch.float().div(127.5).sub(1.0))
                parts.append(torch.cat(captured, dim=1))
    finally:
        for hook in hooks:
            hook.remove()
    result: npt.NDArray[np.float32] = torch.cat(parts).numpy()
    return result


def pixel_features(images: torch.Tensor) -> npt.NDArray[np.float32]:
    result: npt.NDArray[np.float32] = images.float().div(127.5).sub(1.0).flatten(1).numpy()
    return result


def split(
    labels: torch.Tensor, per_class: int, validation_per_class: int, seed: int
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """Indices: `per_class` a class to train, `validation_per_class` for C, the rest to test."""
    rng = np.random.default_rng(seed)
    train, validation, test = [], [], []
    values = labels.numpy()
    for label in np.unique(values):
        members = rng.permutation(np.flatnonzero(values == label))
        if len(members) < per_class + validation_per_class + 1:
            raise EvalError(
                f"class {label} has {len(members)} images, fewer than {per_class} to train + "
                f"{validation_per_class} to validate + 1 to test: lower --labels-per-class or "
                "--validation-per-class"
            )
        train.append(members[:per_class])
        validation.append(members[per_class : per_class + validation_per_class])
        test.append(members[per_class + validation_per_class :])
    return np.concatenate(train), np.concatenate(validation), np.concatenate(test)


def fit_linear_svm(
    features: npt.NDArray[np.float32],
    labels: npt.NDArray[np.int64],
    train: npt.NDArray[np.int64],
    validation: npt.NDArray[np.int64],
    test: npt.NDArray[np.int64],
) -> tuple[float, float, float]:
    """(C, validation accuracy, test accuracy) of the best LinearSVC over C_GRID."""
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import LinearSVC

    best: tuple[float, float, Any] | None = None
    for c in C_GRID:
        model = make_pipeline(StandardScaler(), LinearSVC(C=c, max_iter=5000, dual="auto"))
        model.fit(features[train], labels[train])
        accuracy = float(model.score(features[validation], labels[validation]))
        if best is None or accuracy > best[1]:
            best = (c, accuracy, model)
    assert best is not None
    c, validation_accuracy, model = best
    return c, validation_accuracy, float(model.score(features[test], labels[test]))


def probe(
    checkpoint: Path,
    dataset: str,
    data_root: Path | None,
    labels_per_class: list[int],
    validation_per_class: int = 100,
    seed: int = 0,
) -> ProbeResult:
    start = time.perf_counter()
    discriminator, config, file, step = load_discriminator(checkpoint)
    spec = DataSpec(dataset, data_root, config.image_size, config.channels, workers=0)
    data: Labeled = labeled_images(spec)
    labels = data.labels.numpy()
    feature_sets = {
        "dcgan-discriminator": discriminator_features(discriminator, data.images),
        "random-discriminator": discriminator_features(
            random_discriminator(config, seed), data.images
        ),
        "raw-pixels": pixel_features(data.images),
    }
    rows = []
    for per_class in labels_per_class:
        train, validation, test = split(data.labels, per_class, validation_per_class, seed)
        for name, features in feature_sets.items():
            c, validation_accuracy, test_accuracy = fit_linear_svm(
                features, labels, train, validation, test
            )
            rows.append(
                ProbeRow(
                    name,
                    features.shape[1],
                    per_class,
                    c,
                    validation_accuracy,
                    test_accuracy,
                    len(train),
                    len(test),
                )
            )
    return ProbeResult(
        str(file),
        step,
        dataset,
        str(data_root) if data_root else None,
        rows,
        time.perf_counter() - start,
    )
