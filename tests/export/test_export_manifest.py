"""What EXPORT_DIR holds: the manifest, the artifacts' sha256, ONNX metadata, and tampering."""

from __future__ import annotations

import os
import shutil
from datetime import datetime
from pathlib import Path

import onnx
import pytest

from dcgan.contract.manifest import (
    MANIFEST,
    ONNX,
    ONNX_FP16,
    ONNX_SERVING,
    TORCHSCRIPT,
    ManifestError,
    file_sha256,
    onnx_metadata,
    read_manifest,
    verified_artifact,
)
from dcgan.contract.providers import ort
from dcgan.export.export import OPSET
from tests.export.exports import SMALL, Exported


def test_the_manifest_describes_model_interface_source_and_versions(small_export: Exported) -> None:
    manifest = small_export.manifest
    assert (manifest.model.nz, manifest.model.ngf) == (SMALL["nz"], SMALL["ngf"])
    assert (manifest.model.channels, manifest.model.image_size) == (
        SMALL["channels"],
        SMALL["image_size"],
    )
    assert manifest.model.output_range == (-1.0, 1.0)
    assert (manifest.onnx.opset, manifest.onnx.input, manifest.onnx.output) == (OPSET, "z", "image")
    assert (manifest.onnx.pixels_output, manifest.onnx.batch_dim) == ("pixels", "batch")
    source = manifest.source
    assert source.kind == "state_dict" and source.step is None
    assert source.sha256 == file_sha256(small_export.source)
    assert Path(source.file) == small_export.source.resolve()
    assert {
        "dcgan-serving",
        "torch",
        "onnx",
        "onnxscript",
        "onnxruntime",
        "numpy",
        "python",
    } <= set(manifest.versions)
    assert manifest.versions["onnxruntime"] == ort.__version__
    assert datetime.fromisoformat(manifest.created).tzinfo is not None


def test_the_directory_holds_the_artifacts_and_their_sha256(small_export: Exported) -> None:
    names = sorted(path.name for path in small_export.directory.iterdir())
    assert names == sorted([*small_export.manifest.artifacts, MANIFEST])  # no .data, no leftovers
    for name, record in small_export.manifest.artifacts.items():
        path = small_export.directory / name
        assert record.sha256 == file_sha256(path), name
        assert record.bytes == path.stat().st_size
    umask = os.umask(0)
    os.umask(umask)
    assert small_export.directory.stat().st_mode & 0o777 == 0o777 & ~umask  # a server user can read


def test_read_manifest_round_trips(small_export: Exported) -> None:
    assert read_manifest(small_export.directory) == small_export.manifest


def test_verified_artifact_catches_a_swapped_truncated_or_missing_file(
    small_export: Exported, tmp_path: Path
) -> None:
    directory = tmp_path / "export"
    shutil.copytree(small_export.directory, directory)
    manifest = read_manifest(directory)
    assert (
        verified_artifact(directory, manifest, ONNX_SERVING) == directory / "generator_serving.onnx"
    )
    shutil.copy(directory / "generator_fp16.onnx", directory / "generator.onnx")  # swapped
    with pytest.raises(ManifestError, match="does not match its manifest"):
        verified_artifact(directory, manifest, ONNX)
    data = (directory / "generator.ts").read_bytes()
    (directory / "generator.ts").write_bytes(data[: len(data) // 2])  # truncated
    with pytest.raises(ManifestError, match="truncated, corrupted or swapped"):
        verified_artifact(directory, manifest, TORCHSCRIPT)
    (directory / "generator_fp16.onnx").unlink()
    with pytest.raises(ManifestError, match="missing"):
        verified_artifact(directory, manifest, ONNX_FP16)


@pytest.mark.parametrize("kind", [ONNX, ONNX_SERVING, ONNX_FP16])
def test_each_onnx_graph_is_self_contained_and_describes_itself(
    small_export: Exported, kind: str
) -> None:
    manifest = small_export.manifest
    path = small_export.directory / manifest.file_of(kind)
    model = onnx.load(str(path), load_external_data=False)
    onnx.checker.check_model(model, full_check=True)
    onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True, data_prop=True)
    assert all(t.data_location != onnx.TensorProto.EXTERNAL for t in model.graph.initializer)
    assert [(o.domain, o.version) for o in model.opset_import if o.domain in ("", "ai.onnx")] == [
        ("", OPSET)
    ]
    assert not [node for node in model.graph.node if node.op_type == "BatchNormalization"]
    (z,) = model.graph.input
    assert [d.dim_param or d.dim_value for d in z.type.tensor_type.shape.dim] == [
        "batch",
        manifest.model.nz,
    ]
    for output in model.graph.output:
        assert output.type.tensor_type.shape.dim[0].dim_param == "batch"
    expected = onnx_metadata(
        manifest.model, manifest.onnx, manifest.source, manifest.versions["dcgan-serving"], kind
    )
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert session.get_modelmeta().custom_metadata_map == expected
    assert expected["nz"] == str(manifest.model.nz) and expected["opset"] == str(OPSET)
    assert expected["output_range"] == "[-1.0, 1.0]" and expected["source_step"] == ""
