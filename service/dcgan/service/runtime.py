"""The model runtime: onnxruntime sessions over the exported serving graph.

Reads everything from the export's manifest.json and checks the graph's sha256 against it before
loading. The GPU wheel of onnxruntime falls back to the CPU without a word when CUDA cannot start,
so the provider in use is read back from `session.get_providers()` and logged; `--device cuda`
fails loudly rather than serving from the CPU.

On the CPU the runtime keeps two kinds of session. Under load, `instances` narrow sessions (one
thread each by default) run batches side by side: a thread the OS preempts then slows only its
own batch, where a parallel-for over all cores would wait for it. A lone batch at low load runs
on the wide session, all cores on one batch, for the lowest latency.
"""

from __future__ import annotations

import logging
import os
import queue
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from dcgan.contract.manifest import (
    ONNX_SERVING,
    Manifest,
    ManifestError,
    read_manifest,
    verified_artifact,
)
from dcgan.contract.providers import (
    CPU,
    CUDA,
    Providers,
    cuda_unavailable_reason,
    ort,
    session_providers,
)
from dcgan.service.errors import ModelFailure
from dcgan.service.options import RuntimeOptions

_LOGGER = logging.getLogger(__name__)

PIXELS = "pixels"  # output kind: uint8 [n, H, W, C]
VALUES = "values"  # output kind: float32 [n, C, H, W]


class ModelLoadError(Exception):
    """The export cannot be served: a bad manifest, a file that fails its sha256, no CUDA."""


@dataclass(frozen=True)
class ModelSpec:
    """What callers need to know of the model, all of it from the manifest."""

    nz: int
    channels: int
    image_size: int
    output_range: tuple[float, float]
    model_id: str
    sha256: str
    opset: int
    source_step: int | None


def available_cores() -> int:
    return len(os.sched_getaffinity(0))


class ModelRuntime:
    """One or more onnxruntime sessions of the serving graph; `run` is thread-safe."""

    def __init__(self, export_dir: Path, options: RuntimeOptions) -> None:
        try:
            self.manifest: Manifest = read_manifest(export_dir)
            path = verified_artifact(export_dir, self.manifest, ONNX_SERVING)
        except ManifestError as error:
            raise ModelLoadError(str(error)) from None
        model, onnx = self.manifest.model, self.manifest.onnx
        record = self.manifest.artifacts[path.name]
        self.spec = ModelSpec(
            nz=model.nz,
            channels=model.channels,
            image_size=model.image_size,
            output_range=model.output_range,
            model_id=f"dcgan-{record.sha256[:12]}",
            sha256=record.sha256,
            opset=onnx.opset,
            source_step=self.manifest.source.step,
        )
        self._input = onnx.input
        self._outputs = {PIXELS: onnx.pixels_output, VALUES: onnx.output}
        self.options = options
        self._model_bytes = path.read_bytes()
        self._sessions: queue.SimpleQueue[ort.InferenceSession] = queue.SimpleQueue()
        self._wide: ort.InferenceSession | None = None  # all cores on one batch, at low load
        self.provider = ""
        self.instances = 0

    def load(self) -> None:
        """Create the sessions and warm them up (slow: run it off the event loop)."""
        cores = available_cores()
        wide = self._session(cores)
        self.provider = wide.get_providers()[0]
        if self.provider == CUDA:  # sessions alike: the GPU, not threads, does the work
            self.instances = self.options.instances or 1
            sessions = [wide] + [self._session(cores) for _ in range(self.instances - 1)]
        else:
            self.instances = self.options.instances or min(cores, 4)
            threads = self.options.intra_op_threads or max(1, cores // self.instances)
            if self.instances == 1 and threads == cores:
                sessions = [wide]
            else:
                self._wide = wide
                sessions = [self._session(threads) for _ in range(self.instances)]
        for session in sessions:
            self._sessions.put(session)
        lanes = "" if self._wide is None else f" (and one of {cores} for lone batches)"
        _LOGGER.info(
            "model %s on %s: %d parallel session(s)%s",
            self.spec.model_id, self.provider, self.instances, lanes,
        )  # fmt: skip

    @property
    def has_wide_lane(self) -> bool:
        return self._wide is not None

    def _session(self, threads: int) -> ort.InferenceSession:
        providers = self._providers()
        session_options = ort.SessionOptions()
        session_options.intra_op_num_threads = threads
        session_options.inter_op_num_threads = 1
        session_options.add_session_config_entry(
            "session.intra_op.allow_spinning", "1" if self.options.spinning else "0"
        )
        try:
            session = ort.InferenceSession(self._model_bytes, session_options, providers=providers)
        except Exception as error:  # onnxruntime raises its own untyped errors
            raise ModelLoadError(f"onnxruntime cannot load the model: {error}") from None
        in_use = session.get_providers()[0]
        if len(providers) > 1 and in_use != CUDA and self.options.device == "auto":
            _LOGGER.warning(
                "CUDA is present but onnxruntime could not start it: serving on the CPU"
            )
        if self.options.device == "cuda" and in_use != CUDA:
            raise ModelLoadError(
                "--device cuda was asked for, but onnxruntime could not start CUDA "
                f"(session runs on {in_use}); check the driver and the onnxruntime-gpu install"
            )
        self._warm_up(session)
        return session

    def _providers(self) -> Providers:
        """CPU alone, or CUDA with the CPU behind it; auto takes CUDA only where it can start."""
        if self.options.device == "cpu":
            return session_providers(CPU)
        reason = cuda_unavailable_reason()
        if reason is None:
            return session_providers(CUDA)
        if self.options.device == "cuda":
            raise ModelLoadError(f"--device cuda was asked for, but {reason}")
        return session_providers(CPU)

    def _warm_up(self, session: ort.InferenceSession) -> None:
        for batch in self.options.warmup_batch_sizes:
            latents = np.zeros((batch, self.spec.nz), dtype=np.float32)
            session.run(list(self._outputs.values()), {self._input: latents})

    def run(
        self, latents: npt.NDArray[np.float32], kinds: frozenset[str], wide: bool = False
    ) -> dict[str, npt.NDArray]:  # type: ignore[type-arg]
        """Images for `latents` [n, nz] as the output kinds asked for (PIXELS and/or VALUES).

        `wide`: on the all-cores session; the caller runs nothing else meanwhile.
        """
        kinds_in_order = sorted(kinds)
        names = [self._outputs[kind] for kind in kinds_in_order]
        pooled = not wide or self._wide is None
        session = self._sessions.get() if pooled or self._wide is None else self._wide
        try:
            if self.provider == CUDA:
                outputs = self._run_with_io_binding(session, latents, names)
            else:
                outputs = session.run(names, {self._input: latents})
        except Exception as error:  # onnxruntime raises its own untyped errors
            raise ModelFailure(f"the model run failed: {type(error).__name__}") from error
        finally:
            if pooled:
                self._sessions.put(session)
        return dict(zip(kinds_in_order, outputs, strict=True))

    def _run_with_io_binding(
        self, session: ort.InferenceSession, latents: npt.NDArray[np.float32], names: list[str]
    ) -> list[npt.NDArray]:  # type: ignore[type-arg]
        """On CUDA: copy the latents in once, and only the outputs asked for back out."""
        binding = session.io_binding()
        binding.bind_cpu_input(self._input, np.ascontiguousarray(latents))
        for name in names:
            binding.bind_output(name, "cpu")
        session.run_with_iobinding(binding)
        outputs: list[npt.NDArray] = binding.copy_outputs_to_cpu()  # type: ignore[type-arg]
        return outputs
