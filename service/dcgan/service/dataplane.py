"""The data plane: what a request means, independent of gRPC.

A call first takes a lease on the model version it names (`lease`: dcgan.service.models resolves
it); then its request is checked against that version's model and the limits, its latents go
through that version's batcher, and the outputs are shaped into the encoding asked for. The
model list and its loading go through here too. The servicers convert protobuf to these calls
and back.
"""

from __future__ import annotations

import asyncio
import io
from collections import deque
from collections.abc import AsyncGenerator
from contextlib import AbstractContextManager
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from dcgan.contract.seeded import seeded_latents
from dcgan.service.errors import InvalidInput, ResponseTooLarge
from dcgan.service.latents import Latents, check_latents, interpolate
from dcgan.service.models import ModelSet, ModelStatus, ServedVersion
from dcgan.service.options import BatchingOptions, RequestLimits
from dcgan.service.runtime import PIXELS, VALUES, ModelSpec

UINT8 = "uint8"  # raw pixels, [n, H, W, C]
FLOAT32 = "float32"  # raw values in the output range, [n, C, H, W]
PNG = "png"  # one PNG file per image
ENCODINGS = (UINT8, FLOAT32, PNG)
LINEAR = "linear"  # interpolation along the straight line
SLERP = "slerp"  # interpolation along the great circle
METHODS = (LINEAR, SLERP)
_KIND = {UINT8: frozenset({PIXELS}), PNG: frozenset({PIXELS}), FLOAT32: frozenset({VALUES})}
STREAM_CHUNK_BYTES = 2 * 2**20  # images per GenerateStream message: about this many bytes
PNG_OVERHEAD = 512  # bytes a PNG may add to its raw pixels when they do not compress
MESSAGE_OVERHEAD = 4096  # shape, ids and timing around the images


@dataclass(frozen=True)
class ModelInfo:
    """One served version: the model, where it runs, how it batches, what it accepts."""

    name: str
    version: int
    spec: ModelSpec
    execution_provider: str  # the onnxruntime provider the sessions run on
    instances: int  # batches computed in parallel
    batching: BatchingOptions
    limits: RequestLimits


@dataclass(frozen=True)
class Images:
    encoding: str
    array: npt.NDArray | None  # type: ignore[type-arg]  # uint8 or float32 encodings
    pngs: list[bytes] | None  # png encoding
    count: int
    queue_s: float
    compute_s: float
    offset: int = 0  # GenerateStream: index of the first image


def check_encoding(encoding: str) -> None:
    if encoding not in ENCODINGS:
        raise InvalidInput(f"unknown encoding {encoding} (known: {', '.join(ENCODINGS)})")


def encode_pngs(pixels: npt.NDArray[np.uint8]) -> list[bytes]:
    from PIL import Image

    pngs = []
    for image in pixels:
        buffer = io.BytesIO()
        Image.fromarray(image[:, :, 0] if image.shape[2] == 1 else image).save(buffer, format="PNG")
        pngs.append(buffer.getvalue())
    return pngs


@dataclass(frozen=True)
class ModelList:
    """ListModels: every model's versions and states, and the rules that chose them."""

    models: list[ModelStatus]
    model_control: str
    version_policy: str


