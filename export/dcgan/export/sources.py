"""What `dcgan-export` can read: one of our checkpoints, a run directory, or a bare state_dict.

A bare generator state_dict (pytorch/examples `dcgan/main.py`'s `netG_epoch_N.pth`, the PyTorch
DCGAN tutorial's) carries no shape, so `--nz --ngf --channels --image-size` describe it. Every
file is loaded with `weights_only=True`: a pickle that would run code is refused, never run.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from dcgan.contract.manifest import Source, file_sha256
from dcgan.export.shape_defaults import SHAPE_FIELDS, STATE_DICT_DEFAULTS
from dcgan.train.checkpoint import (
    BEST,
    CHECKPOINT_DIR,
    FORMAT,
    CheckpointError,
    load_checkpoint,
    load_file,
    resolve_checkpoint,
)
from dcgan.train.model import Generator, ModelConfig

# How torch.save's files begin: a zip archive since torch 1.6, before it a pickled magic number.
ZIP_MAGIC = b"PK\x03\x04"
LEGACY_MAGIC = pickle.dumps(0x1950A86A20F9469CFC6C, protocol=2)


STEM = "main.0.weight"  # the generator's first ConvTranspose2d: [nz, ngf * 2**(blocks - 1), 4, 4]


class SourceError(Exception):
    """A source that is missing, unreadable, not a generator, or not of the stated shape."""


@dataclass(frozen=True)
class LoadedGenerator:
    generator: Generator  # eval mode, on the CPU
    config: ModelConfig
    source: Source


def resolve_source(path: Path) -> Path:
    """The file `path` names: itself, or a run directory's latest checkpoint."""
    try:
        return resolve_checkpoint(path)
    except CheckpointError as error:
        raise SourceError(str(error)) from None


def best_checkpoint(run_dir: Path) -> Path:
    """RUN_DIR/checkpoints/best.pt (or best.pt in a checkpoints directory given itself)."""
    if not run_dir.is_dir():
        raise SourceError(f"--best takes a run directory, and {run_dir} is not one")
    for candidate in (run_dir / CHECKPOINT_DIR / BEST, run_dir / BEST):
        if candidate.is_file():
            return candidate
    raise SourceError(
        f"{run_dir} has no best checkpoint ({run_dir / CHECKPOINT_DIR / BEST}): a run keeps "
        "one when trained with dcgan-train --eval-every N"
    )


def load_generator(path: Path, shape: dict[str, int | None] | None = None) -> LoadedGenerator:
    """Load the generator in `path`; `shape`: --nz --ngf --channels --image-size (None: not given).

    For our checkpoints the shape comes from the file, and a given value that contradicts it is
    an error rather than a silent override.
    """
    given = {key: value for key, value in (shape or {}).items() if value is not None}
    file = resolve_source(path)
    check_torch_file(file)
    try:
        loaded = load_file(file)
        if isinstance(loaded, dict) and loaded.get("format") == FORMAT:
            state = load_checkpoint(file)  # verifies the digest recorded at save time
            return _from_checkpoint(file, state, given)
    except CheckpointError as error:
        raise SourceError(str(error)) from None
    if _is_state_dict(loaded):
        return _from_state_dict(file, loaded, given)
    raise SourceError(
        f"{file} is neither a dcgan-serving checkpoint nor a generator state_dict "
        f"(it holds {_describe(loaded)})"
    )


def check_torch_file(file: Path) -> None:
    """Name a file torch.save did not write (a plain pickle, an image...) before torch reads it."""
    try:
        with open(file, "rb") as handle:
            head = handle.read(len(LEGACY_MAGIC))
    except OSError:
        return  # load_file says why in its own words
    if not head.startswith(ZIP_MAGIC) and head != LEGACY_MAGIC:
        raise SourceError(
            f"{file} is not a PyTorch file: torch.save writes a zip archive "
            "(before torch 1.6, a pickle led by torch's magic number), and this is neither"
        )


def _from_checkpoint(file: Path, state: dict[str, Any], given: dict[str, int]) -> LoadedGenerator:
    config = ModelConfig.from_dict(state["model_config"])
    for key, value in given.items():
        if getattr(config, key) != value:
            raise SourceError(
                f"{file} has {key}={getattr(config, key)}, not {value}: our checkpoints carry "
                f"their shape; drop --{key.replace('_', '-')}"
            )
    generator = _build(file, config, state["generator"])
    source = Source(
        kind="checkpoint",
        file=str(file.resolve()),
        sha256=file_sha256(file),
        step=int(state["step"]),
    )
    return LoadedGenerator(generator, config, source)


