"""The settings of a training run, and the choices they take.

Kept free of torch so that `dcgan-train` can take its option defaults from `TrainConfig` and
still answer `--help` at once; `dcgan.train.train` resolves and validates these settings.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class ConfigError(Exception):
    """Settings that are out of range, contradict each other or the run being resumed."""


class Dataset(StrEnum):
    digits = "digits"  # scikit-learn's 8x8 digits, embedded: works offline
    mnist = "mnist"
    fashion_mnist = "fashion-mnist"
    cifar10 = "cifar10"
    folder = "folder"  # every image under --data-root
    fake = "fake"  # torchvision's FakeData: noise images, for smoke runs


class Split(StrEnum):
    train = "train"  # mnist / fashion-mnist / cifar10's training split
    test = "test"  # their test split (MNIST's t10k files, CIFAR-10's test_batch)


class Device(StrEnum):
    auto = "auto"  # CUDA when present, else the CPU
    cpu = "cpu"
    cuda = "cuda"


class Precision(StrEnum):
    auto = "auto"  # bf16 on CUDA and on CPUs with native bf16, else fp32
    fp32 = "fp32"
    bf16 = "bf16"
    fp16 = "fp16"  # CUDA only, with a grad scaler


class EvalMetric(StrEnum):
    """The single numbers dcgan.eval.quality.score_generator computes."""

    fid = "fid"  # Frechet distance of the features (lower is better)
    kid = "kid"  # kernel distance, unbiased at any sample size (lower is better)
    precision = "precision"  # share of generated images near the real ones (higher is better)
    recall = "recall"  # share of real images near the generated ones (higher is better)
    f_score = "f_score"  # of precision and recall (higher is better)
    inception_score = "inception_score"  # Inception-v3's logits: --eval-features inception
    classifier_score = "classifier_score"  # the digits classifier's logits: digits only


# Distances: a lower value is better. For every other metric, a higher one.
LOWER_IS_BETTER = frozenset({EvalMetric.fid.value, EvalMetric.kid.value})


class EvalFeatures(StrEnum):
    digits = "digits"  # a digits classifier's features (--eval-classifier): MNIST-like data
    inception = "inception"  # Inception-v3's pool features: the standard FID


@dataclass(frozen=True)
class TrainConfig:
    # data
    dataset: str = Dataset.digits.value  # a Dataset value
    data_root: str | None = None  # where the data set lives (required for folder)
    download: bool = False  # let torchvision fetch mnist / fashion-mnist / cifar10 into data_root
    split: str = Split.train.value  # a Split value: which split of mnist / fashion-mnist / cifar10
    workers: int = 2  # decoding processes while loading images
    preload_limit_mb: float = 4096  # hold the decoded data set in memory up to this size
    # model
    image_size: int = 64  # 32, 64 or 128
    channels: int | None = None  # 1 or 3; None: the data set's own (a folder's first image)
    nz: int = 100  # latent size
    ngf: int = 64  # generator width
    ndf: int = 64  # discriminator width
    # optimisation: the paper's recipe
    batch_size: int = 128  # global batch, split across ranks
    epochs: int = 5  # passes over the data set
    max_steps: int | None = None  # stop after this many steps (D + G updates) in all
    lr: float = 2e-4  # Adam learning rate, both networks
    beta1: float = 0.5  # Adam beta1 (the paper lowers it from 0.9)
    beta2: float = 0.999  # Adam beta2
    seed: int = 1  # seeds initialisation, data order and noise
    # speed
    device: str = Device.auto.value  # a Device value
    precision: str = Precision.auto.value  # a Precision value
    channels_last: bool = True  # NHWC activations: faster convolutions on GPUs and oneDNN CPUs
    compile: bool = False  # torch.compile both networks (slow to start, faster per step)
    # outputs
    out: str = "runs/dcgan"  # the run directory
    save_every: int = 0  # checkpoint every N steps as well as at each epoch end (0: epoch ends)
    keep: int = 3  # step checkpoints kept besides latest
    log_every: int = 10  # metrics every N steps
    samples: int = 64  # images in each sample grid
    # evaluation: needs dcgan-eval (dcgan-train[eval])
    eval_every: int = 0  # score the generator every N epochs and at the end (0: never)
    eval_metric: str = EvalMetric.fid.value  # an EvalMetric value
    eval_features: str | None = None  # an EvalFeatures value; None: digits given a classifier
    eval_classifier: str | None = None  # digits features: dcgan-eval train-classifier's file
    inception_weights: str | None = None  # inception features: a local file (None: download)
    eval_samples: int = 1000  # generated images per score, from fixed seeded latents


def eval_features_of(config: TrainConfig) -> str:
    """The feature network a run scores in: --eval-features, else digits when given a classifier."""
    if config.eval_features is not None:
        return config.eval_features
    return EvalFeatures.digits.value if config.eval_classifier else EvalFeatures.inception.value


# The evaluation settings besides --eval-every, which have no use while it is 0.
EVAL_FIELDS = (
    "eval_metric", "eval_features", "eval_classifier", "inception_weights", "eval_samples",
)  # fmt: skip

# Settings that define the run: a resumed run keeps them. The others may change on resume.
IDENTITY_FIELDS = (
    "dataset", "split", "image_size", "channels", "nz", "ngf", "ndf",
    "batch_size", "lr", "beta1", "beta2", "seed",
)  # fmt: skip
