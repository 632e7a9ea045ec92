"""Images from a model without a server: what `dcgan-sample` computes.

Latents come from the server's seeded generator (dcgan.contract.seeded), and an export runs as
the server runs it: the serving graph's `pixels` output on onnxruntime's CPU provider. So a seed
gives, byte for byte, the pictures `dcgan-client` writes from a server of the same export. A
checkpoint or a run directory runs the PyTorch generator instead, its [-1, 1] output mapped to
pixels as the serving graph maps it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from dcgan.contract.manifest import (
    ARTIFACT_FILES,
    MANIFEST,
    ONNX_SERVING,
    ManifestError,
    read_manifest,
    verified_artifact,
)
from dcgan.contract.seeded import seeded_latents

BATCH_SIZE = 256  # latents per model run
LINEAR = "linear"
SLERP = "slerp"

Latents = npt.NDArray[np.float32]  # [n, nz]
Pixels = npt.NDArray[np.uint8]  # [n, H, W, C]


class SampleError(Exception):
    """A source that cannot be sampled: missing, not a model, or damaged."""


@dataclass(frozen=True)
class Sampler:
    """A model opened for sampling: its latent size, image shape, and latents -> pixels."""

    nz: int
    channels: int
    image_size: int
    source: str  # what runs, for the summary line
    run: Callable[[Latents], Pixels]

    def pixels(self, latents: Latents) -> Pixels:
        """uint8 [n, H, W, C] for latents [n, nz], BATCH_SIZE latents per model run."""
        batches = [
            self.run(np.ascontiguousarray(latents[first : first + BATCH_SIZE]))
            for first in range(0, len(latents), BATCH_SIZE)
        ]
        return np.concatenate(batches)


def open_source(path: Path, shape: dict[str, int | None] | None = None) -> Sampler:
    """An export directory, a run directory (its latest checkpoint) or a checkpoint file.

    `shape` (--nz --ngf --channels --image-size) describes a bare generator state_dict.
    """
    given = sorted(key for key, value in (shape or {}).items() if value is not None)
    try:
        path.stat()
    except FileNotFoundError:
        pass  # the loader below names what it looked for
    except OSError as error:  # a name too long, a component that is a file, no permission
        raise SampleError(f"cannot read {path}: {error.strerror}") from None
    if path.is_dir() and (path / MANIFEST).exists():
        if given:
            options = ", ".join(f"--{key.replace('_', '-')}" for key in given)
            raise SampleError(f"{path} is an export, which carries its shape: drop {options}")
        return _export_sampler(path)
    if path.is_file() and (path.name == MANIFEST or path.name in ARTIFACT_FILES.values()):
        raise SampleError(f"{path} is a file of an export: give its directory, {path.parent}")
    return _generator_sampler(path, shape)


def _export_sampler(directory: Path) -> Sampler:
    from dcgan.contract.providers import CPU, ort, session_providers

    try:
        manifest = read_manifest(directory)
        graph = verified_artifact(directory, manifest, ONNX_SERVING)
    except ManifestError as error:
        raise SampleError(str(error)) from None
    try:
        session = ort.InferenceSession(str(graph), providers=session_providers(CPU))
    except Exception as error:  # onnxruntime raises its own untyped errors
        first = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise SampleError(f"onnxruntime cannot load {graph}: {first}") from None
    model, onnx = manifest.model, manifest.onnx

    def run(latents: Latents) -> Pixels:
        pixels: Pixels = session.run([onnx.pixels_output], {onnx.input: latents})[0]
        return pixels

    return Sampler(model.nz, model.channels, model.image_size, f"{graph} on onnxruntime", run)


def _generator_sampler(path: Path, shape: dict[str, int | None] | None) -> Sampler:
    import torch

    from dcgan.export.parity import to_pixels
    from dcgan.export.sources import SourceError, load_generator

    try:
        loaded = load_generator(path, shape)
    except SourceError as error:
        hint = f"; nor is it an export directory (no {MANIFEST})" if path.is_dir() else ""
        raise SampleError(f"{error}{hint}") from None
    generator, config = loaded.generator, loaded.config

    def run(latents: Latents) -> Pixels:
        with torch.inference_mode():
            return to_pixels(generator(torch.from_numpy(latents)).numpy())

    source = f"{loaded.source.file} on PyTorch"
    return Sampler(config.nz, config.channels, config.image_size, source, run)


def seeded(sampler: Sampler, seed: int, count: int) -> Latents:
    """The latents a server draws for GenerateRequest{seeded: {count, seed}}."""
    return seeded_latents(seed, count, sampler.nz)


def walk(sampler: Sampler, start: int, end: int, steps: int, method: str) -> Latents:
    """The latents of Interpolate between the seeds `start` and `end`, both ends included.

    The server's formula (dcgan.service.latents.interpolate), in float64 with exact ends: the
    tests hold the two to the same pixels.
    """
    a = seeded_latents(start, 1, sampler.nz)
    b = seeded_latents(end, 1, sampler.nz)
    first, last = a.astype(np.float64).ravel(), b.astype(np.float64).ravel()
    t = np.linspace(0.0, 1.0, steps)[:, None]
    path = (1.0 - t) * first + t * last
    if method == SLERP:
        norms = max(np.linalg.norm(first) * np.linalg.norm(last), 1e-300)
        omega = np.arccos(np.clip(np.dot(first, last) / norms, -1.0, 1.0))
        if np.sin(omega) > 1e-6:
            path = (np.sin((1.0 - t) * omega) * first + np.sin(t * omega) * last) / np.sin(omega)
    latents = path.astype(np.float32)
    latents[0], latents[-1] = a.ravel(), b.ravel()
    return latents