def _from_state_dict(
    file: Path, state: dict[str, torch.Tensor], given: dict[str, int]
) -> LoadedGenerator:
    if _looks_like_discriminator(state):
        raise SourceError(
            f"{file} looks like a discriminator (its last convolution has 1 output channel, "
            "a real/fake score, not an image): export the generator, netG_epoch_N.pth"
        )
    values = {**STATE_DICT_DEFAULTS, **given}
    try:
        config = ModelConfig(
            values["nz"],
            values["ngf"],
            channels=values["channels"],
            image_size=values["image_size"],
        )
    except ValueError as error:
        raise SourceError(str(error)) from None
    _check_stem(file, config, state)
    generator = _build(file, config, state)
    source = Source(
        kind="state_dict", file=str(file.resolve()), sha256=file_sha256(file), step=None
    )
    return LoadedGenerator(generator, config, source)


def _check_stem(file: Path, config: ModelConfig, state: dict[str, torch.Tensor]) -> None:
    """The first layer against --nz and --ngf, before a Generator of that shape is allocated.

    A stated shape far from the file's (--nz 10**12) is refused here, not by the allocator.
    """
    width = config.ngf * 2 ** (config.stride2_blocks - 1)
    expected = (config.nz, width, 4, 4)
    stem = state.get(STEM)
    if stem is None:
        raise SourceError(
            f"{file} has no {STEM} (expected {_dims(expected)} for {_flags(config)}){_hint(state)}"
        )
    if tuple(stem.shape) != expected:
        raise SourceError(
            f"{file}: {STEM} has shape {_shape(stem)}, expected {_dims(expected)} "
            f"for {_flags(config)}{_hint(state)}"
        )


def _build(file: Path, config: ModelConfig, state: dict[str, torch.Tensor]) -> Generator:
    """A Generator of `config` holding `state`, after naming the first key that does not fit."""
    generator = Generator(config)
    expected = generator.state_dict()
    flags = _flags(config)
    for key, tensor in expected.items():
        if key not in state:
            if key.endswith("num_batches_tracked"):  # absent from files saved before torch 0.4.1
                continue
            raise SourceError(
                f"{file} has no {key} (expected {_shape(tensor)} for {flags}){_hint(state)}"
            )
        if state[key].shape != tensor.shape:
            raise SourceError(
                f"{file}: {key} has shape {_shape(state[key])}, expected {_shape(tensor)} "
                f"for {flags}{_hint(state)}"
            )
    unexpected = [key for key in state if key not in expected]
    if unexpected:
        raise SourceError(f"{file} has unexpected key {unexpected[0]} for {flags}{_hint(state)}")
    generator.load_state_dict(state, strict=False)  # every key checked above
    return generator.eval()


def _is_state_dict(value: Any) -> bool:
    return (
        isinstance(value, dict)
        and bool(value)
        and all(isinstance(key, str) and key.startswith("main.") for key in value)
        and all(isinstance(tensor, torch.Tensor) for tensor in value.values())
    )


def _weights(state: dict[str, torch.Tensor]) -> list[torch.Tensor]:
    """The 4-d convolution weights, in layer order."""
    keys = sorted(
        (key for key in state if key.endswith(".weight") and state[key].dim() == 4), key=_layer
    )
    return [state[key] for key in keys]


def _layer(key: str) -> int:
    part = key.split(".")[1]
    return int(part) if part.isdigit() else -1


def _looks_like_discriminator(state: dict[str, torch.Tensor]) -> bool:
    """D's last Conv2d weight is [1, ndf*8, 4, 4]; G's last ConvTranspose2d, [ngf, nc, 4, 4]."""
    weights = _weights(state)
    return len(weights) >= 2 and weights[-1].shape[0] == 1 and weights[0].shape[1] in (1, 3)


def _hint(state: dict[str, torch.Tensor]) -> str:
    """What the file itself looks like, as the options that would describe it."""
    weights = _weights(state)
    if len(weights) < 3:
        return ""
    guess = {
        "nz": weights[0].shape[0],
        "ngf": weights[-1].shape[0],
        "channels": weights[-1].shape[1],
        "image_size": 2 ** (len(weights) + 1),
    }
    return f"; the file looks like {_options(guess)}"


def _flags(config: ModelConfig) -> str:
    return _options({key: getattr(config, key) for key in SHAPE_FIELDS})


def _options(values: dict[str, int]) -> str:
    return " ".join(f"--{key.replace('_', '-')} {value}" for key, value in values.items())


def _shape(tensor: torch.Tensor) -> str:
    return _dims(tuple(tensor.shape))


def _dims(sizes: tuple[int, ...]) -> str:
    return f"[{', '.join(str(size) for size in sizes)}]"


def _describe(value: Any) -> str:
    if isinstance(value, dict):
        if not value:
            return "an empty dict"
        keys = ", ".join(repr(key) for key in list(value)[:3])
        return f"a dict with keys {keys}{', ...' if len(value) > 3 else ''}"
    return f"a {type(value).__name__}"
