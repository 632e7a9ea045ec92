"""Load and overload against real servers: nothing hangs, nothing vanishes, memory stays flat.

The fast versions run in the normal suite; `-m soak` runs the long ones (.ci/run does).
Each test prints its figures, which RELIABILITY.md records.
"""

from __future__ import annotations

import asyncio
import json
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from dcgan.service.options import BatchingOptions
from dcgan.v1 import generator_pb2 as pb
from dcgan.v1 import generator_pb2_grpc as pb_grpc
from tests.support.latents import packed, random_latents
from tests.support.servers import free_port


def report(capsys: pytest.CaptureFixture[str], line: str) -> None:
    with capsys.disabled():
        print(f"\n{line}")


async def fire(
    target: str, requests: list[pb.GenerateRequest], timeout: float | None = 60
) -> list[tuple[grpc.StatusCode, float]]:
    """All requests at once on one channel (no retries); each one's code and latency."""
    async with grpc.aio.insecure_channel(target) as channel:
        stub = pb_grpc.GeneratorStub(channel)

        async def one(request: pb.GenerateRequest) -> tuple[grpc.StatusCode, float]:
            start = time.perf_counter()
            try:
                await stub.Generate(request, timeout=timeout)
                code = grpc.StatusCode.OK
            except grpc.aio.AioRpcError as error:
                code = error.code()
            return code, time.perf_counter() - start

        return await asyncio.gather(*(one(request) for request in requests))


def sample(server: Any, name: str, **labels: str) -> float:
    value = server.server.metrics.registry.get_sample_value(name, labels)
    return 0.0 if value is None else float(value)


def version_sample(server: Any, name: str, **labels: str) -> float:
    """A metric of the one version a --model-dir server serves (model: its folder's name)."""
    served = server.server.models.resolve("", 0)
    labels = {"model": served.model, "version": str(served.version), **labels}
    value = server.server.metrics.registry.get_sample_value(name, labels)
    return 0.0 if value is None else float(value)


