"""Parity: every exported artifact against the PyTorch eager generator it was exported from.

`dcgan-export` runs these checks before it installs anything, and the tests run the same
functions batch size by batch size: the files are only as good as this proof. Each check yields
one typed result (dcgan.contract.check_results) for the manifest's `parity` list; a result that
did not pass fails the export.
"""

from __future__ import annotations

import tempfile
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import onnx
import torch

from dcgan.contract.check_results import (
    CheckResult,
    ParityResult,
    PixelMismatch,
    SkippedCheck,
    StructureResult,
)
from dcgan.contract.manifest import (
    ONNX,
    ONNX_FP16,
    ONNX_SERVING,
    TORCH_EXPORT,
    TORCHSCRIPT,
    Manifest,
    verified_artifact,
)
from dcgan.contract.providers import CPU, CUDA, cuda_unavailable_reason, ort, session_providers
from dcgan.export.batchnorm_fp16 import Float16Generator, fold_batchnorm
from dcgan.export.structure import check_onnx_structure
from dcgan.train.model import Generator

BATCH_SIZES = (1, 2, 7, 64, 256)
SEED = 0  # the latents of batch size b: numpy's default_rng([SEED, b])
ORT_RTOL, ORT_ATOL = 1e-3, 1e-5  # onnxruntime against eager: other kernels, other summation order
TORCH_ATOL = 1e-6  # TorchScript and torch.export run eager's own kernels
FP16_ATOL = 1e-2  # the float16 graph's largest error on an output in [-1, 1]
TIE_WINDOW = 1e-3  # a pixel value this close to k + 0.5 (in 0..255) may round either way
RUNTIMES = {CPU: f"onnxruntime {CPU}", CUDA: f"onnxruntime {CUDA} (use_tf32=0)"}

Array = npt.NDArray[Any]
References = dict[int, tuple[Array, Array]]  # batch size -> (latents, eager images)
Failure = ParityResult | StructureResult


class ParityError(Exception):
    """An artifact disagrees with the eager generator, or breaks the manifest's interface."""

    def __init__(self, failures: list[Failure]) -> None:
        self.failures = failures
        more = f" (and {len(failures) - 1} more failed checks)" if len(failures) > 1 else ""
        super().__init__(failures[0].describe() + more)


# ----------------------------------------------------------------------------- comparisons


def latents(batch_size: int, nz: int) -> npt.NDArray[np.float32]:
    """The fixed-seed latents every check of batch size `batch_size` uses."""
    return np.random.default_rng([SEED, batch_size]).standard_normal(
        (batch_size, nz), dtype=np.float32
    )


def max_abs_error(actual: Array, expected: Array) -> float:
    if actual.shape != expected.shape:
        return float("inf")
    return float(np.max(np.abs(actual.astype(np.float64) - expected.astype(np.float64))))


def allclose(actual: Array, expected: Array, rtol: float, atol: float) -> bool:
    """numpy.allclose's rule (|a - e| <= atol + rtol * |e|), with NaN and a wrong shape failing."""
    if actual.shape != expected.shape:
        return False
    difference = np.abs(actual.astype(np.float64) - expected.astype(np.float64))
    return bool(np.all(difference <= atol + rtol * np.abs(expected.astype(np.float64))))


def to_pixels(image: Array) -> npt.NDArray[np.uint8]:
    """The serving post-processing in NumPy: [-1, 1] NCHW -> round((x + 1) * 127.5) uint8 NHWC."""
    scaled = (image.astype(np.float32) + np.float32(1.0)) * np.float32(127.5)
    return np.clip(np.round(scaled), 0, 255).astype(np.uint8).transpose(0, 2, 3, 1)


def pixel_mismatch(pixels: Array, image: Array) -> tuple[int, int, bool]:
    """How many of `pixels` differ from `to_pixels(image)`, by how much, and whether all are ties.

    A tie is a value within TIE_WINDOW of k + 0.5 that came out as k or k + 1: the float graph and
    the serving graph may differ there by an ulp, and both roundings are right.
    """
    expected = to_pixels(image)
    if pixels.shape != expected.shape or pixels.dtype != np.uint8:
        return int(expected.size), 255, False
    differ = pixels != expected
    difference = np.abs(pixels.astype(np.int16) - expected.astype(np.int16))
    scaled = ((image.astype(np.float64) + 1.0) * 127.5).transpose(0, 2, 3, 1)
    tie = (np.abs(scaled - np.floor(scaled) - 0.5) <= TIE_WINDOW) & (difference == 1)
    return int(differ.sum()), int(difference.max(initial=0)), bool(np.all(tie[differ]))


