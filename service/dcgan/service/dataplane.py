"""The data plane: what a generation request means, independent of gRPC.

Checks requests against the model and the limits, sends latents through the batcher and shapes
the outputs into the encoding asked for. The servicer converts protobuf to these calls and back.
"""

from __future__ import annotations

import asyncio
import io
from collections import deque
from collections.abc import AsyncGenerator
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from dcgan.contract.seeded import seeded_latents
from dcgan.service.batcher import DynamicBatcher
from dcgan.service.errors import InvalidInput, ResponseTooLarge, Unavailable
from dcgan.service.latents import Latents, check_latents, interpolate
from dcgan.service.options import BatchingOptions, RequestLimits
from dcgan.service.runtime import PIXELS, VALUES, ModelRuntime, ModelSpec

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
    """What the data plane serves: the model, where it runs, how it batches, what it accepts."""

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


class DataPlane:
    """Generation requests against a runtime and a batcher, once the model is loaded."""

    def __init__(self, limits: RequestLimits) -> None:
        self.limits = limits
        self.runtime: ModelRuntime | None = None
        self.batcher: DynamicBatcher | None = None

    def attach(self, runtime: ModelRuntime, batcher: DynamicBatcher) -> None:
        self.runtime, self.batcher = runtime, batcher

    @property
    def spec(self) -> ModelSpec:
        if self.runtime is None:
            raise Unavailable("the model is still loading")
        return self.runtime.spec

    @property
    def batching(self) -> BatchingOptions:
        if self.batcher is None:
            raise Unavailable("the model is still loading")
        return self.batcher.options

    def model_info(self) -> ModelInfo:
        if self.runtime is None or self.batcher is None:
            raise Unavailable("the model is still loading")
        return ModelInfo(
            spec=self.runtime.spec,
            execution_provider=self.runtime.provider,
            instances=self.runtime.instances,
            batching=self.batcher.options,
            limits=self.limits,
        )

    def seeded(self, seed: int, count: int, limit: int | None = None) -> Latents:
        limit = self.limits.max_latents_per_request if limit is None else limit
        if not 1 <= count <= limit:
            raise InvalidInput(f"count must be between 1 and {limit}, not {count}")
        return seeded_latents(seed, count, self.spec.nz)

    def image_bytes(self, encoding: str) -> int:
        """The most bytes one image takes in a response with `encoding`."""
        spec = self.spec
        pixels = spec.channels * spec.image_size**2
        return {UINT8: pixels, FLOAT32: 4 * pixels, PNG: pixels + PNG_OVERHEAD}[encoding]

    def _check_response_size(self, count: int, encoding: str, stream: str) -> None:
        size = count * self.image_bytes(encoding) + MESSAGE_OVERHEAD
        if size > self.limits.max_response_bytes:
            fits = (self.limits.max_response_bytes - MESSAGE_OVERHEAD) // self.image_bytes(encoding)
            raise ResponseTooLarge(
                f"{count} {encoding} images would take about {size} bytes, over the response "
                f"limit of {self.limits.max_response_bytes}: ask for at most {fits}, "
                f"or use {stream}"
            )

    async def generate(self, latents: Latents, encoding: str, deadline: float | None) -> Images:
        check_encoding(encoding)
        check_latents(latents, self.limits.max_latents_per_request)
        self._check_response_size(len(latents), encoding, "GenerateStream")
        return await self._images(latents, encoding, deadline)

    def generate_stream(
        self, latents: Latents, encoding: str, deadline: float | None
    ) -> AsyncGenerator[Images, None]:
        check_encoding(encoding)
        check_latents(latents, self.limits.max_stream_latents)
        return self._stream(latents, encoding, deadline)

    def _walk(
        self, start: Latents, end: Latents, steps: int, method: str, encoding: str, limit: int
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
        for name, latent in (("start", start), ("end", end)):
            if latent.shape != (1, self.spec.nz):
                raise InvalidInput(f"the {name} latent must hold nz = {self.spec.nz} values")
            check_latents(latent, 1)
        return interpolate(start, end, steps, method)

    async def interpolate(
        self,
        start: Latents,
        end: Latents,
        steps: int,
        method: str,
        encoding: str,
        deadline: float | None,
    ) -> Images:
        limit = self.limits.max_latents_per_request
        latents = self._walk(start, end, steps, method, encoding, limit)
        self._check_response_size(steps, encoding, "InterpolateStream")
        return await self._images(latents, encoding, deadline)

    def interpolate_stream(
        self,
        start: Latents,
        end: Latents,
        steps: int,
        method: str,
        encoding: str,
        deadline: float | None,
    ) -> AsyncGenerator[Images, None]:
        """The walk in chunks, as GenerateStream sends images: for walks too long for one answer."""
        limit = self.limits.max_stream_latents
        latents = self._walk(start, end, steps, method, encoding, limit)
        return self._stream(latents, encoding, deadline)

    async def _stream(
        self, latents: Latents, encoding: str, deadline: float | None
    ) -> AsyncGenerator[Images, None]:
        """Images in chunks of about STREAM_CHUNK_BYTES; the next computes while one is sent.

        However the stream ends (finished, failed, or closed by a caller who went away), no chunk
        is left computing and no chunk's error is left unread.
        """
        per_image = self.image_bytes(encoding)
        chunk = max(1, min(self.batching.max_batch_size, STREAM_CHUNK_BYTES // per_image))
        computing: deque[asyncio.Task[Images]] = deque()
        try:
            for start in range(0, len(latents), chunk):
                computing.append(
                    asyncio.ensure_future(
                        self._images(latents[start : start + chunk], encoding, deadline, start)
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
        self, latents: Latents, encoding: str, deadline: float | None, offset: int = 0
    ) -> Images:
        if self.batcher is None:
            raise Unavailable("the model is still loading")
        result = await self.batcher.submit(latents, _KIND[encoding], deadline)
        if encoding == PNG:
            pngs = await asyncio.to_thread(encode_pngs, result.outputs[PIXELS])
            return Images(PNG, None, pngs, len(latents), result.queue_s, result.compute_s, offset)
        array = result.outputs[PIXELS if encoding == UINT8 else VALUES]
        return Images(encoding, array, None, len(latents), result.queue_s, result.compute_s, offset)