def test_overload_is_refused_at_once_and_accepted_work_completes(
    fresh_server: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    running = fresh_server(batching=BatchingOptions(max_batch_size=16, max_queue_size=32))
    # 16 latents each: two requests fill the queue, whatever the speed of the machine
    results = asyncio.run(fire(running.target, [packed(random_latents(16, i)) for i in range(512)]))
    codes = Counter(code for code, _ in results)
    assert set(codes) == {grpc.StatusCode.OK, grpc.StatusCode.RESOURCE_EXHAUSTED}, codes
    refused = sorted(t for code, t in results if code == grpc.StatusCode.RESOURCE_EXHAUSTED)
    accepted = sorted(t for code, t in results if code == grpc.StatusCode.OK)
    p50 = refused[len(refused) // 2] * 1e3
    # refusals come straight back from the queue check, never after waiting for the model
    assert p50 < max(accepted) * 1e3
    assert (
        asyncio.run(fire(running.target, [packed(random_latents(2))]))[0][0] == grpc.StatusCode.OK
    )
    report(
        capsys,
        f"overload: 512 concurrent x 16 latents, queue 32 latents: {codes[grpc.StatusCode.OK]} accepted and completed, "
        f"{len(refused)} RESOURCE_EXHAUSTED (p50 {p50:.1f} ms, max {refused[-1] * 1e3:.1f} ms; "
        f"accepted p50 {accepted[len(accepted) // 2] * 1e3:.1f} ms); serves normally after",
    )


def test_concurrent_rpc_limit_is_resource_exhausted(fresh_server: Any) -> None:
    running = fresh_server(max_concurrent_rpcs=4)
    results = asyncio.run(fire(running.target, [packed(random_latents(64, i)) for i in range(16)]))
    codes = Counter(code for code, _ in results)
    assert codes[grpc.StatusCode.RESOURCE_EXHAUSTED] > 0 and codes[grpc.StatusCode.OK] >= 4
    assert set(codes) <= {grpc.StatusCode.OK, grpc.StatusCode.RESOURCE_EXHAUSTED}


def test_requests_past_their_deadline_are_not_computed(
    fresh_server: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    running = fresh_server(batching=BatchingOptions(max_batch_size=64, max_queue_size=100_000))
    requests = [
        packed(random_latents(64, i)) for i in range(60)
    ]  # 3,840 latents: seconds of work on 2 cores
    results = asyncio.run(fire(running.target, requests, timeout=0.3))
    codes = Counter(code for code, _ in results)
    assert set(codes) <= {grpc.StatusCode.OK, grpc.StatusCode.DEADLINE_EXCEEDED}
    assert codes[grpc.StatusCode.DEADLINE_EXCEEDED] > 0
    deadline = time.monotonic() + 30
    batcher = running.server.models.resolve("", 0).batcher
    while batcher.queued and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)  # the last run finishes
    generated = version_sample(running, "dcgan_images_generated_total")
    dropped = {
        reason: version_sample(running, "dcgan_dropped_latents_total", reason=reason)
        for reason in ("deadline", "cancelled")
    }
    assert sum(dropped.values()) > 0
    assert generated + sum(dropped.values()) == 64 * len(
        requests
    )  # each latent computed or dropped, once
    report(
        capsys,
        f"deadlines: 60 x 64 latents with a 300 ms deadline: {codes[grpc.StatusCode.OK]} OK, "
        f"{codes[grpc.StatusCode.DEADLINE_EXCEEDED]} DEADLINE_EXCEEDED; {int(generated)} latents computed, "
        f"{int(dropped['deadline'])} dropped at their deadline and {int(dropped['cancelled'])} when the "
        "caller gave up, none computed late",
    )


# ------------------------------------------------------------------------------ drain


def start_server(export_dir: Path, *flags: str) -> tuple[subprocess.Popen[str], str]:
    port = free_port()
    command = [
        sys.executable, "-m", "dcgan.service.cli", "--model-dir", str(export_dir), "--host", "127.0.0.1",
        "--port", str(port), "--metrics-port", "0", *flags,
    ]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    target = f"127.0.0.1:{port}"
    health = health_pb2_grpc.HealthStub(grpc.insecure_channel(target))
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()[1]
        try:
            if health.Check(health_pb2.HealthCheckRequest(), timeout=0.2).status == 1:
                return process, target
        except grpc.RpcError:
            time.sleep(0.02)
    raise AssertionError("server did not start")


def drain_under_load(export_dir: Path, load_s: float, concurrency: int) -> dict[str, Any]:
    """Load a server, SIGTERM it mid-load, and account for every request sent."""
    process, target = start_server(export_dir, "--grace-s", "30")
    outcome: Counter[str] = Counter()
    not_serving_after: list[float] = []
    sigterm_at: list[float] = []

    async def load() -> None:
        async with grpc.aio.insecure_channel(target) as channel:
            stub = pb_grpc.GeneratorStub(channel)
            stop_at = time.monotonic() + load_s + 30

            async def caller(index: int) -> None:
                request = packed(random_latents(4, index))
                while process.poll() is None and time.monotonic() < stop_at:
                    try:
                        await stub.Generate(request, timeout=30)
                        outcome["OK"] += 1
                    except grpc.aio.AioRpcError as error:
                        outcome[error.code().name] += 1
                        if error.code() == grpc.StatusCode.UNAVAILABLE:
                            await asyncio.sleep(0.01)

            await asyncio.gather(*(caller(i) for i in range(concurrency)))

    def watch_health() -> None:
        health = health_pb2_grpc.HealthStub(grpc.insecure_channel(target))
        while not sigterm_at:
            time.sleep(0.001)
        while process.poll() is None:
            try:
                status = health.Check(health_pb2.HealthCheckRequest(), timeout=1).status
            except grpc.RpcError:
                status = 2
            if status != 1:
                not_serving_after.append(time.monotonic() - sigterm_at[0])
                return
            time.sleep(0.001)

    def terminate() -> None:
        time.sleep(load_s)
        sigterm_at.append(time.monotonic())
        process.send_signal(signal.SIGTERM)

    threads = [threading.Thread(target=watch_health), threading.Thread(target=terminate)]
    for thread in threads:
        thread.start()
    asyncio.run(load())
    for thread in threads:
        thread.join()
    _, stderr = process.communicate(timeout=60)
    answered = re.search(r"answered: (.*)", stderr)
    assert answered, stderr[-2000:]
    server = {m[0]: int(m[1]) for m in re.findall(r"Generate (\w+)=(\d+)", answered.group(1))}
    return {
        "returncode": process.returncode,
        "client": dict(outcome),
        "server": server,
        "server_ok": server.get("OK", 0),
        "not_serving_after_s": not_serving_after[0] if not_serving_after else None,
        "stderr": stderr,
    }


def assert_drained(result: dict[str, Any]) -> None:
    """Every accepted request completed; every other one was refused; none failed or vanished.

    Refused means UNAVAILABLE, or CANCELLED for the few calls that reach the transport in the
    instant grpc-python's server stops dispatching: its shutdown cancels calls it never handed
    to Python. The server's own counts show those calls never reached a handler.
    """
    client = result["client"]
    assert result["returncode"] == 0, result["stderr"][-2000:]
    assert set(client) <= {"OK", "UNAVAILABLE", "CANCELLED"}, client  # no failure, no timeout
    assert client["OK"] == result["server_ok"]  # every request the server accepted, the caller got
    assert set(result["server"]) <= {"OK", "UNAVAILABLE"}, result["server"]  # none cancelled inside
    assert client.get("UNAVAILABLE", 0) > client.get("CANCELLED", 0)
    assert result["not_serving_after_s"] is not None and result["not_serving_after_s"] < 1.0


def test_sigterm_mid_load_drains_with_every_request_accounted_for(
    export_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    result = drain_under_load(export_dir, load_s=1.5, concurrency=32)
    assert_drained(result)
    client = result["client"]
    report(
        capsys,
        f"drain: SIGTERM after 1.5 s at concurrency 32: health NOT_SERVING after "
        f"{result['not_serving_after_s'] * 1e3:.1f} ms; sent {sum(client.values())} = "
        f"{client['OK']} completed (server counted {result['server_ok']} accepted) + "
        f"{client.get('UNAVAILABLE', 0)} refused UNAVAILABLE + {client.get('CANCELLED', 0)} "
        "cancelled by grpc's transport at the final cut, never dispatched; 0 vanished",
    )


# ------------------------------------------------------------------------------ soak


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def soak(export_dir: Path, tmp_path: Path, seconds: float, concurrency: int) -> dict[str, Any]:
    process, target = start_server(export_dir)
    rss: list[int] = []
    out = tmp_path / "soak.json"
    bench = subprocess.Popen(
        [sys.executable, "-m", "dcgan.clients.bench", "--target", target, "-c", str(concurrency),
         "--duration-s", str(seconds), "--warmup-s", "2", "--json", str(out)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    time.sleep(2)  # the warm-up: memory is measured over the measured load
    while bench.poll() is None:
        rss.append(rss_kib(process.pid))
        time.sleep(0.25)
    _, bench_err = bench.communicate()
    process.send_signal(signal.SIGTERM)
    process.communicate(timeout=60)
    assert bench.returncode == 0, bench_err
    level = json.loads(out.read_text())["levels"][0]
    quarter = max(1, len(rss) // 4)
    first, last = np.mean(rss[:quarter]), np.mean(rss[-quarter:])
    return {
        "level": level,
        "rss_first_mib": first / 1024,
        "rss_last_mib": last / 1024,
        "growth": last / first - 1,
    }


def check_soak(
    result: dict[str, Any], capsys: pytest.CaptureFixture[str], seconds: float, concurrency: int
) -> None:
    level = result["level"]
    assert level["errors"] == {} and level["requests"] > 0
    assert result["growth"] < 0.10
    report(
        capsys,
        f"soak: {seconds:g} s at concurrency {concurrency}: {level['requests']} requests, 0 errors, "
        f"{level['images_per_s']:.0f} images/s, p50 {level['latency_ms']['p50']:.1f} ms, "
        f"p99 {level['latency_ms']['p99']:.1f} ms; server RSS {result['rss_first_mib']:.0f} MiB "
        f"(first quarter) -> {result['rss_last_mib']:.0f} MiB (last), {result['growth'] * 100:+.1f}%",
    )


def test_short_soak_has_no_errors_and_flat_memory(
    export_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    check_soak(soak(export_dir, tmp_path, 8, 64), capsys, 8, 64)


@pytest.mark.soak
def test_soak_60_s_at_concurrency_64(
    export_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    check_soak(soak(export_dir, tmp_path, 60, 64), capsys, 60, 64)


@pytest.mark.soak
def test_drain_repeated_under_heavier_load(
    export_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    totals: Counter[str] = Counter()
    for _ in range(3):
        result = drain_under_load(export_dir, load_s=4, concurrency=128)
        assert_drained(result)
        totals.update(result["client"])
    report(
        capsys,
        f"drain x3 at concurrency 128: {totals['OK']} completed + {totals['UNAVAILABLE']} "
        f"UNAVAILABLE + {totals['CANCELLED']} CANCELLED at the final cut, 0 vanished",
    )
