from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Encoding(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ENCODING_UNSPECIFIED: _ClassVar[Encoding]
    ENCODING_UINT8_HWC: _ClassVar[Encoding]
    ENCODING_FLOAT32_CHW: _ClassVar[Encoding]
    ENCODING_PNG: _ClassVar[Encoding]

class InterpolationMethod(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    INTERPOLATION_METHOD_UNSPECIFIED: _ClassVar[InterpolationMethod]
    INTERPOLATION_METHOD_LINEAR: _ClassVar[InterpolationMethod]
    INTERPOLATION_METHOD_SLERP: _ClassVar[InterpolationMethod]

class VersionState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    VERSION_STATE_UNSPECIFIED: _ClassVar[VersionState]
    VERSION_STATE_LOADING: _ClassVar[VersionState]
    VERSION_STATE_READY: _ClassVar[VersionState]
    VERSION_STATE_UNLOADING: _ClassVar[VersionState]
    VERSION_STATE_FAILED: _ClassVar[VersionState]
    VERSION_STATE_UNLOADED: _ClassVar[VersionState]
ENCODING_UNSPECIFIED: Encoding
ENCODING_UINT8_HWC: Encoding
ENCODING_FLOAT32_CHW: Encoding
ENCODING_PNG: Encoding
INTERPOLATION_METHOD_UNSPECIFIED: InterpolationMethod
INTERPOLATION_METHOD_LINEAR: InterpolationMethod
INTERPOLATION_METHOD_SLERP: InterpolationMethod
VERSION_STATE_UNSPECIFIED: VersionState
VERSION_STATE_LOADING: VersionState
VERSION_STATE_READY: VersionState
VERSION_STATE_UNLOADING: VersionState
VERSION_STATE_FAILED: VersionState
VERSION_STATE_UNLOADED: VersionState

class SeededLatents(_message.Message):
    __slots__ = ("count", "seed")
    COUNT_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    count: int
    seed: int
    def __init__(self, count: _Optional[int] = ..., seed: _Optional[int] = ...) -> None: ...

class FloatValues(_message.Message):
    __slots__ = ("values",)
    VALUES_FIELD_NUMBER: _ClassVar[int]
    values: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, values: _Optional[_Iterable[float]] = ...) -> None: ...

class GenerateRequest(_message.Message):
    __slots__ = ("packed", "values", "seeded", "encoding", "model_name", "model_version")
    PACKED_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    SEEDED_FIELD_NUMBER: _ClassVar[int]
    ENCODING_FIELD_NUMBER: _ClassVar[int]
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    packed: bytes
    values: FloatValues
    seeded: SeededLatents
    encoding: Encoding
    model_name: str
    model_version: int
    def __init__(self, packed: _Optional[bytes] = ..., values: _Optional[_Union[FloatValues, _Mapping]] = ..., seeded: _Optional[_Union[SeededLatents, _Mapping]] = ..., encoding: _Optional[_Union[Encoding, str]] = ..., model_name: _Optional[str] = ..., model_version: _Optional[int] = ...) -> None: ...

class Timing(_message.Message):
    __slots__ = ("queue_us", "compute_us")
    QUEUE_US_FIELD_NUMBER: _ClassVar[int]
    COMPUTE_US_FIELD_NUMBER: _ClassVar[int]
    queue_us: int
    compute_us: int
    def __init__(self, queue_us: _Optional[int] = ..., compute_us: _Optional[int] = ...) -> None: ...

class GenerateResponse(_message.Message):
    __slots__ = ("shape", "dtype", "data", "png", "model_id", "model_sha256", "timing", "offset", "model_name", "model_version")
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    PNG_FIELD_NUMBER: _ClassVar[int]
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_SHA256_FIELD_NUMBER: _ClassVar[int]
    TIMING_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    shape: _containers.RepeatedScalarFieldContainer[int]
    dtype: str
    data: bytes
    png: _containers.RepeatedScalarFieldContainer[bytes]
    model_id: str
    model_sha256: str
    timing: Timing
    offset: int
    model_name: str
    model_version: int
    def __init__(self, shape: _Optional[_Iterable[int]] = ..., dtype: _Optional[str] = ..., data: _Optional[bytes] = ..., png: _Optional[_Iterable[bytes]] = ..., model_id: _Optional[str] = ..., model_sha256: _Optional[str] = ..., timing: _Optional[_Union[Timing, _Mapping]] = ..., offset: _Optional[int] = ..., model_name: _Optional[str] = ..., model_version: _Optional[int] = ...) -> None: ...

class Endpoint(_message.Message):
    __slots__ = ("packed", "seed")
    PACKED_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    packed: bytes
    seed: int
    def __init__(self, packed: _Optional[bytes] = ..., seed: _Optional[int] = ...) -> None: ...

class InterpolateRequest(_message.Message):
    __slots__ = ("start", "end", "steps", "method", "encoding", "model_name", "model_version")
    START_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    ENCODING_FIELD_NUMBER: _ClassVar[int]
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    start: Endpoint
    end: Endpoint
    steps: int
    method: InterpolationMethod
    encoding: Encoding
    model_name: str
    model_version: int
    def __init__(self, start: _Optional[_Union[Endpoint, _Mapping]] = ..., end: _Optional[_Union[Endpoint, _Mapping]] = ..., steps: _Optional[int] = ..., method: _Optional[_Union[InterpolationMethod, str]] = ..., encoding: _Optional[_Union[Encoding, str]] = ..., model_name: _Optional[str] = ..., model_version: _Optional[int] = ...) -> None: ...

class GetModelInfoRequest(_message.Message):
    __slots__ = ("model_name", "model_version")
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    model_name: str
    model_version: int
    def __init__(self, model_name: _Optional[str] = ..., model_version: _Optional[int] = ...) -> None: ...

class ModelInfo(_message.Message):
    __slots__ = ("nz", "channels", "image_size", "output_min", "output_max", "model_id", "model_sha256", "opset", "execution_provider", "max_batch_size", "max_queue_delay_us", "max_queue_size", "instances", "max_latents_per_request", "max_stream_latents", "source_step", "max_response_bytes", "model_name", "model_version")
    NZ_FIELD_NUMBER: _ClassVar[int]
    CHANNELS_FIELD_NUMBER: _ClassVar[int]
    IMAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_MIN_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_MAX_FIELD_NUMBER: _ClassVar[int]
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_SHA256_FIELD_NUMBER: _ClassVar[int]
    OPSET_FIELD_NUMBER: _ClassVar[int]
    EXECUTION_PROVIDER_FIELD_NUMBER: _ClassVar[int]
    MAX_BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    MAX_QUEUE_DELAY_US_FIELD_NUMBER: _ClassVar[int]
    MAX_QUEUE_SIZE_FIELD_NUMBER: _ClassVar[int]
    INSTANCES_FIELD_NUMBER: _ClassVar[int]
    MAX_LATENTS_PER_REQUEST_FIELD_NUMBER: _ClassVar[int]
    MAX_STREAM_LATENTS_FIELD_NUMBER: _ClassVar[int]
    SOURCE_STEP_FIELD_NUMBER: _ClassVar[int]
    MAX_RESPONSE_BYTES_FIELD_NUMBER: _ClassVar[int]
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    nz: int
    channels: int
    image_size: int
    output_min: float
    output_max: float
    model_id: str
    model_sha256: str
    opset: int
    execution_provider: str
    max_batch_size: int
    max_queue_delay_us: int
    max_queue_size: int
    instances: int
    max_latents_per_request: int
    max_stream_latents: int
    source_step: int
    max_response_bytes: int
    model_name: str
    model_version: int
    def __init__(self, nz: _Optional[int] = ..., channels: _Optional[int] = ..., image_size: _Optional[int] = ..., output_min: _Optional[float] = ..., output_max: _Optional[float] = ..., model_id: _Optional[str] = ..., model_sha256: _Optional[str] = ..., opset: _Optional[int] = ..., execution_provider: _Optional[str] = ..., max_batch_size: _Optional[int] = ..., max_queue_delay_us: _Optional[int] = ..., max_queue_size: _Optional[int] = ..., instances: _Optional[int] = ..., max_latents_per_request: _Optional[int] = ..., max_stream_latents: _Optional[int] = ..., source_step: _Optional[int] = ..., max_response_bytes: _Optional[int] = ..., model_name: _Optional[str] = ..., model_version: _Optional[int] = ...) -> None: ...

class VersionStatus(_message.Message):
    __slots__ = ("version", "state", "reason", "model_id", "model_sha256")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_SHA256_FIELD_NUMBER: _ClassVar[int]
    version: int
    state: VersionState
    reason: str
    model_id: str
    model_sha256: str
    def __init__(self, version: _Optional[int] = ..., state: _Optional[_Union[VersionState, str]] = ..., reason: _Optional[str] = ..., model_id: _Optional[str] = ..., model_sha256: _Optional[str] = ...) -> None: ...

class ModelStatus(_message.Message):
    __slots__ = ("name", "versions", "serving_version")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSIONS_FIELD_NUMBER: _ClassVar[int]
    SERVING_VERSION_FIELD_NUMBER: _ClassVar[int]
    name: str
    versions: _containers.RepeatedCompositeFieldContainer[VersionStatus]
    serving_version: int
    def __init__(self, name: _Optional[str] = ..., versions: _Optional[_Iterable[_Union[VersionStatus, _Mapping]]] = ..., serving_version: _Optional[int] = ...) -> None: ...

class ListModelsRequest(_message.Message):
    __slots__ = ("model_name",)
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    model_name: str
    def __init__(self, model_name: _Optional[str] = ...) -> None: ...

class ListModelsResponse(_message.Message):
    __slots__ = ("models", "model_control", "version_policy")
    MODELS_FIELD_NUMBER: _ClassVar[int]
    MODEL_CONTROL_FIELD_NUMBER: _ClassVar[int]
    VERSION_POLICY_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedCompositeFieldContainer[ModelStatus]
    model_control: str
    version_policy: str
    def __init__(self, models: _Optional[_Iterable[_Union[ModelStatus, _Mapping]]] = ..., model_control: _Optional[str] = ..., version_policy: _Optional[str] = ...) -> None: ...

class LoadModelRequest(_message.Message):
    __slots__ = ("model_name",)
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    model_name: str
    def __init__(self, model_name: _Optional[str] = ...) -> None: ...

class UnloadModelRequest(_message.Message):
    __slots__ = ("model_name",)
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    model_name: str
    def __init__(self, model_name: _Optional[str] = ...) -> None: ...
