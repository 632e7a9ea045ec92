"""Seeded latents: the generator documented in protos/dcgan/v1/generator.proto.

The standard SplitMix64 sequence turned into normals by Box-Muller, simple enough to reimplement
in any language, so a seed means the same latents everywhere: in the server, in `dcgan-sample`
(no server) and in any client.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

_GAMMA = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)


def _splitmix64(seed: int, count: int) -> npt.NDArray[np.uint64]:
    """Outputs 0 .. count-1 of SplitMix64 seeded with `seed` (wrapping uint64 arithmetic)."""
    x = np.uint64(seed) + (np.arange(1, count + 1, dtype=np.uint64) * _GAMMA)
    x = (x ^ (x >> np.uint64(30))) * _MIX1
    x = (x ^ (x >> np.uint64(27))) * _MIX2
    result: npt.NDArray[np.uint64] = x ^ (x >> np.uint64(31))
    return result


def seeded_latents(seed: int, count: int, nz: int) -> npt.NDArray[np.float32]:
    """`count` latents [count, nz] of N(0, 1) values from `seed`; a prefix of a larger count's."""
    values = count * nz
    pairs = (values + 1) // 2
    uniform = ((_splitmix64(seed, 2 * pairs) >> np.uint64(11)) + np.uint64(1)) / 2.0**53
    radius = np.sqrt(-2.0 * np.log(uniform[0::2]))
    angle = 2.0 * np.pi * uniform[1::2]
    normals = np.empty(2 * pairs, dtype=np.float64)
    normals[0::2] = radius * np.cos(angle)
    normals[1::2] = radius * np.sin(angle)
    return normals[:values].astype(np.float32).reshape(count, nz)
