"""Python clients of the dcgan.v1 API: `GeneratorClient` (blocking) and `AsyncGeneratorClient`.

    with GeneratorClient("localhost:50051") as client:
        images = client.generate(n=16, seed=1)            # uint8 [16, 64, 64, C]
        walk = client.interpolate(1, 2, steps=10, method="slerp")  # long walks stream
        client.info()["nz"], client.health()

Targets are gRPC names: `host:port`, or `dns:///serve:50051` to spread calls over every replica
the name resolves to (round robin); a replica whose health turns NOT_SERVING (a drain begun) gets
no further calls, and calls refused with UNAVAILABLE are retried by gRPC itself.

A server of several models needs the model named: `GeneratorClient(target, model="tiny")`, and
`version=3` to pin a version (0: the newest served); `client.using("other")` asks another model
over the same channel. Answers and `info()` say which model and version answered.
"""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import grpc
import numpy.typing as npt
from grpc_health.v1 import health_pb2, health_pb2_grpc

from dcgan.clients.codec import (
    CHANNEL_OPTIONS,
    HEALTH_CHANNEL_OPTIONS,
    Generated,
    decode,
    fits_one_message,
    info_dict,
    interpolate_request,
    joined,
    latents_request,
    to_pil,
)
from dcgan.clients.options import ConnectionOptions, ModelOptions, check_model
from dcgan.v1 import generator_pb2 as pb
from dcgan.v1 import generator_pb2_grpc as pb_grpc


def credentials(
    ca: Path | None = None, cert: Path | None = None, key: Path | None = None
) -> grpc.ChannelCredentials:
    """TLS credentials: the server's CA, and a client certificate for mutual TLS."""
    return grpc.ssl_channel_credentials(
        root_certificates=ca.read_bytes() if ca else None,
        private_key=key.read_bytes() if key else None,
        certificate_chain=cert.read_bytes() if cert else None,
    )


class _Connection:
    """What both clients hold: channels (from `grpc` or `grpc.aio`), their stubs, the deadline,
    the token, and the model asked for."""

    def __init__(
        self,
        api: Any,
        target: str,
        timeout: float | None,
        tls: grpc.ChannelCredentials | None,
        token: str | None,
        model: str,
        version: int,
    ) -> None:
        self.model = ModelOptions(model, version)
        check_model(self.model, ("model", "version"))  # before any channel: nothing to close
        self.channel = _channel(api, target, tls, CHANNEL_OPTIONS)
        # Health.Check on a channel of its own: the main one routes no call to a replica that
        # is NOT_SERVING, so there it would fail UNAVAILABLE rather than say NOT_SERVING.
        self.health_channel = _channel(api, target, tls, HEALTH_CHANNEL_OPTIONS)
        self.timeout = timeout  # each call's deadline, in seconds: the server drops work past it
        self._metadata = (("authorization", f"Bearer {token}"),) if token else None
        self._stub = pb_grpc.GeneratorStub(self.channel)
        self._health = health_pb2_grpc.HealthStub(self.health_channel)

    def _info_request(self) -> pb.GetModelInfoRequest:
        return pb.GetModelInfoRequest(model_name=self.model.name, model_version=self.model.version)

    def using(self, model: str, version: int = ModelOptions.version) -> Self:
        """A client of `model` (and `version`) over this client's channels: closing either
        closes both."""
        chosen = ModelOptions(model, version)
        check_model(chosen, ("model", "version"))
        other = copy.copy(self)
        other.model = chosen
        return other


def _channel(
    api: Any, target: str, tls: grpc.ChannelCredentials | None, options: list[tuple[str, Any]]
) -> Any:
    if tls is None:
        return api.insecure_channel(target, options=options)
    return api.secure_channel(target, tls, options=options)


