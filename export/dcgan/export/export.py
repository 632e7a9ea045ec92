"""Export a generator to ONNX, TorchScript and torch.export, prove parity, then install.

Everything is written to a temporary directory beside EXPORT_DIR and checked there; only an
export that passed every parity check is renamed into place, so EXPORT_DIR never holds a
half-written or unproven artifact, and an existing one is replaced (--force) only on success.

Into a model repository (`--repository DIR --name NAME`) the export becomes the model's next
version, DIR/NAME/<newest + 1>/: staged in a hidden folder inside DIR/NAME (which a server's scan
skips), proved there, and renamed into place, so a server polling DIR never sees it half-written.
"""

from __future__ import annotations

import contextlib
import errno
import os
import platform
import secrets
import shutil
import warnings
from collections.abc import Collection
from dataclasses import replace
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import helper, numpy_helper

from dcgan.contract.manifest import (
    ARTIFACT_FILES,
    MANIFEST,
    MODEL_NAME,
    ONNX,
    ONNX_FP16,
    ONNX_SERVING,
    TORCH_EXPORT,
    TORCHSCRIPT,
    Manifest,
    ModelInfo,
    OnnxInterface,
    artifact_record,
    onnx_metadata,
    version_number,
)
from dcgan.contract.providers import ort
from dcgan.export.batchnorm_fp16 import Float16Generator, fold_batchnorm
from dcgan.export.parity import BATCH_SIZES, ParityError, failures, run_parity
from dcgan.export.sources import LoadedGenerator, load_generator, resolve_source
from dcgan.train.checkpoint import fsync_dir

OPSET = 18  # pinned: the serving image's onnxruntime must implement it
FORMATS = (ONNX, TORCHSCRIPT)  # --onnx: the ONNX graphs; --torchscript: TorchScript and .pt2


class ExportError(Exception):
    """EXPORT_DIR cannot be used: it holds other files, or cannot be written."""


def artifact_kinds(formats: Collection[str], fp16: bool) -> list[str]:
    """The artifacts that `formats` (ONNX, TORCHSCRIPT) and --fp16 ask for, in writing order."""
    if fp16 and ONNX not in formats:
        raise ValueError("--fp16 is an ONNX variant: it needs --onnx")
    kinds = [ONNX, ONNX_SERVING, *([ONNX_FP16] if fp16 else [])] if ONNX in formats else []
    return kinds + ([TORCHSCRIPT, TORCH_EXPORT] if TORCHSCRIPT in formats else [])


def export_generator(
    source: Path,
    out_dir: Path,
    formats: Collection[str] = FORMATS,
    *,
    fp16: bool = False,
    force: bool = False,
    shape: dict[str, int | None] | None = None,
    batch_sizes: tuple[int, ...] = BATCH_SIZES,
) -> Manifest:
    """Export the generator in `source` into `out_dir`, with parity proved over `batch_sizes`.

    Raises SourceError or ExportError for bad input, ParityError when a check fails; in every
    case nothing is left behind and an existing `out_dir` is untouched.
    """
    kinds = artifact_kinds(formats, fp16)
    out_dir = out_dir.resolve()
    check_target(out_dir, source, force)
    loaded = load_generator(source, shape)  # a bad source is refused before anything is created
    new_parents = missing_directories(out_dir.parent)
    try:
        staging = make_staging_dir(out_dir)
        try:
            manifest = prove(loaded, staging, kinds, batch_sizes)
            install(staging, out_dir, force)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
    except BaseException:
        remove_new(new_parents)
        raise
    return manifest


