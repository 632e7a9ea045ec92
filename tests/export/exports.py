"""Helpers of the export tests: pytorch/examples state_dicts, and exports with their reference.

Most tests use a small generator (nz=16, ngf=8, 64x64, RGB); the full-size default one
(nz=100, ngf=64) is exported once, for the slow tests.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from dcgan.contract.manifest import Manifest
from dcgan.export.export import export_generator
from dcgan.export.sources import load_generator
from dcgan.train.model import Generator, init_weights
from tests.train.test_model import pytorch_examples_netg

SMALL = {"nz": 16, "ngf": 8, "channels": 3, "image_size": 64}
SMALL_FLAGS = ["--nz=16", "--ngf=8"]


def examples_state_dict(
    path: Path, nz: int = 100, ngf: int = 64, nc: int = 3, seed: int = 0
) -> Path:
    """What pytorch/examples dcgan/main.py saves as netG_epoch_N.pth, BatchNorm as if trained.

    The paper's init, then running statistics and affine terms away from 0 and 1, so that folding
    BatchNorm into the convolutions is really exercised.
    """
    torch.manual_seed(seed)
    net = pytorch_examples_netg(nz=nz, ngf=ngf, nc=nc)
    net.apply(init_weights)
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.normal_(0.0, 0.2)
                module.running_var.uniform_(0.3, 3.0)
                module.weight.normal_(1.0, 0.2)
                module.bias.normal_(0.0, 0.1)
    torch.save(net.state_dict(), path)
    return path


@dataclass(frozen=True)
class Exported:
    manifest: Manifest
    directory: Path
    source: Path
    generator: Generator  # the eager reference, loaded from `source` as the exporter loads it


def export_once(root: Path, name: str, **shape: int) -> Exported:
    source = examples_state_dict(root / f"{name}.pth", **_examples_args(shape))
    directory = root / name
    manifest = export_generator(source, directory, fp16=True, shape=dict(shape) or None)
    generator = load_generator(source, dict(shape) or None).generator
    return Exported(manifest, directory, source, generator)


def _examples_args(shape: dict[str, int]) -> dict[str, int]:
    return {"nz": shape.get("nz", 100), "ngf": shape.get("ngf", 64), "nc": shape.get("channels", 3)}
