"""`manifest.json`: the contract between export and serving.

`dcgan-export` writes it beside the artifacts; `dcgan-serve` reads it and never guesses a shape,
a name or a range. This module imports neither torch nor onnxruntime: the serving image has
neither torch nor the exporter.

A model repository, DIR/<model>/<version>/, holds one export directory per version: what
`dcgan-export --repository DIR --name NAME` writes and `dcgan-serve --model-repository DIR` reads.
Names starting with a dot are staging folders, never models or versions.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from dcgan.contract.check_results import CheckResult, check_result_from_dict

FORMAT = "dcgan-serving/export"
VERSION = 1
MANIFEST = "manifest.json"

# Artifact kinds, and the file each is written to.
ONNX = "onnx"  # float32 NCHW image in [-1, 1]
ONNX_SERVING = "onnx-serving"  # the same graph, plus uint8 NHWC pixels
ONNX_FP16 = "onnx-fp16"  # float16 inside, float32 input and output
TORCHSCRIPT = "torchscript"
TORCH_EXPORT = "torch-export"
ARTIFACT_FILES = {
    ONNX: "generator.onnx",
    ONNX_SERVING: "generator_serving.onnx",
    ONNX_FP16: "generator_fp16.onnx",
    TORCHSCRIPT: "generator.ts",
    TORCH_EXPORT: "generator.pt2",
}


MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")  # a repository's model folders
MAX_VERSION = 2**63 - 1  # versions travel as int64


def version_number(name: str) -> int | None:
    """The version a repository folder named `name` holds: a positive integer written without
    sign or leading zeros (so that no two folders hold the same version); None for any other."""
    if not name.isascii() or not name.isdigit() or name.startswith("0"):
        return None
    version = int(name)
    return version if version <= MAX_VERSION else None


class ManifestError(Exception):
    """An export directory whose manifest or files cannot be trusted."""


@dataclass(frozen=True)
class ModelInfo:
    nz: int
    ngf: int
    channels: int
    image_size: int
    output_range: tuple[float, float] = (-1.0, 1.0)


@dataclass(frozen=True)
class OnnxInterface:
    opset: int
    input: str = "z"  # float32 [batch, nz]
    output: str = "image"  # float32 [batch, channels, size, size]
    pixels_output: str = "pixels"  # uint8 [batch, size, size, channels], serving graph only
    batch_dim: str = "batch"  # the symbolic name of the batch dimension


@dataclass(frozen=True)
class Artifact:
    kind: str
    sha256: str
    bytes: int


@dataclass(frozen=True)
class Source:
    kind: str  # "checkpoint" (ours) or "state_dict" (pytorch/examples, the DCGAN tutorial)
    file: str
    sha256: str
    step: int | None


@dataclass(frozen=True)
class Manifest:
    model: ModelInfo
    onnx: OnnxInterface
    artifacts: dict[str, Artifact]  # file name -> record
    source: Source
    versions: dict[str, str]
    parity: list[CheckResult]  # every check export ran, and each it could not
    created: str
    format: str = FORMAT
    version: int = VERSION

    def file_of(self, kind: str) -> str:
        for name, artifact in self.artifacts.items():
            if artifact.kind == kind:
                return name
        raise ManifestError(f"the export holds no {kind} artifact")

    def to_json(self) -> str:
        data = asdict(self)
        data["parity"] = [result.to_dict() for result in self.parity]
        return json.dumps(data, indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Manifest:
        if data.get("format") != FORMAT:
            raise ManifestError(
                f"not a dcgan-serving export manifest (format {data.get('format')!r})"
            )
        if data.get("version") != VERSION:
            raise ManifestError(
                f"manifest version {data.get('version')!r} is not supported (expected {VERSION})"
            )
        try:
            model = dict(data["model"])
            model["output_range"] = tuple(model["output_range"])
            return cls(
                model=ModelInfo(**model),
                onnx=OnnxInterface(**data["onnx"]),
                artifacts={name: Artifact(**record) for name, record in data["artifacts"].items()},
                source=Source(**data["source"]),
                versions=dict(data["versions"]),
                parity=_parity(data["parity"]),
                created=str(data["created"]),
            )
        except (KeyError, TypeError, ValueError) as error:
            raise ManifestError(f"malformed manifest: {error!r}") from None


def _parity(records: Any) -> list[CheckResult]:
    """The `parity` list, typed; a bad record is named by its place and its artifact."""
    if not isinstance(records, list):
        raise ManifestError(f"malformed manifest: parity is a {type(records).__name__}, not a list")
    results = []
    for index, record in enumerate(records):
        try:
            results.append(check_result_from_dict(record))
        except ValueError as error:
            artifact = f" ({record.get('artifact')})" if isinstance(record, dict) else ""
            raise ManifestError(
                f"malformed manifest: parity record {index}{artifact}: {error}"
            ) from None
    return results


def onnx_metadata(
    model: ModelInfo, onnx: OnnxInterface, source: Source, version: str, kind: str
) -> dict[str, str]:
    """The manifest's key facts as an ONNX graph's `metadata_props`, so the graph describes itself.

    onnxruntime reads them back as `session.get_modelmeta().custom_metadata_map`.
    """
    return {
        "dcgan_serving_version": version,
        "artifact_kind": kind,
        "nz": str(model.nz),
        "ngf": str(model.ngf),
        "channels": str(model.channels),
        "image_size": str(model.image_size),
        "output_range": json.dumps(list(model.output_range)),
        "opset": str(onnx.opset),
        "input": onnx.input,
        "batch_dim": onnx.batch_dim,
        "source_kind": source.kind,
        "source_sha256": source.sha256,
        "source_step": "" if source.step is None else str(source.step),
    }


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def artifact_record(path: Path, kind: str) -> Artifact:
    return Artifact(kind=kind, sha256=file_sha256(path), bytes=path.stat().st_size)


def read_manifest(export_dir: Path) -> Manifest:
    path = export_dir / MANIFEST
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise ManifestError(f"{export_dir} is not an export directory: no {MANIFEST}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ManifestError(f"cannot read {path}: {error}") from None
    if not isinstance(data, dict):
        raise ManifestError(f"{path} is not a JSON object")
    return Manifest.from_dict(data)


def _check_digest(path: Path, actual: str, expected: str) -> None:
    if actual != expected:
        raise ManifestError(
            f"{path} does not match its manifest: sha256 {actual[:16]}..., "
            f"expected {expected[:16]}... (truncated, corrupted or swapped file)"
        )


def _artifact_path(export_dir: Path, manifest: Manifest, kind: str) -> Path:
    path = export_dir / manifest.file_of(kind)
    if not path.is_file():
        raise ManifestError(f"{path} is missing")
    return path


def verified_artifact(export_dir: Path, manifest: Manifest, kind: str) -> Path:
    """The path of the artifact of `kind`, after checking its bytes against the manifest."""
    path = _artifact_path(export_dir, manifest, kind)
    _check_digest(path, file_sha256(path), manifest.artifacts[path.name].sha256)
    return path


def verified_bytes(export_dir: Path, manifest: Manifest, kind: str) -> tuple[Path, bytes]:
    """The artifact of `kind` and its bytes, read once and checked against the manifest: what is
    used is what was checked, even if the file changes on disk meanwhile."""
    path = _artifact_path(export_dir, manifest, kind)
    data = path.read_bytes()
    _check_digest(path, hashlib.sha256(data).hexdigest(), manifest.artifacts[path.name].sha256)
    return path, data
