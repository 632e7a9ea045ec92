"""Build, start and stop the gRPC server.

Start-up order: check the models (a repository that can be read; a single export's manifest and
sha256s; the device) and every setting (TLS files, host, ports, port file) before opening a port,
so that bad input fails at once with its own reason; then serve health as NOT_SERVING while the
versions load and warm up (dcgan.service.models); then SERVING. A signal during start-up stops the
server at once.

Health: "" (the server as a whole, and the names of its services) is SERVING once started while
any model serves; each model's name is SERVING while one of its versions does.

Stop (SIGTERM/SIGINT), a lame-duck drain: health NOT_SERVING at once; for `drain_s` the server stays
up and answers every new call UNAVAILABLE (so that each call that arrives gets a real status, and
callers and load balancers move on), while accepted calls finish (a stream sends all of its
chunks); then it stops, all within the grace period. Stopping sooner would leave the calls that
reached grpc's core but not yet Python to be CANCELLED by grpc-python's stop (grpc/grpc#41785).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import signal
import threading
import time
from collections import Counter
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from dcgan.service import inference
from dcgan.service.calls import AcceptedCalls
from dcgan.service.dataplane import DataPlane
from dcgan.service.interceptors import BearerToken, StatusMapping
from dcgan.service.metrics import ServiceMetrics
from dcgan.service.models import ModelSet
from dcgan.service.options import ServerConfig
from dcgan.service.repository import Repository, SingleModel, Source, VersionPolicy
from dcgan.service.servicer import GeneratorServicer, ModelRepositoryServicer
from dcgan.service.startup import (
    OptionConflict,
    StartupError,
    TlsMaterial,
    bind_error,
    check_port_file,
    describe_bind_error,
    listen_address,
    tls_material,
)
from dcgan.v1 import generator_pb2 as pb
from dcgan.v1 import generator_pb2_grpc as pb_grpc

_LOGGER = logging.getLogger(__name__)

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["Generator"].full_name
REPOSITORY_SERVICE_NAME = pb.DESCRIPTOR.services_by_name["ModelRepository"].full_name
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def model_source(config: ServerConfig) -> Source:
    """--model-dir (a repository of one model) or --model-repository."""
    if config.model_repository is not None:
        return Repository(config.model_repository)
    if config.model_dir is None:
        raise ValueError("a server needs a model directory or a model repository")
    return SingleModel(config.model_dir)


class GeneratorServer:
    """One running server; `start()` returns once it is SERVING.

    A start that fails part-way, or is interrupted, leaves nothing behind: `close()` stops
    whatever had started.
    """

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.metrics = ServiceMetrics(config.batching.max_batch_size)
        for service in ("Generator", "ModelRepository"):
            for method in pb.DESCRIPTOR.services_by_name[service].methods:
                self.metrics.in_flight.labels(method.name)
        self.calls = AcceptedCalls(self.metrics)
        self.models = ModelSet(
            model_source(config),
            policy=VersionPolicy.parse(config.version_policy),
            control=config.model_control,
            poll_s=config.poll_s,
            runtime=config.runtime,
            batching=config.batching,
            metrics=self.metrics,
        )
        self.models.on_health(self._model_health)
        self.plane = DataPlane(self.models, config.limits)
        self.health = health.aio.HealthServicer()
        self.port = 0
        self.metrics_port = 0
        self.started_serving_s = 0.0
        self._server: grpc.aio.Server | None = None
        self._metrics_http: object = None
        self._opened = 0.0
        self._started = False  # start-up's loads are done: "" follows the models from now on
        self.stopped = False  # stop() has finished

    @property
    def loading(self) -> threading.Thread | None:
        """The thread of the last load, which may still be inside onnxruntime."""
        return self.models.loading

    async def start(self) -> None:
        await self.open()
        await self.load_model()

    async def open(self) -> None:
        """Check the models and every setting, then listen, answering health with NOT_SERVING.

        Raises ModelLoadError, RepositoryError or StartupError, having opened nothing.
        """
        self._opened = time.perf_counter()
        config = self.config
        self.models.check()  # the repository, the device; a single export's manifest and sha256
        tls = tls_material(config.tls_cert, config.tls_key, config.tls_client_ca)
        if config.port_file is not None:
            check_port_file(config.port_file)
        if config.metrics_port:
            self._check_metrics_ports()
        await self._set_health(health_pb2.HealthCheckResponse.NOT_SERVING)
        try:
            self._server = self._build()
            self.port = self._bind(self._server, tls)
            if config.metrics_port:
                offset = self.port - config.port if config.port else 0
                self._metrics_http = self._serve_metrics(config.metrics_port + offset)
                self.metrics_port = self._metrics_http.server_port  # type: ignore[attr-defined]
            await self._server.start()
        except BaseException:
            await self.close()
            raise

    async def load_model(self) -> None:
        """Load the versions the repository holds (off the event loop), then answer SERVING.

        The sessions are made on daemon threads: onnxruntime cannot be interrupted, and a
        signal must not wait for it (see `serve`).
        """
        address = listen_address(self.config.host, self.port)
        _LOGGER.info("listening on %s (NOT_SERVING); loading the model", address)
        try:
            await self.models.start()
            if self.config.port_file is not None:  # once loaded: a failed start writes none
                write_port_file(self.config.port_file, self.port)
        except BaseException:
            await self.close()
            raise
        self._started = True
        served = self.models.served_models
        await self._set_health(SERVING if served else NOT_SERVING)
        self.started_serving_s = time.perf_counter() - self._opened
        if not served:
            _LOGGER.warning(
                "listening on %s after %.2f s, but no model serves yet (%s: %s)",
                address, self.started_serving_s, self.config.model_control,
                "; ".join(status.describe() for status in self.models.statuses()) or "no model",
            )  # fmt: skip
            return
        serving = []
        for name in served:
            info = self.plane.model_info(name, 0)
            serving.append(f"{info.spec.model_id} ({name} version {info.version})")
        _LOGGER.info(
            "serving %s on %s (%s) after %.2f s",
            ", ".join(serving), address, self.plane.model_info(served[0], 0).execution_provider,
            self.started_serving_s,
        )  # fmt: skip

    async def _model_health(self, serving: dict[str, bool]) -> None:
        """Each model's health by whether a version of it serves; the server's once started."""
        for name, up in sorted(serving.items()):
            await self.health.set(name, SERVING if up else NOT_SERVING)
        if self._started:
            await self._set_health(SERVING if any(serving.values()) else NOT_SERVING)

    def _bind(self, server: grpc.aio.Server, tls: TlsMaterial | None) -> int:
        """Bind the first free port of the configured range; return it."""
        config = self.config
        credentials = None
        if tls is not None:
            credentials = grpc.ssl_server_credentials(
                [(tls.key, tls.certificate_chain)],
                root_certificates=tls.client_ca,
                require_client_auth=tls.client_ca is not None,
            )
        first, count = config.port, config.port_count
        for port in range(first, first + count):
            error = bind_error(config.host, port, config.reuse_port)
            if error is None:
                address = listen_address(config.host, port)
                try:
                    if credentials is None:
                        return int(server.add_insecure_port(address))
                    return int(server.add_secure_port(address, credentials))
                except RuntimeError:  # taken between the probe and grpc, or refused by grpc
                    error = bind_error(config.host, port, config.reuse_port)
                    if error is None:
                        raise StartupError(f"grpc cannot listen on {address}") from None
            if error.errno != errno.EADDRINUSE:
                raise StartupError(describe_bind_error(error, config.host, port))
        last = first + count - 1
        span = f"ports {first}-{last} are" if count > 1 else f"port {first} is"
        raise StartupError(f"{span} in use on {config.host}")

    def _check_metrics_ports(self) -> None:
        """The metrics port follows the bound port's offset in its range: each offset's pair of
        ports must differ, and fit below 65536."""
        config = self.config
        grpc_ports = range(config.port, config.port + config.port_count)
        metrics_ports = range(config.metrics_port, config.metrics_port + config.port_count)
        if config.port and config.port_count == 1 and config.port == config.metrics_port:
            raise OptionConflict(
                f"--metrics-port {config.metrics_port} is --port too: give each its own port"
            )
        if config.port and set(grpc_ports) & set(metrics_ports):
            raise OptionConflict(
                f"the metrics ports {metrics_ports.start}-{metrics_ports.stop - 1} "
                "(--metrics-port plus the offset of the port bound) overlap the gRPC ports "
                f"{grpc_ports.start}-{grpc_ports.stop - 1} of --port: give them ranges apart"
            )
        last = metrics_ports.stop - 1
        if last > 65535:
            raise OptionConflict(
                f"--metrics-port {config.metrics_port} leaves no room for the {config.port_count} "
                f"ports of --port {grpc_ports.start}-{grpc_ports.stop - 1}: it would need {last}"
            )

    def _serve_metrics(self, port: int) -> object:
        host = self.config.host
        error = bind_error(host, port, reuse_port=False)
        if error is None:
            try:
                return self.metrics.serve_http(host, port)
            except OSError as raised:
                error = raised
        raise StartupError(describe_bind_error(error, host, port, "--metrics-port"))

    def _build(self) -> grpc.aio.Server:
        options = [
            ("grpc.max_receive_message_length", self.config.max_message_bytes),
            ("grpc.max_send_message_length", -1),
            ("grpc.so_reuseport", 1 if self.config.reuse_port else 0),
        ]
        if self.config.max_connection_age_s:
            options += [
                ("grpc.max_connection_age_ms", int(self.config.max_connection_age_s * 1000)),
                ("grpc.max_connection_age_grace_ms", int(self.config.grace_s * 1000)),
            ]
        interceptors: list[grpc.aio.ServerInterceptor] = [StatusMapping(self.metrics, self.calls)]
        if self.config.token:
            interceptors.insert(0, BearerToken(self.config.token, self.metrics))
        server = grpc.aio.server(
            interceptors=interceptors,
            options=options,
            maximum_concurrent_rpcs=self.config.max_concurrent_rpcs,
        )
        pb_grpc.add_GeneratorServicer_to_server(GeneratorServicer(self.plane), server)
        pb_grpc.add_ModelRepositoryServicer_to_server(ModelRepositoryServicer(self.plane), server)
        inference.add_to_server(inference.InferenceServicer(self.plane, self.metrics), server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        names = (SERVICE_NAME, REPOSITORY_SERVICE_NAME, inference.SERVICE_NAME, health.SERVICE_NAME)
        reflected = (*names, reflection.SERVICE_NAME)
        pool = inference.reflection_pool(reflected)
        reflection.enable_server_reflection(reflected, server, pool=pool)
        return server

    async def _set_health(self, status: int) -> None:
        for name in ("", SERVICE_NAME, REPOSITORY_SERVICE_NAME, inference.SERVICE_NAME):
            await self.health.set(name, status)

    async def stop(self) -> None:
        """The lame-duck drain: NOT_SERVING, and for drain_s every new call refused with
        UNAVAILABLE while accepted ones finish; then stop, all within the grace.

        Calls still running when the grace ends are stopped with UNAVAILABLE, which says so.
        """
        started = time.monotonic()
        grace_s = self.config.grace_s
        deadline = started + grace_s
        lame_duck_end = started + min(self.config.drain_s, grace_s)
        await self.health.enter_graceful_shutdown()
        await self.models.stop_polling()
        cut = await self.calls.drain(grace_s)
        await asyncio.sleep(max(0.0, lame_duck_end - time.monotonic()))
        if cut:
            methods = Counter(call.method for call in cut)
            _LOGGER.warning(
                "grace period of %g s over: stopped %s",
                self.config.grace_s,
                ", ".join(f"{count} {method}" for method, count in sorted(methods.items())),
            )
        await self.close(max(0.0, deadline - time.monotonic()))
        _LOGGER.info("answered: %s", self.answered())

    async def close(self, grace_s: float = 0.0) -> None:
        """Stop listening and release the sessions' threads and the metrics port."""
        if self._server is not None:
            await self._server.stop(grace_s)
        self.models.close()
        if self._metrics_http is not None:
            self._metrics_http.shutdown()  # type: ignore[attr-defined]
            self._metrics_http.server_close()  # type: ignore[attr-defined]
            self._metrics_http = None
        self.stopped = True

    def answered(self) -> str:
        """Requests answered so far by method and code, e.g. 'Generate OK=120, ...'."""
        counts = []
        for metric in self.metrics.requests.collect():
            for sample in metric.samples:
                if sample.name.endswith("_total"):
                    labels = sample.labels
                    counts.append(f"{labels['method']} {labels['code']}={int(sample.value)}")
        return ", ".join(sorted(counts)) or "none"