def export_version(
    source: Path,
    repository: Path,
    name: str,
    formats: Collection[str] = FORMATS,
    *,
    shape: dict[str, int | None] | None = None,
    batch_sizes: tuple[int, ...] = BATCH_SIZES,
    fp16: bool = False,
) -> tuple[Manifest, Path]:
    """Export the generator in `source` as the next version of model `name` in `repository`:
    DIR/NAME/<newest + 1>/, staged, proved and renamed into place. Returns the manifest and the
    version's directory. Raises as export_generator does; nothing is left behind on failure.
    """
    kinds = artifact_kinds(formats, fp16)
    model_dir = repository.resolve() / name
    check_repository(repository, name)
    loaded = load_generator(source, shape)
    new_parents = missing_directories(model_dir)
    try:
        staging = make_staging_dir(model_dir / "version")  # hidden, inside DIR/NAME
        try:
            manifest = prove(loaded, staging, kinds, batch_sizes)
            target = install_version(staging, model_dir)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
    except BaseException:
        remove_new(new_parents)
        raise
    return manifest, target


def prove(
    loaded: LoadedGenerator, staging: Path, kinds: list[str], batch_sizes: tuple[int, ...]
) -> Manifest:
    """Write the artifacts into `staging`, prove their parity, then write the manifest."""
    manifest = write_artifacts(loaded, staging, kinds)
    results = run_parity(loaded.generator, staging, manifest, batch_sizes)
    failed = failures(results)
    if failed:
        raise ParityError(failed)
    manifest = replace(manifest, parity=results)
    (staging / MANIFEST).write_text(manifest.to_json())
    return manifest


def remove_new(directories: list[Path]) -> None:
    """Remove the parents an export created (deepest first), if they are still empty."""
    for directory in directories:
        with contextlib.suppress(OSError):
            directory.rmdir()


# ----------------------------------------------------------------------------- artifacts


def write_artifacts(loaded: LoadedGenerator, directory: Path, kinds: list[str]) -> Manifest:
    """Write each artifact of `kinds` into `directory`; the manifest to be, with no parity yet."""
    config = loaded.config
    manifest = Manifest(
        model=ModelInfo(
            nz=config.nz, ngf=config.ngf, channels=config.channels, image_size=config.image_size
        ),
        onnx=OnnxInterface(opset=OPSET),
        artifacts={},
        source=loaded.source,
        versions=library_versions(),
        parity=[],
        created=datetime.now(UTC).isoformat(timespec="seconds"),
    )
    folded = fold_batchnorm(loaded.generator)
    if ONNX in kinds:
        graph = to_onnx(folded, manifest)
        save_onnx(graph, directory / ARTIFACT_FILES[ONNX], manifest, ONNX)
        save_onnx(
            with_pixels(graph, manifest),
            directory / ARTIFACT_FILES[ONNX_SERVING],
            manifest,
            ONNX_SERVING,
        )
    if ONNX_FP16 in kinds:
        half = to_onnx(Float16Generator(folded), manifest)
        save_onnx(half, directory / ARTIFACT_FILES[ONNX_FP16], manifest, ONNX_FP16)
    example = torch.zeros(2, config.nz)
    if TORCHSCRIPT in kinds:  # the eager module itself, BatchNorm and all: parity to 1e-6
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # TorchScript is deprecated for .pt2
            traced = torch.jit.trace(loaded.generator, (example,))  # type: ignore[no-untyped-call]
            torch.jit.save(traced, str(directory / ARTIFACT_FILES[TORCHSCRIPT]))
    if TORCH_EXPORT in kinds:
        batch = {"z": {0: torch.export.Dim(manifest.onnx.batch_dim)}}
        program = torch.export.export(loaded.generator, (example,), dynamic_shapes=batch)
        torch.export.save(program, directory / ARTIFACT_FILES[TORCH_EXPORT])
    artifacts = {
        ARTIFACT_FILES[kind]: artifact_record(directory / ARTIFACT_FILES[kind], kind)
        for kind in kinds
    }
    return replace(manifest, artifacts=artifacts)


