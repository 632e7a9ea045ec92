"""The Open Inference Protocol servicer (KServe v2 gRPC, Triton's inference.GRPCInferenceService).

Protobuf in, data plane calls, protobuf out, as the dcgan.v1 servicers do; errors are the data
plane's, mapped to codes by the same interceptor. Models and versions are the repository's: a
version is a number in a string, empty for the newest served. The core of the protocol plus the
extensions in EXTENSIONS: ModelConfig, ModelStatistics and the repository calls (loads and
unloads need --model-control explicit, as dcgan.v1's do). tritonclient's `infer`,
`get_model_config`, `get_inference_statistics`, `load_model` and the rest work unchanged.

The messages live in a descriptor pool of their own (dcgan.oip.inference_pb2.POOL): the handlers
are registered from its service descriptor, and `reflection_pool` joins it with the default pool
for server reflection.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from importlib import metadata
from typing import Any

import grpc
import numpy as np
from google.protobuf import descriptor_pb2, descriptor_pool
from google.protobuf.descriptor import FileDescriptor

from dcgan.oip import inference_pb2 as oip
from dcgan.service.dataplane import DataPlane
from dcgan.service.errors import InvalidInput, NotFound, Unavailable
from dcgan.service.inference_plane import (
    DATATYPES,
    FP32,
    IMAGE,
    INPUT,
    PIXELS_OUTPUT,
    UINT8,
    Duration,
    InferencePlane,
    check_outputs,
    now_ms,
    output_shape,
    parse_version,
)
from dcgan.service.latents import Latents
from dcgan.service.metrics import ServiceMetrics
from dcgan.service.models import ServedVersion, VersionState
from dcgan.service.repository import ALL, LATEST, VersionPolicy

SERVICE = oip.DESCRIPTOR.services_by_name["GRPCInferenceService"]
SERVICE_NAME = SERVICE.full_name  # inference.GRPCInferenceService
SERVER_NAME = "dcgan-serve"
EXTENSIONS = ("model_configuration", "model_repository", "statistics", "parameters")
PLATFORM = "onnxruntime_onnx"  # what Triton reports for an ONNX model
SEED, COUNT = "seed", "count"  # request parameters: seeded latents, as dcgan.v1's SeededLatents
_INDEX_STATES = {
    VersionState.LOADING: "LOADING",
    VersionState.READY: "READY",
    VersionState.UNLOADING: "UNLOADING",
    VersionState.FAILED: "UNAVAILABLE",
    VersionState.UNLOADED: "UNAVAILABLE",
}
_CONFIG_TYPES = {FP32: oip.TYPE_FP32, UINT8: oip.TYPE_UINT8}


def _deadline(context: grpc.aio.ServicerContext) -> float | None:
    remaining = context.time_remaining()
    return None if remaining is None else time.monotonic() + remaining


def _integer(
    parameters: Mapping[str, oip.InferParameter], name: str, low: int, high: int
) -> int | None:
    """An integer request parameter (int64 or uint64) within [low, high]; None when absent."""
    if name not in parameters:
        return None
    parameter = parameters[name]
    which = parameter.WhichOneof("parameter_choice")
    if which not in ("int64_param", "uint64_param"):
        raise InvalidInput(f"parameter {name} must be an integer, not {which or 'unset'}")
    value = int(getattr(parameter, which))
    if not low <= value <= high:
        raise InvalidInput(f"parameter {name} must be between {low} and {high}, not {value}")
    return value


def _tensor(
    name: str, datatype: str, shape: Iterable[int]
) -> oip.ModelMetadataResponse.TensorMetadata:
    return oip.ModelMetadataResponse.TensorMetadata(name=name, datatype=datatype, shape=shape)


class InferenceServicer:
    """The methods of inference.GRPCInferenceService that dcgan-serve implements."""

    def __init__(self, plane: DataPlane, metrics: ServiceMetrics) -> None:
        self.plane = plane
        self.tensors = InferencePlane(plane, metrics)

    # ------------------------------------------------------------------------- health

    async def ServerLive(
        self, request: oip.ServerLiveRequest, context: grpc.aio.ServicerContext
    ) -> oip.ServerLiveResponse:
        return oip.ServerLiveResponse(live=True)

    async def ServerReady(
        self, request: oip.ServerReadyRequest, context: grpc.aio.ServicerContext
    ) -> oip.ServerReadyResponse:
        serving = any(status.serving_version for status in self.plane.list_models().models)
        return oip.ServerReadyResponse(ready=serving)

    async def ModelReady(
        self, request: oip.ModelReadyRequest, context: grpc.aio.ServicerContext
    ) -> oip.ModelReadyResponse:
        version = parse_version(request.version)
        try:
            self.plane.model_info(request.name, version)
        except (NotFound, Unavailable):
            return oip.ModelReadyResponse(ready=False)
        return oip.ModelReadyResponse(ready=True)

    # ------------------------------------------------------------------------- metadata

    async def ServerMetadata(
        self, request: oip.ServerMetadataRequest, context: grpc.aio.ServicerContext
    ) -> oip.ServerMetadataResponse:
        return oip.ServerMetadataResponse(
            name=SERVER_NAME, version=metadata.version(SERVER_NAME), extensions=EXTENSIONS
        )

    def _serving(self, name: str) -> list[int]:
        (status,) = self.plane.list_models(name).models
        return [v.version for v in status.versions if v.state == VersionState.READY]

    async def ModelMetadata(
        self, request: oip.ModelMetadataRequest, context: grpc.aio.ServicerContext
    ) -> oip.ModelMetadataResponse:
        version = parse_version(request.version)
        info = self.plane.model_info(request.name, version)
        spec = info.spec
        versions = [info.version] if version else self._serving(info.name)
        return oip.ModelMetadataResponse(
            name=info.name,
            versions=[str(v) for v in versions],
            platform=PLATFORM,
            inputs=[_tensor(INPUT, FP32, (-1, spec.nz))],
            outputs=[
                _tensor(name, DATATYPES[name], (-1, *output_shape(spec, name)))
                for name in (IMAGE, PIXELS_OUTPUT)
            ],
        )

    async def ModelConfig(
        self, request: oip.ModelConfigRequest, context: grpc.aio.ServicerContext
    ) -> oip.ModelConfigResponse:
        info = self.plane.model_info(request.name, parse_version(request.version))
        spec, batching = info.spec, info.batching
        policy = VersionPolicy.parse(self.plane.list_models().version_policy)
        if policy.kind == LATEST:
            version_policy = oip.ModelVersionPolicy(
                latest=oip.ModelVersionPolicy.Latest(num_versions=policy.count)
            )
        elif policy.kind == ALL:
            version_policy = oip.ModelVersionPolicy(all=oip.ModelVersionPolicy.All())
        else:
            version_policy = oip.ModelVersionPolicy(
                specific=oip.ModelVersionPolicy.Specific(versions=sorted(policy.versions))
            )
        group = oip.ModelInstanceGroup
        kind = group.KIND_GPU if info.execution_provider.startswith("CUDA") else group.KIND_CPU
        config = oip.ModelConfig(
            name=info.name,
            platform=PLATFORM,
            backend="onnxruntime",
            version_policy=version_policy,
            max_batch_size=batching.max_batch_size,
            input=[oip.ModelInput(name=INPUT, data_type=oip.TYPE_FP32, dims=[spec.nz])],
            output=[
                oip.ModelOutput(
                    name=name,
                    data_type=_CONFIG_TYPES[DATATYPES[name]],
                    dims=output_shape(spec, name),
                )
                for name in (IMAGE, PIXELS_OUTPUT)
            ],
            dynamic_batching=oip.ModelDynamicBatching(
                max_queue_delay_microseconds=round(batching.max_queue_delay_s * 1e6)
            ),
            instance_group=[
                group(
                    name=info.name,
                    kind=kind,
                    count=info.instances,
                )
            ],
        )
        return oip.ModelConfigResponse(config=config)

    # ------------------------------------------------------------------------- inference

    def _latents(self, served: ServedVersion, request: oip.ModelInferRequest) -> Latents:
        """Input z, or the latents the parameters seed and count draw."""
        seed = _integer(request.parameters, SEED, 0, 2**64 - 1)
        count = _integer(request.parameters, COUNT, 0, 2**63 - 1)
        if seed is not None or count is not None:
            if request.inputs:
                raise InvalidInput(
                    f"give input {INPUT} or the parameters {SEED} and {COUNT}, not both"
                )
            return self.plane.seeded(served, seed or 0, count or 0)
        if len(request.inputs) != 1 or request.inputs[0].name != INPUT:
            names = ", ".join(repr(tensor.name) for tensor in request.inputs) or "none"
            raise InvalidInput(
                f"the model takes one input, {INPUT} (or the parameters {SEED} and {COUNT}); "
                f"the request holds {names}"
            )
        tensor = request.inputs[0]
        raw = request.raw_input_contents
        if raw:
            if len(raw) != 1 or tensor.HasField("contents"):
                raise InvalidInput(
                    "raw_input_contents holds one entry per input, and then no input has contents"
                )
            data: bytes | Latents = raw[0]
        else:
            data = np.asarray(tensor.contents.fp32_contents, dtype=np.float32)
        return self.tensors.latents(served, list(tensor.shape), tensor.datatype, data)

    async def ModelInfer(
        self, request: oip.ModelInferRequest, context: grpc.aio.ServicerContext
    ) -> oip.ModelInferResponse:
        started = time.perf_counter_ns()
        with self.plane.lease(request.model_name, parse_version(request.model_version)) as served:
            statistics = self.tensors.statistics_of(served)
            try:
                for output in request.outputs:
                    if "classification" in output.parameters:
                        raise InvalidInput("this server has no classification extension")
                outputs = check_outputs([output.name for output in request.outputs])
                latents = self._latents(served, request)
                decoded = time.perf_counter_ns()
                tensors = await self.tensors.infer(served, latents, outputs, _deadline(context))
                computed = time.perf_counter_ns()
                response = oip.ModelInferResponse(
                    model_name=served.model, model_version=str(served.version), id=request.id
                )
                for name, array in tensors.outputs.items():
                    response.outputs.add(name=name, datatype=DATATYPES[name], shape=array.shape)
                    response.raw_output_contents.append(np.ascontiguousarray(array).tobytes())
            except BaseException:
                statistics.fail.add(time.perf_counter_ns() - started)
                raise
            answered = time.perf_counter_ns()
            statistics.success.add(answered - started)
            statistics.compute_input.add(decoded - started)
            statistics.queue.add(round(tensors.queue_s * 1e9))
            statistics.compute_infer.add(round(tensors.compute_s * 1e9))
            statistics.compute_output.add(answered - computed)
            statistics.last_inference_ms = now_ms()
            return response

    async def ModelStatistics(
        self, request: oip.ModelStatisticsRequest, context: grpc.aio.ServicerContext
    ) -> oip.ModelStatisticsResponse:
        found = self.tensors.statistics(request.name, parse_version(request.version))
        response = oip.ModelStatisticsResponse()
        for version in found:
            infer = version.infer

            def duration(measured: Duration) -> oip.StatisticDuration:
                return oip.StatisticDuration(count=measured.count, ns=measured.ns)

            response.model_stats.add(
                name=version.model,
                version=str(version.version),
                last_inference=infer.last_inference_ms,
                inference_count=version.inference_count,
                execution_count=version.execution_count,
                inference_stats=oip.InferStatistics(
                    success=duration(infer.success),
                    fail=duration(infer.fail),
                    queue=duration(infer.queue),
                    compute_input=duration(infer.compute_input),
                    compute_infer=duration(infer.compute_infer),
                    compute_output=duration(infer.compute_output),
                ),
            )
        return response

    # ------------------------------------------------------------------------- repository

    async def RepositoryIndex(
        self, request: oip.RepositoryIndexRequest, context: grpc.aio.ServicerContext
    ) -> oip.RepositoryIndexResponse:
        response = oip.RepositoryIndexResponse()
        for status in self.plane.list_models().models:
            for version in status.versions:
                if request.ready and version.state != VersionState.READY:
                    continue
                response.models.add(
                    name=status.name,
                    version=str(version.version),
                    state=_INDEX_STATES[version.state],
                    reason=version.reason,
                )
        return response

    async def RepositoryModelLoad(
        self, request: oip.RepositoryModelLoadRequest, context: grpc.aio.ServicerContext
    ) -> oip.RepositoryModelLoadResponse:
        for key in request.parameters:
            if key == "config" or key.startswith("file:"):
                raise InvalidInput(
                    f"parameter {key}: dcgan-serve loads a model from its repository folder, "
                    "without a config or files in the request"
                )
        await self.plane.load_model(_named(request.model_name))
        return oip.RepositoryModelLoadResponse()

    async def RepositoryModelUnload(
        self, request: oip.RepositoryModelUnloadRequest, context: grpc.aio.ServicerContext
    ) -> oip.RepositoryModelUnloadResponse:
        await self.plane.unload_model(_named(request.model_name))  # no dependents to unload
        return oip.RepositoryModelUnloadResponse()


def _named(name: str) -> str:
    if not name:
        raise InvalidInput("model_name is empty: name the model to load or unload")
    return name


def add_to_server(servicer: InferenceServicer, server: grpc.aio.Server) -> None:
    """Register each method of the service descriptor: /inference.GRPCInferenceService/<Method>."""
    handlers: dict[str, grpc.RpcMethodHandler] = {}
    for method in SERVICE.methods:
        request_type = getattr(oip, method.input_type.name)
        response_type = getattr(oip, method.output_type.name)
        behavior: Callable[..., Awaitable[Any]] = getattr(servicer, method.name)
        handlers[method.name] = grpc.unary_unary_rpc_method_handler(
            behavior,
            request_deserializer=request_type.FromString,
            response_serializer=response_type.SerializeToString,
        )
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE_NAME, handlers),))
    server.add_registered_method_handlers(SERVICE_NAME, handlers)


def reflection_pool(service_names: Iterable[str]) -> descriptor_pool.DescriptorPool:
    """A pool holding the files of `service_names` and their imports, for server reflection:
    this service's from its own pool, the others' from protobuf's default pool."""
    pool = descriptor_pool.DescriptorPool()
    added: set[str] = set()

    def add(file: FileDescriptor) -> None:
        if file.name in added:
            return
        for dependency in file.dependencies:
            add(dependency)
        proto = descriptor_pb2.FileDescriptorProto()
        file.CopyToProto(proto)
        pool.Add(proto)
        added.add(file.name)

    default = descriptor_pool.Default()
    for name in service_names:
        add(SERVICE.file if name == SERVICE_NAME else default.FindServiceByName(name).file)
    return pool
