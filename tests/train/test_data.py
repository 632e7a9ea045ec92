"""Training data on real MNIST PNGs: transforms, seeded order, rank shares, and bad data."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from dcgan.train.data import Batches, DataError, DataSpec, epoch_order, open_dataset

CPU = torch.device("cpu")


def spec(root: Path | None, dataset: str = "folder", size: int = 32, channels: int = 1) -> DataSpec:
    return DataSpec(dataset=dataset, root=root, image_size=size, channels=channels, workers=0)


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
    assert preloaded.images is not None and streamed.images is None
    for epoch in (0, 1):
        a, b = list(preloaded.epoch(epoch)), list(streamed.epoch(epoch))
        assert len(a) == len(b) == 8
        assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    # resuming mid-epoch gives the remaining batches
    tail = list(preloaded.epoch(1, start_batch=5))
    assert len(tail) == 3 and torch.equal(tail[0], a[5])


def test_ranks_split_each_global_batch(mnist_subset: Path) -> None:
    whole = list(Batches(spec(mnist_subset), 32, 1, CPU, 100).epoch(0))
    shares = [
        list(Batches(spec(mnist_subset), 32, 1, CPU, 100, rank=r, world_size=2).epoch(0))
        for r in (0, 1)
    ]
    for index, batch in enumerate(whole):
        assert torch.equal(torch.cat([shares[0][index], shares[1][index]]), batch)


@pytest.mark.parametrize("preload_limit_mb", [100, 0])
def test_an_unreadable_image_is_named(mnist_subset: Path, preload_limit_mb: float) -> None:
    bad = mnist_subset / "3" / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n this is not a png")
    with pytest.raises(DataError, match=r"cannot read image .*broken\.png"):
        batches = Batches(spec(mnist_subset), 32, 1, CPU, preload_limit_mb)
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
