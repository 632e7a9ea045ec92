"""Latents: decoding what callers send, checking them, and interpolating between two.

Seeded latents come from `dcgan.contract.seeded`, the generator the .proto documents.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from dcgan.service.errors import InvalidInput

Latents = npt.NDArray[np.float32]  # [n, nz]


def decode_packed(data: bytes, nz: int) -> Latents:
    """Little-endian float32 bytes -> [n, nz]."""
    if len(data) % (4 * nz):
        raise InvalidInput(
            f"packed latents hold {len(data)} bytes, not a multiple of nz * 4 = {4 * nz}"
        )
    return np.frombuffer(data, dtype="<f4").reshape(-1, nz)


def decode_values(values: npt.ArrayLike, nz: int) -> Latents:
    array = np.asarray(values, dtype=np.float32)
    if array.size % nz:
        raise InvalidInput(f"{array.size} latent values are not a multiple of nz = {nz}")
    return array.reshape(-1, nz)


def check_latents(latents: Latents, limit: int) -> Latents:
    """Refuse an empty request, one above `limit` latents, or any NaN or infinity."""
    count = latents.shape[0]
    if count == 0:
        raise InvalidInput("the request holds no latents")
    if count > limit:
        raise InvalidInput(f"{count} latents requested; at most {limit} per request")
    if not np.isfinite(latents).all():
        bad = int(np.flatnonzero(~np.isfinite(latents).all(axis=1))[0])
        raise InvalidInput(f"latent {bad} holds NaN or infinity")
    return latents


def interpolate(start: Latents, end: Latents, steps: int, method: str) -> Latents:
    """`steps` latents from `start` to `end` inclusive, linearly or along the great circle.

    Both ends come out bit for bit equal to `start` and `end`.
    """
    a, b = start.astype(np.float64).ravel(), end.astype(np.float64).ravel()
    t = np.linspace(0.0, 1.0, steps)[:, None]
    if method == "slerp":
        cosine = np.dot(a, b) / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-300)
        omega = np.arccos(np.clip(cosine, -1.0, 1.0))
        if np.sin(omega) > 1e-6:
            path = (np.sin((1.0 - t) * omega) * a + np.sin(t * omega) * b) / np.sin(omega)
            return _with_exact_ends(path, start, end)
    path = (1.0 - t) * a + t * b
    return _with_exact_ends(path, start, end)


def _with_exact_ends(path: npt.NDArray[np.float64], start: Latents, end: Latents) -> Latents:
    result = path.astype(np.float32)
    result[0], result[-1] = start.ravel(), end.ravel()
    return result
