"""What EXPORT_DIR holds: the manifest, the artifacts' sha256, ONNX metadata, and tampering."""

from __future__ import annotations

import json
import os
import shutil
from datetime import datetime
from pathlib import Path
from typing import Any

import onnx
import pytest

from dcgan.contract.check_results import (
    ParityResult,
    PixelMismatch,
    SkippedCheck,
    StructureResult,
)
from dcgan.contract.manifest import (
    MANIFEST,
    ONNX,
    ONNX_FP16,
    ONNX_SERVING,
    TORCHSCRIPT,
    Manifest,
    ManifestError,
    file_sha256,
    onnx_metadata,
    read_manifest,
    verified_artifact,
)
from dcgan.contract.providers import ort
from dcgan.export.export import OPSET
from tests.support.exports import SMALL, Exported


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


COMPARISON_KEYS = {
    "artifact",
    "reference",
    "runtime",
    "batch_size",
    "max_abs_error",
    "tolerance",
    "passed",
}
PIXEL_KEYS = {"differing_pixels", "all_rounding_ties"}


def test_each_parity_result_is_one_flat_json_object_of_its_kind(small_export: Exported) -> None:
    text = (small_export.directory / MANIFEST).read_text()
    assert text == small_export.manifest.to_json()
    records = json.loads(text)["parity"]
    results = small_export.manifest.parity
    assert {type(result) for result in results} >= {ParityResult, StructureResult}
    for record, result in zip(records, results, strict=True):
        if isinstance(result, SkippedCheck):
            assert record == {
                "artifact": result.artifact,
                "runtime": result.runtime,
                "passed": None,
                "skipped": result.reason,
            }
        elif isinstance(result, StructureResult):
            assert set(record) == {"artifact", "check", "passed", "detail"}
            assert record["passed"] is True
        else:
            extra = set(record) - COMPARISON_KEYS
            assert set(record) >= COMPARISON_KEYS and record["passed"] is True
            assert extra in (set(), PIXEL_KEYS, {"compute_dtype"}, {"compute_dtype", "note"})
            assert (extra == PIXEL_KEYS) == (result.pixels is not None)


# The records as manifest.json holds them: a pixel comparison, a float16 comparison, a structure
# check and a CUDA check that could not run.
PIXELS_RECORD = {
    "artifact": "generator_serving.onnx (pixels)",
    "reference": "generator.onnx (image) post-processed in NumPy",
    "runtime": "onnxruntime CPUExecutionProvider",
    "batch_size": 7,
    "max_abs_error": 1.0,
    "tolerance": "exact up to rounding ties",
    "passed": True,
    "differing_pixels": 2,
    "all_rounding_ties": True,
}
FP16_RECORD = {
    "artifact": "generator_fp16.onnx",
    "reference": "torch eager",
    "runtime": "onnxruntime CPUExecutionProvider",
    "batch_size": 1,
    "max_abs_error": 0.0012,
    "tolerance": "max abs error <= 1e-2",
    "passed": True,
    "compute_dtype": "float32",
    "note": "runs ConvTranspose in float32",
}
STRUCTURE_RECORD = {
    "artifact": "generator.onnx",
    "check": "onnx.checker full_check, strict shape inference, interface and metadata",
    "passed": True,
    "detail": "opset 18, symbolic batch dimension 'batch'",
}
SKIPPED_RECORD = {
    "artifact": "generator.onnx",
    "runtime": "onnxruntime CUDAExecutionProvider (use_tf32=0)",
    "passed": None,
    "skipped": "no CUDA device",
}


def with_parity(manifest: Manifest, parity: Any) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(manifest.to_json())
    data["parity"] = parity
    return data


