"""Training data: torchvision data sets decoded once into uint8 tensors, served in a seeded order.

Every data set goes through the same transform (resize, center-crop, convert to the model's
channels, uint8 CHW). A data set that fits `preload_limit_mb` is decoded once and held as one
tensor on the training device, so no data loader runs during training; a larger one streams
through a DataLoader in the same order. The order of epoch e is a permutation seeded by
(seed, e), so the data position saved in a checkpoint is just (epoch, batch).
"""

from __future__ import annotations

import gzip
import os
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torchvision.transforms.v2 as T
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import datasets
from torchvision.datasets.utils import check_integrity

NATIVE_CHANNELS = {"digits": 1, "mnist": 1, "fashion-mnist": 1, "cifar10": 3, "fake": 3}
FAKE_DATASET_SIZE = 1024
SPLIT_DATASETS = ("mnist", "fashion-mnist", "cifar10")  # the data sets that have a --split
# MNIST and Fashion-MNIST: the IDX image file of each split, plain or gzipped.
IDX_IMAGES = {"train": "train-images-idx3-ubyte", "test": "t10k-images-idx3-ubyte"}
IDX_UBYTE_3D = 0x00000803  # the magic number of an IDX file of unsigned bytes in 3 dimensions


class DataError(Exception):
    """Data that is missing, empty, unreadable or too small for the batch."""


@dataclass(frozen=True)
class DataSpec:
    dataset: str  # a dcgan.train.config.Dataset value
    root: Path | None  # where the data set lives (required for folder)
    image_size: int
    channels: int
    download: bool = False  # let torchvision fetch mnist / fashion-mnist / cifar10
    workers: int = 2  # decoding processes for preloading and streaming
    split: str = "train"  # mnist / fashion-mnist / cifar10: "train" or "test"


@dataclass(frozen=True)
class _Unreadable:
    """Stands in for an image that failed to decode, so the main process can name it."""

    path: str
    reason: str


# ----------------------------------------------------------------------------- data sets


class _ImageTree(datasets.ImageFolder):  # type: ignore[misc]
    """Every image under a root, in class subfolders or not: a GAN needs no labels."""

    def find_classes(self, directory: str | Path) -> tuple[list[str], dict[str, int]]:
        return ["."], {".": 0}


class _Digits(Dataset[tuple[Image.Image, int]]):
    """The 1,797 8x8 handwritten digits that scikit-learn ships: real images, offline."""

    def __init__(self) -> None:
        from sklearn.datasets import load_digits

        digits = load_digits()
        # 17 grey levels (0..16) of white ink on black, as MNIST.
        self.images = (torch.from_numpy(digits.images) * (255 / 16)).round().to(torch.uint8)
        self.targets = digits.target.tolist()

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[Image.Image, int]:
        return Image.fromarray(self.images[index].numpy(), mode="L"), self.targets[index]


class _Decoded(Dataset[torch.Tensor | _Unreadable]):
    """Applies the training transform, turning a decoding failure into an `_Unreadable`."""

    def __init__(self, source: Any, transform: T.Compose) -> None:
        self.source = source
        self.transform = transform

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index: int) -> torch.Tensor | _Unreadable:
        try:
            image, _ = self.source[index]
            result: torch.Tensor = self.transform(image)
            return result
        except (OSError, ValueError, SyntaxError) as error:  # what PIL raises on a bad file
            samples = getattr(self.source, "samples", None)
            where = samples[index][0] if samples else f"item {index}"
            return _Unreadable(str(where), str(error).splitlines()[0] if str(error) else "")


def _collate(items: Sequence[torch.Tensor | _Unreadable]) -> torch.Tensor | _Unreadable:
    for item in items:
        if isinstance(item, _Unreadable):
            return item
    return torch.stack(items)  # type: ignore[arg-type]


class _IdxImages(Dataset[tuple[Image.Image, int]]):
    """The images of an IDX file (MNIST's and Fashion-MNIST's format), as torchvision reads them."""

    def __init__(self, path: Path) -> None:
        self.images = read_idx_images(path)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[Image.Image, int]:
        return Image.fromarray(self.images[index].numpy(), mode="L"), 0


def read_idx_images(path: Path) -> torch.Tensor:
    """uint8 [N, H, W] from an IDX image file, gzipped (.gz) or not; a damaged one is named."""
    try:
        raw = path.read_bytes()
        if path.suffix == ".gz":
            raw = gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as error:  # gzip.BadGzipFile is an OSError
        raise DataError(f"cannot read {path}: {error}") from None
    if len(raw) < 16 or int.from_bytes(raw[:4], "big") != IDX_UBYTE_3D:
        raise DataError(f"{path} is not an IDX image file (the format of MNIST's files)")
    count, height, width = (int.from_bytes(raw[4 * i : 4 * i + 4], "big") for i in (1, 2, 3))
    if len(raw) != 16 + count * height * width:
        raise DataError(
            f"{path} is truncated or damaged: its header announces {count} images of "
            f"{height}x{width}, and it holds {len(raw) - 16} bytes of pixels"
        )
    return torch.frombuffer(bytearray(raw), dtype=torch.uint8, offset=16).view(count, height, width)