def to_onnx(model: torch.nn.Module, manifest: Manifest) -> onnx.ModelProto:
    """z float32 [batch, nz] -> image float32 [batch, C, H, W], batch symbolic, at OPSET."""
    interface = manifest.onnx
    program = torch.onnx.export(
        model.eval(),
        (torch.zeros(2, manifest.model.nz),),
        dynamo=True,
        external_data=False,
        opset_version=OPSET,
        input_names=[interface.input],
        output_names=[interface.output],
        dynamic_shapes={"z": {0: torch.export.Dim(interface.batch_dim)}},
        verbose=False,
    )
    if program is None:  # only the legacy exporter returns nothing
        raise RuntimeError("torch.onnx.export returned no program")
    graph: onnx.ModelProto = program.model_proto
    if any(node.op_type == "BatchNormalization" for node in graph.graph.node):
        raise RuntimeError("the exported graph still holds a BatchNormalization node")
    return graph


def with_pixels(graph: onnx.ModelProto, manifest: Manifest) -> onnx.ModelProto:
    """`graph` plus a second output: round((image + 1) * 127.5) clamped to 0..255, uint8 NHWC.

    The same float graph, so `image` is unchanged; the server asks only for the output it needs.
    """
    interface, info = manifest.onnx, manifest.model
    serving = onnx.ModelProto()
    serving.CopyFrom(graph)
    constants = {"pixels_one": 1.0, "pixels_scale": 127.5, "pixels_min": 0.0, "pixels_max": 255.0}
    serving.graph.initializer.extend(
        numpy_helper.from_array(np.array(value, dtype=np.float32), name)
        for name, value in constants.items()
    )
    serving.graph.node.extend(
        [
            helper.make_node("Add", [interface.output, "pixels_one"], ["pixels_shifted"]),
            helper.make_node("Mul", ["pixels_shifted", "pixels_scale"], ["pixels_scaled"]),
            helper.make_node("Round", ["pixels_scaled"], ["pixels_rounded"]),  # half to even
            helper.make_node(
                "Clip", ["pixels_rounded", "pixels_min", "pixels_max"], ["pixels_clipped"]
            ),
            helper.make_node(
                "Cast", ["pixels_clipped"], ["pixels_nchw"], to=onnx.TensorProto.UINT8
            ),
            helper.make_node(
                "Transpose", ["pixels_nchw"], [interface.pixels_output], perm=[0, 2, 3, 1]
            ),
        ]
    )
    side = info.image_size
    serving.graph.output.append(
        helper.make_tensor_value_info(
            interface.pixels_output,
            onnx.TensorProto.UINT8,
            [interface.batch_dim, side, side, info.channels],
        )
    )
    return serving


def save_onnx(graph: onnx.ModelProto, path: Path, manifest: Manifest, kind: str) -> None:
    """One self-contained file (weights inside), stamped with the manifest's key facts."""
    stamped = onnx.ModelProto()
    stamped.CopyFrom(graph)
    del stamped.metadata_props[:]
    facts = onnx_metadata(
        manifest.model, manifest.onnx, manifest.source, manifest.versions["dcgan-serving"], kind
    )
    helper.set_model_props(stamped, facts)
    onnx.save_model(stamped, str(path), save_as_external_data=False)


def library_versions() -> dict[str, str]:
    return {
        "dcgan-serving": metadata.version("dcgan-export"),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "onnx": onnx.__version__,
        "onnxscript": metadata.version("onnxscript"),
        "onnxruntime": ort.__version__,
        "numpy": np.__version__,
    }


# ----------------------------------------------------------------------------- the directory