class DataPlane:
    """Requests against the versions of a ModelSet: the API that every protocol's servicer calls.

    A call takes a lease first and hands the ServedVersion it yields to each method it uses, so
    that all of its work runs on that one version, whatever swaps meanwhile:

        with plane.lease(model_name, model_version) as served:
            images = await plane.generate(served, latents, UINT8, deadline)

    Failures are the domain exceptions of dcgan.service.errors (InvalidInput, NotFound,
    Unavailable, ResponseTooLarge, QueueFull, DeadlineExceeded, ModelFailure, ...); the
    interceptor maps them to status codes.
    """

    def __init__(self, models: ModelSet, limits: RequestLimits) -> None:
        self.models = models
        self.limits = limits

    def lease(self, model: str, version: int) -> AbstractContextManager[ServedVersion]:
        """The version a call uses, held until the call ends. Raises NotFound, InvalidInput
        (no model named where several serve) or Unavailable (still loading)."""
        return self.models.lease(model, version)

    def model_info(self, model: str, version: int) -> ModelInfo:
        """The version `model` and `version` resolve to now (as `lease` resolves them)."""
        served = self.models.resolve(model, version)
        return ModelInfo(
            name=served.model,
            version=served.version,
            spec=served.spec,
            execution_provider=served.runtime.provider,
            instances=served.runtime.instances,
            batching=served.batcher.options,
            limits=self.limits,
        )

    def list_models(self, model: str = "") -> ModelList:
        """Every model of the repository (or the one named: NotFound if none), each version with
        its state and the reason of a failed or unloaded one."""
        models = self.models
        return ModelList(models.statuses(model), models.control, str(models.policy))

    async def load_model(self, model: str) -> ModelStatus:
        """Load what the version policy picks of `model` (--model-control explicit, else
        ManagementOff); LoadFailed when a version failed, with what still serves."""
        return await self.models.load(model)

    async def unload_model(self, model: str) -> ModelStatus:
        """Out of routing at once; returns when the calls holding it have ended."""
        return await self.models.unload(model)

    def seeded(
        self, served: ServedVersion, seed: int, count: int, limit: int | None = None
    ) -> Latents:
        """`count` latents of `served`'s nz drawn from `seed` (dcgan.contract.seeded)."""
        limit = self.limits.max_latents_per_request if limit is None else limit
        if not 1 <= count <= limit:
            raise InvalidInput(f"count must be between 1 and {limit}, not {count}")
        return seeded_latents(seed, count, served.spec.nz)

    @staticmethod
    def image_bytes(served: ServedVersion, encoding: str) -> int:
        """The most bytes one image of `served` takes in a response with `encoding`."""
        spec = served.spec
        pixels = spec.channels * spec.image_size**2
        return {UINT8: pixels, FLOAT32: 4 * pixels, PNG: pixels + PNG_OVERHEAD}[encoding]

    def _check_response_size(
        self, served: ServedVersion, count: int, encoding: str, stream: str
    ) -> None:
        per_image = self.image_bytes(served, encoding)
        size = count * per_image + MESSAGE_OVERHEAD
        if size > self.limits.max_response_bytes:
            fits = (self.limits.max_response_bytes - MESSAGE_OVERHEAD) // per_image
            raise ResponseTooLarge(
                f"{count} {encoding} images would take about {size} bytes, over the response "
                f"limit of {self.limits.max_response_bytes}: ask for at most {fits}, "
                f"or use {stream}"
            )

    async def generate(
        self, served: ServedVersion, latents: Latents, encoding: str, deadline: float | None
    ) -> Images:
        """The images of `latents` in one answer (checked against the limits and the size of
        one response), batched with other calls' on `served`'s batcher."""
        check_encoding(encoding)
        check_latents(latents, self.limits.max_latents_per_request)
        self._check_response_size(served, len(latents), encoding, "GenerateStream")
        return await self._images(served, latents, encoding, deadline)

    def generate_stream(
        self, served: ServedVersion, latents: Latents, encoding: str, deadline: float | None
    ) -> AsyncGenerator[Images, None]:
        """The images of `latents` in chunks, for more than one answer holds (checked now,
        computed as the generator is read)."""
        check_encoding(encoding)
        check_latents(latents, self.limits.max_stream_latents)
        return self._stream(served, latents, encoding, deadline)

    def _walk(
        self,
        served: ServedVersion,
        start: Latents,
        end: Latents,
        steps: int,
        method: str,
        encoding: str,
        limit: int,
    ) -> Latents:
        """The latents of a walk, after checking it; `limit`: the most steps the call takes."""
        check_encoding(encoding)
        if not 2 <= steps <= limit:
            most = self.limits.max_stream_latents
            hint = f": InterpolateStream walks up to {most}" if limit < steps <= most else ""
            raise InvalidInput(f"steps must be between 2 and {limit}, not {steps}{hint}")
        if method not in METHODS:
            raise InvalidInput(
                f"unknown interpolation method {method} (known: {', '.join(METHODS)})"
            )
        nz = served.spec.nz
        for name, latent in (("start", start), ("end", end)):
            if latent.shape != (1, nz):
                raise InvalidInput(f"the {name} latent must hold nz = {nz} values")
            check_latents(latent, 1)
        return interpolate(start, end, steps, method)

    async def interpolate(
        self,
        served: ServedVersion,
        start: Latents,
        end: Latents,
        steps: int,
        method: str,
        encoding: str,
        deadline: float | None,
    ) -> Images:
        """The `steps` images of a walk from `start` to `end` (LINEAR or SLERP) in one answer."""
        limit = self.limits.max_latents_per_request
        latents = self._walk(served, start, end, steps, method, encoding, limit)
        self._check_response_size(served, steps, encoding, "InterpolateStream")
        return await self._images(served, latents, encoding, deadline)

    def interpolate_stream(
        self,
        served: ServedVersion,
        start: Latents,
        end: Latents,
        steps: int,
        method: str,
        encoding: str,
        deadline: float | None,
    ) -> AsyncGenerator[Images, None]:
        """The walk in chunks, as GenerateStream sends images: for walks too long for one answer."""
        limit = self.limits.max_stream_latents
        latents = self._walk(served, start, end, steps, method, encoding, limit)
        return self._stream(served, latents, encoding, deadline)

    async def _stream(
        self, served: ServedVersion, latents: Latents, encoding: str, deadline: float | None
    ) -> AsyncGenerator[Images, None]:
        """Images in chunks of about STREAM_CHUNK_BYTES; the next computes while one is sent.

        However the stream ends (finished, failed, or closed by a caller who went away), no chunk
        is left computing and no chunk's error is left unread.
        """
        per_image = self.image_bytes(served, encoding)
        batch = served.batcher.options.max_batch_size
        chunk = max(1, min(batch, STREAM_CHUNK_BYTES // per_image))
        computing: deque[asyncio.Task[Images]] = deque()
        try:
            for start in range(0, len(latents), chunk):
                computing.append(
                    asyncio.ensure_future(
                        self._images(
                            served, latents[start : start + chunk], encoding, deadline, start
                        )
                    )
                )
                if len(computing) > 1:
                    yield await computing.popleft()
            while computing:
                yield await computing.popleft()
        finally:
            for task in computing:
                if task.done() and not task.cancelled():
                    task.exception()  # read, so that asyncio does not report it
                else:
                    task.cancel()

    async def _images(
        self,
        served: ServedVersion,
        latents: Latents,
        encoding: str,
        deadline: float | None,
        offset: int = 0,
    ) -> Images:
        result = await served.batcher.submit(latents, _KIND[encoding], deadline)
        if encoding == PNG:
            pngs = await asyncio.to_thread(encode_pngs, result.outputs[PIXELS])
            return Images(PNG, None, pngs, len(latents), result.queue_s, result.compute_s, offset)
        array = result.outputs[PIXELS if encoding == UINT8 else VALUES]
        return Images(encoding, array, None, len(latents), result.queue_s, result.compute_s, offset)
