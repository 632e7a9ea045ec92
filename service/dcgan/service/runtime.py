"""The model runtime: onnxruntime sessions over the exported serving graph.

Reads everything from the export's manifest.json and checks every artifact's sha256 against it
before loading (the serving graph's on the very bytes the sessions are made of); once loaded, the
graph's own input and output shapes, and the facts dcgan-export wrote into it, must agree with
the manifest too (a manifest edited by hand need not describe its graph).
The GPU wheel of onnxruntime falls back to the CPU without a word when CUDA cannot start, so the
provider in use is read back from `session.get_providers()` and logged; `--device cuda` fails
loudly, before any port opens, rather than serving from the CPU.

On the CPU the runtime keeps two kinds of session. Under load, `instances` narrow sessions (one
thread each by default) run batches side by side: a thread the OS preempts then slows only its
own batch, where a parallel-for over all cores would wait for it. A lone batch at low load runs
on a wide session, all cores on one batch, for the lowest latency: with `spinning`, calls that
come one at a time (the INLINE lane, run on the event loop) get one whose threads spin-wait
between operators rather than sleep, which saves each operator a wake-up while the event loop
needs no core of its own; lone batches run from a worker thread (the WIDE lane) keep one whose
threads sleep, as the worker and the event loop need the cores then (BENCHMARKS.md).
With `pin_cores`, each one-thread narrow session runs its batches on a core of its own (the
running thread's affinity, set for the run; the sessions of further models and versions take the
next cores, round the CPU set). Left to the OS, the threads share the cores less
evenly: at c32 on 2 cores the event loop was preempted three times as often and each model
thread got 0.73 of a core, against 0.77 pinned; +10% images/s at c16, +2-6% at c32.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import math
import os
import queue
from collections.abc import Iterator
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
    verified_bytes,
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
from dcgan.service.options import RuntimeOptions, available_cores

_LOGGER = logging.getLogger(__name__)
# Narrow sessions pinned so far in this process: each model and version takes the next cores.
_PINNED = itertools.count()

PIXELS = "pixels"  # output kind: uint8 [n, H, W, C]
VALUES = "values"  # output kind: float32 [n, C, H, W]
PARALLEL = "parallel"  # lane: one of the narrow sessions, beside the others
WIDE = "wide"  # lane: all cores on one batch, from a worker thread
INLINE = "inline"  # lane: all cores on one batch, from the event loop (calls one at a time)
LANES = (INLINE, WIDE, PARALLEL)


class ModelLoadError(Exception):
    """The export cannot be served: a bad manifest, a file that fails its sha256, a graph that
    disagrees with its manifest, no CUDA."""


def _one_line(error: BaseException) -> str:
    """onnxruntime's messages span lines; the first one names the failure."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__


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


