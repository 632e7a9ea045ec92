"""`dcgan-eval SOURCE`: generated images against a data set's cached real features.

Top to bottom: the source (its shape decides how real images are prepared), the feature network,
the real reference (cached), the generated images from seeded latents, the metrics.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from dcgan.eval.classifier import load_classifier
from dcgan.eval.errors import OptionError
from dcgan.eval.features import FeatureNetwork, inception_network
from dcgan.eval.metrics import compute_metrics
from dcgan.eval.reference import Reference, load_reference
from dcgan.eval.sources import ImageSource, SourceInfo
from dcgan.train.data import DataSpec

FEATURES = ("inception", "digits")


@dataclass(frozen=True)
class EvalSettings:
    dataset: str = "digits"
    data_root: Path | None = None
    download: bool = False
    split: str = "train"  # mnist, fashion-mnist, cifar10: train or test
    metrics: tuple[str, ...] = ("fid", "kid", "prc")
    num_samples: int = 10_000  # generated images
    num_real: int | None = None  # real images (None: the whole data set)
    features: str = "inception"  # inception | digits
    inception_weights: Path | None = None  # None: torch-fidelity downloads its weights
    classifier: Path | None = None  # the digits network (dcgan-eval train-classifier)
    seed: int = 0  # the latents' seed
    batch_size: int = 100
    cache_dir: Path | None = None


@dataclass(frozen=True)
class EvalResult:
    source: SourceInfo
    network: dict[str, Any]
    metrics: dict[str, float]
    num_generated: int
    num_real: int
    dataset: str
    split: str
    data_root: str | None
    data_sha256: str
    seed: int
    conversion: str | None
    cache_file: str | None
    cache_hit: bool
    seconds: dict[str, float]
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": {
                "kind": self.source.kind,
                "location": self.source.location,
                "step": self.source.step,
                "sha256": self.source.sha256,
                "nz": self.source.nz,
                "channels": self.source.channels,
                "image_size": self.source.image_size,
            },
            "features": self.network,
            "metrics": self.metrics,
            "samples": {"generated": self.num_generated, "real": self.num_real},
            "data": {
                "dataset": self.dataset,
                "split": self.split,
                "root": self.data_root,
                "sha256": self.data_sha256,
            },
            "latent_seed": self.seed,
            "conversion": self.conversion,
            "reference_cache": {"file": self.cache_file, "hit": self.cache_hit},
            "seconds": self.seconds,
            "warnings": self.warnings,
        }


def feature_network(settings: EvalSettings) -> FeatureNetwork:
    if settings.features == "digits":
        if settings.classifier is None:
            raise OptionError(
                "--features digits needs --classifier FILE: train one with "
                "dcgan-eval train-classifier --dataset ... --data-root ... --out FILE"
            )
        return load_classifier(settings.classifier)
    if settings.classifier is not None:
        raise OptionError("--classifier is for --features digits")
    return inception_network(settings.inception_weights)


def check_settings(settings: EvalSettings) -> None:
    if settings.features not in FEATURES:
        raise OptionError(f"--features must be inception or digits, not {settings.features}")
    if settings.num_samples < 10:
        raise OptionError(f"--num-samples must be at least 10, not {settings.num_samples}")
    if settings.num_real is not None and settings.num_real < 10:
        raise OptionError(f"--num-real must be at least 10, not {settings.num_real}")
    if settings.batch_size < 1:
        raise OptionError("--batch-size must be at least 1")


def reference_for(settings: EvalSettings, network: FeatureNetwork, source: SourceInfo) -> Reference:
    spec = DataSpec(
        settings.dataset, settings.data_root, source.image_size, source.channels,
        download=settings.download, workers=0, split=settings.split,
    )  # fmt: skip
    return load_reference(spec, network, settings.num_real, settings.cache_dir, settings.batch_size)


def evaluate(
    source: ImageSource,
    settings: EvalSettings,
    network: FeatureNetwork | None = None,
    say: Callable[[str], None] = lambda message: None,
) -> tuple[EvalResult, Reference, torch.Tensor]:
    """Score `source`; returns the result, the reference and the generated images."""
    check_settings(settings)
    network = network or feature_network(settings)
    if "is" in settings.metrics and network.score_name is None:
        raise OptionError(
            f"--metrics is needs class logits, and {network.info.description} gives none: "
            "drop is, or use torch-fidelity's Inception-v3 weights (.pth or the download)"
        )
    info = source.info
    warnings = []
    reference = reference_for(settings, network, info)
    if reference.cache_hit:
        say(f"real features: {reference.count} images, from the cache {reference.cache_file}")
    else:
        say(f"real features: {reference.count} images computed in {reference.seconds:.1f} s")
    start = time.perf_counter()
    fake_images = source.images(
        settings.num_samples, settings.seed, batch_size=max(settings.batch_size, 64)
    )
    generate_s = time.perf_counter() - start
    start = time.perf_counter()
    fake = network.extract(fake_images, settings.batch_size)
    features_s = time.perf_counter() - start
    start = time.perf_counter()
    computed = compute_metrics(fake, reference.real, network, list(settings.metrics), settings.seed)
    metrics_s = time.perf_counter() - start
    if not reference.cache_hit and reference.cache_file is None:
        warnings.append("the real features could not be cached: --cache-dir is not writable")
    result = EvalResult(
        source=info,
        network=network.info.to_dict(),
        metrics=computed.values,
        num_generated=len(fake_images),
        num_real=reference.count,
        dataset=settings.dataset,
        split=settings.split,
        data_root=reference.key.data_root,
        data_sha256=reference.key.data_sha256,
        seed=settings.seed,
        conversion=network.conversion(info.channels, info.image_size),
        cache_file=str(reference.cache_file) if reference.cache_file else None,
        cache_hit=reference.cache_hit,
        seconds={
            "real_features": round(reference.seconds, 3),
            "generate": round(generate_s, 3),
            "generated_features": round(features_s, 3),
            "metrics": round(metrics_s, 3),
        },
        warnings=[*computed.warnings, *warnings],
    )
    return result, reference, fake_images
