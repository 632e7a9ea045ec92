"""The DCGAN generator and discriminator of Radford, Metz & Chintala (2015).

The layer stacks match pytorch/examples `dcgan/main.py` index for index (`main.0.weight`, ...),
so a `netG_epoch_N.pth` saved by that script or by the PyTorch DCGAN tutorial loads into
`Generator` unchanged. Unlike that script, the image size is configurable (32, 64 or 128: one
stride-2 block per doubling) and the discriminator returns logits, to pair with
`BCEWithLogitsLoss` (the paper's Sigmoid + BCE, but stable and allowed under autocast).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

IMAGE_SIZES = (32, 64, 128)


@dataclass(frozen=True)
class ModelConfig:
    nz: int = 100  # length of the latent vector z ~ N(0, 1)
    ngf: int = 64  # generator width: channels of its last hidden block
    ndf: int = 64  # discriminator width: channels of its first block
    channels: int = 3  # image channels: 1 (grayscale) or 3 (RGB)
    image_size: int = 64  # output height and width: 32, 64 or 128

    def __post_init__(self) -> None:
        if self.image_size not in IMAGE_SIZES:
            raise ValueError(f"image size must be one of 32, 64, 128, not {self.image_size}")
        if self.channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, not {self.channels}")
        for name in ("nz", "ngf", "ndf"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, not {getattr(self, name)}")

    @property
    def stride2_blocks(self) -> int:
        """Stride-2 blocks between the 4x4 stem and the image: 3 at 32, 4 at 64, 5 at 128."""
        return self.image_size.bit_length() - 3

    def parameter_count(self) -> int:
        """Parameters of both networks, counted from the shapes alone: no tensor is allocated."""
        blocks, conv = self.stride2_blocks, 4 * 4  # each layer's kernels are 4x4
        width: int = self.ngf * 2 ** (blocks - 1)
        generator = conv * self.nz * width + 2 * width  # the stem and its BatchNorm
        for _ in range(blocks - 1):
            generator += conv * width * (width // 2) + 2 * (width // 2)
            width //= 2
        generator += conv * width * self.channels
        width = self.ndf
        discriminator = conv * self.channels * width
        for _ in range(blocks - 1):
            discriminator += conv * width * (2 * width) + 2 * (2 * width)
            width *= 2
        return generator + discriminator + conv * width

    def to_dict(self) -> dict[str, int]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> ModelConfig:
        return cls(**{key: int(values[key]) for key in cls.__dataclass_fields__ if key in values})


class Generator(nn.Module):
    """z [B, nz] or [B, nz, 1, 1] -> image [B, channels, size, size] in [-1, 1].

    At the default 64x64, the pyramid of pytorch/examples:
        z                                      # nz x 1 x 1
        ConvT 4x4 s1 -> BN -> ReLU             # (ngf*8) x 4 x 4
        ConvT 4x4 s2 -> BN -> ReLU             # (ngf*4) x 8 x 8
        ConvT 4x4 s2 -> BN -> ReLU             # (ngf*2) x 16 x 16
        ConvT 4x4 s2 -> BN -> ReLU             # ngf x 32 x 32
        ConvT 4x4 s2 -> Tanh                   # channels x 64 x 64
    At 32 the stem is ngf*4 wide and one block fewer; at 128, ngf*16 and one more.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        width = config.ngf * 2 ** (config.stride2_blocks - 1)
        layers: list[nn.Module] = [
            nn.ConvTranspose2d(config.nz, width, 4, 1, 0, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(True),
        ]  # state size. width x 4 x 4
        for _ in range(config.stride2_blocks - 1):
            layers += [
                nn.ConvTranspose2d(width, width // 2, 4, 2, 1, bias=False),
                nn.BatchNorm2d(width // 2),
                nn.ReLU(True),
            ]  # state size. (width / 2) x (2 * side) x (2 * side)
            width //= 2
        layers += [
            nn.ConvTranspose2d(width, config.channels, 4, 2, 1, bias=False),
            nn.Tanh(),
        ]  # state size. channels x image_size x image_size
        self.main = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        image: torch.Tensor = self.main(z.reshape(z.shape[0], self.config.nz, 1, 1))
        return image


class Discriminator(nn.Module):
    """image [B, channels, size, size] -> logit [B] (real > 0 > fake).

    At the default 64x64, the pyramid of pytorch/examples without its final Sigmoid:
        image                                  # channels x 64 x 64
        Conv 4x4 s2 -> LeakyReLU(0.2)          # ndf x 32 x 32
        Conv 4x4 s2 -> BN -> LeakyReLU(0.2)    # (ndf*2) x 16 x 16
        Conv 4x4 s2 -> BN -> LeakyReLU(0.2)    # (ndf*4) x 8 x 8
        Conv 4x4 s2 -> BN -> LeakyReLU(0.2)    # (ndf*8) x 4 x 4
        Conv 4x4 s1                            # 1 x 1 x 1
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        width = config.ndf
        layers: list[nn.Module] = [
            nn.Conv2d(config.channels, width, 4, 2, 1, bias=False),
            nn.LeakyReLU(0.2, inplace=True),
        ]  # state size. ndf x (size / 2) x (size / 2)
        for _ in range(config.stride2_blocks - 1):
            layers += [
                nn.Conv2d(width, width * 2, 4, 2, 1, bias=False),
                nn.BatchNorm2d(width * 2),
                nn.LeakyReLU(0.2, inplace=True),
            ]  # state size. (2 * width) x (side / 2) x (side / 2)
            width *= 2
        layers += [nn.Conv2d(width, 1, 4, 1, 0, bias=False)]  # state size. 1 x 1 x 1
        self.main = nn.Sequential(*layers)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        logits: torch.Tensor = self.main(image)
        return logits.reshape(-1)


@torch.no_grad()
def init_weights(module: nn.Module) -> None:
    """The paper's initialisation: conv weights N(0, 0.02); BatchNorm weight N(1, 0.02), bias 0."""
    if isinstance(module, nn.Conv2d | nn.ConvTranspose2d):
        nn.init.normal_(module.weight, 0.0, 0.02)
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)
