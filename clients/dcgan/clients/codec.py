"""dcgan.v1 requests and responses as NumPy arrays, for the sync and asyncio clients alike."""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from dcgan.clients.options import ModelOptions
from dcgan.v1 import generator_pb2 as pb

ENCODINGS = {
    "uint8": pb.ENCODING_UINT8_HWC,
    "float32": pb.ENCODING_FLOAT32_CHW,
    "png": pb.ENCODING_PNG,
}
METHODS = {"linear": pb.INTERPOLATION_METHOD_LINEAR, "slerp": pb.INTERPOLATION_METHOD_SLERP}
SERVICE = "dcgan.v1.Generator"
# How the server sizes an answer (dcgan.service.dataplane): what decides when a call must stream.
PNG_OVERHEAD = 512  # bytes a PNG may add to its raw pixels
MESSAGE_OVERHEAD = 4096  # shape, ids and timing around the images

# gRPC's own machinery: round-robin over every address the name resolves to (e.g. all replicas
# behind dns:///serve:50051); client-side health checking (gRPC's A17), a Watch of each
# replica's health "" that takes it out of the round the moment it answers NOT_SERVING (a drain
# begun, no model loaded yet) and back in once SERVING; and retries of calls a draining replica
# refused: UNAVAILABLE, or CANCELLED by grpc's transport in the instant it stops. Every dcgan.v1
# call is idempotent.
SERVICE_CONFIG = json.dumps(
    {
        "loadBalancingConfig": [{"round_robin": {}}],
        "healthCheckConfig": {"serviceName": ""},
        "methodConfig": [
            {
                "name": [{"service": SERVICE}],
                "retryPolicy": {
                    "maxAttempts": 4,
                    "initialBackoff": "0.05s",
                    "maxBackoff": "1s",
                    "backoffMultiplier": 2,
                    "retryableStatusCodes": ["UNAVAILABLE", "CANCELLED"],
                },
            }
        ],
    }
)
CHANNEL_OPTIONS = [
    ("grpc.service_config", SERVICE_CONFIG),
    ("grpc.enable_retries", 1),
    ("grpc.max_receive_message_length", 256 * 2**20),
    ("grpc.max_send_message_length", 256 * 2**20),
]
# The channel of Health.Check: it must reach a replica that is NOT_SERVING, to hear it say so.
HEALTH_CHANNEL_OPTIONS = [
    ("grpc.service_config", json.dumps({"loadBalancingConfig": [{"round_robin": {}}]})),
]


@dataclass(frozen=True)
class Generated:
    """Images of one response (or stream chunk) and the server's account of them."""

    images: npt.NDArray | list[bytes]  # type: ignore[type-arg]  # arrays, or PNG files
    model_id: str
    queue_us: int
    compute_us: int
    offset: int = 0
    model_name: str = ""  # the model and version that computed the images
    model_version: int = 0


def latents_request(
    latents: npt.ArrayLike | None,
    n: int | None,
    seed: int | None,
    encoding: str,
    model: ModelOptions,
) -> pb.GenerateRequest:
    """Explicit latents [n, nz] as packed float32, or `n` latents the server draws from `seed`."""
    if encoding not in ENCODINGS:
        raise ValueError(f"encoding must be one of {', '.join(ENCODINGS)}, not {encoding!r}")
    request = pb.GenerateRequest(
        encoding=ENCODINGS[encoding], model_name=model.name, model_version=model.version
    )
    if latents is not None:
        if n is not None or seed is not None:
            raise ValueError("give either latents or n and seed, not both")
        request.packed = np.ascontiguousarray(latents, dtype="<f4").tobytes()
    else:
        if n is None:
            raise ValueError("give latents, or n (and a seed)")
        request.seeded.count = n
        request.seeded.seed = 0 if seed is None else seed
    return request


def endpoint(value: int | npt.ArrayLike) -> pb.Endpoint:
    """A walk's end: a seed (an int) or one latent."""
    if isinstance(value, int | np.integer):
        return pb.Endpoint(seed=int(value))
    return pb.Endpoint(packed=np.ascontiguousarray(value, dtype="<f4").tobytes())


def interpolate_request(
    start: int | npt.ArrayLike,
    end: int | npt.ArrayLike,
    steps: int,
    method: str,
    encoding: str,
    model: ModelOptions,
) -> pb.InterpolateRequest:
    if method not in METHODS:
        raise ValueError(f"method must be linear or slerp, not {method!r}")
    if encoding not in ENCODINGS:
        raise ValueError(f"encoding must be one of {', '.join(ENCODINGS)}, not {encoding!r}")
    return pb.InterpolateRequest(
        start=endpoint(start),
        end=endpoint(end),
        steps=steps,
        method=METHODS[method],
        encoding=ENCODINGS[encoding],
        model_name=model.name,
        model_version=model.version,
    )


def decode(response: pb.GenerateResponse) -> Generated:
    images: npt.NDArray | list[bytes]  # type: ignore[type-arg]
    if response.dtype == "png":
        images = list(response.png)
    else:
        images = np.frombuffer(response.data, dtype=np.dtype(response.dtype).newbyteorder("<"))
        images = images.reshape(tuple(response.shape))
    return Generated(
        images,
        response.model_id,
        response.timing.queue_us,
        response.timing.compute_us,
        response.offset,
        response.model_name,
        response.model_version,
    )


def fits_one_message(info: dict[str, Any], count: int, encoding: str) -> bool:
    """Whether `count` images in `encoding` come in one answer, by the server's own limits
    (GetModelInfo); more must stream."""
    pixels = int(info["channels"]) * int(info["image_size"]) ** 2
    image = {"uint8": pixels, "float32": 4 * pixels, "png": pixels + PNG_OVERHEAD}[encoding]
    return count <= int(
        info["max_latents_per_request"]
    ) and count * image + MESSAGE_OVERHEAD <= int(info["max_response_bytes"])


def joined(chunks: list[Generated]) -> npt.NDArray | list[bytes]:  # type: ignore[type-arg]
    """The images of a stream's chunks, in order, as one answer would carry them."""
    ordered = sorted(chunks, key=lambda chunk: chunk.offset)
    if ordered and isinstance(ordered[0].images, list):
        return [image for chunk in ordered for image in chunk.images]
    return np.concatenate([chunk.images for chunk in ordered])


def info_dict(info: pb.ModelInfo) -> dict[str, Any]:
    """Every field of ModelInfo by name, numbers as numbers (JSON mapping quotes 64-bit ones)."""
    return {field.name: getattr(info, field.name) for field in info.DESCRIPTOR.fields}


def to_pil(images: npt.NDArray | list[bytes]) -> list[Any]:  # type: ignore[type-arg]
    """PIL images of uint8 HWC arrays or PNG files (float32 CHW is mapped from [-1, 1])."""
    from PIL import Image

    if isinstance(images, list):
        return [Image.open(io.BytesIO(data)) for data in images]
    if images.dtype != np.uint8:
        images = np.clip(np.round((images.transpose(0, 2, 3, 1) + 1.0) * 127.5), 0, 255).astype(
            np.uint8
        )
    return [Image.fromarray(image[:, :, 0] if image.shape[2] == 1 else image) for image in images]
