"""The gRPC servicers: protobuf in, data plane calls, protobuf out. Nothing else.

Every generation call first leases the model version it names, for its whole length (a stream to
its last chunk). The data plane validates every request; the servicer only refuses what protobuf
alone can express, a oneof left unset (no latents, a walk without an end).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import aclosing

import grpc

from dcgan.service.dataplane import FLOAT32, LINEAR, PNG, SLERP, UINT8, DataPlane, Images
from dcgan.service.errors import InvalidInput
from dcgan.service.latents import Latents, decode_packed, decode_values
from dcgan.service.models import ModelStatus, ServedVersion, VersionState
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


_STATES: dict[VersionState, int] = {
    VersionState.LOADING: pb.VERSION_STATE_LOADING,
    VersionState.READY: pb.VERSION_STATE_READY,
    VersionState.UNLOADING: pb.VERSION_STATE_UNLOADING,
    VersionState.FAILED: pb.VERSION_STATE_FAILED,
    VersionState.UNLOADED: pb.VERSION_STATE_UNLOADED,
}


class GeneratorServicer(pb_grpc.GeneratorServicer):
    def __init__(self, plane: DataPlane) -> None:
        self.plane = plane

    def _latents(self, served: ServedVersion, request: pb.GenerateRequest, limit: int) -> Latents:
        nz = served.spec.nz
        which = request.WhichOneof("latents")
        if which == "packed":
            return decode_packed(request.packed, nz)
        if which == "values":
            return decode_values(request.values.values, nz)
        if which == "seeded":
            return self.plane.seeded(served, request.seeded.seed, request.seeded.count, limit)
        raise InvalidInput("the request holds no latents: set packed, values or seeded")

    def _endpoint(self, served: ServedVersion, endpoint: pb.Endpoint, name: str) -> Latents:
        which = endpoint.WhichOneof("latent")
        if which == "packed":
            return decode_packed(endpoint.packed, served.spec.nz)
        if which == "seed":
            return self.plane.seeded(served, endpoint.seed, 1)
        raise InvalidInput(f"the {name} of the walk is missing: set its packed latent or seed")

    def _walk(
        self, served: ServedVersion, request: pb.InterpolateRequest
    ) -> tuple[Latents, Latents, str, str]:
        """A walk's ends, method and encoding, in the data plane's terms."""
        start = self._endpoint(served, request.start, "start")
        end = self._endpoint(served, request.end, "end")
        return start, end, _domain(_METHODS, request.method), _domain(_ENCODINGS, request.encoding)

    @staticmethod
    def _response(served: ServedVersion, images: Images) -> pb.GenerateResponse:
        spec = served.spec
        response = pb.GenerateResponse(
            model_id=spec.model_id,
            model_sha256=spec.sha256,
            model_name=served.model,
            model_version=served.version,
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
        with self.plane.lease(request.model_name, request.model_version) as served:
            latents = self._latents(served, request, self.plane.limits.max_latents_per_request)
            encoding = _domain(_ENCODINGS, request.encoding)
            images = await self.plane.generate(served, latents, encoding, _deadline(context))
            return self._response(served, images)

    async def GenerateStream(
        self, request: pb.GenerateRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.GenerateResponse]:
        with self.plane.lease(request.model_name, request.model_version) as served:
            latents = self._latents(served, request, self.plane.limits.max_stream_latents)
            encoding = _domain(_ENCODINGS, request.encoding)
            chunks = self.plane.generate_stream(served, latents, encoding, _deadline(context))
            async with aclosing(chunks):
                async for images in chunks:
                    yield self._response(served, images)

    async def Interpolate(
        self, request: pb.InterpolateRequest, context: grpc.aio.ServicerContext
    ) -> pb.GenerateResponse:
        with self.plane.lease(request.model_name, request.model_version) as served:
            start, end, method, encoding = self._walk(served, request)
            images = await self.plane.interpolate(
                served, start, end, request.steps, method, encoding, _deadline(context)
            )
            return self._response(served, images)

    async def InterpolateStream(
        self, request: pb.InterpolateRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.GenerateResponse]:
        with self.plane.lease(request.model_name, request.model_version) as served:
            start, end, method, encoding = self._walk(served, request)
            chunks = self.plane.interpolate_stream(
                served, start, end, request.steps, method, encoding, _deadline(context)
            )
            async with aclosing(chunks):
                async for images in chunks:
                    yield self._response(served, images)

    async def GetModelInfo(
        self, request: pb.GetModelInfoRequest, context: grpc.aio.ServicerContext
    ) -> pb.ModelInfo:
        info = self.plane.model_info(request.model_name, request.model_version)
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
            model_name=info.name,
            model_version=info.version,
        )


def model_status(status: ModelStatus) -> pb.ModelStatus:
    return pb.ModelStatus(
        name=status.name,
        serving_version=status.serving_version,
        versions=[
            pb.VersionStatus(
                version=version.version,
                state=_STATES[version.state],  # type: ignore[arg-type]
                reason=version.reason,
                model_id=version.model_id,
                model_sha256=version.sha256,
            )
            for version in status.versions
        ],
    )


class ModelRepositoryServicer(pb_grpc.ModelRepositoryServicer):
    def __init__(self, plane: DataPlane) -> None:
        self.plane = plane

    async def ListModels(
        self, request: pb.ListModelsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListModelsResponse:
        listed = self.plane.list_models(request.model_name)
        return pb.ListModelsResponse(
            models=[model_status(status) for status in listed.models],
            model_control=listed.model_control,
            version_policy=listed.version_policy,
        )

    async def LoadModel(
        self, request: pb.LoadModelRequest, context: grpc.aio.ServicerContext
    ) -> pb.ModelStatus:
        return model_status(await self.plane.load_model(_named(request.model_name)))

    async def UnloadModel(
        self, request: pb.UnloadModelRequest, context: grpc.aio.ServicerContext
    ) -> pb.ModelStatus:
        return model_status(await self.plane.unload_model(_named(request.model_name)))


def _named(name: str) -> str:
    if not name:
        raise InvalidInput("model_name is empty: name the model to load or unload")
    return name
