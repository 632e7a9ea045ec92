"""Real exports for the tests: from one training step, from pytorch/examples state_dicts, from
runs; and damaged copies that a server must refuse.

Most export tests use a small generator (nz=16, ngf=8, 64x64, RGB); the full-size default one
(nz=100, ngf=64) is exported once, for the slow tests.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from dcgan.contract.manifest import ONNX, Manifest
from dcgan.export.export import export_generator
from dcgan.export.sources import load_generator
from dcgan.train.model import Generator, init_weights
from dcgan.train.train import resolve_config, train
from tests.support.models import pytorch_examples_netg

SMALL = {"nz": 16, "ngf": 8, "channels": 3, "image_size": 64}
SMALL_FLAGS = ["--nz=16", "--ngf=8"]


def make_export(out: Path, seed: int = 0) -> Path:
    """A real pipeline in miniature: one training step (64x64 RGB, ngf 16), then dcgan-export."""
    run = out.parent / f"{out.name}-run"
    settings = {
        "dataset": "fake",
        "ngf": 16,
        "ndf": 16,
        "batch_size": 16,
        "max_steps": 1,
        "seed": seed,
    }
    train(resolve_config({**settings, "out": str(run), "workers": 0, "samples": 4}))
    export_generator(run, out, formats=[ONNX])
    return out


def export_run(run: Path, out: Path) -> Path:
    """dcgan-export's ONNX export of a run, parity proved as always."""
    export_generator(run, out, formats=[ONNX], batch_sizes=(1, 7))
    return out


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


# ------------------------------------------------------------------------------ damaged exports


def edit_manifest(export: Path, edit: Callable[[dict[str, Any]], None]) -> None:
    manifest = export / "manifest.json"
    data = json.loads(manifest.read_text())
    edit(data)
    manifest.write_text(json.dumps(data))


def replace_graph(export: Path, data: bytes) -> None:
    """Put `data` in place of the serving graph, with a manifest whose sha256 matches it."""
    (export / "generator_serving.onnx").write_bytes(data)

    def record(manifest: dict[str, Any]) -> None:
        manifest["artifacts"]["generator_serving.onnx"].update(
            sha256=hashlib.sha256(data).hexdigest(), bytes=len(data)
        )

    edit_manifest(export, record)


def damaged_export(export_dir: Path, dest: Path, damage: str) -> Path:
    """A copy of `export_dir` with one kind of damage that a server must refuse in one line."""
    shutil.copytree(export_dir, dest)
    edits: dict[str, Callable[[dict[str, Any]], None]] = {
        "nz": lambda m: m["model"].update(nz=128),
        "shape": lambda m: m["model"].update(channels=1, image_size=32),
        "range": lambda m: m["model"].update(output_range=[0.0, 1.0]),
        "nz not a number": lambda m: m["model"].update(nz="abc"),
        "no range": lambda m: m["model"].update(output_range=[1.0]),
        "no model": lambda m: m.pop("model"),
        "not an export": lambda m: m.update(format="something else"),
    }
    if damage in edits:
        edit_manifest(dest, edits[damage])
    elif damage == "garbage graph":
        replace_graph(dest, b"\x08\x07 this is not an ONNX graph " * 100)
    elif damage == "graph without pixels":
        replace_graph(dest, (dest / "generator.onnx").read_bytes())
    elif damage == "graph missing":
        (dest / "generator_serving.onnx").unlink()
    elif damage == "manifest garbage":
        (dest / "manifest.json").write_text("{ not json")
    elif damage == "manifest a list":
        (dest / "manifest.json").write_text("[1, 2]")
    elif damage == "manifest a folder":
        (dest / "manifest.json").unlink()
        (dest / "manifest.json").mkdir()
    elif damage == "a file, not a folder":
        shutil.rmtree(dest)
        dest.write_text("not a folder")
    else:
        raise ValueError(damage)
    return dest
