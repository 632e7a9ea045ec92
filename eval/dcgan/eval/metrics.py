"""The metrics, computed by torch-fidelity's own feature-level functions.

- `fid`: the Frechet distance between Gaussians fitted to real and generated features
  (Heusel et al. 2017). Its covariance over d features is rank-deficient below d + 1 samples
  (2,049 for Inception), where the number is biased upwards: the result then carries a warning
  naming the minimum.
- `kid`: the kernel (MMD^2, cubic polynomial kernel) distance of Binkowski et al. (2018), mean
  and standard deviation over 100 subsets of min(1000, N) samples; unbiased at any N.
- `prc`: precision and recall of Kynkaanniemi et al. (2019), k = 3 nearest neighbours, and their
  F-score.
- `is`: the Inception Score (Salimans et al. 2016) over 10 splits of the network's logits; with
  the digits network it is the classifier score (TF-GAN's mnist_score), and it always comes with
  that network.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch_fidelity.metric_fid import fid_features_to_statistics, fid_statistics_to_metric
from torch_fidelity.metric_isc import isc_features_to_metric
from torch_fidelity.metric_kid import kid_features_to_metric
from torch_fidelity.metric_prc import prc_features_to_metric

from dcgan.eval.errors import OptionError
from dcgan.eval.features import FeatureNetwork, Features

METRICS = ("fid", "kid", "prc", "is")
KID_SUBSETS = 100
KID_SUBSET_SIZE = 1000
PRC_NEIGHBOURHOOD = 3
SCORE_SPLITS = 10
MIN_SAMPLES = SCORE_SPLITS  # below this no metric here is defined
# The single numbers score_generator returns: name -> (the metric that computes it, its key).
VALUES = {
    "fid": ("fid", "fid"),
    "kid": ("kid", "kid_mean"),
    "precision": ("prc", "precision"),
    "recall": ("prc", "recall"),
    "f_score": ("prc", "f_score"),
    "inception_score": ("is", "inception_score_mean"),
    "classifier_score": ("is", "classifier_score_mean"),
}


@dataclass(frozen=True)
class MetricValues:
    values: dict[str, float]  # e.g. fid, kid_mean, kid_std, precision, recall, f_score
    warnings: list[str]


def parse_metrics(text: str) -> list[str]:
    """`fid,kid,prc` -> ["fid", "kid", "prc"]; an unknown name is an option error."""
    names = [name.strip().lower() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in METRICS]
    if unknown or not names:
        raise OptionError(
            f"--metrics: unknown metric {', '.join(unknown) or '(none given)'}; "
            f"choose from {', '.join(METRICS)}"
        )
    return list(dict.fromkeys(names))


def fid_minimum(network: FeatureNetwork) -> int:
    """Samples a side for a full-rank covariance of the network's features."""
    return network.info.dims + 1


def compute_metrics(
    fake: Features,
    real: Features,
    network: FeatureNetwork,
    metrics: list[str],
    seed: int = 0,
) -> MetricValues:
    """Every metric in `metrics` for generated `fake` against `real`, in `network`'s features."""
    n_fake, n_real = len(fake.features), len(real.features)
    if min(n_fake, n_real) < MIN_SAMPLES:
        raise OptionError(
            f"{min(n_fake, n_real)} samples are too few: the metrics need at least {MIN_SAMPLES} "
            "generated and real images"
        )
    asked = list(metrics)
    if (
        network.score_name is not None
        and network.info.kind == "digits-classifier"
        and "is" not in asked
    ):
        asked.append("is")  # the classifier score always comes with the digits network
    values: dict[str, float] = {}
    warnings: list[str] = []
    fake_64, real_64 = fake.features.double(), real.features.double()
    if "fid" in asked:
        minimum = fid_minimum(network)
        if min(n_fake, n_real) < minimum:
            warnings.append(
                f"fid from {n_fake} generated and {n_real} real samples: below {minimum} a side, "
                f"the covariance of {network.info.dims} features is degenerate and FID is biased "
                f"upwards; use --num-samples {minimum} or more for a comparable number"
            )
        stats_fake = fid_features_to_statistics(fake_64)
        stats_real = fid_features_to_statistics(real_64)
        values["fid"] = float(
            fid_statistics_to_metric(stats_fake, stats_real, verbose=False)[
                "frechet_inception_distance"
            ]
        )
    if "kid" in asked:
        subset = min(KID_SUBSET_SIZE, n_fake, n_real)
        kid = kid_features_to_metric(
            fake.features, real.features, kid_subsets=KID_SUBSETS, kid_subset_size=subset,
            rng_seed=seed, verbose=False,
        )  # fmt: skip
        values["kid_mean"] = float(kid["kernel_inception_distance_mean"])
        values["kid_std"] = float(kid["kernel_inception_distance_std"])
        values["kid_subset_size"] = float(subset)
    if "prc" in asked:
        prc = prc_features_to_metric(
            fake.features, real.features, prc_neighborhood=PRC_NEIGHBOURHOOD,
            prc_batch_size=2048, save_cpu_ram=True, verbose=False,
        )  # fmt: skip
        values.update({name: float(prc[name]) for name in ("precision", "recall", "f_score")})
    if "is" in asked:
        if network.score_name is None or fake.logits is None:
            raise OptionError(
                f"--metrics is: {network.info.description} gives no class logits; the Inception "
                "Score needs torch-fidelity's Inception-v3 (its weights file, or the download)"
            )
        score = isc_features_to_metric(
            fake.logits, splits=SCORE_SPLITS, shuffle=True, rng_seed=seed
        )
        values[f"{network.score_name}_mean"] = float(score["inception_score_mean"])
        values[f"{network.score_name}_std"] = float(score["inception_score_std"])
    return MetricValues(values, warnings)
