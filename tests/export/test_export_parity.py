"""Parity, batch size by batch size: the exporter's own checks, and independent ones beside them.

Real exports, real onnxruntime sessions: each test runs on the small export, and on the
full-size default generator in slow runs.
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from dcgan.contract.check_results import ParityResult, SkippedCheck, StructureResult
from dcgan.contract.manifest import ARTIFACT_FILES, ONNX, ONNX_FP16, ONNX_SERVING, OnnxInterface
from dcgan.contract.providers import CPU, CUDA, cuda_unavailable_reason, ort
from dcgan.export import parity
from dcgan.export.parity import (
    BATCH_SIZES,
    allclose,
    failures,
    float32_fallback_ops,
    latents,
    onnxruntime_sessions,
    pixel_mismatch,
    run_parity,
    to_pixels,
)
from dcgan.export.structure import STRUCTURE_CHECK, check_onnx_structure
from tests.support.exports import Exported

FLOAT, SERVING, FP16 = (ARTIFACT_FILES[kind] for kind in (ONNX, ONNX_SERVING, ONNX_FP16))


def eager(exported: Exported, z: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        image: np.ndarray = exported.generator(torch.from_numpy(z)).numpy()
    return image


def cpu_session(exported: Exported, name: str) -> ort.InferenceSession:
    return ort.InferenceSession(str(exported.directory / name), providers=[CPU])


def comparisons(exported: Exported) -> list[ParityResult]:
    return [result for result in exported.manifest.parity if isinstance(result, ParityResult)]


@pytest.mark.parametrize("batch_size", BATCH_SIZES)
def test_every_artifact_passes_the_exporters_checks(exported: Exported, batch_size: int) -> None:
    results = run_parity(exported.generator, exported.directory, exported.manifest, (batch_size,))
    assert failures(results) == []
    ran = [result for result in results if not isinstance(result, SkippedCheck)]
    assert all(result.passed for result in ran)
    assert {result.artifact for result in ran} == {
        *exported.manifest.artifacts,
        f"{SERVING} (pixels)",
    }
    assert {result.batch_size for result in ran if isinstance(result, ParityResult)} == {batch_size}


@pytest.mark.parametrize("batch_size", BATCH_SIZES)
def test_onnxruntime_matches_eager(exported: Exported, batch_size: int) -> None:
    z = latents(batch_size, exported.manifest.model.nz)
    expected = eager(exported, z)
    side, channels = exported.manifest.model.image_size, exported.manifest.model.channels
    for name in (FLOAT, SERVING):
        (image,) = cpu_session(exported, name).run(["image"], {"z": z})
        assert image.dtype == np.float32 and image.shape == (batch_size, channels, side, side)
        np.testing.assert_allclose(image, expected, rtol=1e-3, atol=1e-5)
        assert image.min() >= -1.0 and image.max() <= 1.0


@pytest.mark.parametrize("batch_size", BATCH_SIZES)
def test_serving_pixels_are_the_float_graph_post_processed(
    exported: Exported, batch_size: int
) -> None:
    z = latents(batch_size, exported.manifest.model.nz)
    (image,) = cpu_session(exported, FLOAT).run(["image"], {"z": z})
    (pixels,) = cpu_session(exported, SERVING).run(["pixels"], {"z": z})
    side, channels = exported.manifest.model.image_size, exported.manifest.model.channels
    assert pixels.dtype == np.uint8 and pixels.shape == (batch_size, side, side, channels)
    reference = (
        np.clip(np.round((image + 1.0) * 127.5), 0, 255).astype(np.uint8).transpose(0, 2, 3, 1)
    )
    differ = pixels != reference
    scaled = ((image.astype(np.float64) + 1.0) * 127.5).transpose(0, 2, 3, 1)
    assert np.all(np.abs(scaled[differ] % 1.0 - 0.5) < 1e-3), (
        "a pixel differs away from a rounding tie"
    )


@pytest.mark.parametrize("batch_size", BATCH_SIZES)
def test_torchscript_and_pt2_match_eager(exported: Exported, batch_size: int) -> None:
    z = torch.from_numpy(latents(batch_size, exported.manifest.model.nz))
    expected = torch.from_numpy(eager(exported, z.numpy()))
    with pytest.warns(FutureWarning):  # TorchScript is deprecated in favour of torch.export
        scripted = torch.jit.load(str(exported.directory / "generator.ts"))
    exported_program = torch.export.load(exported.directory / "generator.pt2").module()
    with torch.no_grad():
        for module in (scripted, exported_program):
            torch.testing.assert_close(module(z), expected, rtol=0.0, atol=1e-6)


@pytest.mark.parametrize("batch_size", BATCH_SIZES)
def test_fp16_graph_is_within_1e_2_with_float32_io(exported: Exported, batch_size: int) -> None:
    session = cpu_session(exported, FP16)
    assert [(i.name, i.type) for i in session.get_inputs()] == [("z", "tensor(float)")]
    assert [(o.name, o.type) for o in session.get_outputs()] == [("image", "tensor(float)")]
    z = latents(batch_size, exported.manifest.model.nz)
    (image,) = session.run(None, {"z": z})
    error = float(np.abs(image - eager(exported, z)).max())
    assert error <= 1e-2
    recorded = [
        result
        for result in comparisons(exported)
        if result.artifact == FP16 and result.batch_size == batch_size
    ]
    assert {result.runtime for result in recorded} >= {f"onnxruntime {CPU}"}
    assert all(result.max_abs_error <= 1e-2 and result.passed for result in recorded)


def test_the_manifest_records_every_check_that_ran_and_each_that_could_not(
    exported: Exported,
) -> None:
    results = exported.manifest.parity
    compared = comparisons(exported)
    for name in exported.manifest.artifacts:
        sizes = {r.batch_size for r in compared if r.artifact == name and r.passed}
        assert sizes >= set(BATCH_SIZES), name
    pixel_results = [r for r in compared if r.artifact == f"{SERVING} (pixels)"]
    assert len(pixel_results) >= len(BATCH_SIZES)
    assert all(r.pixels is not None for r in pixel_results)
    assert all(
        r.pixels is not None and r.pixels.all_rounding_ties and r.passed and r.max_abs_error <= 1
        for r in pixel_results
    )
    assert all(r.pixels is None for r in compared if r.artifact != f"{SERVING} (pixels)")
    structure = [r for r in results if isinstance(r, StructureResult)]
    assert {r.artifact for r in structure} == {FLOAT, SERVING, FP16}
    assert all(r.passed and r.check == STRUCTURE_CHECK for r in structure)
    skipped = [r for r in results if isinstance(r, SkippedCheck)]
    if cuda_unavailable_reason() is not None:  # this machine: the CUDA checks are named as not run
        assert {r.artifact for r in skipped} == {FLOAT, SERVING, FP16}
        assert all(r.reason and r.runtime == parity.RUNTIMES[CUDA] for r in skipped)


def test_fp16_records_say_what_precision_really_ran(small_export: Exported) -> None:
    """onnxruntime's CPU provider upcasts float16 ConvTranspose: the manifest must not hide it."""
    path = small_export.directory / FP16
    fallback = float32_fallback_ops(path, CPU)
    compared = comparisons(small_export)
    on_cpu = [r for r in compared if r.artifact == FP16 and r.runtime == f"onnxruntime {CPU}"]
    assert {r.compute_dtype for r in on_cpu} == {"float32" if fallback else "float16"}
    if fallback:
        assert "ConvTranspose" in fallback
        assert all(r.note is not None and "ConvTranspose" in r.note for r in on_cpu)
        stand_in = [r for r in compared if r.runtime.startswith("torch eager float16")]
        assert {r.batch_size for r in stand_in} == set(BATCH_SIZES)
        assert all(r.compute_dtype == "float16" and r.passed for r in stand_in)
    assert all(r.compute_dtype is None for r in compared if r.artifact != FP16)
    assert float32_fallback_ops(small_export.directory / FLOAT, CPU) == []