def check_target(out_dir: Path, source: Path, force: bool) -> None:
    """Refuse, before any work, an EXPORT_DIR that holds other files (unless --force)."""
    if out_dir.exists() and not out_dir.is_dir():
        raise ExportError(f"{out_dir} exists and is not a directory")
    entries = sorted(out_dir.iterdir()) if out_dir.is_dir() else []
    if not entries:
        return
    if not force:
        names = ", ".join(entry.name for entry in entries[:3]) + (
            ", ..." if len(entries) > 3 else ""
        )
        raise ExportError(
            f"{out_dir} already exists and holds other files ({names}); pass --force to replace it"
        )
    if any(entry.is_dir() and not entry.is_symlink() for entry in entries):
        raise ExportError(
            f"{out_dir} holds subdirectories, so it is no export: not replacing it, --force or not"
        )
    if resolve_source(source).resolve().is_relative_to(out_dir):
        raise ExportError(f"the checkpoint {source} lies inside {out_dir}: --force would delete it")


def check_repository(repository: Path, name: str) -> None:
    """Refuse, before any work, a model name a server would skip, or files where folders go."""
    if not MODEL_NAME.fullmatch(name):
        raise ExportError(
            f"--name {name!r} is no model name: letters, digits, '_', '.' and '-', "
            "starting with a letter or digit, at most 128"
        )
    for path in (repository, repository / name):
        if path.exists() and not path.is_dir():
            raise ExportError(f"{path} exists and is not a directory")


def next_version(model_dir: Path) -> int:
    """One more than the newest version folder in `model_dir` (1 for none)."""
    versions = [
        number
        for entry in (model_dir.iterdir() if model_dir.is_dir() else [])
        if entry.is_dir() and (number := version_number(entry.name)) is not None
    ]
    return max(versions, default=0) + 1


def install_version(staging: Path, model_dir: Path) -> Path:
    """Make `staging` durable, then rename it to the model's next version; returns that path.

    Another export that took the same number first makes the rename fail (its folder is not
    empty): the next number is tried.
    """
    make_durable(staging)
    while True:
        target = model_dir / str(next_version(model_dir))
        try:
            os.rename(staging, target)
        except OSError as error:
            if error.errno in (errno.EEXIST, errno.ENOTEMPTY):
                continue
            raise
        fsync_dir(model_dir)
        return target


def make_durable(staging: Path) -> None:
    for path in staging.iterdir():
        with open(path, "rb") as handle:
            os.fsync(handle.fileno())
    fsync_dir(staging)


def missing_directories(directory: Path) -> list[Path]:
    """`directory` and those of its parents that do not exist yet, deepest first."""
    missing = []
    while not directory.exists() and not directory.is_symlink() and directory != directory.parent:
        missing.append(directory)
        directory = directory.parent
    return missing


def make_staging_dir(out_dir: Path) -> Path:
    """A fresh hidden directory beside `out_dir`, on the same file system, so renames are atomic.

    Made with mkdir rather than mkdtemp, whose mode 0700 would hide the export from a server
    running as another user.
    """
    parent = out_dir.parent
    if parent.exists() and not parent.is_dir():
        raise ExportError(f"cannot write to {out_dir}: {parent} is not a directory")
    try:
        parent.mkdir(parents=True, exist_ok=True)
        while True:
            staging = parent / f".{out_dir.name}.{secrets.token_hex(4)}.tmp"
            with contextlib.suppress(FileExistsError):
                staging.mkdir()
                return staging
    except OSError as error:
        raise ExportError(f"cannot write to {out_dir}: {error.strerror or error}") from None


def install(staging: Path, out_dir: Path, force: bool) -> None:
    """Make `staging` durable, then rename it to `out_dir`.

    rename() replaces an empty directory and refuses one that is not, so without --force a file
    that appeared in `out_dir` since check_target stays; with it, the old directory is moved
    aside and deleted only once the new one is in place.
    """
    make_durable(staging)
    old = staging.with_name(staging.name + ".old") if force and out_dir.exists() else None
    if old is not None:
        os.rename(out_dir, old)
    try:
        os.rename(staging, out_dir)
    except BaseException:
        if old is not None:
            os.rename(old, out_dir)
        raise
    fsync_dir(out_dir.parent)
    if old is not None:
        shutil.rmtree(old)
