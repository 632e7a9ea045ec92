"""Prometheus metrics of one server, in a registry of its own (several servers fit in a process).

The registry also holds prometheus_client's process and platform collectors (CPU time, memory,
open files, Python version), which its default registry would have held.
"""

from __future__ import annotations

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
            "The model served: id, sha256, execution provider, nz and image shape (C x H x W)",
            registry=registry,
        )
        self.images = Counter(
            "dcgan_images_generated", "Images computed by the model", registry=registry
        )
        self.queue_seconds = Histogram(
            "dcgan_queue_wait_seconds", "Time requests waited for their first model run",
            buckets=_LATENCY_BUCKETS, registry=registry,
        )  # fmt: skip
        self.compute_seconds = Histogram(
            "dcgan_compute_seconds",
            "Time of each model run (one batch)",
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        batch_buckets = tuple(float(2**k) for k in range(max_batch_size.bit_length() + 1))
        self.batch_size = Histogram(
            "dcgan_batch_size", "Latents per model run", buckets=batch_buckets, registry=registry
        )
        self.flushes = Counter(
            "dcgan_batch_flushes",
            "Batches started, by reason: full, idle (nothing computing) or timeout (queue delay)",
            ["reason"],
            registry=registry,
        )
        self.runs = Counter(
            "dcgan_model_runs",
            "Model runs, by lane: wide (a lone batch on all cores) or parallel (under load)",
            ["lane"],
            registry=registry,
        )
        self.queue_depth = Gauge(
            "dcgan_queue_depth", "Latents waiting in the queue", registry=registry
        )
        self.dropped = Counter(
            "dcgan_dropped_latents",
            "Latents dropped before computing: deadline (passed) or cancelled (caller gone)",
            ["reason"],
            registry=registry,
        )
        for reason in ("full", "idle", "timeout"):
            self.flushes.labels(reason)
        for reason in ("deadline", "cancelled"):
            self.dropped.labels(reason)
        for lane in ("wide", "parallel"):
            self.runs.labels(lane)

    def serve_http(self, host: str, port: int) -> object:
        """Expose /metrics on `port`; returns the HTTP server (call .shutdown() to stop it)."""
        server, _thread = start_http_server(port, addr=host, registry=self.registry)
        return server
