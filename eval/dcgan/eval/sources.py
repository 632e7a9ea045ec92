"""Where generated images come from: PyTorch, onnxruntime as served, or a running dcgan-serve.

- A checkpoint, run directory or bare generator state_dict: read by dcgan-export's own
  `load_generator`, run in PyTorch.
- An export directory: the serving graph `generator_serving.onnx`, its bytes checked against
  `manifest.json`, run on onnxruntime's CPU provider with the uint8 `pixels` output the server
  returns.
- `--target HOST:PORT`: a running dcgan-serve through `GeneratorClient`, the images users get.

All three turn the same latents (`dcgan.contract.seeded.seeded_latents`) into uint8 pixels
[N, C, H, W] with the serving graph's rounding, clamp(round((image + 1) * 127.5)), so the
three can be compared number for number.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from dcgan.contract.manifest import (
    MANIFEST,
    ONNX_SERVING,
    ManifestError,
    read_manifest,
    verified_artifact,
)
from dcgan.contract.seeded import seeded_latents
from dcgan.eval.errors import EvalError
from dcgan.train.model import Generator


@dataclass(frozen=True)
class SourceInfo:
    kind: str  # pytorch | onnxruntime | served
    location: str  # the file, export directory or target
    nz: int
    channels: int
    image_size: int
    step: int | None  # the training step of the weights, where known
    sha256: str | None  # the weights' file (pytorch) or the serving graph's (onnxruntime, served)

    def describe(self) -> str:
        step = "" if self.step is None else f", step {self.step}"
        return f"{self.location} ({self.kind}{step})"

    def label(self) -> str:
        """describe() with only the file's name: for a title."""
        name = self.location if self.kind == "served" else Path(self.location).name
        step = "" if self.step is None else f", step {self.step}"
        return f"{name} ({self.kind}{step})"


class ImageSource(ABC):
    info: SourceInfo

    def images(self, count: int, seed: int, batch_size: int = 256) -> torch.Tensor:
        """uint8 [count, C, H, W] from the seeded latents of `seed`."""
        latents = seeded_latents(seed, count, self.info.nz)
        parts = [
            self._pixels(latents[start : start + batch_size])
            for start in range(0, count, batch_size)
        ]
        return torch.from_numpy(np.concatenate(parts)).permute(0, 3, 1, 2).contiguous()

    @abstractmethod
    def _pixels(self, latents: npt.NDArray[np.float32]) -> npt.NDArray[np.uint8]:
        """uint8 [B, H, W, C] of latents [B, nz]."""

    def close(self) -> None:  # noqa: B027 - most sources hold nothing to release
        """Release what the source holds (a channel)."""


def to_pixels(images: torch.Tensor) -> torch.Tensor:
    """float [B, C, H, W] in [-1, 1] -> uint8 [B, H, W, C], as the serving graph's `pixels`."""
    return (
        ((images.float() + 1.0) * 127.5).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1)
    )


class TorchSource(ImageSource):
    def __init__(self, generator: Generator, info: SourceInfo) -> None:
        self.generator = generator.eval()
        self.info = info

    def _pixels(self, latents: npt.NDArray[np.float32]) -> npt.NDArray[np.uint8]:
        with torch.inference_mode():
            images = self.generator(torch.from_numpy(latents))
        result: npt.NDArray[np.uint8] = to_pixels(images).numpy()
        return result


class OnnxSource(ImageSource):
    def __init__(self, export_dir: Path) -> None:
        from dcgan.contract.providers import CPU, ort, session_providers

        try:
            manifest = read_manifest(export_dir)
            graph = verified_artifact(export_dir, manifest, ONNX_SERVING)
        except ManifestError as error:
            raise EvalError(str(error)) from None
        options = ort.SessionOptions()
        self.session = ort.InferenceSession(str(graph), options, providers=session_providers(CPU))
        self.input = manifest.onnx.input
        self.output = manifest.onnx.pixels_output
        model = manifest.model
        self.info = SourceInfo(
            kind="onnxruntime",
            location=str(export_dir),
            nz=model.nz,
            channels=model.channels,
            image_size=model.image_size,
            step=manifest.source.step,
            sha256=manifest.artifacts[graph.name].sha256,
        )

    def _pixels(self, latents: npt.NDArray[np.float32]) -> npt.NDArray[np.uint8]:
        (pixels,) = self.session.run([self.output], {self.input: latents})
        result: npt.NDArray[np.uint8] = pixels
        return result


class ServedSource(ImageSource):
    def __init__(
        self, target: str, timeout: float, tls: Any = None, token: str | None = None
    ) -> None:
        import grpc

        from dcgan.clients.client import GeneratorClient

        self.client = GeneratorClient(target, timeout=timeout, tls=tls, token=token)
        try:
            status = self.client.health()
            if status != "SERVING":
                raise EvalError(
                    f"{target} answers but is {status}, not SERVING: "
                    "wait for it to load, or check its log"
                )
            info = self.client.info()
        except grpc.RpcError as error:
            self.client.close()
            code = error.code().name if hasattr(error, "code") else "error"
            details = error.details() if hasattr(error, "details") else str(error)
            raise EvalError(
                f"{target} is not serving dcgan.v1 ({code}: {details}): "
                "start dcgan-serve there, or check --target"
            ) from None
        except EvalError:
            self.client.close()
            raise
        image_bytes = int(info["channels"]) * int(info["image_size"]) ** 2
        # As many latents a call as the server takes, in an answer it is willing to send.
        self.batch = max(
            1,
            min(
                int(info["max_latents_per_request"] or 256),
                int(info["max_response_bytes"] or 4 << 20) // image_bytes,
            ),
        )
        step = int(info["source_step"])
        self.info = SourceInfo(
            kind="served",
            location=target,
            nz=int(info["nz"]),
            channels=int(info["channels"]),
            image_size=int(info["image_size"]),
            step=step if step >= 0 else None,
            sha256=str(info.get("model_sha256") or "") or None,
        )

    def images(self, count: int, seed: int, batch_size: int = 256) -> torch.Tensor:
        return super().images(count, seed, min(batch_size, self.batch))

    def _pixels(self, latents: npt.NDArray[np.float32]) -> npt.NDArray[np.uint8]:
        import grpc

        try:
            pixels: npt.NDArray[np.uint8] = self.client.generate(latents)
        except grpc.RpcError as error:
            raise EvalError(
                f"{self.info.location} failed a Generate call "
                f"({error.code().name}: {error.details()})"
            ) from None
        return pixels

    def close(self) -> None:
        self.client.close()


def open_source(path: Path) -> ImageSource:
    """A checkpoint, run directory or state_dict (PyTorch), or an export directory (onnxruntime)."""
    if not path.exists():
        raise EvalError(
            f"source not found: {path} (a run directory, checkpoint or export directory)"
        )
    if path.is_dir() and (path / MANIFEST).exists():
        return OnnxSource(path)
    from dcgan.export.sources import SourceError, load_generator

    try:
        loaded = load_generator(path)
    except SourceError as error:
        raise EvalError(str(error)) from None
    config = loaded.config
    info = SourceInfo(
        kind="pytorch",
        location=loaded.source.file,
        nz=config.nz,
        channels=config.channels,
        image_size=config.image_size,
        step=loaded.source.step,
        sha256=loaded.source.sha256,
    )
    return TorchSource(loaded.generator, info)
