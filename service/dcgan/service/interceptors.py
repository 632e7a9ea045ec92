"""Server interceptors: the one place where domain errors become gRPC status codes.

Every RPC of the dcgan.v1 services (Generator, ModelRepository) and of the Open Inference
Protocol (inference.GRPCInferenceService) passes through `StatusMapping`, which also counts
requests by method and code, and holds each call as accepted while it runs (see
dcgan.service.calls). An undecodable request message becomes INVALID_ARGUMENT (grpc's own
answer would be INTERNAL); anything unexpected becomes INTERNAL with no traceback sent to the
caller. A caller that went away is no error: its call is counted CANCELLED, or
DEADLINE_EXCEEDED when its deadline passed.
`BearerToken` refuses every call but health checks that lacks the server's token.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Any, NoReturn

import grpc

from dcgan.service.calls import AcceptedCall, AcceptedCalls
from dcgan.service.errors import (
    DeadlineExceeded,
    InvalidInput,
    LoadFailed,
    ManagementOff,
    ModelFailure,
    NotFound,
    QueueFull,
    ResponseTooLarge,
    ServiceError,
    Unauthenticated,
    Unavailable,
)
from dcgan.service.metrics import ServiceMetrics

_LOGGER = logging.getLogger(__name__)

STATUS_OF: dict[type[ServiceError], grpc.StatusCode] = {
    InvalidInput: grpc.StatusCode.INVALID_ARGUMENT,
    NotFound: grpc.StatusCode.NOT_FOUND,
    ManagementOff: grpc.StatusCode.FAILED_PRECONDITION,
    LoadFailed: grpc.StatusCode.FAILED_PRECONDITION,
    QueueFull: grpc.StatusCode.RESOURCE_EXHAUSTED,
    ResponseTooLarge: grpc.StatusCode.RESOURCE_EXHAUSTED,
    Unavailable: grpc.StatusCode.UNAVAILABLE,
    DeadlineExceeded: grpc.StatusCode.DEADLINE_EXCEEDED,
    ModelFailure: grpc.StatusCode.INTERNAL,
    Unauthenticated: grpc.StatusCode.UNAUTHENTICATED,
}
SERVICE_PREFIXES = (
    "/dcgan.v1.Generator/",
    "/dcgan.v1.ModelRepository/",
    "/inference.GRPCInferenceService/",
)
OPEN_PREFIX = "/grpc.health.v1.Health/"  # load balancers and orchestrators probe without a token


class _Undecodable:
    """Stands in for a request message that failed to parse."""


def _tolerant(deserialize: Callable[[bytes], Any]) -> Callable[[bytes], Any]:
    def parse(data: bytes) -> Any:
        try:
            return deserialize(data)
        except Exception:  # protobuf raises DecodeError, and others on wrong wire types
            return _Undecodable()

    return parse


def method_name(method: str) -> str:
    """'/dcgan.v1.Generator/Generate' -> 'Generate', as the metrics label methods."""
    return method.rpartition("/")[2]


def status_of(error: BaseException) -> tuple[grpc.StatusCode, str]:
    """The status code and caller-safe detail for an exception raised by a handler."""
    for kind, code in STATUS_OF.items():
        if isinstance(error, kind):
            return code, str(error)
    _LOGGER.error("unexpected error in a handler", exc_info=error)
    return grpc.StatusCode.INTERNAL, "internal error"


class _CallerGone(Exception):
    """A message could not be written: the caller cancelled, or its connection closed."""


class StatusMapping(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Maps errors to codes, counts answers, and holds each call as accepted while it runs.

    Stream handlers write their messages themselves, so that a caller who goes away mid-stream
    ends the call as CANCELLED with one debug line, not with an error from grpc's own writer.
    """

    def __init__(self, metrics: ServiceMetrics, calls: AcceptedCalls) -> None:
        self._metrics = metrics
        self._calls = calls
        self._handlers: dict[str, grpc.RpcMethodHandler] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        method: str = details.method
        if method in self._handlers:
            return self._handlers[method]
        handler = await continuation(details)
        if handler is None or not method.startswith(SERVICE_PREFIXES):
            return handler
        name = method_name(method)
        if handler.unary_unary is not None:
            wrapped = grpc.unary_unary_rpc_method_handler(
                self._unary(name, handler.unary_unary),
                request_deserializer=_tolerant(handler.request_deserializer),
                response_serializer=handler.response_serializer,
            )
        else:
            wrapped = grpc.unary_stream_rpc_method_handler(
                self._stream(name, handler.unary_stream),
                request_deserializer=_tolerant(handler.request_deserializer),
                response_serializer=handler.response_serializer,
            )
        self._handlers[method] = wrapped
        return wrapped

    def _count(self, name: str, code: grpc.StatusCode) -> None:
        self._metrics.requests.labels(name, code.name).inc()

    async def _end(
        self,
        name: str,
        call: AcceptedCall | None,
        error: BaseException,
        context: grpc.aio.ServicerContext,
        sent: int = 0,
    ) -> NoReturn:
        """End a call whose handler raised `error`: with its status code (context.abort raises),
        or, when the caller is gone, quietly as CANCELLED (or DEADLINE_EXCEEDED)."""
        if isinstance(error, asyncio.CancelledError) and call is not None and call.cut:
            after = f", after {sent} messages" if sent else ""
            error = Unavailable(
                f"the server stopped{after}: its drain grace of {self._calls.grace_s:g} s ran "
                "out before this call finished"
            )
        if not isinstance(error, asyncio.CancelledError | _CallerGone):
            code, detail = status_of(error)
            try:
                await context.abort(code, detail)
            except grpc.aio.AbortError:
                self._count(name, code)
                raise
            except (Exception, asyncio.CancelledError):
                pass  # the status could not be sent: the call has ended already
        remaining = context.time_remaining()
        expired = remaining is not None and remaining <= 0
        code = grpc.StatusCode.DEADLINE_EXCEEDED if expired else grpc.StatusCode.CANCELLED
        _LOGGER.debug("%s ended early: %s", name, code.name)
        self._count(name, code)
        raise asyncio.CancelledError

    def _unary(
        self, name: str, behavior: Callable[..., Awaitable[Any]]
    ) -> Callable[..., Awaitable[Any]]:
        async def handle(request: Any, context: grpc.aio.ServicerContext) -> Any:
            call = None
            try:
                with self._calls.accept(name) as call:
                    if isinstance(request, _Undecodable):
                        raise InvalidInput(f"the request is not a valid message for {name}")
                    response = await behavior(request, context)
            except (Exception, asyncio.CancelledError) as error:
                await self._end(name, call, error, context)
            self._count(name, grpc.StatusCode.OK)
            return response

        return handle

    def _stream(
        self, name: str, behavior: Callable[..., AsyncGenerator[Any, None]]
    ) -> Callable[..., Awaitable[None]]:
        async def handle(request: Any, context: grpc.aio.ServicerContext) -> None:
            call = None
            sent = 0
            try:
                with self._calls.accept(name) as call:
                    if isinstance(request, _Undecodable):
                        raise InvalidInput(f"the request is not a valid message for {name}")
                    responses = behavior(request, context)
                    try:
                        async for response in responses:
                            # Counted as sent once handed to grpc: a cut that lands while the
                            # write is under way still lets grpc deliver it before the status.
                            sent += 1
                            try:
                                await context.write(response)
                            except Exception:  # grpc's writer: the call has ended already
                                raise _CallerGone from None
                    finally:
                        await responses.aclose()  # cancels the chunks still computing
            except (Exception, asyncio.CancelledError) as error:
                await self._end(name, call, error, context, sent)
            self._count(name, grpc.StatusCode.OK)

        return handle


class BearerToken(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Every call but health checks must carry `authorization: Bearer <token>`."""

    def __init__(self, token: str, metrics: ServiceMetrics) -> None:
        self._expected = f"Bearer {token}".encode()
        self._metrics = metrics

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        if (
            handler is None
            or details.method.startswith(OPEN_PREFIX)
            or self._carries_token(details)
        ):
            return handler
        name = method_name(details.method)
        code, detail = status_of(
            Unauthenticated("this server needs a bearer token; it was missing or wrong")
        )

        async def refuse(request: Any, context: grpc.aio.ServicerContext) -> None:
            self._metrics.requests.labels(name, code.name).inc()
            await context.abort(code, detail)

        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(refuse)
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(refuse)
        if handler.stream_unary is not None:
            return grpc.stream_unary_rpc_method_handler(refuse)
        return grpc.stream_stream_rpc_method_handler(refuse)

    def _carries_token(self, details: grpc.HandlerCallDetails) -> bool:
        for key, value in details.invocation_metadata or ():
            if key == "authorization":
                given = value.encode() if isinstance(value, str) else value
                return hmac.compare_digest(given, self._expected)
        return False
