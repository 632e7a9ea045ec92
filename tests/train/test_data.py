"""Training data on real MNIST PNGs: transforms, seeded order, rank shares, and bad data."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dcgan.train.data import (
    Batches,
    DataError,
    DataSpec,
    epoch_order,
    open_dataset,
    read_idx_images,
)

CPU = torch.device("cpu")


def spec(
    root: Path | None,
    dataset: str = "folder",
    size: int = 32,
    channels: int = 1,
    split: str = "train",
) -> DataSpec:
    return DataSpec(
        dataset=dataset, root=root, image_size=size, channels=channels, workers=0, split=split
    )


@pytest.mark.parametrize(("size", "channels"), [(32, 1), (64, 3), (128, 1)])
def test_folder_images_are_resized_and_converted(
    mnist_subset: Path, size: int, channels: int
) -> None:
    dataset = open_dataset(spec(mnist_subset, size=size, channels=channels))
    assert len(dataset) == 256  # type: ignore[arg-type]
    image = dataset[0]
    assert isinstance(image, torch.Tensor)
    assert image.shape == (channels, size, size) and image.dtype == torch.uint8
    assert image.max() > 200 and image.min() == 0  # white digit on black, as MNIST
    if channels == 3:
        assert torch.equal(image[0], image[1])


def test_a_flat_folder_without_class_subfolders_works(mnist_subset: Path, tmp_path: Path) -> None:
    flat = tmp_path / "flat"
    flat.mkdir()
    for index, file in enumerate(sorted(mnist_subset.glob("*/*.png"))[:20]):
        (flat / f"{index}.png").write_bytes(file.read_bytes())
    assert len(open_dataset(spec(flat))) == 20  # type: ignore[arg-type]


def test_embedded_digits_are_real_handwriting() -> None:
    dataset = open_dataset(spec(None, dataset="digits"))
    assert len(dataset) == 1797  # type: ignore[arg-type]
    image = dataset[0]
    assert isinstance(image, torch.Tensor) and image.shape == (1, 32, 32)
    assert image.float().std() > 40  # strokes, not a flat image


def test_epoch_order_is_seeded_and_a_permutation() -> None:
    first = epoch_order(100, seed=3, epoch=0)
    assert torch.equal(first, epoch_order(100, seed=3, epoch=0))
    assert not torch.equal(first, epoch_order(100, seed=3, epoch=1))
    assert sorted(first.tolist()) == list(range(100))


def test_preloaded_and_streamed_batches_are_identical(mnist_subset: Path) -> None:
    preloaded = Batches(spec(mnist_subset), 32, seed=1, device=CPU, preload_limit_mb=100)
    streamed = Batches(spec(mnist_subset), 32, seed=1, device=CPU, preload_limit_mb=0)
    assert preloaded.images is None  # opened, not decoded: until preload()
    preloaded.preload()
    streamed.preload()
    assert preloaded.images is not None and streamed.images is None
    for epoch in (0, 1):
        a, b = list(preloaded.epoch(epoch)), list(streamed.epoch(epoch))
        assert len(a) == len(b) == 8
        assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    # resuming mid-epoch gives the remaining batches
    tail = list(preloaded.epoch(1, start_batch=5))
    assert len(tail) == 3 and torch.equal(tail[0], a[5])


def preloaded_batches(data: Path, rank: int = 0, world_size: int = 1) -> Batches:
    batches = Batches(spec(data), 32, 1, CPU, 100, rank=rank, world_size=world_size)
    batches.preload()
    return batches


def test_ranks_split_each_global_batch(mnist_subset: Path) -> None:
    whole = list(preloaded_batches(mnist_subset).epoch(0))
    shares = [list(preloaded_batches(mnist_subset, rank=r, world_size=2).epoch(0)) for r in (0, 1)]
    for index, batch in enumerate(whole):
        assert torch.equal(torch.cat([shares[0][index], shares[1][index]]), batch)


@pytest.mark.parametrize("preload_limit_mb", [100, 0])
def test_an_unreadable_image_is_named(mnist_subset: Path, preload_limit_mb: float) -> None:
    bad = mnist_subset / "3" / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n this is not a png")
    with pytest.raises(DataError, match=r"cannot read image .*broken\.png"):
        batches = Batches(spec(mnist_subset), 32, 1, CPU, preload_limit_mb)
        batches.preload()
        for _ in batches.epoch(0):
            pass


def test_missing_empty_and_too_small_data(tmp_path: Path, mnist_subset: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        open_dataset(spec(tmp_path / "nowhere"))
    (tmp_path / "empty" / "class").mkdir(parents=True)
    with pytest.raises(DataError, match="no images found under"):
        open_dataset(spec(tmp_path / "empty"))
    with pytest.raises(DataError, match="--data-root is required"):
        open_dataset(spec(None))
    with pytest.raises(DataError, match="fewer than one batch of 512"):
        Batches(spec(mnist_subset), 512, 1, CPU, 100)


def test_missing_torchvision_data_says_where_it_looked(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"mnist not found under .*MNIST.*--download"):
        open_dataset(spec(tmp_path, dataset="mnist"))
    with pytest.raises(DataError, match=r"cifar10 not found under .*cifar-10-batches-py"):
        open_dataset(spec(tmp_path, dataset="cifar10", channels=3))


@pytest.fixture
def mnist_files(mnist_png: Path) -> Path:
    """The folder of MNIST's t10k IDX files (beside png/)."""
    return mnist_png.parent