class GeneratorClient(_Connection):
    def __init__(
        self,
        target: str,
        timeout: float | None = ConnectionOptions.timeout_s,
        tls: grpc.ChannelCredentials | None = None,
        token: str | None = None,
        model: str = ModelOptions.name,
        version: int = ModelOptions.version,
    ) -> None:
        super().__init__(grpc, target, timeout, tls, token, model, version)

    def __enter__(self) -> GeneratorClient:
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        self.channel.close()
        self.health_channel.close()

    def generate_response(
        self,
        latents: npt.ArrayLike | None = None,
        *,
        n: int | None = None,
        seed: int | None = None,
        encoding: str = "uint8",
    ) -> Generated:
        request = latents_request(latents, n, seed, encoding, self.model)
        return decode(self._stub.Generate(request, timeout=self.timeout, metadata=self._metadata))

    def generate(
        self,
        latents: npt.ArrayLike | None = None,
        *,
        n: int | None = None,
        seed: int | None = None,
        encoding: str = "uint8",
    ) -> Any:
        """Images of `latents` [n, nz], or of `n` latents the server draws from `seed`."""
        return self.generate_response(latents, n=n, seed=seed, encoding=encoding).images

    def generate_images(
        self, latents: npt.ArrayLike | None = None, *, n: int | None = None, seed: int | None = None
    ) -> list[Any]:
        """The same as PIL images."""
        return to_pil(self.generate(latents, n=n, seed=seed))

    def generate_stream(
        self,
        latents: npt.ArrayLike | None = None,
        *,
        n: int | None = None,
        seed: int | None = None,
        encoding: str = "uint8",
    ) -> Iterator[Generated]:
        """The same as chunks, for more images than one message carries."""
        request = latents_request(latents, n, seed, encoding, self.model)
        for response in self._stub.GenerateStream(
            request, timeout=self.timeout, metadata=self._metadata
        ):
            yield decode(response)

    def interpolate(
        self,
        start: int | npt.ArrayLike,
        end: int | npt.ArrayLike,
        steps: int = 10,
        method: str = "linear",
        encoding: str = "uint8",
    ) -> Any:
        """A walk from `start` to `end` (seeds or latents), both ends included.

        A walk too long for one answer (by the server's GetModelInfo) comes by InterpolateStream.
        """
        request = interpolate_request(start, end, steps, method, encoding, self.model)
        if not fits_one_message(self.info(), steps, encoding):
            return joined(list(self.interpolate_stream(start, end, steps, method, encoding)))
        return decode(
            self._stub.Interpolate(request, timeout=self.timeout, metadata=self._metadata)
        ).images

    def interpolate_stream(
        self,
        start: int | npt.ArrayLike,
        end: int | npt.ArrayLike,
        steps: int = 10,
        method: str = "linear",
        encoding: str = "uint8",
    ) -> Iterator[Generated]:
        """The walk as chunks, for walks longer than one message carries."""
        request = interpolate_request(start, end, steps, method, encoding, self.model)
        for response in self._stub.InterpolateStream(
            request, timeout=self.timeout, metadata=self._metadata
        ):
            yield decode(response)

    def info(self) -> dict[str, Any]:
        """GetModelInfo of the model asked for: model_name and model_version say which answers."""
        return info_dict(
            self._stub.GetModelInfo(
                self._info_request(), timeout=self.timeout, metadata=self._metadata
            )
        )

    def health(self, service: str = "") -> str:
        """SERVING, NOT_SERVING, ... (raises grpc.RpcError when the server cannot be reached)."""
        response = self._health.Check(
            health_pb2.HealthCheckRequest(service=service), timeout=self.timeout
        )
        return str(health_pb2.HealthCheckResponse.ServingStatus.Name(response.status))


class AsyncGeneratorClient(_Connection):
    """The asyncio twin of GeneratorClient: the same methods, awaited."""

    def __init__(
        self,
        target: str,
        timeout: float | None = ConnectionOptions.timeout_s,
        tls: grpc.ChannelCredentials | None = None,
        token: str | None = None,
        model: str = ModelOptions.name,
        version: int = ModelOptions.version,
    ) -> None:
        super().__init__(grpc.aio, target, timeout, tls, token, model, version)

    async def __aenter__(self) -> AsyncGeneratorClient:
        return self

    async def __aexit__(
        self, *exc: type[BaseException] | BaseException | TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        await self.channel.close()
        await self.health_channel.close()

    async def generate_response(
        self,
        latents: npt.ArrayLike | None = None,
        *,
        n: int | None = None,
        seed: int | None = None,
        encoding: str = "uint8",
    ) -> Generated:
        request = latents_request(latents, n, seed, encoding, self.model)
        return decode(
            await self._stub.Generate(request, timeout=self.timeout, metadata=self._metadata)
        )

    async def generate(
        self,
        latents: npt.ArrayLike | None = None,
        *,
        n: int | None = None,
        seed: int | None = None,
        encoding: str = "uint8",
    ) -> Any:
        return (await self.generate_response(latents, n=n, seed=seed, encoding=encoding)).images

    async def generate_images(
        self, latents: npt.ArrayLike | None = None, *, n: int | None = None, seed: int | None = None
    ) -> list[Any]:
        return to_pil(await self.generate(latents, n=n, seed=seed))

    async def generate_stream(
        self,
        latents: npt.ArrayLike | None = None,
        *,
        n: int | None = None,
        seed: int | None = None,
        encoding: str = "uint8",
    ) -> AsyncIterator[Generated]:
        request = latents_request(latents, n, seed, encoding, self.model)
        async for response in self._stub.GenerateStream(
            request, timeout=self.timeout, metadata=self._metadata
        ):
            yield decode(response)

    async def interpolate(
        self,
        start: int | npt.ArrayLike,
        end: int | npt.ArrayLike,
        steps: int = 10,
        method: str = "linear",
        encoding: str = "uint8",
    ) -> Any:
        request = interpolate_request(start, end, steps, method, encoding, self.model)
        if not fits_one_message(await self.info(), steps, encoding):
            stream = self.interpolate_stream(start, end, steps, method, encoding)
            return joined([chunk async for chunk in stream])
        return decode(
            await self._stub.Interpolate(request, timeout=self.timeout, metadata=self._metadata)
        ).images

    async def interpolate_stream(
        self,
        start: int | npt.ArrayLike,
        end: int | npt.ArrayLike,
        steps: int = 10,
        method: str = "linear",
        encoding: str = "uint8",
    ) -> AsyncIterator[Generated]:
        request = interpolate_request(start, end, steps, method, encoding, self.model)
        async for response in self._stub.InterpolateStream(
            request, timeout=self.timeout, metadata=self._metadata
        ):
            yield decode(response)

    async def info(self) -> dict[str, Any]:
        response = await self._stub.GetModelInfo(
            self._info_request(), timeout=self.timeout, metadata=self._metadata
        )
        return info_dict(response)

    async def health(self, service: str = "") -> str:
        response = await self._health.Check(
            health_pb2.HealthCheckRequest(service=service), timeout=self.timeout
        )
        return str(health_pb2.HealthCheckResponse.ServingStatus.Name(response.status))
