"""The gRPC servicer: protobuf in, data plane calls, protobuf out. Nothing else.

The data plane validates every request; the servicer only refuses what protobuf alone can
express, a oneof left unset (no latents, a walk without an end).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import aclosing

import grpc

from dcgan.service.dataplane import FLOAT32, LINEAR, PNG, SLERP, UINT8, DataPlane, Images
from dcgan.service.errors import InvalidInput
from dcgan.service.latents import Latents, decode_packed, decode_values
from dcgan.v1 import generator_pb2 as pb
from dcgan.v1 import generator_pb2_grpc as pb_grpc

_ENCODINGS: dict[int, str] = {
    pb.ENCODING_UNSPECIFIED: UINT8,
    pb.ENCODING_UINT8_HWC: UINT8,
    pb.ENCODING_FLOAT32_CHW: FLOAT32,
    pb.ENCODING_PNG: PNG,
}
_METHODS: dict[int, str] = {
    pb.INTERPOLATION_METHOD_UNSPECIFIED: LINEAR,
    pb.INTERPOLATION_METHOD_LINEAR: LINEAR,
    pb.INTERPOLATION_METHOD_SLERP: SLERP,
}


def _domain(names: dict[int, str], value: int) -> str:
    """The data plane's name for an enum value; an unknown number as itself, for it to refuse."""
    return names.get(value, str(value))


def _deadline(context: grpc.aio.ServicerContext) -> float | None:
    remaining = context.time_remaining()
    return None if remaining is None else time.monotonic() + remaining


class GeneratorServicer(pb_grpc.GeneratorServicer):
    def __init__(self, plane: DataPlane) -> None:
        self.plane = plane

    def _latents(self, request: pb.GenerateRequest, limit: int) -> Latents:
        nz = self.plane.spec.nz
        which = request.WhichOneof("latents")
        if which == "packed":
            return decode_packed(request.packed, nz)
        if which == "values":
            return decode_values(request.values.values, nz)
        if which == "seeded":
            return self.plane.seeded(request.seeded.seed, request.seeded.count, limit)
        raise InvalidInput("the request holds no latents: set packed, values or seeded")

    def _endpoint(self, endpoint: pb.Endpoint, name: str) -> Latents:
        which = endpoint.WhichOneof("latent")
        if which == "packed":
            return decode_packed(endpoint.packed, self.plane.spec.nz)
        if which == "seed":
            return self.plane.seeded(endpoint.seed, 1)
        raise InvalidInput(f"the {name} of the walk is missing: set its packed latent or seed")

    def _walk(self, request: pb.InterpolateRequest) -> tuple[Latents, Latents, str, str]:
        """A walk's ends, method and encoding, in the data plane's terms."""
        start = self._endpoint(request.start, "start")
        end = self._endpoint(request.end, "end")
        return start, end, _domain(_METHODS, request.method), _domain(_ENCODINGS, request.encoding)

    def _response(self, images: Images) -> pb.GenerateResponse:
        spec = self.plane.spec
        response = pb.GenerateResponse(
            model_id=spec.model_id,
            model_sha256=spec.sha256,
            timing=pb.Timing(
                queue_us=int(images.queue_s * 1e6), compute_us=int(images.compute_s * 1e6)
            ),
            offset=images.offset,
        )
        if images.pngs is not None:
            response.shape.append(images.count)
            response.dtype = PNG
            response.png.extend(images.pngs)
        elif images.array is not None:
            response.shape.extend(images.array.shape)
            response.dtype = images.encoding
            response.data = images.array.tobytes()
        return response

    async def Generate(
        self, request: pb.GenerateRequest, context: grpc.aio.ServicerContext
    ) -> pb.GenerateResponse:
        latents = self._latents(request, self.plane.limits.max_latents_per_request)
        encoding = _domain(_ENCODINGS, request.encoding)
        images = await self.plane.generate(latents, encoding, _deadline(context))
        return self._response(images)

    async def GenerateStream(
        self, request: pb.GenerateRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.GenerateResponse]:
        latents = self._latents(request, self.plane.limits.max_stream_latents)
        encoding = _domain(_ENCODINGS, request.encoding)
        chunks = self.plane.generate_stream(latents, encoding, _deadline(context))
        async with aclosing(chunks):
            async for images in chunks:
                yield self._response(images)

    async def Interpolate(
        self, request: pb.InterpolateRequest, context: grpc.aio.ServicerContext
    ) -> pb.GenerateResponse:
        start, end, method, encoding = self._walk(request)
        images = await self.plane.interpolate(
            start, end, request.steps, method, encoding, _deadline(context)
        )
        return self._response(images)

    async def InterpolateStream(
        self, request: pb.InterpolateRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.GenerateResponse]:
        start, end, method, encoding = self._walk(request)
        chunks = self.plane.interpolate_stream(
            start, end, request.steps, method, encoding, _deadline(context)
        )
        async with aclosing(chunks):
            async for images in chunks:
                yield self._response(images)

    async def GetModelInfo(
        self, request: pb.GetModelInfoRequest, context: grpc.aio.ServicerContext
    ) -> pb.ModelInfo:
        info = self.plane.model_info()
        spec, batching, limits = info.spec, info.batching, info.limits
        return pb.ModelInfo(
            nz=spec.nz,
            channels=spec.channels,
            image_size=spec.image_size,
            output_min=spec.output_range[0],
            output_max=spec.output_range[1],
            model_id=spec.model_id,
            model_sha256=spec.sha256,
            opset=spec.opset,
            execution_provider=info.execution_provider,
            max_batch_size=batching.max_batch_size,
            max_queue_delay_us=int(batching.max_queue_delay_s * 1e6),
            max_queue_size=batching.max_queue_size,
            instances=info.instances,
            max_latents_per_request=limits.max_latents_per_request,
            max_stream_latents=limits.max_stream_latents,
            source_step=-1 if spec.source_step is None else spec.source_step,
            max_response_bytes=limits.max_response_bytes,
        )
