"""Serving benchmark: dcgan-serve and a plain gRPC server against a raw onnxruntime session.

The load comes from h2load, nghttp2's C load generator (a few percent of one core), so that the
client does not take the server's cores; install it with `apt-get install -y nghttp2-client`
(Debian, Ubuntu). h2load posts the gRPC frame of one serialised request over and over and sees
only HTTP status, so every run is checked: the DATA bytes received per answer against the size of
a real answer, and on dcgan-serve the server's own count of OK calls (dcgan_requests_total on its
metrics page) against the calls h2load completed; a run that fails a check fails the benchmark.
dcgan-bench, the users' Python client, loads the same servers as a second column. Without h2load
on the PATH, dcgan-bench alone.

All in one run on the same export: the raw session in this process (the servers idle), and each
server in its own process, both up for the whole run. Scenarios:
  - concurrency 32, one latent per request, uint8: images/s vs the raw session at batch 32;
  - concurrency 8, 64 latents per request: images/s vs the raw session at batch 64;
  - concurrency 1, one latent: mean per request minus the raw session's single-image p50;
  - dcgan-serve's Open Inference Protocol (ModelInfer, uint8 pixels) at the same three;
  - the bare health round trip (grpc.health.v1.Health/Check) at concurrency 1: the stack's floor;
  - time from process start to SERVING.
Each round measures the raw session and every scenario on each server, the order reversed from
one round to the next; a ratio to the raw session is that of the same round (the table gives the
median round and the spread, lowest to highest), latencies are over all rounds. Every run
prints the machine: cores, CPU model and vector flags, load average before and after. On a
machine other work shares, only ratios within one run mean anything.
Usage: python benchmarks/serve_throughput.py [--model-dir DIR] [--json out.json] [-- SERVE_FLAGS]
(without --model-dir: the default 64x64 RGB generator, exported by dcgan-export). The python
of the project's environment runs it (.venv/bin/python); it need not be activated.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc
from machine import describe_machine, machine

from dcgan.contract.manifest import ONNX, read_manifest
from dcgan.contract.providers import ort
from dcgan.oip import inference_pb2 as oip
from dcgan.v1 import generator_pb2 as pb

HERE = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent  # the environment's commands, activated or not
SCENARIOS = [  # name, concurrency, latents per request, raw batch to compare with
    ("c32 x 1 latent", 32, 1, 32),
    ("c8 x 64 latents", 8, 64, 64),
    ("c4 x 1 latent", 4, 1, 4),
    ("c1 x 1 latent", 1, 1, 1),
]
GENERATE = "/dcgan.v1.Generator/Generate"
MODEL_INFER = "/inference.GRPCInferenceService/ModelInfer"
HEALTH = "/grpc.health.v1.Health/Check"
FLOOR = "c1 health check"
ANSWER_SLACK_BYTES = 24  # dcgan.v1's Timing varints vary in length from answer to answer


def command_path(name: str) -> Path:
    """A console command of the project, beside the python running this script."""
    path = BIN / name
    if not path.exists():
        sys.exit(f"error: {path} not found: run this with the project's python (.venv/bin/python)")
    return path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def raw_session(export_dir: Path) -> tuple[ort.InferenceSession, int]:
    """The bare float graph (generator.onnx), default session options."""
    manifest = read_manifest(export_dir)
    path = export_dir / manifest.file_of(ONNX)
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]), manifest.model.nz


def measure_raw(
    session: ort.InferenceSession, nz: int, seconds: float
) -> dict[int, dict[str, float]]:
    """images/s, mean and p50 latency of the bare session (default options) at each batch size."""
    results = {}
    for batch in sorted({scenario[3] for scenario in SCENARIOS}):
        latents = np.random.default_rng(0).standard_normal((batch, nz), dtype=np.float32)
        for _ in range(5):
            session.run(None, {"z": latents})
        times = []
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            start = time.perf_counter()
            session.run(None, {"z": latents})
            times.append(time.perf_counter() - start)
        results[batch] = {
            "images_per_s": batch * len(times) / sum(times),
            "mean_ms": float(np.mean(times) * 1e3),
            "p50_ms": float(np.median(times) * 1e3),
        }
    return results


def median_raw(rounds: list[dict[int, dict[str, float]]]) -> dict[int, dict[str, float]]:
    """Per batch size and figure, the median over the rounds."""
    return {
        batch: {key: float(np.median([r[batch][key] for r in rounds])) for key in rounds[0][batch]}
        for batch in rounds[0]
    }


def wait_serving(target: str, process: subprocess.Popen[bytes], limit_s: float = 60) -> float:
    """Seconds until health says SERVING (polled every millisecond or so)."""
    started = time.perf_counter()
    stub = health_pb2_grpc.HealthStub(grpc.insecure_channel(target))
    while time.perf_counter() - started < limit_s:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}")
        try:
            status = stub.Check(health_pb2.HealthCheckRequest(), timeout=0.05).status
            if status == health_pb2.HealthCheckResponse.SERVING:
                return time.perf_counter() - started
        except grpc.RpcError:
            pass
        time.sleep(0.001)
    raise RuntimeError("server did not become SERVING")


def wait_ready(target: str, process: subprocess.Popen[bytes]) -> None:
    """The plain server has no health service: wait until its port accepts a connection."""
    channel = grpc.insecure_channel(target)
    grpc.channel_ready_future(channel).result(timeout=60)
    channel.close()
    if process.poll() is not None:
        raise RuntimeError("plain server exited")


# ----------------------------------------------------------------------------- the calls


@dataclass(frozen=True)
class Probe:
    """One kind of call: its path, its serialised request, and how many latents it carries."""

    label: str  # the scenario
    protocol: str  # as the table names it
    method: str
    request: bytes
    concurrency: int
    latents: int  # 0: no model run (the health check)
    raw_batch: int


def generate_request(nz: int, latents: int) -> bytes:
    z = np.random.default_rng(latents).standard_normal((latents, nz), dtype=np.float32)
    return pb.GenerateRequest(
        packed=z.tobytes(), encoding=pb.ENCODING_UINT8_HWC
    ).SerializeToString()


def model_infer_request(model: str, nz: int, latents: int) -> bytes:
    z = np.random.default_rng(latents).standard_normal((latents, nz), dtype=np.float32)
    request = oip.ModelInferRequest(model_name=model, raw_input_contents=[z.tobytes()])
    request.inputs.add(name="z", datatype="FP32", shape=[latents, nz])
    request.outputs.add(name="pixels")
    return request.SerializeToString()


def probes(nz: int, model: str, oip_too: bool) -> dict[str, list[Probe]]:
    """The calls each server is measured with, by server."""
    generate = [
        Probe(label, "dcgan.v1", GENERATE, generate_request(nz, latents), c, latents, batch)
        for label, c, latents, batch in SCENARIOS
    ]
    serve = list(generate)
    if oip_too:
        serve += [
            Probe(
                label,
                "OIP",
                MODEL_INFER,
                model_infer_request(model, nz, latents),
                c,
                latents,
                batch,
            )
            for label, c, latents, batch in SCENARIOS
        ]
    health = health_pb2.HealthCheckRequest().SerializeToString()
    serve.append(Probe(FLOOR, "grpc.health", HEALTH, health, 1, 0, 1))
    return {"dcgan-serve": serve, "plain-grpc": generate}


def grpc_frame(message: bytes) -> bytes:
    """A gRPC length-prefixed message: flag 0 (not compressed), big-endian length, the bytes."""
    return b"\0" + struct.pack(">I", len(message)) + message


def answer_size(target: str, probe: Probe) -> int:
    """DATA bytes of one real answer (the frame's 5 bytes of prefix included), from one call."""
    with grpc.insecure_channel(
        target, options=[("grpc.max_receive_message_length", -1)]
    ) as channel:
        answer: bytes = channel.unary_unary(probe.method)(probe.request, timeout=30)
    return len(answer) + 5


def ok_calls(metrics_port: int, method: str) -> float:
    """The server's count of OK calls of `method` (summed over any other labels)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10) as page:
        text = page.read().decode()
    name = method.rpartition("/")[2]
    total = 0.0
    for labels, value in re.findall(r"^dcgan_requests_total\{([^}]*)\} (\S+)$", text, re.M):
        if 'code="OK"' in labels and f'method="{name}"' in labels:
            total += float(value)
    return total


# ----------------------------------------------------------------------------- h2load


H2LOAD_COUNTS = re.compile(
    r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, "
    r"(\d+) errored, (\d+) timeout"
)
H2LOAD_DATA = re.compile(r"\((\d+)\) data")
H2LOAD_RATE = re.compile(r"finished in [\d.]+m?s, ([\d.]+) req/s")


def h2load(
    binary: str, port: int, probe: Probe, seconds: float, scratch: Path, log: bool = True
) -> dict[str, Any]:
    """One timed h2load run: calls/s, the DATA bytes received, each call's latency."""
    body = scratch / "request.bin"
    body.write_bytes(grpc_frame(probe.request))
    log_file = scratch / "h2load.tsv"
    log_file.unlink(missing_ok=True)
    command = [
        binary, "-d", str(body), "-H", "content-type: application/grpc", "-H", "te: trailers",
        "-c", str(probe.concurrency), "-m", "1", "-D", f"{round(seconds * 1000)}ms",
        *(["--log-file", str(log_file)] if log else []),
        f"http://127.0.0.1:{port}{probe.method}",
    ]  # fmt: skip
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    counts, data, rate = (
        pattern.search(output) for pattern in (H2LOAD_COUNTS, H2LOAD_DATA, H2LOAD_RATE)
    )
    if counts is None or data is None or rate is None:
        raise RuntimeError(f"h2load said something unexpected:\n{output}")
    _, _, done, succeeded, failed, errored, timeout = (int(n) for n in counts.groups())
    latencies_ms: list[float] = []
    if log:
        for line in log_file.read_text().splitlines():
            _, status, micros = line.split("\t")
            if status == "200":
                latencies_ms.append(int(micros) / 1e3)
    return {
        "calls_per_s": float(rate.group(1)),
        "done": done,
        "succeeded": succeeded,
        "failed": failed + errored + timeout,
        "data_bytes": int(data.group(1)),
        "latencies_ms": latencies_ms,
    }


def checked_h2load(
    binary: str, server: Server, probe: Probe, seconds: float, scratch: Path
) -> dict[str, Any]:
    """An h2load run after one second of warm-up, checked against the server's answers."""
    h2load(binary, server.port, probe, 1.0, scratch, log=False)  # connections, batcher, caches
    counted = server.metrics_port and probe.method != HEALTH
    before = ok_calls(server.metrics_port, probe.method) if counted else 0.0
    run = h2load(binary, server.port, probe, seconds, scratch)
    problems = []
    if run["failed"] or run["succeeded"] == 0:
        problems.append(f"{run['failed']} failed of {run['done']}")
    per_answer = run["data_bytes"] / max(run["succeeded"], 1)
    expected = server.answer_bytes[probe.method, probe.latents]
    if abs(per_answer - expected) > ANSWER_SLACK_BYTES:
        problems.append(f"{per_answer:.0f} bytes per answer, a real answer has {expected}")
    if counted:
        ok = ok_calls(server.metrics_port, probe.method) - before
        run["server_ok"] = ok
        # calls cut when the duration ends may still be answered OK by the server
        if not run["succeeded"] <= ok <= run["succeeded"] + probe.concurrency:
            problems.append(f"the server counted {ok:.0f} OK, h2load {run['succeeded']}")
    run["bytes_per_answer"] = per_answer
    run["problems"] = problems
    return run


# ----------------------------------------------------------------------------- dcgan-bench


def bench(target: str, concurrency: int, latents: int, duration_s: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as scratch:
        out = Path(scratch) / "bench.json"
        command = [
            str(command_path("dcgan-bench")), "--target", target,
            "-c", str(concurrency), "--latents", str(latents),
            "--duration-s", str(duration_s), "--warmup-s", "2", "--json", str(out),
        ]  # fmt: skip
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"dcgan-bench failed: {done.stderr.strip()}")
        level: dict[str, Any] = json.loads(out.read_text())["levels"][0]
        return level


# ----------------------------------------------------------------------------- the servers


@dataclass
class Server:
    name: str
    process: subprocess.Popen[bytes]
    port: int
    metrics_port: int  # 0: none (the plain server)
    startup_s: float | None
    answer_bytes: dict[tuple[str, int], int]

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"


def start_servers(args: argparse.Namespace) -> dict[str, Server]:
    servers = {}
    port, metrics_port = free_port(), free_port()
    serve = [
        str(command_path("dcgan-serve")), "--model-dir", str(args.model_dir),
        "--port", str(port), "--metrics-port", str(metrics_port), "--host", "127.0.0.1",
        *args.serve_args,
    ]  # fmt: skip
    process = subprocess.Popen(serve, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    servers["dcgan-serve"] = Server("dcgan-serve", process, port, metrics_port, None, {})
    servers["dcgan-serve"].startup_s = wait_serving(servers["dcgan-serve"].target, process)
    if not args.no_plain:
        port = free_port()
        plain = [sys.executable, str(HERE / "plain_server.py"), str(args.model_dir), str(port)]
        process = subprocess.Popen(plain, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        servers["plain-grpc"] = Server("plain-grpc", process, port, 0, None, {})
        wait_ready(servers["plain-grpc"].target, process)
    return servers


def stop_servers(servers: dict[str, Server]) -> None:
    for server in servers.values():
        server.process.send_signal(signal.SIGTERM)
    for server in servers.values():
        server.process.wait(30)


def measure(
    args: argparse.Namespace, servers: dict[str, Server], calls: dict[str, list[Probe]]
) -> tuple[list[dict[int, dict[str, float]]], dict[str, dict[str, list[dict[str, Any]]]]]:
    """The raw session's figures of each round; per server, per 'protocol scenario', one record
    per round (h2load's and dcgan-bench's)."""
    session, nz = raw_session(args.model_dir)
    raw_rounds: list[dict[int, dict[str, float]]] = []
    binary = None if args.no_h2load else shutil.which("h2load")
    for server in servers.values():
        for probe in calls[server.name]:
            server.answer_bytes[probe.method, probe.latents] = answer_size(server.target, probe)
    records: dict[str, dict[str, list[dict[str, Any]]]] = {
        name: {f"{p.protocol} {p.label}": [] for p in calls[name]} for name in servers
    }
    names = ["raw", *servers]
    with tempfile.TemporaryDirectory() as scratch:
        for round_number in range(args.rounds):
            for name in names[::-1] if round_number % 2 else names:
                if name == "raw":
                    raw_rounds.append(measure_raw(session, nz, args.raw_s))
                    continue
                server = servers[name]
                for probe in calls[name]:
                    record: dict[str, Any] = {"load_average": os.getloadavg()[0]}
                    if binary is not None:
                        record["h2load"] = checked_h2load(
                            binary, server, probe, args.duration_s, Path(scratch)
                        )
                    if probe.method == GENERATE and not args.no_bench:
                        record["bench"] = bench(
                            server.target, probe.concurrency, probe.latents, args.duration_s
                        )
                    records[name][f"{probe.protocol} {probe.label}"].append(record)
    return raw_rounds, records


# ----------------------------------------------------------------------------- the table


def closed_loop_rate(probe: Probe, run: dict[str, Any]) -> float:
    """Images/s (calls/s for the health check) by Little's law: each of h2load's clients sends
    its next call when the last is answered, so calls/s is clients over the mean latency. h2load's
    own count over its fixed window would drop the calls in flight at the window's end: a second
    of work at 8 x 64 latents."""
    if not run["latencies_ms"]:
        return 0.0
    mean_s = float(np.mean(run["latencies_ms"])) / 1e3
    return probe.concurrency * max(probe.latents, 1) / mean_s


def spread(values: list[float], digits: int = 0) -> str:
    return f"{np.median(values):.{digits}f} ({min(values):.{digits}f}-{max(values):.{digits}f})"


def summary(
    probe: Probe, rounds: list[dict[str, Any]], raw_rounds: list[dict[int, dict[str, float]]]
) -> str:
    parts = []
    check = None
    reference = median_raw(raw_rounds)[probe.raw_batch]
    raw_rates = [r[probe.raw_batch]["images_per_s"] for r in raw_rounds]
    if rounds and "h2load" in rounds[0]:
        runs = [r["h2load"] for r in rounds]
        rates = [closed_loop_rate(probe, run) for run in runs]
        latencies = [ms for run in runs for ms in run["latencies_ms"]] or [float("nan")]
        mean, p50, p99 = np.mean(latencies), *np.percentile(latencies, [50, 99])
        ratios = [rate / raw for rate, raw in zip(rates, raw_rates, strict=True)]
        ratio = spread(ratios, 2) if probe.latents else "-"
        extra = (
            f"{mean - reference['p50_ms']:+7.3f}"
            if probe.latents == 1 == probe.concurrency
            else "      -"
        )
        problems = sorted({p for run in runs for p in run["problems"]})
        check = "; ".join(problems) if problems else "ok"
        unit = "img/s" if probe.latents else "calls/s"
        parts.append(
            f"{spread(rates):>15} {unit:<7} x raw {ratio:<16} "
            f"mean {mean:7.3f} p50 {p50:7.3f} p99 {p99:7.3f} ms {extra}"
        )
    if rounds and "bench" in rounds[0]:
        levels = [r["bench"] for r in rounds]
        rates = [level["images_per_s"] for level in levels]
        mean = np.median([level["latency_ms"]["mean"] for level in levels])
        p99 = np.median([level["latency_ms"]["p99"] for level in levels])
        errors = sum(sum(level["errors"].values()) for level in levels)
        ratios = [rate / raw for rate, raw in zip(rates, raw_rates, strict=True)]
        parts.append(
            f"| bench {spread(rates):>15} x raw {spread(ratios, 2):<16} "
            f"mean {mean:7.3f} p99 {p99:7.3f}{f' errors {errors}' if errors else ''}"
        )
    if check is not None:
        parts.append(f"| {check}")
    return " ".join(parts)


def table(
    raw_rounds: list[dict[int, dict[str, float]]],
    servers: dict[str, Server],
    calls: dict[str, list[Probe]],
    records: dict[str, dict[str, list[dict[str, Any]]]],
) -> str:
    lines = [
        "raw onnxruntime session, median round: "
        + ", ".join(
            f"batch {b}: {r['images_per_s']:.0f} img/s, mean {r['mean_ms']:.3f} ms, "
            f"p50 {r['p50_ms']:.3f} ms"
            for b, r in median_raw(raw_rounds).items()
        ),
        "h2load: median round (lowest-highest), latencies over all rounds, +mean vs raw batch-1 "
        "p50 | dcgan-bench: median round | checks",
    ]
    for name, server in servers.items():
        for probe in calls[name]:
            rounds = records[name][f"{probe.protocol} {probe.label}"]
            figures = summary(probe, rounds, raw_rounds)
            lines.append(f"{name:<11} {probe.protocol:<11} {probe.label:<15} {figures}")
        if server.startup_s is not None:
            lines.append(f"{name:<11} process start to SERVING: {server.startup_s:.2f} s")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> None:
    started = machine()
    print(describe_machine(started), flush=True)
    if args.no_h2load or shutil.which("h2load") is None:
        print("h2load not used (apt-get install -y nghttp2-client): dcgan-bench alone", flush=True)
    manifest = read_manifest(args.model_dir)
    model = Path(os.path.abspath(args.model_dir)).name  # --model-dir X serves model X
    calls = probes(manifest.model.nz, model, not args.no_oip)
    servers = start_servers(args)
    try:
        raw_rounds, records = measure(args, servers, calls)
    finally:
        stop_servers(servers)
    print(table(raw_rounds, servers, calls, records))
    finished = machine()
    print(describe_machine(finished))
    print(f"rounds {args.rounds} x {args.duration_s:g} s; serve flags: {args.serve_args or '-'}")
    if args.json:
        record = {
            "machine_before": started,
            "machine_after": finished,
            "raw": raw_rounds,
            "rounds": args.rounds,
            "duration_s": args.duration_s,
            "startup_s": {name: server.startup_s for name, server in servers.items()},
            "answer_bytes": {
                name: {f"{m} x{n}": size for (m, n), size in server.answer_bytes.items()}
                for name, server in servers.items()
            },
            "servers": records,
            "serve_args": args.serve_args,
        }
        args.json.write_text(json.dumps(record, indent=2) + "\n")
    failures = [
        f"{name} {key}: {problem}"
        for name, by_key in records.items()
        for key, rounds in by_key.items()
        for r in rounds
        for problem in r.get("h2load", {}).get("problems", [])
    ]
    if failures:
        sys.exit("error: answers failed their checks:\n" + "\n".join(sorted(set(failures))))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model-dir", type=Path, help="an export (default: the default generator)")
    parser.add_argument("--duration-s", type=float, default=5.0, help="seconds per measured run")
    parser.add_argument("--rounds", type=int, default=3, help="runs of each scenario")
    parser.add_argument(
        "--raw-s", type=float, default=3.0, help="seconds per raw batch size and round"
    )
    parser.add_argument("--json", type=Path)
    parser.add_argument("--no-plain", action="store_true", help="skip the plain gRPC baseline")
    parser.add_argument("--no-oip", action="store_true", help="skip the Open Inference Protocol")
    parser.add_argument("--no-bench", action="store_true", help="skip the dcgan-bench column")
    parser.add_argument("--no-h2load", action="store_true", help="dcgan-bench alone")
    parser.add_argument("serve_args", nargs="*", help="extra dcgan-serve flags (after --)")
    args = parser.parse_args()
    for name in ("dcgan-serve", "dcgan-bench"):
        command_path(name)  # before minutes of measuring, not after
    with tempfile.TemporaryDirectory() as scratch:
        if args.model_dir is None:
            from generator_throughput import export_default  # torch, in this process only

            _, args.model_dir = export_default(Path(scratch))
        run(args)


if __name__ == "__main__":
    main()
