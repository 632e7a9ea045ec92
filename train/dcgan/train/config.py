"""The settings of a training run, and the choices they take.

Kept free of torch so that `dcgan-train` can take its option defaults from `TrainConfig` and
still answer `--help` at once; `dcgan.train.train` resolves and validates these settings.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


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


# Settings that define the run: a resumed run keeps them. The others may change on resume.
IDENTITY_FIELDS = (
    "dataset", "split", "image_size", "channels", "nz", "ngf", "ndf",
    "batch_size", "lr", "beta1", "beta2", "seed",
)  # fmt: skip