class _Cifar10(datasets.CIFAR10):  # type: ignore[misc]
    """torchvision's CIFAR-10 asking only for the files of the split it reads (and the meta)."""

    def _check_integrity(self) -> bool:
        files = self.train_list if self.train else self.test_list
        return all(
            check_integrity(os.path.join(self.root, self.base_folder, name), md5)
            for name, md5 in files
        )


_IDX_FOLDERS = {"mnist": "MNIST", "fashion-mnist": "FashionMNIST"}  # torchvision's layout
_CIFAR_FOLDER = "cifar-10-batches-py"
_CIFAR_FILES = {"train": "data_batch_1 to data_batch_5", "test": "test_batch"}


def _idx_file(root: Path, dataset: str, split: str) -> Path | None:
    """The IDX images of `split`: in torchvision's ROOT/MNIST/raw, or in ROOT itself."""
    for directory in (root / _IDX_FOLDERS[dataset] / "raw", root):
        for name in (IDX_IMAGES[split], IDX_IMAGES[split] + ".gz"):
            if (directory / name).is_file():
                return directory / name
    return None


def _cifar_split_present(root: Path, split: str) -> bool:
    files = datasets.CIFAR10.train_list if split == "train" else datasets.CIFAR10.test_list
    return all((root / _CIFAR_FOLDER / name).is_file() for name, _ in files)


def _not_found(spec: DataSpec, root: Path) -> DataError:
    """What `spec` needs under `root`, and the other split when that one is there."""
    other = "test" if spec.split == "train" else "train"
    if spec.dataset == "cifar10":
        needs = f"{_CIFAR_FILES[spec.split]} and batches.meta in {root / _CIFAR_FOLDER}"
        other_present = _cifar_split_present(root, other)
    else:
        folder = root / _IDX_FOLDERS[spec.dataset] / "raw"
        needs = f"{IDX_IMAGES[spec.split]} (or .gz) in {folder} or in {root}"
        other_present = _idx_file(root, spec.dataset, other) is not None
    hint = f"; the {other} split is there: --split {other} trains on it" if other_present else ""
    return DataError(
        f"{spec.dataset} not found under {root}: --split {spec.split} needs {needs}{hint}; "
        "or pass --download to fetch it there"
    )


def _source(spec: DataSpec) -> Any:
    """The raw data set of `spec`, or a DataError saying what is missing."""
    if spec.dataset == "digits":
        return _Digits()
    if spec.dataset == "fake":
        size = (spec.channels, spec.image_size, spec.image_size)
        return datasets.FakeData(size=FAKE_DATASET_SIZE, image_size=size, random_offset=0)
    if spec.root is None:
        raise DataError(f"--data-root is required for --dataset {spec.dataset}")
    root = spec.root.expanduser()
    if spec.dataset == "folder":
        if not root.is_dir():
            raise DataError(f"data root {root} does not exist or is not a directory")
        try:
            return _ImageTree(str(root))
        except FileNotFoundError:
            raise DataError(
                f"no images found under {root} (looked recursively for "
                f"{', '.join(datasets.folder.IMG_EXTENSIONS)})"
            ) from None
    train = spec.split == "train"
    try:
        if spec.dataset == "cifar10":
            return _Cifar10(str(root), train=train, download=spec.download)
        if spec.download:
            cls = datasets.MNIST if spec.dataset == "mnist" else datasets.FashionMNIST
            cls(str(root), train=train, download=True)  # into ROOT/MNIST/raw, read below
    except RuntimeError:
        raise _not_found(spec, root) from None
    except OSError as error:  # network failures while downloading
        raise DataError(f"could not download {spec.dataset} into {root}: {error}") from None
    path = _idx_file(root, spec.dataset, spec.split)
    if path is None:
        raise _not_found(spec, root)
    return _IdxImages(path)


class _ConvertMode:
    """PIL mode conversion as a picklable transform (grayscale <-> RGB to match the model)."""

    def __init__(self, mode: str) -> None:
        self.mode = mode

    def __call__(self, image: Image.Image) -> Image.Image:
        return image.convert(self.mode)


def _transform(spec: DataSpec) -> T.Compose:
    return T.Compose(
        [
            _ConvertMode("L" if spec.channels == 1 else "RGB"),
            T.Resize(spec.image_size, antialias=True),
            T.CenterCrop(spec.image_size),
            T.PILToTensor(),
        ]
    )


