"""The Open Inference Protocol's requests in the data plane's terms: tensors, versions, statistics.

The model is one input, `z` (FP32 [n, nz]), and two outputs, `image` (FP32 [n, C, H, W], the
model's values) and `pixels` (UINT8 [n, H, W, C]). The outputs asked for go to the version's
batcher in one submission, so asking for both still runs the model once per batch. The limits
are dcgan.v1's: latents per request, the response size, NaN and infinity refused.
The servicer (dcgan.service.inference) converts protobuf to these calls and back.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from dcgan.contract.manifest import version_number
from dcgan.service.dataplane import MESSAGE_OVERHEAD, DataPlane
from dcgan.service.errors import InvalidInput, NotFound, ResponseTooLarge
from dcgan.service.latents import Latents, check_latents
from dcgan.service.metrics import ServiceMetrics
from dcgan.service.models import ServedVersion, VersionState
from dcgan.service.runtime import PIXELS, VALUES, ModelSpec

INPUT = "z"
IMAGE = "image"  # FP32 [n, C, H, W], in the model's output range
PIXELS_OUTPUT = "pixels"  # UINT8 [n, H, W, C]
OUTPUTS = (IMAGE, PIXELS_OUTPUT)  # the order of a response that names none
FP32 = "FP32"
UINT8 = "UINT8"
DATATYPES = {IMAGE: FP32, PIXELS_OUTPUT: UINT8}
_KINDS = {IMAGE: VALUES, PIXELS_OUTPUT: PIXELS}


def parse_version(text: str) -> int:
    """A protocol version string: empty is the newest served (0), else a version number."""
    if not text:
        return 0
    number = version_number(text)
    if number is None:
        raise InvalidInput(
            f"model version {text!r} is not a version: give a positive integer, or none for "
            "the newest"
        )
    return number


def output_shape(spec: ModelSpec, name: str) -> tuple[int, int, int]:
    """One image's shape in output `name`, without the batch dimension."""
    size = spec.image_size
    if name == IMAGE:
        return spec.channels, size, size
    return size, size, spec.channels


def check_outputs(names: Sequence[str]) -> tuple[str, ...]:
    """The outputs asked for, in order; none asked: every output."""
    if not names:
        return OUTPUTS
    for name in names:
        if name not in DATATYPES:
            raise InvalidInput(f"unknown output {name!r} (outputs: {', '.join(OUTPUTS)})")
    if len(set(names)) < len(names):
        raise InvalidInput(f"outputs asked for twice: {', '.join(names)}")
    return tuple(names)


@dataclass(frozen=True)
class Tensors:
    """ModelInfer's answer: each output asked for, by name, in the order asked."""

    outputs: dict[str, npt.NDArray]  # type: ignore[type-arg]  # uint8 or float32
    queue_s: float
    compute_s: float


@dataclass
class Duration:
    """Triton's StatisticDuration: how often something happened, and its time summed."""

    count: int = 0
    ns: int = 0

    def add(self, ns: int) -> None:
        self.count += 1
        self.ns += ns


@dataclass
class InferStatistics:
    """ModelInfer requests to one version, as Triton's InferStatistics counts them."""

    success: Duration = field(default_factory=Duration)  # whole requests, received to answered
    fail: Duration = field(default_factory=Duration)
    queue: Duration = field(default_factory=Duration)  # waiting for the first model run
    compute_input: Duration = field(default_factory=Duration)  # decoding the input tensors
    compute_infer: Duration = field(default_factory=Duration)  # the model runs
    compute_output: Duration = field(default_factory=Duration)  # encoding the output tensors
    last_inference_ms: int = 0  # milliseconds since the epoch


@dataclass(frozen=True)
class VersionStatistics:
    """What ModelStatistics reports for one version."""

    model: str
    version: int
    inference_count: int  # images computed by the version, through either protocol
    execution_count: int  # its model runs (batches), through either protocol
    infer: InferStatistics