def test_cuda_is_checked_only_where_a_session_really_runs_on_it(small_export: Exported) -> None:
    sessions, skipped = onnxruntime_sessions(small_export.directory / FLOAT)
    assert sessions[CPU].get_providers()[0] == CPU
    for provider, session in sessions.items():
        assert session.get_providers()[0] == provider
    assert (skipped is None) == (CUDA in sessions)


def test_torchscript_and_pt2_load_without_our_code(small_export: Exported, tmp_path: Path) -> None:
    z = latents(7, small_export.manifest.model.nz)
    np.save(tmp_path / "z.npy", z)
    np.save(tmp_path / "expected.npy", eager(small_export, z))
    code = """
import sys
sys.modules["dcgan"] = None  # any import of our package now fails
import numpy as np, torch
directory, data = sys.argv[1], sys.argv[2]
z = torch.from_numpy(np.load(f"{data}/z.npy"))
expected = torch.from_numpy(np.load(f"{data}/expected.npy"))
scripted = torch.jit.load(f"{directory}/generator.ts")
exported = torch.export.load(f"{directory}/generator.pt2").module()
for module in (scripted, exported):
    torch.testing.assert_close(module(z), expected, rtol=0.0, atol=1e-6)
print("ok")
"""
    result = subprocess.run(
        [sys.executable, "-c", code, str(small_export.directory), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-2000:]


def test_structure_check_holds_each_graph_to_the_manifest(small_export: Exported) -> None:
    manifest = small_export.manifest
    for kind in (ONNX, ONNX_SERVING, ONNX_FP16):
        result = check_onnx_structure(small_export.directory / ARTIFACT_FILES[kind], kind, manifest)
        assert result.passed, result.detail
        assert result.artifact == ARTIFACT_FILES[kind]
        assert result.detail == f"opset {manifest.onnx.opset}, symbolic batch dimension 'batch'"
    path = small_export.directory / FLOAT
    wrong_opset = check_onnx_structure(path, ONNX, replace(manifest, onnx=OnnxInterface(opset=17)))
    assert not wrong_opset.passed and "opset" in wrong_opset.detail
    wrong_nz = replace(manifest, model=replace(manifest.model, nz=manifest.model.nz + 1))
    result = check_onnx_structure(path, ONNX, wrong_nz)
    assert not result.passed and "inputs" in result.detail and "metadata_props" in result.detail
    assert result.describe() == f"{FLOAT}: {STRUCTURE_CHECK} failed: {result.detail}"
    wrong_kind = check_onnx_structure(path, ONNX_SERVING, manifest)
    assert not wrong_kind.passed and "outputs" in wrong_kind.detail
    assert failures([wrong_kind, *manifest.parity]) == [wrong_kind]


# ----------------------------------------------------------------------------- the comparisons


def test_allclose_fails_on_nan_and_on_a_wrong_shape() -> None:
    a = np.zeros((2, 3), dtype=np.float32)
    assert allclose(a + 1e-6, a, 1e-3, 1e-5)
    assert not allclose(a + 1e-4, a, 1e-3, 1e-5)
    assert not allclose(np.full_like(a, np.nan), a, 1e-3, 1e-5)
    assert not allclose(a[:1], a, 1e-3, 1e-5)
    assert parity.max_abs_error(a[:1], a) == float("inf")


def test_pixel_mismatch_forgives_rounding_ties_only() -> None:
    levels = np.array([10.5, 20.25, 200.5, 254.9], dtype=np.float64)  # two ties, two not
    image = (levels / 127.5 - 1.0).astype(np.float32).reshape(1, 1, 1, 4)  # NCHW
    pixels = to_pixels(image)
    assert pixel_mismatch(pixels, image) == (0, 0, True)
    tie = pixels.copy()
    tie[0, 0, 0, 0] = 21 - int(pixels[0, 0, 0, 0])  # 10.5 as 10 or as 11: both are right
    assert pixel_mismatch(tie, image) == (1, 1, True)
    not_a_tie = pixels.copy()
    not_a_tie[0, 0, 1, 0] += 1
    assert pixel_mismatch(not_a_tie, image) == (1, 1, False)
    far = pixels.copy()
    far[0, 0, 2, 0] += 2
    assert pixel_mismatch(far, image) == (1, 2, False)
    assert pixel_mismatch(pixels.astype(np.int32), image)[2] is False