def _sci(value: float) -> str:
    """1e-05 -> 1e-5: a tolerance in the manifest reads as the README states it."""
    mantissa, exponent = f"{value:.0e}".split("e")
    return f"{mantissa}e{int(exponent)}"


# ----------------------------------------------------------------------------- runtimes


def eager_images(generator: Generator, batch_sizes: tuple[int, ...]) -> References:
    """Latents and the eager generator's images for each batch size: every check's reference."""
    references = {}
    with torch.no_grad():
        for batch_size in batch_sizes:
            z = latents(batch_size, generator.config.nz)
            references[batch_size] = (z, generator(torch.from_numpy(z)).numpy())
    return references


def onnxruntime_sessions(
    path: Path,
) -> tuple[dict[str, ort.InferenceSession], SkippedCheck | None]:
    """A session per provider that really runs here: CPU, and CUDA when it starts.

    onnxruntime-gpu falls back to the CPU without a word when CUDA cannot start, so the provider
    in use is read back from the session, never from get_available_providers(). The second value
    records a CUDA check that could not run, for the manifest.
    """
    sessions = {CPU: ort.InferenceSession(str(path), providers=session_providers(CPU))}
    reason = cuda_unavailable_reason()
    if reason is None:
        session = ort.InferenceSession(str(path), providers=session_providers(CUDA))
        if session.get_providers()[0] == CUDA:
            sessions[CUDA] = session
        else:
            in_use = session.get_providers()[0]
            reason = f"onnxruntime could not start CUDA (the session ran on {in_use})"
    skipped = None if reason is None else SkippedCheck(path.name, RUNTIMES[CUDA], reason)
    return sessions, skipped


def float32_fallback_ops(path: Path, provider: str) -> list[str]:
    """Ops of a float16 graph that `provider` runs in float32 for want of float16 kernels.

    onnxruntime inserts Cast nodes around such ops at session creation; the graph it really runs,
    saved with optimisations off, shows them.
    """
    with tempfile.TemporaryDirectory() as tmp:
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        options.optimized_model_filepath = str(Path(tmp) / "as-run.onnx")
        ort.InferenceSession(str(path), options, providers=session_providers(provider))
        as_run = onnx.load(options.optimized_model_filepath)
    original = {node.name for node in onnx.load(str(path), load_external_data=False).graph.node}
    inserted = {
        output
        for node in as_run.graph.node
        if node.op_type == "Cast" and node.name not in original
        for output in node.output
    }
    return sorted({node.op_type for node in as_run.graph.node if inserted & set(node.input)})


# ----------------------------------------------------------------------------- checks


def check_onnx_graphs(
    float_path: Path,
    serving_path: Path,
    references: References,
    manifest: Manifest,
) -> list[CheckResult]:
    """The float graph and the serving graph against eager, and `pixels` against the float graph.

    The pixel reference is the float graph's own image, post-processed in NumPy on the same
    provider: the serving graph must ship what a NumPy pass would have, up to rounding ties.
    """
    interface = manifest.onnx
    tolerance = f"rtol={_sci(ORT_RTOL)} atol={_sci(ORT_ATOL)}"
    float_sessions, float_skipped = onnxruntime_sessions(float_path)
    serving_sessions, serving_skipped = onnxruntime_sessions(serving_path)
    results: list[CheckResult] = [
        skipped for skipped in (float_skipped, serving_skipped) if skipped is not None
    ]
    for provider, float_session in float_sessions.items():
        runtime = RUNTIMES[provider]
        serving_session = serving_sessions[provider]
        for batch_size, (z, expected) in references.items():
            feed = {interface.input: z}
            (image,) = float_session.run([interface.output], feed)
            served, pixels = serving_session.run([interface.output, interface.pixels_output], feed)
            for name, actual in ((float_path.name, image), (serving_path.name, served)):
                results.append(
                    ParityResult(
                        artifact=name,
                        reference="torch eager",
                        runtime=runtime,
                        batch_size=batch_size,
                        max_abs_error=max_abs_error(actual, expected),
                        tolerance=tolerance,
                        passed=allclose(actual, expected, ORT_RTOL, ORT_ATOL),
                    )
                )
            differing, largest, all_ties = pixel_mismatch(pixels, image)
            results.append(
                ParityResult(
                    artifact=f"{serving_path.name} ({interface.pixels_output})",
                    reference=f"{float_path.name} ({interface.output}) post-processed in NumPy",
                    runtime=runtime,
                    batch_size=batch_size,
                    max_abs_error=float(largest),
                    tolerance="exact up to rounding ties",
                    passed=all_ties,
                    pixels=PixelMismatch(differing_pixels=differing, all_rounding_ties=all_ties),
                )
            )
    return results


