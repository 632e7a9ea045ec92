"""Generate requests for the tests' export (nz=100), and the answers onnxruntime gives directly."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dcgan.contract.providers import ort
from dcgan.v1 import generator_pb2 as pb

NZ = 100  # the latent size of make_export's generator, as of dcgan-train's default


def random_latents(count: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((count, NZ), dtype=np.float32)


def packed(latents: np.ndarray, encoding: int = pb.ENCODING_UNSPECIFIED) -> pb.GenerateRequest:
    """A Generate request carrying `latents` as packed little-endian float32."""
    return pb.GenerateRequest(packed=latents.astype("<f4").tobytes(), encoding=encoding)


def direct(export_dir: Path, latents: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The serving graph run straight through onnxruntime: the reference answers."""
    session = ort.InferenceSession(
        str(export_dir / "generator_serving.onnx"), providers=["CPUExecutionProvider"]
    )
    image, pixels = session.run(["image", "pixels"], {"z": latents})
    return image, pixels