def t10k_only(mnist_files: Path, root: Path) -> Path:
    """A data root holding MNIST's test files alone, as ../shared/data/mnist-test does."""
    root.mkdir(parents=True, exist_ok=True)
    for name in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        shutil.copy(mnist_files / name, root / name)
    return root


def test_the_test_split_reads_mnist_t10k_files_as_the_pngs_show_them(
    mnist_files: Path, tmp_path: Path
) -> None:
    images = read_idx_images(mnist_files / "t10k-images-idx3-ubyte.gz")
    assert images.shape == (10_000, 28, 28) and images.dtype == torch.uint8
    for index in (0, 1, 4321, 9999):  # png/<label>/<index>.png are the same images
        (png,) = (mnist_files / "png").glob(f"*/{index:05d}.png")
        assert torch.equal(images[index], torch.from_numpy(np.array(Image.open(png))))
    # gzipped at the root, or unpacked in torchvision's ROOT/MNIST/raw: the same images
    raw = tmp_path / "tv" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    (raw / "t10k-images-idx3-ubyte").write_bytes(
        gzip.decompress((mnist_files / "t10k-images-idx3-ubyte.gz").read_bytes())
    )
    for root in (t10k_only(mnist_files, tmp_path / "gz"), tmp_path / "tv"):
        dataset = open_dataset(spec(root, dataset="mnist", size=32, split="test"))
        assert len(dataset) == 10_000  # type: ignore[arg-type]
        image = dataset[0]
        assert isinstance(image, torch.Tensor) and image.shape == (1, 32, 32)


@pytest.mark.parametrize("dataset", ["mnist", "fashion-mnist"])
def test_a_missing_training_split_names_its_files_and_offers_the_test_split(
    mnist_files: Path, tmp_path: Path, dataset: str
) -> None:
    root = t10k_only(mnist_files, tmp_path / "data")
    with pytest.raises(DataError) as raised:
        open_dataset(spec(root, dataset=dataset))
    message = str(raised.value)
    assert f"{dataset} not found under {root}" in message
    assert "--split train needs train-images-idx3-ubyte (or .gz)" in message
    assert "the test split is there: --split test trains on it" in message
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="t10k-images-idx3-ubyte") as raised:
        open_dataset(spec(empty, dataset=dataset, split="test"))
    assert "split is there" not in str(raised.value)


def test_cifar10_names_the_batch_files_of_each_split(tmp_path: Path) -> None:
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    (folder / "test_batch").write_bytes(b"stands in for the real batch")
    with pytest.raises(DataError) as raised:
        open_dataset(spec(tmp_path, dataset="cifar10", channels=3))
    message = str(raised.value)
    assert f"--split train needs data_batch_1 to data_batch_5 and batches.meta in {folder}" in (
        message
    )
    assert "--split test trains on it" in message
    with pytest.raises(DataError, match=r"--split test needs test_batch and batches\.meta"):
        open_dataset(spec(tmp_path, dataset="cifar10", channels=3, split="test"))


def test_a_damaged_idx_file_is_named(mnist_files: Path, tmp_path: Path) -> None:
    data = gzip.decompress((mnist_files / "t10k-images-idx3-ubyte.gz").read_bytes())
    (tmp_path / "t10k-images-idx3-ubyte").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=r"t10k-images-idx3-ubyte is truncated or damaged"):
        open_dataset(spec(tmp_path, dataset="mnist", split="test"))
    (tmp_path / "t10k-images-idx3-ubyte").write_bytes(b"plain text, not IDX")
    with pytest.raises(DataError, match="is not an IDX image file"):
        open_dataset(spec(tmp_path, dataset="mnist", split="test"))
    (tmp_path / "t10k-images-idx3-ubyte").unlink()
    (tmp_path / "t10k-images-idx3-ubyte.gz").write_bytes(data[:100])  # not gzip at all
    with pytest.raises(DataError, match=r"cannot read .*t10k-images-idx3-ubyte\.gz"):
        open_dataset(spec(tmp_path, dataset="mnist", split="test"))