def test_parity_records_read_back_as_typed_results(small_export: Exported) -> None:
    records = [PIXELS_RECORD, FP16_RECORD, STRUCTURE_RECORD, SKIPPED_RECORD]
    manifest = Manifest.from_dict(with_parity(small_export.manifest, records))
    assert manifest.parity == [
        ParityResult(
            artifact="generator_serving.onnx (pixels)",
            reference="generator.onnx (image) post-processed in NumPy",
            runtime="onnxruntime CPUExecutionProvider",
            batch_size=7,
            max_abs_error=1.0,
            tolerance="exact up to rounding ties",
            passed=True,
            pixels=PixelMismatch(differing_pixels=2, all_rounding_ties=True),
        ),
        ParityResult(
            artifact="generator_fp16.onnx",
            reference="torch eager",
            runtime="onnxruntime CPUExecutionProvider",
            batch_size=1,
            max_abs_error=0.0012,
            tolerance="max abs error <= 1e-2",
            passed=True,
            compute_dtype="float32",
            note="runs ConvTranspose in float32",
        ),
        StructureResult(
            artifact="generator.onnx",
            check="onnx.checker full_check, strict shape inference, interface and metadata",
            passed=True,
            detail="opset 18, symbolic batch dimension 'batch'",
        ),
        SkippedCheck(
            artifact="generator.onnx",
            runtime="onnxruntime CUDAExecutionProvider (use_tf32=0)",
            reason="no CUDA device",
        ),
    ]
    assert json.loads(manifest.to_json())["parity"] == records
    assert [result.describe() for result in manifest.parity] == [
        "generator_serving.onnx (pixels) at batch size 7 on onnxruntime CPUExecutionProvider: "
        "2 pixels differ, all of them rounding ties against generator.onnx (image) "
        "post-processed in NumPy (tolerance exact up to rounding ties)",
        "generator_fp16.onnx at batch size 1 on onnxruntime CPUExecutionProvider: "
        "max abs error 0.0012 against torch eager (tolerance max abs error <= 1e-2)",
        "generator.onnx: onnx.checker full_check, strict shape inference, interface and metadata "
        "passed: opset 18, symbolic batch dimension 'batch'",
        "generator.onnx on onnxruntime CUDAExecutionProvider (use_tf32=0): "
        "not checked (no CUDA device)",
    ]


MALFORMED_PARITY: list[tuple[str, Any, str]] = [
    ("not a list", {"0": STRUCTURE_RECORD}, "not a list"),
    ("a record not an object", [["generator.onnx", True]], "record 0: a list, not a JSON object"),
    (
        "a comparison without passed",
        [{k: v for k, v in FP16_RECORD.items() if k != "passed"}],
        "has no 'passed'",
    ),
    (
        "an unknown field",
        [{**STRUCTURE_RECORD, "score": 1}],
        "parity record 0 (generator.onnx): a structure check has unexpected fields ['score']",
    ),
    (
        "passed as a string",
        [{**STRUCTURE_RECORD, "passed": "yes"}],
        "structure check's passed is 'yes', not bool",
    ),
    ("a boolean batch size", [{**FP16_RECORD, "batch_size": True}], "batch_size is True, not int"),
    ("an error as a string", [{**FP16_RECORD, "max_abs_error": "0.1"}], "max_abs_error is '0.1'"),
    (
        "half the pixel facts",
        [{k: v for k, v in PIXELS_RECORD.items() if k != "all_rounding_ties"}],
        "parity record 0 (generator_serving.onnx (pixels)): a comparison holds one of",
    ),
    (
        "a skipped check that passed",
        [{**SKIPPED_RECORD, "passed": False}],
        "passed is False, not null",
    ),
    (
        "a skipped check without reason",
        [{**SKIPPED_RECORD, "skipped": None}],
        "skipped is None, not str",
    ),
]


@pytest.mark.parametrize(
    ("parity", "fragment"),
    [case[1:] for case in MALFORMED_PARITY],
    ids=[case[0] for case in MALFORMED_PARITY],
)
def test_a_malformed_parity_record_is_a_manifest_error(
    small_export: Exported, parity: Any, fragment: str
) -> None:
    with pytest.raises(ManifestError, match="malformed manifest") as raised:
        Manifest.from_dict(with_parity(small_export.manifest, parity))
    assert fragment in str(raised.value)


def test_read_manifest_refuses_a_malformed_parity_record(
    small_export: Exported, tmp_path: Path
) -> None:
    directory = tmp_path / "export"
    shutil.copytree(small_export.directory, directory)
    data = with_parity(small_export.manifest, [{**STRUCTURE_RECORD, "passed": 1}])
    (directory / MANIFEST).write_text(json.dumps(data))
    with pytest.raises(
        ManifestError,
        match=r"malformed manifest: parity record 0 \(generator.onnx\): .*passed is 1, not bool",
    ):
        read_manifest(directory)


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
