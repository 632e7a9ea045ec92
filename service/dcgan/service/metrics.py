"""Prometheus metrics of one server, in a registry of its own (several servers fit in a process).

What batches and computes is labelled by model and version (a version's batcher records through
its `VersionMetrics`); requests by method and status code. A retired version's gauges go (its
counters stay, as counters do); a version that failed to load shows in `dcgan_model_version_state`
(state="failed") and `dcgan_model_load_failures_total`.
The registry also holds prometheus_client's process and platform collectors (CPU time, memory,
open files, Python version), which its default registry would have held.
"""

from __future__ import annotations

import contextlib

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    PlatformCollector,
    ProcessCollector,
    start_http_server,
)

from dcgan.service.runtime import LANES

_LATENCY_BUCKETS = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
)


VERSION = ["model", "version"]
FLUSH_REASONS = ("full", "idle", "timeout")
DROP_REASONS = ("deadline", "cancelled")
VERSION_STATES = ("loading", "ready", "unloading", "failed", "unloaded")


class ServiceMetrics:
    def __init__(self, max_batch_size: int = 64) -> None:
        self.registry = CollectorRegistry()
        registry = self.registry
        ProcessCollector(registry=registry)
        PlatformCollector(registry=registry)
        self.requests = Counter(
            "dcgan_requests",
            "RPCs answered, by method and status code (CANCELLED: the caller went away)",
            ["method", "code"],
            registry=registry,
        )
        self.in_flight = Gauge(
            "dcgan_in_flight_calls", "RPCs accepted and not yet answered, by method", ["method"],
            registry=registry,
        )  # fmt: skip
        self.model = Info(
            "dcgan_model",
            "Each version served: id, sha256, execution provider, nz and image shape (C x H x W)",
            VERSION,
            registry=registry,
        )
        self.version_state = Gauge(
            "dcgan_model_version_state",
            "1 for the state each version of the repository is in: loading, ready, unloading, "
            "failed (see ListModels for why) or unloaded",
            [*VERSION, "state"],
            registry=registry,
        )
        self.load_failures = Counter(
            "dcgan_model_load_failures",
            "Loads of a version that failed (sha256, manifest, graph, files), by model and version",
            VERSION,
            registry=registry,
        )
        self.model_requests = Counter(
            "dcgan_model_requests",
            "Requests routed to each model version",
            VERSION,
            registry=registry,
        )
        self.leases = Gauge(
            "dcgan_model_calls_in_flight",
            "Calls holding each version: a retired version's sessions go once it reaches 0",
            VERSION,
            registry=registry,
        )
        self.images = Counter(
            "dcgan_images_generated", "Images computed by the model", VERSION, registry=registry
        )
        self.queue_seconds = Histogram(
            "dcgan_queue_wait_seconds", "Time requests waited for their first model run",
            VERSION, buckets=_LATENCY_BUCKETS, registry=registry,
        )  # fmt: skip
        self.compute_seconds = Histogram(
            "dcgan_compute_seconds",
            "Time of each model run (one batch)",
            VERSION,
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        batch_buckets = tuple(float(2**k) for k in range(max_batch_size.bit_length() + 1))
        self.batch_size = Histogram(
            "dcgan_batch_size", "Latents per model run", VERSION, buckets=batch_buckets,
            registry=registry,
        )  # fmt: skip
        self.flushes = Counter(
            "dcgan_batch_flushes",
            "Batches started, by reason: full, idle (nothing computing) or timeout (queue delay)",
            [*VERSION, "reason"],
            registry=registry,
        )
        self.runs = Counter(
            "dcgan_model_runs",
            "Model runs, by lane: wide (a lone batch on all cores), inline (wide, on the event "
            "loop: calls one at a time) or parallel (under load)",
            [*VERSION, "lane"],
            registry=registry,
        )
        self.queue_depth = Gauge(
            "dcgan_queue_depth", "Latents waiting in the queue", VERSION, registry=registry
        )
        self.dropped = Counter(
            "dcgan_dropped_latents",
            "Latents dropped before computing: deadline (passed) or cancelled (caller gone)",
            [*VERSION, "reason"],
            registry=registry,
        )

    def for_version(self, model: str, version: int) -> VersionMetrics:
        return VersionMetrics(self, model, version)

    def set_state(self, model: str, version: int, state: str | None) -> None:
        """The version's state (one of VERSION_STATES); None: it has left the repository."""
        for each in VERSION_STATES:
            labels = (model, str(version), each)
            if state is None:
                _remove(self.version_state, labels)
            else:
                self.version_state.labels(*labels).set(1.0 if each == state else 0.0)

    def retire(self, model: str, version: int) -> None:
        """Drop a retired version's gauges and info; its counters and histograms stay."""
        for metric in (self.model, self.leases, self.queue_depth):
            _remove(metric, (model, str(version)))

    def serve_http(self, host: str, port: int) -> object:
        """Expose /metrics on `port`; returns the HTTP server (call .shutdown() to stop it)."""
        server, _thread = start_http_server(port, addr=host, registry=self.registry)
        return server


def _remove(metric: Gauge | Info, labels: tuple[str, ...]) -> None:
    with contextlib.suppress(KeyError):  # never set
        metric.remove(*labels)


class VersionMetrics:
    """One model version's series of the labelled metrics: what its batcher records through."""

    def __init__(self, metrics: ServiceMetrics, model: str, version: int) -> None:
        labels = (model, str(version))
        self.images = metrics.images.labels(*labels)
        self.queue_seconds = metrics.queue_seconds.labels(*labels)
        self.compute_seconds = metrics.compute_seconds.labels(*labels)
        self.batch_size = metrics.batch_size.labels(*labels)
        self.queue_depth = metrics.queue_depth.labels(*labels)
        self.requests = metrics.model_requests.labels(*labels)
        self.leases = metrics.leases.labels(*labels)
        self.flushes = {reason: metrics.flushes.labels(*labels, reason) for reason in FLUSH_REASONS}
        self.dropped = {reason: metrics.dropped.labels(*labels, reason) for reason in DROP_REASONS}
        self.runs = {lane: metrics.runs.labels(*labels, lane) for lane in LANES}