class InferencePlane:
    """ModelInfer's tensors against the data plane's model versions, with their statistics."""

    def __init__(self, plane: DataPlane, metrics: ServiceMetrics) -> None:
        self.plane = plane
        self._metrics = metrics
        self._statistics: dict[tuple[str, int], InferStatistics] = {}

    def statistics_of(self, served: ServedVersion) -> InferStatistics:
        key = (served.model, served.version)
        if key not in self._statistics:
            self._statistics[key] = InferStatistics()
        return self._statistics[key]

    def statistics(self, model: str, version: int) -> list[VersionStatistics]:
        """Every version served of `model` (empty: of every model), or the one `version`."""
        found = []
        for status in self.plane.list_models(model).models:
            serving = [v.version for v in status.versions if v.state == VersionState.READY]
            if version:
                if version not in serving:
                    listed = ", ".join(str(v) for v in sorted(serving)) or "none"
                    raise NotFound(
                        f"model {status.name} has no version {version} being served "
                        f"(serving: {listed})"
                    )
                serving = [version]
            for number in serving:
                found.append(
                    VersionStatistics(
                        status.name,
                        number,
                        self._count("dcgan_images_generated_total", status.name, number),
                        self._count("dcgan_compute_seconds_count", status.name, number),
                        self._statistics.get((status.name, number), InferStatistics()),
                    )
                )
        return found

    def _count(self, sample: str, model: str, version: int) -> int:
        """A Prometheus sample of one version (0 when never recorded)."""
        labels = {"model": model, "version": str(version)}
        return int(self._metrics.registry.get_sample_value(sample, labels) or 0)

    def latents(
        self, served: ServedVersion, shape: Sequence[int], datatype: str, data: bytes | Latents
    ) -> Latents:
        """Input `z` from its shape, datatype and contents (raw little-endian bytes, or values)."""
        nz = served.spec.nz
        if datatype != FP32:
            raise InvalidInput(f"input {INPUT} is {FP32}, not {datatype or 'unset'}")
        if len(shape) != 2 or shape[1] != nz or shape[0] < 0:
            raise InvalidInput(f"input {INPUT} has shape [-1, {nz}], not {list(shape)}")
        count = shape[0]
        if isinstance(data, bytes):
            if len(data) != 4 * count * nz:
                raise InvalidInput(
                    f"input {INPUT} of shape {list(shape)} takes {4 * count * nz} bytes, "
                    f"not {len(data)}"
                )
            return np.frombuffer(data, dtype="<f4").reshape(count, nz)
        if data.size != count * nz:
            raise InvalidInput(
                f"input {INPUT} of shape {list(shape)} takes {count * nz} values, not {data.size}"
            )
        return data.reshape(count, nz)

    async def infer(
        self,
        served: ServedVersion,
        latents: Latents,
        outputs: Sequence[str],
        deadline: float | None,
    ) -> Tensors:
        limits = self.plane.limits
        check_latents(latents, limits.max_latents_per_request)
        spec = served.spec
        per_image = sum(
            math.prod(output_shape(spec, name)) * (4 if DATATYPES[name] == FP32 else 1)
            for name in outputs
        )
        size = len(latents) * per_image + MESSAGE_OVERHEAD
        if size > limits.max_response_bytes:
            fits = (limits.max_response_bytes - MESSAGE_OVERHEAD) // per_image
            raise ResponseTooLarge(
                f"{len(latents)} images of {', '.join(outputs)} would take about {size} bytes, "
                f"over the response limit of {limits.max_response_bytes}: ask for at most {fits}"
            )
        kinds = frozenset(_KINDS[name] for name in outputs)
        result = await served.batcher.submit(latents, kinds, deadline)
        return Tensors(
            {name: result.outputs[_KINDS[name]] for name in outputs},
            result.queue_s,
            result.compute_s,
        )


def now_ms() -> int:
    return time.time_ns() // 1_000_000
