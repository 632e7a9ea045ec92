"""The digits feature network: a LeNet-style classifier trained on the domain it measures.

For MNIST-like digits the field measures the distance in the features of a classifier trained
on the digits themselves (TF-GAN's mnist_frechet_distance and mnist_score, the "Frechet LeNet
distance"), not in Inception's. `train_classifier` fits one in seconds to minutes on a CPU and
reports its accuracy on a held-out part of the data; its penultimate layer (128 ReLU units)
gives the features and its logits the classifier score.

The file is a `torch.save` dict of plain tensors and numbers, sealed with the same sha256
digest as training checkpoints and loaded with `weights_only=True`.
"""

from __future__ import annotations

import io
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from dcgan.contract.manifest import file_sha256
from dcgan.eval.data import fingerprint, labeled_images
from dcgan.eval.errors import EvalError
from dcgan.eval.features import DigitsFeatures, NetworkInfo
from dcgan.train.checkpoint import CheckpointError, load_file, state_digest, write_atomic
from dcgan.train.data import DataSpec

FORMAT = "dcgan-serving/digits-classifier"
VERSION = 1
INPUT_SIZE = 32  # LeNet's input: MNIST's 28x28 digits in a 32x32 frame
FEATURE_DIMS = 128
TRAIN_HELP = "train one with: dcgan-eval train-classifier --dataset ... --data-root ... --out FILE"


class DigitsClassifier(nn.Module):
    """1 x 32 x 32 in [-1, 1] -> logits over the classes; `features` is the penultimate layer."""

    def __init__(self, classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, 5, padding=2),
            nn.ReLU(),
            nn.MaxPool2d(2),  # state size. 16 x 16 x 16
            nn.Conv2d(16, 32, 5, padding=2),
            nn.ReLU(),
            nn.MaxPool2d(2),  # state size. 32 x 8 x 8
            nn.Flatten(),
            nn.Linear(32 * 8 * 8, FEATURE_DIMS),
            nn.ReLU(),  # state size. 128: the features of the distance
        )
        self.head = nn.Linear(FEATURE_DIMS, classes)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        logits: torch.Tensor = self.head(self.features(images))
        return logits


@dataclass(frozen=True)
class ClassifierReport:
    path: Path
    dataset: str
    classes: list[str]
    trained_on: int  # images
    held_out: int  # images the accuracy is measured on
    accuracy: float  # on the held-out images
    epochs: int
    seconds: float

    def describe(self) -> str:
        return (
            f"digits classifier {self.path}: held-out accuracy {self.accuracy:.2%} on "
            f"{self.held_out} {self.dataset} images ({self.trained_on} trained on, "
            f"{self.epochs} epochs, {self.seconds:.1f} s)"
        )


def _shifted(images: torch.Tensor, generator: torch.Generator, pixels: int = 2) -> torch.Tensor:
    """Each image moved by up to `pixels` in x and y: the augmentation that lifts LeNet on MNIST."""
    count = images.shape[0]
    shift = (torch.randint(-pixels, pixels + 1, (count, 2), generator=generator).float()) * (
        2 / images.shape[-1]
    )
    theta = torch.zeros(count, 2, 3)
    theta[:, 0, 0] = theta[:, 1, 1] = 1.0
    theta[:, :, 2] = shift
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, padding_mode="border", align_corners=False)


def to_input(images: torch.Tensor) -> torch.Tensor:
    """uint8 [N, 1, 32, 32] -> float in [-1, 1]."""
    return images.float().div(127.5).sub(1.0)


def train_classifier(
    spec: DataSpec,
    out: Path,
    epochs: int = 10,
    held_out_fraction: float = 0.1,
    seed: int = 0,
    batch_size: int = 128,
) -> ClassifierReport:
    """Fit a DigitsClassifier on the labeled images of `spec`, measure it, write it to `out`."""
    start = time.perf_counter()
    spec = replace(spec, image_size=INPUT_SIZE, channels=1)  # LeNet's input, whatever was given
    data = labeled_images(spec)
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(data.labels), generator=generator)
    held = max(1, int(len(order) * held_out_fraction))
    test_index, train_index = order[:held], order[held:]
    train_x, train_y = to_input(data.images[train_index]), data.labels[train_index]
    model = DigitsClassifier(len(data.classes))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=3e-3, total_steps=epochs * -(-len(train_y) // batch_size)
    )
    model.train()
    for _ in range(epochs):
        for batch in torch.split(torch.randperm(len(train_y), generator=generator), batch_size):
            loss = F.cross_entropy(model(_shifted(train_x[batch], generator)), train_y[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()  # type: ignore[no-untyped-call]
            optimizer.step()
            schedule.step()
    model.eval()
    with torch.inference_mode():
        predicted = torch.cat(
            [
                model(to_input(batch)).argmax(1)
                for batch in torch.split(data.images[test_index], 512)
            ]
        )
    accuracy = float((predicted == data.labels[test_index]).float().mean())
    state: dict[str, Any] = {
        "format": FORMAT,
        "version": VERSION,
        "model": model.state_dict(),
        "classes": data.classes,
        "input_size": INPUT_SIZE,
        "dataset": spec.dataset,
        "data_fingerprint": fingerprint(spec),
        "accuracy": accuracy,
        "held_out": int(held),
        "trained_on": len(train_y),
        "epochs": epochs,
        "seed": seed,
    }
    state["integrity"] = {"algorithm": "sha256", "digest": state_digest(state)}
    buffer = io.BytesIO()
    torch.save(state, buffer)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(out, lambda handle: handle.write(buffer.getbuffer()))
    except OSError as error:
        raise EvalError(f"cannot write {out}: {error.strerror or error}") from None
    return ClassifierReport(
        out, spec.dataset, data.classes, len(train_y), int(held), accuracy, epochs,
        time.perf_counter() - start,
    )  # fmt: skip


def load_classifier(path: Path) -> DigitsFeatures:
    """The classifier in `path` as a feature network, after checking it is one of ours, intact."""
    if not path.is_file():
        raise EvalError(f"digits classifier not found: {path} (--classifier); {TRAIN_HELP}")
    try:
        state = load_file(path)
    except CheckpointError as error:
        raise EvalError(f"{error}; {TRAIN_HELP}") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise EvalError(f"{path} is not a digits classifier of dcgan-eval; {TRAIN_HELP}")
    integrity = state.get("integrity")
    if not isinstance(integrity, dict) or integrity.get("digest") != state_digest(state):
        raise EvalError(
            f"{path} is corrupted or was modified: its contents do not match the sha256 "
            f"recorded when it was saved; {TRAIN_HELP}"
        )
    model = DigitsClassifier(len(state["classes"]))
    model.load_state_dict(state["model"])
    info = NetworkInfo(
        kind="digits-classifier",
        description=(
            f"digits classifier (LeNet-style, trained on {state['dataset']}, held-out accuracy "
            f"{state['accuracy']:.2%}), penultimate {FEATURE_DIMS} features"
        ),
        weights=str(path.resolve()),
        weights_sha256=file_sha256(path),
        dims=FEATURE_DIMS,
        input_channels=1,
        input_size=int(state["input_size"]),
    )
    return DigitsFeatures(model, info)
