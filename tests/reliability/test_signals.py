"""SIGTERM at random moments of a real dcgan-serve's start-up and drain.

Whenever it comes, the process exits promptly and in order: code 0 (or killed by the signal
itself, when it came before Python ran any handler: then nothing was printed), no traceback and
no error in its log, and every call the server accepted completed.
"""

from __future__ import annotations

import datetime
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from dcgan.v1 import generator_pb2 as pb
from dcgan.v1 import generator_pb2_grpc as pb_grpc
from tests.support.servers import free_port

PROMPT_S = 5.0  # from the signal to the exit, on a loaded 2-core machine
SIGNAL_LATENCY_S = 0.25  # from sending a signal to its handler running, at the most
LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d [\d:,]+ (DEBUG|INFO) dcgan\.")


def report(capsys: pytest.CaptureFixture[str], line: str) -> None:
    with capsys.disabled():
        print(f"\n{line}")


def launch(export_dir: Path, *flags: str) -> tuple[subprocess.Popen[str], str]:
    port = free_port()
    clean = {key: value for key, value in os.environ.items() if not key.startswith("DCGAN_")}
    command = [
        sys.executable, "-m", "dcgan.service.cli", "--model-dir", str(export_dir),
        "--host", "127.0.0.1", "--port", str(port), "--metrics-port", "0", *flags,
    ]  # fmt: skip
    process = subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=clean
    )
    return process, f"127.0.0.1:{port}"


def stop(process: subprocess.Popen[str], at: float | None = None) -> tuple[float, str]:
    """SIGTERM (at time.monotonic() `at`, or now); seconds until it exited, and its stderr."""
    if at is not None:
        time.sleep(max(0.0, at - time.monotonic()))
    signalled = time.monotonic()
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=60)
    return time.monotonic() - signalled, stderr


def logged_at(stderr: str, text: str) -> float | None:
    """The wall-clock time of the first log line holding `text`."""
    for line in stderr.splitlines():
        if text in line:
            stamp = datetime.datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f")
            return stamp.timestamp()
    return None


def assert_clean_exit(
    process: subprocess.Popen[str], took_s: float, stderr: str, limit_s: float = PROMPT_S
) -> None:
    assert took_s < limit_s, (took_s, stderr)
    if process.returncode == -signal.SIGTERM:  # before any handler of Python's ran
        assert stderr == "", stderr
        return
    assert process.returncode == 0, stderr
    strays = [line for line in stderr.splitlines() if not LOG_LINE.match(line)]
    assert strays == [], stderr  # no traceback, no error, no warning, no line of grpc's


def serving(target: str, limit_s: float = 60) -> float:
    """Wait for SERVING; the seconds it took."""
    health = health_pb2_grpc.HealthStub(grpc.insecure_channel(target))
    started = time.monotonic()
    while time.monotonic() - started < limit_s:
        try:
            status = health.Check(health_pb2.HealthCheckRequest(), timeout=0.2).status
            if status == health_pb2.HealthCheckResponse.SERVING:
                return time.monotonic() - started
        except grpc.RpcError:
            pass
        time.sleep(0.01)
    raise AssertionError("the server did not start")


def test_sigterm_while_the_model_loads_stops_at_once(export_dir: Path) -> None:
    process, _ = launch(export_dir)
    assert process.stderr is not None
    lines = []
    for line in process.stderr:
        lines.append(line)
        if "loading the model" in line:
            break
    took_s, rest = stop(process)
    stderr = "".join(lines) + rest
    assert_clean_exit(process, took_s, stderr)
    assert process.returncode == 0
    assert "stopped during start-up, before serving" in stderr
    assert "serving dcgan-" not in stderr  # it stopped in the load, not after it


def test_sigterm_at_random_moments_of_start_up(
    export_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    first, target = launch(export_dir)
    start_s = serving(target)
    assert_clean_exit(first, *stop(first))
    rng = random.Random(20261201)
    phases: dict[str, int] = {}
    for _ in range(10):
        offset = rng.uniform(0.0, start_s + 0.3)
        launched = time.monotonic()
        process, _ = launch(export_dir)
        signal_at = time.time() + offset
        took_s, stderr = stop(process, at=launched + offset)
        assert_clean_exit(process, took_s, stderr)
        served_at = logged_at(stderr, "serving dcgan-")  # nothing starts after the signal
        assert served_at is None or served_at < signal_at + SIGNAL_LATENCY_S, stderr
        phase = (
            "before Python's handlers" if process.returncode
            else "before start-up" if "stopped before start-up" in stderr
            else "while loading" if "serving dcgan-" not in stderr
            else "serving"
        )  # fmt: skip
        phases[phase] = phases.get(phase, 0) + 1
    report(
        capsys,
        f"SIGTERM at 10 random moments of a {start_s:.2f} s start-up: each exited within "
        f"{PROMPT_S:g} s, code 0 or killed before any handler, no traceback; by phase: {phases}",
    )


def drain_at(export_dir: Path, delay_s: float) -> dict[str, Any]:
    """A 3,000-image stream and 4 callers; SIGTERM `delay_s` after the stream's first chunk."""
    process, target = launch(export_dir, "--grace-s", "60", "--max-stream-latents", "3000")
    serving(target)
    channel = grpc.insecure_channel(target)
    generator = pb_grpc.GeneratorStub(channel)
    stream = generator.GenerateStream(
        pb.GenerateRequest(seeded=pb.SeededLatents(count=3000, seed=1)), timeout=120
    )
    first = next(stream)  # accepted
    answers: list[int | grpc.StatusCode] = []
    stopped: list[tuple[float, str]] = []

    def caller(index: int) -> None:
        request = pb.GenerateRequest(seeded=pb.SeededLatents(count=16, seed=index))
        while process.poll() is None:
            try:
                answers.append(generator.Generate(request, timeout=60).shape[0])
            except grpc.RpcError as error:
                answers.append(error.code())
                return

    threads = [threading.Thread(target=caller, args=(i,)) for i in range(4)]
    signal_at = time.monotonic() + delay_s
    threads.append(threading.Thread(target=lambda: stopped.append(stop(process, signal_at))))
    for thread in threads:
        thread.start()
    images = first.shape[0] + sum(chunk.shape[0] for chunk in stream)
    for thread in threads:
        thread.join(90)
    channel.close()
    took_s, stderr = stopped[0]
    return {
        "process": process, "took_s": took_s, "stderr": stderr, "stream": stream.code(),
        "images": images, "answers": answers,
    }  # fmt: skip


def test_sigterm_at_random_moments_of_a_drain(
    export_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rng = random.Random(7)
    streamed = completed = refused = 0
    for _ in range(3):
        result = drain_at(export_dir, rng.uniform(0.05, 1.5))
        assert result["stream"] == grpc.StatusCode.OK and result["images"] == 3000  # accepted
        assert_clean_exit(result["process"], result["took_s"], result["stderr"], limit_s=60)
        assert result["process"].returncode == 0 and "answered:" in result["stderr"]
        codes = [answer for answer in result["answers"] if isinstance(answer, grpc.StatusCode)]
        assert set(codes) <= {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED}, codes
        streamed += result["images"]
        completed += len(result["answers"]) - len(codes)
        refused += len(codes)
    report(
        capsys,
        f"SIGTERM at 3 random moments of a load (a 3,000-image stream and 4 callers): every "
        f"accepted call completed ({streamed} streamed images, {completed} Generate OK), "
        f"{refused} refused once draining; exit 0, no traceback",
    )
