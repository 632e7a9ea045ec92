"""Real images for evaluation, decoded exactly as training decodes them, and their fingerprint.

Images come from `dcgan.train.data.open_dataset`: the same resize, crop and channel conversion
the generator was trained on, so a distance measures the generator, not a preprocessing gap.
Labels (for the digits classifier and the probe) come from the data set itself: class
subfolders for `folder`, the torchvision or scikit-learn targets otherwise.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, Subset
from torchvision import datasets

from dcgan.eval.errors import EvalError
from dcgan.train.data import DataError, DataSpec, open_dataset

_TORCHVISION = {
    "mnist": datasets.MNIST,
    "fashion-mnist": datasets.FashionMNIST,
    "cifar10": datasets.CIFAR10,
}


@dataclass(frozen=True)
class Labeled:
    images: torch.Tensor  # uint8 [N, C, S, S]
    labels: torch.Tensor  # int64 [N]
    classes: list[str]


def _stack(items: Sequence[Any]) -> Any:
    """Stack decoded images; hand an unreadable one back whole so the caller can name it."""
    for item in items:
        if not isinstance(item, torch.Tensor):
            return item
    return torch.stack(list(items))


def decode(
    dataset: Dataset[Any], indices: Sequence[int] | None = None, workers: int = 0
) -> torch.Tensor:
    """Every image of `dataset` (or those at `indices`) as one uint8 tensor [N, C, S, S]."""
    subset = dataset if indices is None else Subset(dataset, list(indices))
    loader = DataLoader(subset, batch_size=256, num_workers=workers, collate_fn=_stack)
    batches = []
    for batch in loader:
        if not isinstance(batch, torch.Tensor):
            raise EvalError(f"cannot read image {batch.path}: {batch.reason}")
        batches.append(batch)
    if not batches:
        raise EvalError("the data set holds no images")
    return torch.cat(batches)


def open_images(spec: DataSpec) -> Dataset[Any]:
    """The data set of `spec` as training sees it, or an EvalError saying what is missing."""
    try:
        dataset = open_dataset(spec)
    except DataError as error:
        raise EvalError(str(error)) from None
    if len(dataset) == 0:  # type: ignore[arg-type]
        raise EvalError(f"the {spec.dataset} data set under {spec.root} holds no images")
    return dataset


def real_images(spec: DataSpec, limit: int | None = None, seed: int = 0) -> torch.Tensor:
    """All images of `spec`, or `limit` of them drawn without replacement by `seed`."""
    dataset = open_images(spec)
    size = len(dataset)  # type: ignore[arg-type]
    indices = None
    if limit is not None and limit < size:
        order = torch.randperm(size, generator=torch.Generator().manual_seed(seed))
        indices = sorted(order[:limit].tolist())
    return decode(dataset, indices, spec.workers)


def labeled_images(spec: DataSpec) -> Labeled:
    """The images of `spec` with their class labels."""
    if spec.dataset == "folder":
        return _labeled_folder(spec)
    images = decode(open_images(spec), workers=spec.workers)
    if spec.dataset == "digits":
        from sklearn.datasets import load_digits

        digits = load_digits()
        labels, classes = (
            torch.as_tensor(digits.target),
            [str(name) for name in digits.target_names],
        )
    else:
        try:
            source = _TORCHVISION[spec.dataset](str(spec.root), train=spec.split == "train")
        except RuntimeError:
            raise EvalError(
                f"the labels of {spec.dataset} are read in torchvision's layout under "
                f"{spec.root}, and it is not there; or use --dataset folder with class subfolders"
            ) from None
        labels, classes = torch.as_tensor(source.targets), list(source.classes)
    return Labeled(images, labels.long(), classes)


def _labeled_folder(spec: DataSpec) -> Labeled:
    if spec.root is None:
        raise EvalError("--data-root is required for --dataset folder")
    root = spec.root.expanduser()
    if not root.is_dir():
        raise EvalError(f"data root {root} does not exist or is not a directory")
    folders = sorted(path for path in root.iterdir() if path.is_dir())
    if len(folders) < 2:
        raise EvalError(
            f"labels are needed, and {root} has {len(folders)} class subfolder(s): put each "
            "class's images in a folder of its own (ROOT/<label>/*.png)"
        )
    images, labels = [], []
    for label, folder in enumerate(folders):
        part = decode(
            open_images(
                DataSpec("folder", folder, spec.image_size, spec.channels, workers=spec.workers)
            ),
            workers=spec.workers,
        )
        images.append(part)
        labels.append(torch.full((len(part),), label, dtype=torch.long))
    return Labeled(torch.cat(images), torch.cat(labels), [folder.name for folder in folders])


def fingerprint(spec: DataSpec) -> str:
    """sha256 of the data set's files (their names and bytes): changes when the data changes."""
    digest = hashlib.sha256(f"{spec.dataset}\n".encode())
    if spec.dataset == "digits":
        from sklearn.datasets import load_digits

        digest.update(load_digits().images.tobytes())
        return digest.hexdigest()
    if spec.root is None:
        raise EvalError(f"--data-root is required for --dataset {spec.dataset}")
    root = spec.root.expanduser()
    # A torchvision data set's files may lie in ROOT/<its folder> or in ROOT itself: all of ROOT.
    files = sorted(path for path in root.rglob("*") if path.is_file()) if root.is_dir() else []
    if spec.dataset == "folder":
        files = [path for path in files if path.suffix.lower() in datasets.folder.IMG_EXTENSIONS]
    if not files:
        found = "no images found" if spec.dataset == "folder" else f"{spec.dataset} not found"
        raise EvalError(f"{found} under {root}")
    for path in files:
        digest.update(f"{path.relative_to(root)}\n".encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()
