"""Every setting of a server, with its default: the one source dcgan-serve's options read.

Plain dataclasses and nothing heavier, so the command line parses without loading grpc or
onnxruntime.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path


def available_cores() -> int:
    """The CPU cores this process may run on (its affinity, as a container's CPU set limits it)."""
    return len(os.sched_getaffinity(0))


@dataclass(frozen=True)
class RuntimeOptions:
    device: str = "auto"  # auto | cpu | cuda
    instances: int = 0  # sessions running batches in parallel; 0: CPU cores (at most 4), CUDA 1
    intra_op_threads: int = 0  # CPU threads of each of those sessions; 0: cores / instances
    # on the CPU with 2+ instances, calls one at a time run on an all-cores session whose threads
    # spin-wait between operators: 0.3 ms off each on dedicated cores, 1.7 ms onto each where
    # other work takes a core (BENCHMARKS.md); no other session spins
    spinning: bool = True
    # on the CPU, each one-thread parallel session runs its batches on a core of its own:
    # +10% at concurrency 16, +2-6% at 32 on 2 cores (BENCHMARKS.md); off leaves it to the OS
    pin_cores: bool = True
    warmup_batch_sizes: tuple[int, ...] = (1, 8, 64)


@dataclass(frozen=True)
class BatchingOptions:
    """The user's batching settings; what the model can do comes to DynamicBatcher itself."""

    max_batch_size: int = 64  # latents per model run
    # The longest a request waits for a batch to fill while another computes. No wait by
    # default, as Triton's: a one-thread CPU session takes the same time an image whatever the
    # batch, so a wait only idles a core (BENCHMARKS.md); one instance never waits anyway.
    max_queue_delay_s: float = 0.0
    max_queue_size: int = 4096  # latents waiting at most; more is refused with QueueFull


@dataclass(frozen=True)
class RequestLimits:
    max_latents_per_request: int = 256  # Generate and Interpolate
    max_stream_latents: int = 65536  # GenerateStream
    max_response_bytes: int = 4 * 2**20  # Generate and Interpolate: what a default client accepts


@dataclass(frozen=True)
class ServerConfig:
    model_dir: Path | None = None  # one export directory: a repository of one model, version 1
    model_repository: Path | None = None  # DIR/<model>/<version>/, each version an export
    version_policy: str = "latest"  # latest | latest:N | all | specific:A,B (Triton's)
    model_control: str = "none"  # none | poll (rescan every poll_s) | explicit (LoadModel ...)
    poll_s: float = 5.0  # seconds between two scans of the repository, under poll
    host: str = "0.0.0.0"
    port: int = 50051  # 0: any free port (tests)
    port_count: int = 1  # try port, port + 1, ...: the first free one is bound (replicas on a host)
    port_file: Path | None = None  # where to write the bound port (for health checks)
    metrics_port: int = 9090  # Prometheus /metrics, at the same offset as the bound port; 0: off
    runtime: RuntimeOptions = field(default_factory=RuntimeOptions)
    batching: BatchingOptions = field(default_factory=BatchingOptions)
    limits: RequestLimits = field(default_factory=RequestLimits)
    max_message_bytes: int = 4 * 2**20  # largest request accepted
    max_concurrent_rpcs: int | None = None  # more are refused with RESOURCE_EXHAUSTED
    grace_s: float = 10.0  # how long a stop may take
    drain_s: float = 2.0  # after SIGTERM, at least this long answering new calls UNAVAILABLE
    reuse_port: bool = False  # share the port with other processes (SO_REUSEPORT)
    max_connection_age_s: float | None = None  # close connections this old: clients re-resolve
    tls_cert: Path | None = None  # PEM certificate chain: serve TLS
    tls_key: Path | None = None  # its PEM private key
    tls_client_ca: Path | None = None  # PEM CA: require client certificates it signed (mutual TLS)
    token: str | None = None  # require "authorization: Bearer <token>" on all but health checks
