"""BatchNorm folded into the convolutions, and the generator with float16 inside.

Folding removes a per-channel scale and shift at every layer of the served graph; the exported
ONNX graphs are built from these, and the parity checks hold them to the unfolded eager model.
"""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from dcgan.train.model import Generator


def fold_batchnorm(generator: Generator) -> Generator:
    """A copy of `generator` (eval mode) with each ConvTranspose2d -> BatchNorm2d pair fused."""
    folded = copy.deepcopy(generator).eval()
    layers: list[nn.Module] = []
    for layer in folded.main:
        previous = layers[-1] if layers else None
        if isinstance(layer, nn.BatchNorm2d) and isinstance(previous, nn.ConvTranspose2d):
            layers[-1] = fuse_conv_bn_eval(previous, layer, transpose=True)
        else:
            layers.append(layer)
    folded.main = nn.Sequential(*layers)
    if any(isinstance(layer, nn.BatchNorm2d) for layer in folded.modules()):
        raise AssertionError("a BatchNorm2d layer was left unfolded")
    return folded


class Float16Generator(nn.Module):
    """float32 z in, float32 image out, float16 weights and activations between."""

    def __init__(self, generator: Generator) -> None:
        super().__init__()
        self.generator = copy.deepcopy(generator).half().eval()

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        image: torch.Tensor = self.generator(z.half())
        return image.float()
