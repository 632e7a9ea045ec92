"""Damaged protobuf messages for the live fuzz of both protocols."""

from __future__ import annotations

import random


def mutated(rng: random.Random, valid: list[bytes]) -> bytes:
    """Random bytes, or a valid message truncated, bit-flipped, spliced or with wrong wire types."""
    kind = rng.randrange(5)
    seed = rng.choice(valid)
    if kind == 0:
        return rng.randbytes(rng.randrange(0, 600))
    if kind == 1:
        return seed[: rng.randrange(len(seed))]
    if kind == 2:
        data = bytearray(seed)
        for _ in range(rng.randrange(1, 6)):
            data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
        return bytes(data)
    if kind == 3:
        cut = rng.randrange(len(seed))
        return seed[:cut] + rng.randbytes(rng.randrange(1, 40)) + seed[cut:]
    field, wire = rng.randrange(1, 9), rng.randrange(8)  # every wire type, groups, bad lengths
    return seed + bytes([(field << 3) | wire]) + rng.randbytes(rng.randrange(0, 12))


def varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)