def write_port_file(path: Path, port: int) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        tmp.write_text(f"{port}\n")
        tmp.replace(path)
    except OSError as error:
        raise StartupError(f"cannot write --port-file {path}: {error.strerror}") from None


STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


async def serve(config: ServerConfig, signalled: list[int] | None = None) -> bool:
    """Run until SIGTERM or SIGINT, then drain and stop.

    A signal during start-up stops at once: nothing was accepted yet. `signalled` holds the
    signals that came before this coroutine ran (the caller's own handler records them).
    Returns True when the model was still loading: its thread is inside onnxruntime, and the
    process must end without waiting for it (os._exit).
    """
    server = GeneratorServer(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in STOP_SIGNALS:
        loop.add_signal_handler(sig, stop.set)
    if signalled:
        _LOGGER.info("stopped before start-up")
        return False
    starting = asyncio.ensure_future(server.start())
    stopping = asyncio.ensure_future(stop.wait())
    await asyncio.wait({starting, stopping}, return_when=asyncio.FIRST_COMPLETED)
    if not starting.done():
        starting.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await starting
        await server.close()
        _LOGGER.info("stopped during start-up, before serving")
        return server.loading is not None and server.loading.is_alive()
    stopping.cancel()
    starting.result()  # a failed start raises here, with everything it opened closed
    await stop.wait()
    _LOGGER.info(
        "stopping: refusing new calls for %.1f s, draining for up to %.1f s",
        min(config.drain_s, config.grace_s), config.grace_s,
    )  # fmt: skip
    await server.stop()
    _LOGGER.info("stopped")
    return False
