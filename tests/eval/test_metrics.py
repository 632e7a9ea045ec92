"""The metrics on real images: zero against themselves, growing as the images are damaged."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
import torchvision.transforms.v2.functional as TF

from dcgan.eval.classifier import ClassifierReport, load_classifier
from dcgan.eval.data import real_images
from dcgan.eval.features import FeatureNetwork, inception_network
from dcgan.eval.metrics import compute_metrics
from dcgan.eval.reference import load_reference
from dcgan.train.data import DataSpec
from tests.support.data import copy_mnist_subset
from tests.support.models import inception_torchscript


def blurred(images: torch.Tensor, sigma: float) -> torch.Tensor:
    if sigma == 0:
        return images
    return TF.gaussian_blur(images, kernel_size=9, sigma=sigma)


def noised(images: torch.Tensor, std: float, seed: int = 0) -> torch.Tensor:
    noise = torch.randn(images.shape, generator=torch.Generator().manual_seed(seed)) * std
    return (images.float() + noise).round().clamp(0, 255).to(torch.uint8)


def distances(
    network: FeatureNetwork, real: torch.Tensor, damaged: list[torch.Tensor]
) -> list[float]:
    reference = network.extract(real)
    return [
        compute_metrics(network.extract(images), reference, network, ["fid"]).values["fid"]
        for images in damaged
    ]


def test_the_real_set_against_itself_is_zero_and_against_a_disjoint_half_is_small(
    classifier: ClassifierReport, mnist_png: Path
) -> None:
    network = load_classifier(classifier.path)
    images = real_images(DataSpec("folder", mnist_png, 32, 1))
    first, second = images[::2], images[1::2]
    itself = compute_metrics(
        network.extract(first), network.extract(first), network, ["fid", "prc"]
    )
    assert abs(itself.values["fid"]) < 1e-6
    assert itself.values["precision"] == itself.values["recall"] == 1.0
    reference = network.extract(first)
    halves = compute_metrics(network.extract(second), reference, network, ["fid", "kid"])
    noisy = compute_metrics(
        network.extract(noised(second, 60.0)), reference, network, ["fid", "kid"]
    )
    assert 0 < halves.values["fid"] < noisy.values["fid"] / 10
    assert abs(halves.values["kid_mean"]) < noisy.values["kid_mean"] / 10
    assert itself.warnings == []  # 5,000 a side is above the 129 that 128 features need


def test_the_digits_distance_grows_step_by_step_with_blur_and_with_noise(
    classifier: ClassifierReport, mnist_png: Path
) -> None:
    network = load_classifier(classifier.path)
    images = real_images(DataSpec("folder", mnist_png, 32, 1), limit=4000)
    real, probe = images[::2], images[1::2]
    blur = distances(network, real, [blurred(probe, sigma) for sigma in (0, 1.0, 1.5, 2.0, 3.0)])
    noise = distances(network, real, [noised(probe, std) for std in (0, 16, 32, 64, 128)])
    assert blur == sorted(blur) and len(set(blur)) == len(blur), blur
    assert noise == sorted(noise) and len(set(noise)) == len(noise), noise
    assert blur[-1] > 10 * blur[0] and noise[-1] > 10 * noise[0]


def test_inception_torchscript_gives_2048_features_and_says_how_it_converted(
    mnist_png: Path,
) -> None:
    network = inception_network(inception_torchscript())
    assert network.info.kind == "inception-v3-torchscript"
    assert network.info.weights_sha256.startswith("7ff4a85c3a6378f0")
    images = real_images(DataSpec("folder", mnist_png, 32, 1), limit=4)
    features = network.extract(images, batch_size=4)
    assert features.features.shape == (4, 2048) and features.logits is None
    assert torch.isfinite(features.features).all()
    again = network.extract(images[:2], batch_size=2)
    torch.testing.assert_close(again.features, features.features[:2], rtol=1e-4, atol=1e-4)
    assert network.conversion(1, 32) == (
        "1x32x32 images: grey tiled to 3 channels, resized 32x32 -> 299x299, "
        "for inception-v3-torchscript"
    )
    assert network.conversion(3, 299) is None


@pytest.mark.slow
def test_inception_fid_is_zero_on_itself_and_grows_with_blur(mnist_png: Path) -> None:
    network = inception_network(inception_torchscript())
    images = real_images(DataSpec("folder", mnist_png, 32, 1), limit=300)
    real, probe = images[::2], images[1::2]
    reference = network.extract(real)
    itself = compute_metrics(reference, reference, network, ["fid"])
    assert abs(itself.values["fid"]) < 1e-3
    assert "below 2049" in itself.warnings[0]  # 150 samples for 2048 features: said plainly
    blur = distances(network, real, [blurred(probe, sigma) for sigma in (0, 1.0, 2.5)])
    assert blur == sorted(blur) and blur[0] < blur[1] < blur[2], blur


def test_real_features_are_cached_once_and_recomputed_when_the_data_changes(
    classifier: ClassifierReport, mnist_png: Path, tmp_path: Path
) -> None:
    network = load_classifier(classifier.path)
    data = copy_mnist_subset(mnist_png, tmp_path / "data", 200)
    spec = DataSpec("folder", data, 32, 1)
    cache = tmp_path / "cache"
    first = load_reference(spec, network, cache_dir=cache)
    second = load_reference(spec, network, cache_dir=cache)
    assert (first.cache_hit, second.cache_hit) == (False, True)
    assert first.cache_file == second.cache_file and first.cache_file is not None
    assert first.key.data_sha256[:16] in first.cache_file.name
    assert network.info.id in first.cache_file.name
    assert torch.equal(first.real.features, second.real.features)
    assert [path.name for path in cache.iterdir()] == [first.cache_file.name]  # no temporary left
    shutil.copy(next(data.glob("1/*.png")), data / "1" / "extra.png")
    changed = load_reference(spec, network, cache_dir=cache)
    assert not changed.cache_hit and changed.count == 201
    assert changed.key.data_sha256 != first.key.data_sha256
    assert changed.cache_file is not None
    changed.cache_file.write_bytes(b"not an npz")  # a damaged cache file is recomputed, not trusted
    assert not load_reference(spec, network, cache_dir=cache).cache_hit