def native_channels(dataset: str, root: Path | None) -> int:
    """The data set's own channel count: 1 for grayscale, 3 for colour (a folder's first image)."""
    if dataset != "folder":
        return NATIVE_CHANNELS[dataset]
    source = _source(DataSpec(dataset, root, image_size=32, channels=3))
    path = source.samples[0][0]
    try:
        with Image.open(path) as image:
            return 1 if image.mode in ("1", "L", "LA", "I", "I;16", "F") else 3
    except (OSError, ValueError, SyntaxError) as error:
        raise DataError(f"cannot read image {path}: {error}") from None


def open_dataset(spec: DataSpec) -> Dataset[torch.Tensor | _Unreadable]:
    """The data set of `spec`, yielding uint8 [channels, size, size] tensors."""
    return _Decoded(_source(spec), _transform(spec))


def _decode_batches(loader: DataLoader[Any]) -> Iterator[torch.Tensor]:
    for batch in loader:
        if isinstance(batch, _Unreadable):
            raise DataError(f"cannot read image {batch.path}: {batch.reason}")
        yield batch


def image_count_limit(spec: DataSpec, preload_limit_mb: float) -> int:
    return int(preload_limit_mb * 2**20) // (spec.channels * spec.image_size**2)


# ----------------------------------------------------------------------------- batches


def epoch_order(size: int, seed: int, epoch: int) -> torch.Tensor:
    """The permutation of epoch `epoch`: the same on every rank, after every resume."""
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(size, generator=generator)


class Batches:
    """uint8 batches of one rank's share of each global batch, in the seeded epoch order.

    Streamed through a DataLoader, or served from memory after `preload()`.

    Incomplete final batches are dropped: every step sees exactly `batch_size` images
    (split evenly across `world_size` ranks), which keeps BatchNorm and compiled graphs steady.
    """

    def __init__(
        self,
        spec: DataSpec,
        batch_size: int,
        seed: int,
        device: torch.device,
        preload_limit_mb: float,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        self.dataset = open_dataset(spec)
        self.size = len(self.dataset)  # type: ignore[arg-type]
        if self.size == 0:
            raise DataError(f"the {spec.dataset} data set under {spec.root} holds no images")
        if self.size < batch_size:
            raise DataError(
                f"the {spec.dataset} data set holds {self.size} images, fewer than one batch "
                f"of {batch_size}: lower --batch-size"
            )
        self.spec = spec
        self.batch_size = batch_size
        self.seed = seed
        self.device = device
        self.rank = rank
        self.world_size = world_size
        self.per_rank = batch_size // world_size
        self.batches_per_epoch = self.size // batch_size
        self.preload_limit_mb = preload_limit_mb
        self.images: torch.Tensor | None = None  # the whole data set once preloaded

    def preload(self) -> None:
        """Decode the data set onto the device when it fits `preload_limit_mb`; else stream it.

        Apart from the constructor, which only opens the data set, so that a run can learn its
        size (and whether it has anything to do) before decoding every image.
        """
        if self.images is None and self.size <= image_count_limit(self.spec, self.preload_limit_mb):
            self.images = self._decode_all()

    def _loader(self, batch_sampler: Any) -> DataLoader[Any]:
        return DataLoader(
            self.dataset,
            batch_sampler=batch_sampler,
            num_workers=self.spec.workers,
            collate_fn=_collate,
            pin_memory=self.device.type == "cuda",
            persistent_workers=False,
        )

    def _decode_all(self) -> torch.Tensor:
        chunks = [
            list(range(start, min(start + 256, self.size))) for start in range(0, self.size, 256)
        ]
        images = torch.cat(list(_decode_batches(self._loader(chunks))))
        return images.to(self.device)

    def _rank_indices(self, order: torch.Tensor, batch: int) -> torch.Tensor:
        start = batch * self.batch_size + self.rank * self.per_rank
        return order[start : start + self.per_rank]

    def epoch(self, epoch: int, start_batch: int = 0) -> Iterator[torch.Tensor]:
        """This rank's batches of `epoch`, from batch `start_batch` on, on the device."""
        order = epoch_order(self.size, self.seed, epoch)
        batches = range(start_batch, self.batches_per_epoch)
        if self.images is not None:
            for batch in batches:
                yield self.images[self._rank_indices(order, batch).to(self.images.device)]
            return
        plan = [self._rank_indices(order, batch).tolist() for batch in batches]
        for images in _decode_batches(self._loader(plan)):
            yield images.to(self.device, non_blocking=True)

    def first_images(self, count: int) -> torch.Tensor:
        """The first `count` images of epoch 0 on the CPU, for the grid of real images."""
        order = epoch_order(self.size, self.seed, 0)[: min(count, self.size)]
        if self.images is not None:
            return self.images[order.to(self.images.device)].cpu()
        return torch.cat(list(_decode_batches(self._loader([order.tolist()]))))


def to_model_range(images: torch.Tensor, memory_format: torch.memory_format) -> torch.Tensor:
    """uint8 [0, 255] -> float [-1, 1], the range of the generator's Tanh."""
    return images.to(memory_format=memory_format).float().div_(127.5).sub_(1.0)
