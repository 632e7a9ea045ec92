"""Quality as one number, in-process: what a training loop calls every few epochs.

    from dcgan.eval.quality import digits_reference, score_generator

    reference = digits_reference("folder", Path("mnist/png"), Path("digits.pt"), 32, channels=1)
    fid = score_generator(net_g, reference, metric="fid", num_samples=1000, seed=0)

The reference (the real features) is loaded or computed once and cached on disk, as for
`dcgan-eval`; each call then generates `num_samples` images from the same seeded latents, so
successive calls differ only by the generator's weights.
"""

from __future__ import annotations

from pathlib import Path

import torch

from dcgan.contract.seeded import seeded_latents
from dcgan.eval.classifier import load_classifier
from dcgan.eval.errors import OptionError
from dcgan.eval.features import FeatureNetwork, inception_network
from dcgan.eval.metrics import VALUES, compute_metrics
from dcgan.eval.reference import Reference, load_reference
from dcgan.eval.sources import to_pixels
from dcgan.train.data import DataSpec
from dcgan.train.model import Generator


def reference(
    dataset: str,
    data_root: Path | None,
    network: FeatureNetwork,
    image_size: int,
    channels: int,
    num_real: int | None = None,
    cache_dir: Path | None = None,
    split: str = "train",
) -> Reference:
    """The cached real features of a data set, prepared as a generator of this shape sees it."""
    spec = DataSpec(dataset, data_root, image_size, channels, workers=0, split=split)
    return load_reference(spec, network, num_real, cache_dir)


def digits_reference(
    dataset: str,
    data_root: Path | None,
    classifier: Path,
    image_size: int,
    channels: int,
    num_real: int | None = None,
    cache_dir: Path | None = None,
) -> Reference:
    """`reference` in the features of a digits classifier (dcgan-eval train-classifier)."""
    network = load_classifier(classifier)
    return reference(dataset, data_root, network, image_size, channels, num_real, cache_dir)


def inception_reference(
    dataset: str,
    data_root: Path | None,
    image_size: int,
    channels: int,
    weights: Path | None = None,
    num_real: int | None = None,
    cache_dir: Path | None = None,
) -> Reference:
    """`reference` in Inception-v3's pool features (downloaded, or from `weights`)."""
    network = inception_network(weights)
    return reference(dataset, data_root, network, image_size, channels, num_real, cache_dir)


@torch.no_grad()
def generated_images(
    generator: Generator, num_samples: int, seed: int, batch_size: int = 500
) -> torch.Tensor:
    """uint8 [N, C, H, W] of the seeded latents of `seed`, as the server would return them."""
    device = next(generator.parameters()).device
    latents = torch.from_numpy(seeded_latents(seed, num_samples, generator.config.nz))
    was_training = generator.training
    generator.eval()
    try:
        parts = [
            to_pixels(generator(batch.to(device)).float()).permute(0, 3, 1, 2).cpu()
            for batch in torch.split(latents, batch_size)
        ]
    finally:
        generator.train(was_training)
    return torch.cat(parts)


def score_generator(
    generator: Generator,
    reference: Reference,
    metric: str = "fid",
    num_samples: int = 1000,
    seed: int = 0,
) -> float:
    """One metric of `generator` against `reference`: fid, kid, precision, recall, f_score,
    inception_score or classifier_score. The generator is put in eval mode for the call and
    returned to the mode it was in."""
    if metric not in VALUES:
        raise OptionError(f"unknown metric {metric!r}; choose from {', '.join(VALUES)}")
    name, key = VALUES[metric]
    config = generator.config
    if (config.channels, config.image_size) != (reference.key.channels, reference.key.image_size):
        raise OptionError(
            f"the reference holds {reference.key.channels}x{reference.key.image_size}"
            f"x{reference.key.image_size} images, the generator makes {config.channels}"
            f"x{config.image_size}x{config.image_size}"
        )
    images = generated_images(generator, num_samples, seed)
    fake = reference.network.extract(images)
    values = compute_metrics(fake, reference.real, reference.network, [name], seed).values
    if key not in values:
        raise OptionError(f"{metric} is not computed with {reference.network.info.description}")
    return values[key]