def _positive(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ModelLoadError(f"malformed manifest: {name} is {value!r}, not a positive integer")
    return value


def _range(value: object) -> tuple[float, float]:
    numbers = value if isinstance(value, tuple | list) else ()
    if (
        len(numbers) != 2
        or not all(isinstance(n, int | float) and not isinstance(n, bool) for n in numbers)
        or not all(math.isfinite(n) for n in numbers)
        or not numbers[0] < numbers[1]
    ):
        raise ModelLoadError(
            f"malformed manifest: model.output_range is {value!r}, not two numbers, low < high"
        )
    return float(numbers[0]), float(numbers[1])


def _step(value: object) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ModelLoadError(f"malformed manifest: source.step is {value!r}, not a step number")
    return value


def _dims(shape: list[object]) -> str:
    return "[" + ", ".join(str(dim) for dim in shape) + "]"


def choose_providers(options: RuntimeOptions) -> Providers:
    """CPU alone, or CUDA with the CPU behind it; auto takes CUDA only where it can start.

    Raises ModelLoadError for --device cuda where CUDA cannot start.
    """
    if options.device == "cpu":
        return session_providers(CPU)
    reason = cuda_unavailable_reason()
    if reason is None:
        return session_providers(CUDA)
    if options.device == "cuda":
        raise ModelLoadError(f"--device cuda was asked for, but {reason}")
    return session_providers(CPU)


class ModelRuntime:
    """One or more onnxruntime sessions of the serving graph; `run` is thread-safe."""

    def __init__(self, export_dir: Path, options: RuntimeOptions) -> None:
        try:
            self.manifest: Manifest = read_manifest(export_dir)
            path, model_bytes = verified_bytes(export_dir, self.manifest, ONNX_SERVING)
            for record in self.manifest.artifacts.values():  # an export is whole, or not served
                if record.kind != ONNX_SERVING:
                    verified_artifact(export_dir, self.manifest, record.kind)
        except ManifestError as error:
            raise ModelLoadError(str(error)) from None
        except OSError as error:  # a model directory that is a file, a manifest that is a folder
            raise ModelLoadError(f"cannot read {error.filename}: {error.strerror}") from None
        model, onnx = self.manifest.model, self.manifest.onnx
        record = self.manifest.artifacts[path.name]
        self.spec = ModelSpec(
            nz=_positive(model.nz, "model.nz"),
            channels=_positive(model.channels, "model.channels"),
            image_size=_positive(model.image_size, "model.image_size"),
            output_range=_range(model.output_range),
            model_id=f"dcgan-{record.sha256[:12]}",
            sha256=record.sha256,
            opset=_positive(onnx.opset, "onnx.opset"),
            source_step=_step(self.manifest.source.step),
        )
        self._file = path.name
        self._input = onnx.input
        self._outputs = {PIXELS: onnx.pixels_output, VALUES: onnx.output}
        self.options = options
        self._providers = choose_providers(options)  # --device cuda without CUDA fails here
        self._model_bytes = model_bytes  # the bytes whose sha256 was checked, read once
        # the narrow sessions, each with the core its runs are pinned to (None: not pinned)
        self._sessions: queue.SimpleQueue[tuple[ort.InferenceSession, int | None]] = (
            queue.SimpleQueue()
        )
        self._wide: ort.InferenceSession | None = None  # all cores on one batch, at low load
        self._inline: ort.InferenceSession | None = None  # the same, spinning with `spinning`
        self.provider = ""
        self.instances = 0

    def load(self) -> None:
        """Create the sessions and warm them up (slow: run it off the event loop)."""
        cores = available_cores()
        wide = self._session(cores)
        self.provider = wide.get_providers()[0]
        pins: list[int | None] = []  # the core of each narrow session, where they are pinned
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
                self._inline = (
                    self._session(cores, spinning=True) if self.options.spinning else wide
                )
                sessions = [self._session(threads) for _ in range(self.instances)]
                if self.options.pin_cores and threads == 1 and self.instances <= cores:
                    allowed = sorted(os.sched_getaffinity(0))
                    pins = [allowed[next(_PINNED) % len(allowed)] for _ in sessions]
        for session, core in zip(sessions, pins or [None] * len(sessions), strict=True):
            self._sessions.put((session, core))
        lanes = "" if self._wide is None else f" (and one of {cores} for lone batches)"
        if self._inline is not self._wide:
            lanes = f" (and two of {cores} for lone batches, one spinning for calls one at a time)"
        pinned = f", on cores {', '.join(map(str, pins))}" if pins else ""
        _LOGGER.info(
            "model %s on %s: %d parallel session(s)%s%s",
            self.spec.model_id, self.provider, self.instances, pinned, lanes,
        )  # fmt: skip

    @property
    def has_wide_lane(self) -> bool:
        return self._wide is not None

    def _session(self, threads: int, spinning: bool = False) -> ort.InferenceSession:
        providers = self._providers
        session_options = ort.SessionOptions()
        session_options.intra_op_num_threads = threads
        session_options.inter_op_num_threads = 1
        session_options.add_session_config_entry(
            "session.intra_op.allow_spinning", "1" if spinning else "0"
        )
        try:
            session = ort.InferenceSession(self._model_bytes, session_options, providers=providers)
        except Exception as error:  # onnxruntime raises its own untyped errors
            raise ModelLoadError(
                f"onnxruntime cannot load {self._file}: {_one_line(error)}"
            ) from None
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
        self._check_graph(session)
        self._warm_up(session)
        return session

    def _check_graph(self, session: ort.InferenceSession) -> None:
        """Refuse a graph that is not the model its manifest describes: its own input and output
        shapes, and the facts dcgan-export wrote into it (`onnx_metadata`), must agree."""
        spec, size = self.spec, self.spec.image_size
        inputs = {node.name: node for node in session.get_inputs()}
        outputs = {node.name: node for node in session.get_outputs()}
        expected = {
            self._input: (inputs, "tensor(float)", ["batch", spec.nz]),
            self._outputs[VALUES]: (outputs, "tensor(float)", ["batch", spec.channels, size, size]),
            self._outputs[PIXELS]: (outputs, "tensor(uint8)", ["batch", size, size, spec.channels]),
        }
        problems = []
        for name, (nodes, dtype, shape) in expected.items():
            role = "input" if nodes is inputs else "output"
            if name not in nodes:
                problems.append(f"it has no {role} {name} (it has {', '.join(nodes) or 'none'})")
                continue
            node = nodes[name]
            dims = [dim if isinstance(dim, int) else "batch" for dim in node.shape]
            if node.type != dtype or len(dims) != len(shape) or dims[1:] != shape[1:]:
                problems.append(
                    f"{role} {name} is {node.type} {_dims(node.shape)} in the graph, "
                    f"{dtype} {_dims(shape)} by the manifest"
                )
        if not problems:  # the shapes agree: the facts export recorded must agree as well
            recorded = session.get_modelmeta().custom_metadata_map
            stated = {
                "nz": str(spec.nz),
                "channels": str(spec.channels),
                "image_size": str(spec.image_size),
                "output_range": json.dumps([float(value) for value in spec.output_range]),
                "artifact_kind": ONNX_SERVING,
            }
            problems = [
                f"{key} is {recorded[key]} in the graph, {value} in the manifest"
                for key, value in stated.items()
                if key in recorded and recorded[key] != value
            ]
        if problems:
            raise ModelLoadError(
                f"manifest.json disagrees with {self._file}: {'; '.join(problems)}"
            )

    def _warm_up(self, session: ort.InferenceSession) -> None:
        for batch in self.options.warmup_batch_sizes:
            latents = np.zeros((batch, self.spec.nz), dtype=np.float32)
            try:
                session.run(list(self._outputs.values()), {self._input: latents})
            except Exception as error:  # onnxruntime raises its own untyped errors
                raise ModelLoadError(
                    f"{self._file} fails its warm-up run of {batch} latents: {_one_line(error)}"
                ) from None

    def close(self) -> None:
        """Drop every session and the graph's bytes, so that a retired version's memory goes
        back. Only once no run is in progress (its batcher has shut down)."""
        while True:
            try:
                self._sessions.get_nowait()
            except queue.Empty:
                break
        self._wide = self._inline = None
        self._model_bytes = b""

    def run(
        self, latents: npt.NDArray[np.float32], kinds: frozenset[str], lane: str = PARALLEL
    ) -> dict[str, npt.NDArray]:  # type: ignore[type-arg]
        """Images for `latents` [n, nz] as the output kinds asked for (PIXELS and/or VALUES).

        `lane` WIDE or INLINE: on an all-cores session; the caller runs nothing else meanwhile.
        """
        kinds_in_order = sorted(kinds)
        names = [self._outputs[kind] for kind in kinds_in_order]
        lone = self._inline if lane == INLINE else self._wide if lane == WIDE else None
        session, core = self._sessions.get() if lone is None else (lone, None)
        try:
            if self.provider == CUDA:
                outputs = self._run_with_io_binding(session, latents, names)
            else:
                with _running_on(core):
                    outputs = session.run(names, {self._input: latents})
        except Exception as error:  # onnxruntime raises its own untyped errors
            raise ModelFailure(f"the model run failed: {type(error).__name__}") from error
        finally:
            if lone is None:  # a narrow session, back to the pool
                self._sessions.put((session, core))
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


@contextlib.contextmanager
def _running_on(core: int | None) -> Iterator[None]:
    """The calling thread on `core` alone for the block, then back where it could run before."""
    if core is None:
        yield
        return
    before: set[int] | None = os.sched_getaffinity(0)
    try:
        os.sched_setaffinity(0, {core})
    except OSError:  # the process may no longer run there (its CPU set changed): run unpinned
        before = None
    try:
        yield
    finally:
        if before is not None:
            try:
                os.sched_setaffinity(0, before)
            except OSError:  # the CPU set changed during the run: wherever it now allows
                with contextlib.suppress(OSError):
                    os.sched_setaffinity(0, range(os.cpu_count() or 1))
