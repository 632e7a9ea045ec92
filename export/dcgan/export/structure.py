"""Each ONNX file on its own: a valid graph, and exactly the interface the manifest promises.

The server trusts the manifest for names, dtypes, the symbolic batch dimension and the opset, so
every graph is held to it here, before parity compares any numbers: onnx.checker in full, strict
shape inference, the inputs and outputs, folded BatchNorm, weights inside the file, float16
weights for the float16 graph, and the `metadata_props` stamped from the manifest.
"""

from __future__ import annotations

from pathlib import Path

import onnx

from dcgan.contract.check_results import StructureResult
from dcgan.contract.manifest import ONNX_FP16, ONNX_SERVING, Manifest, onnx_metadata

STRUCTURE_CHECK = "onnx.checker full_check, strict shape inference, interface and metadata"
FLOAT_TYPES = {
    onnx.TensorProto.FLOAT,
    onnx.TensorProto.FLOAT16,
    onnx.TensorProto.DOUBLE,
    onnx.TensorProto.BFLOAT16,
}


def check_onnx_structure(path: Path, kind: str, manifest: Manifest) -> StructureResult:
    """onnx.checker (full), strict shape inference, and the interface the manifest promises."""
    model = onnx.load(str(path), load_external_data=False)
    problems = [
        *validity_problems(model),
        *interface_problems(model, kind, manifest),
        *weight_problems(model, kind),
    ]
    metadata = {prop.key: prop.value for prop in model.metadata_props}
    expected = onnx_metadata(
        manifest.model, manifest.onnx, manifest.source, manifest.versions["dcgan-serving"], kind
    )
    if metadata != expected:
        problems.append(f"metadata_props {metadata}, manifest says {expected}")
    confirmed = f"opset {manifest.onnx.opset}, symbolic batch dimension {manifest.onnx.batch_dim!r}"
    return StructureResult(
        artifact=path.name,
        check=STRUCTURE_CHECK,
        passed=not problems,
        detail="; ".join(problems) or confirmed,
    )


def validity_problems(model: onnx.ModelProto) -> list[str]:
    """What onnx.checker (full) and strict, type-checked shape inference find first."""
    try:
        onnx.checker.check_model(model, full_check=True)
        onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True, data_prop=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as error:
        return [str(error).strip().splitlines()[0]]
    return []


def interface_problems(model: onnx.ModelProto, kind: str, manifest: Manifest) -> list[str]:
    """The opset, and each input and output's name, dtype and shape, against the manifest."""
    problems = []
    interface, info = manifest.onnx, manifest.model
    opsets = {entry.domain: entry.version for entry in model.opset_import}
    if opsets.get("", opsets.get("ai.onnx")) != interface.opset:
        problems.append(f"opset {opsets}, manifest says {interface.opset}")
    batch, side = interface.batch_dim, info.image_size
    expected_io = {
        "inputs": [(interface.input, onnx.TensorProto.FLOAT, [batch, info.nz])],
        "outputs": [(interface.output, onnx.TensorProto.FLOAT, [batch, info.channels, side, side])],
    }
    if kind == ONNX_SERVING:
        pixels = (
            interface.pixels_output,
            onnx.TensorProto.UINT8,
            [batch, side, side, info.channels],
        )
        expected_io["outputs"].append(pixels)
    for group, values in (("inputs", model.graph.input), ("outputs", model.graph.output)):
        found = [(value.name, value.type.tensor_type.elem_type, dims(value)) for value in values]
        if found != expected_io[group]:
            problems.append(f"{group} {found}, manifest says {expected_io[group]}")
    return problems


def weight_problems(model: onnx.ModelProto, kind: str) -> list[str]:
    """BatchNorm folded away, weights inside the file, and float16 weights in the float16 graph."""
    problems = []
    if any(node.op_type == "BatchNormalization" for node in model.graph.node):
        problems.append("a BatchNormalization node was left unfolded")
    if any(tensor.data_location == onnx.TensorProto.EXTERNAL for tensor in model.graph.initializer):
        problems.append("weights are stored outside the file")
    if kind == ONNX_FP16:
        floats = {t.data_type for t in model.graph.initializer if t.data_type in FLOAT_TYPES}
        if floats != {onnx.TensorProto.FLOAT16}:
            problems.append(f"weights are not all float16 ({sorted(floats)})")
    return problems


def dims(value: onnx.ValueInfoProto) -> list[str | int]:
    """A tensor's shape as the manifest writes it: symbolic dimensions by name."""
    return [dim.dim_param or dim.dim_value for dim in value.type.tensor_type.shape.dim]