def check_fp16_graph(path: Path, generator: Generator, references: References) -> list[CheckResult]:
    """The float16 graph against float32 eager: at most FP16_ATOL, with the error reported.

    Where no onnxruntime provider here computes in float16 (the CPU provider casts the graph's
    ConvTranspose back to float32), the results say so, and the same float16 network runs in
    PyTorch eager float16 as well, so that float16 arithmetic is checked on this machine too.
    """
    tolerance = f"max abs error <= {_sci(FP16_ATOL)}"
    sessions, skipped = onnxruntime_sessions(path)
    results: list[CheckResult] = [skipped] if skipped is not None else []
    ran_in_float16 = False
    for provider, session in sessions.items():
        fallback = float32_fallback_ops(path, provider)
        ran_in_float16 |= not fallback
        note = None
        if fallback:
            note = (
                f"onnxruntime's {provider} runs {', '.join(fallback)} in float32 (it has no "
                "float16 kernel): this checks the float16 weights, not float16 arithmetic"
            )
        for batch_size, (z, expected) in references.items():
            (image,) = session.run(None, {session.get_inputs()[0].name: z})
            error = max_abs_error(image, expected)
            results.append(
                ParityResult(
                    artifact=path.name,
                    reference="torch eager",
                    runtime=RUNTIMES[provider],
                    batch_size=batch_size,
                    max_abs_error=error,
                    tolerance=tolerance,
                    passed=error <= FP16_ATOL,
                    compute_dtype="float32" if fallback else "float16",
                    note=note,
                )
            )
    if not ran_in_float16:
        half = Float16Generator(fold_batchnorm(generator))
        note = "torch eager float16 stands in for the float16 arithmetic no provider here runs"
        for batch_size, (z, expected) in references.items():
            with torch.no_grad():
                image = half(torch.from_numpy(z)).numpy()
            error = max_abs_error(image, expected)
            results.append(
                ParityResult(
                    artifact=path.name,
                    reference="torch eager",
                    runtime="torch eager float16 (CPU), the same network",
                    batch_size=batch_size,
                    max_abs_error=error,
                    tolerance=tolerance,
                    passed=error <= FP16_ATOL,
                    compute_dtype="float16",
                    note=note,
                )
            )
    return results


def check_torch_artifact(
    name: str,
    run: Callable[[torch.Tensor], torch.Tensor],
    runtime: str,
    references: References,
) -> list[CheckResult]:
    """TorchScript or torch.export against eager: the same kernels, so within TORCH_ATOL."""
    results: list[CheckResult] = []
    for batch_size, (z, expected) in references.items():
        with torch.no_grad():
            image = run(torch.from_numpy(z)).numpy()
        results.append(
            ParityResult(
                artifact=name,
                reference="torch eager",
                runtime=runtime,
                batch_size=batch_size,
                max_abs_error=max_abs_error(image, expected),
                tolerance=f"atol={_sci(TORCH_ATOL)}",
                passed=allclose(image, expected, 0.0, TORCH_ATOL),
            )
        )
    return results


# ----------------------------------------------------------------------------- all of them


def run_parity(
    generator: Generator,
    export_dir: Path,
    manifest: Manifest,
    batch_sizes: tuple[int, ...] = BATCH_SIZES,
) -> list[CheckResult]:
    """Every check for every artifact in `manifest`, each file first verified by its sha256."""
    references = eager_images(generator, batch_sizes)
    kinds = {artifact.kind for artifact in manifest.artifacts.values()}
    path = {kind: verified_artifact(export_dir, manifest, kind) for kind in kinds}
    results: list[CheckResult] = [
        check_onnx_structure(path[kind], kind, manifest)
        for kind in (ONNX, ONNX_SERVING, ONNX_FP16)
        if kind in kinds
    ]
    if ONNX in kinds:
        results += check_onnx_graphs(path[ONNX], path[ONNX_SERVING], references, manifest)
    if ONNX_FP16 in kinds:
        results += check_fp16_graph(path[ONNX_FP16], generator, references)
    if TORCHSCRIPT in kinds:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # TorchScript is deprecated for .pt2
            scripted = torch.jit.load(str(path[TORCHSCRIPT]), map_location="cpu")  # type: ignore[no-untyped-call]
        results += check_torch_artifact(
            path[TORCHSCRIPT].name, scripted, "torch.jit.load", references
        )
    if TORCH_EXPORT in kinds:
        exported = torch.export.load(path[TORCH_EXPORT]).module()
        results += check_torch_artifact(
            path[TORCH_EXPORT].name, exported, "torch.export.load", references
        )
    return results


def failures(results: Iterable[CheckResult]) -> list[Failure]:
    """The results that ran and did not pass; a check that could not run is no failure."""
    return [
        result for result in results if not isinstance(result, SkippedCheck) and not result.passed
    ]
