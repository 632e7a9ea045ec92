"""dcgan-bench's command line against real servers: bad options are usage errors before any load,
a run that measured nothing exits 1 and says why, an open loop lasts what it says, and a secured
server can be measured with the same connection options as dcgan-client."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any

import grpc
import pytest
from typer.testing import CliRunner, Result

from dcgan.clients import bench
from dcgan.contract.manifest import ONNX
from dcgan.export.export import export_generator
from dcgan.service.options import BatchingOptions, RequestLimits
from dcgan.v1 import generator_pb2_grpc as pb_grpc
from tests.support.exports import examples_state_dict
from tests.support.fuzz import Surface, fuzz
from tests.support.latents import packed, random_latents
from tests.support.servers import ServerThread, server_config

TOKEN = "bench-token"


def run_bench(*args: str) -> Result:
    clean = {name: None for name in os.environ if name.startswith("DCGAN_")}
    return CliRunner(env=clean).invoke(bench.app, list(args))


def short(target: str, *args: str) -> list[str]:
    return ["--target", target, "--duration-s", "0.2", "--warmup-s", "0", *args]


def test_rates_and_counts_that_measure_nothing_are_usage_errors(server: ServerThread) -> None:
    for args in (
        ["--rate", "0"],  # was a ZeroDivisionError
        ["--rate", "-5"],  # were accepted, and sent as fast as the loop could for the whole run
        ["--rate", "nan"],
        ["--rate", "inf"],
        ["-c", "0"],  # printed zeros and exited 0
        ["-c", "-3"],
        ["--channels", "0"],
        ["--duration-s", "inf"],
        ["--warmup-s", "nan"],
        ["--timeout-s", "1e400"],
    ):
        begin = time.perf_counter()
        result = run_bench(*short(server.target, *args))
        assert result.exit_code == 2, (args, result.output)
        assert "Invalid value for" in result.output and "Traceback" not in result.output
        assert time.perf_counter() - begin < 5, args
    encoding = run_bench(*short(server.target, "--encoding", "jpeg"))
    assert encoding.exit_code == 2
    assert encoding.output == "error: --encoding must be one of uint8, float32, png, not 'jpeg'\n"


def test_more_latents_than_the_server_takes_exit_1_at_once(server: ServerThread) -> None:
    begin = time.perf_counter()
    result = run_bench(*short(server.target, "-c", "1", "--latents", "257", "--duration-s", "30"))
    assert result.exit_code == 1
    assert result.output == (
        f"error: {server.target} takes at most 256 latents per request, not 257 (--latents)\n"
    )
    assert time.perf_counter() - begin < 10  # refused before the 30 s level ran


def test_a_level_where_every_request_failed_exits_1_and_says_why(
    fresh_server: Any, tmp_path: Path
) -> None:
    small = RequestLimits(max_latents_per_request=256, max_stream_latents=4096,
                          max_response_bytes=65536)  # fmt: skip
    running = fresh_server(limits=small)  # two float32 64x64 RGB images take 98,304 bytes
    out = tmp_path / "bench.json"
    result = run_bench(*short(running.target, "-c", "1", "-n", "2", "--encoding", "float32",
                              "--json", str(out)))  # fmt: skip
    assert result.exit_code == 1, result.output
    line = result.output.strip()
    assert line.startswith("error: every request at c=1 failed (RESOURCE_EXHAUSTED x"), line
    assert "the first: RESOURCE_EXHAUSTED: 2 float32 images would take about" in line
    assert len(result.output.splitlines()) == 1
    assert not out.exists()  # a failed run writes no results


def test_the_json_destination_is_checked_before_the_run(
    server: ServerThread, tmp_path: Path
) -> None:
    (tmp_path / "a-dir").mkdir()
    for json_out, reason in (
        ("/nonexistent/dir/b.json", "the directory /nonexistent/dir does not exist"),
        (str(tmp_path / "a-dir"), "is a directory"),
        ("/proc/b.json", "cannot write in /proc"),
    ):
        begin = time.perf_counter()
        result = run_bench(*short(server.target, "-c", "1", "--duration-s", "30",
                                  "--json", json_out))  # fmt: skip
        assert result.exit_code == 1
        assert result.output.startswith(f"error: --json {json_out}") and reason in result.output
        assert time.perf_counter() - begin < 10
    assert [path.name for path in tmp_path.iterdir()] == ["a-dir"]


@pytest.fixture(scope="module")
def full_size_export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The default generator (nz=100, ngf=64): about 16 times export_dir's work per image."""
    root = tmp_path_factory.mktemp("full-size")
    source = examples_state_dict(root / "generator.pth")
    export_generator(source, root / "export", formats=[ONNX], batch_sizes=(1,))
    return root / "export"


def latents_per_s(target: str, latents: int) -> float:
    """What the server computes, measured: two requests of `latents` at once, after a warm-up.

    Two requests fill every instance (at most 4) with batches of 64.
    """
    generator = pb_grpc.GeneratorStub(grpc.insecure_channel(target))
    request = packed(random_latents(latents))
    generator.Generate(request, timeout=120)
    begin = time.perf_counter()
    calls = [generator.Generate.future(request, timeout=120) for _ in range(2)]
    for call in calls:
        call.result()
    return 2 * latents / (time.perf_counter() - begin)


def test_an_open_loop_lasts_what_it_says_on_a_slow_server(
    full_size_export: Path, tmp_path: Path
) -> None:
    """Ten times what the server computes in the run and its drain: the rest is not waited for."""
    duration_s, latents = 0.5, 64
    batching = BatchingOptions(max_queue_size=2**24)  # all of it queued: none refused
    running = ServerThread(server_config(full_size_export, batching=batching))
    try:
        capacity = latents_per_s(running.target, latents)
        rate = 10 * capacity * (duration_s + bench.DRAIN_S) / (duration_s * latents)
        out = tmp_path / "bench.json"
        result = run_bench(*short(running.target, "--rate", f"{rate:.2f}", "--latents",
                                  str(latents), "--duration-s", str(duration_s),
                                  "--json", str(out)))  # fmt: skip
    finally:
        running.stop()
    assert result.exit_code == 0, result.output
    (level,) = json.loads(out.read_text())["levels"]
    assert level["requests"] > 0 and level["unfinished"] > 0, (capacity, rate, level)
    assert level["errors"] == {}  # cancelled at the end, not refused
    assert f"unfinished={level['unfinished']}" in result.output
    assert level["duration_s"] < duration_s + bench.DRAIN_S + 0.5
    assert [path.name for path in tmp_path.iterdir()] == ["bench.json"]  # written whole


def test_bench_measures_a_server_behind_tls_and_a_token(
    fresh_server: Any, pki: Path, tmp_path: Path
) -> None:
    running = fresh_server(
        tls_cert=pki / "server.crt", tls_key=pki / "server.key", tls_client_ca=pki / "ca.crt",
        token=TOKEN,
    )  # fmt: skip
    token = tmp_path / "token"
    token.write_text(TOKEN + "\n")
    mutual = ["--tls-ca", str(pki / "ca.crt"), "--tls-cert", str(pki / "client.crt"),
              "--tls-key", str(pki / "client.key")]  # fmt: skip
    out = tmp_path / "bench.json"
    measured = run_bench(*short(running.target, "-c", "2", *mutual, "--token-file", str(token),
                                "--json", str(out)))  # fmt: skip
    assert measured.exit_code == 0, measured.output
    (level,) = json.loads(out.read_text())["levels"]
    assert level["requests"] > 0 and level["errors"] == {}
    assert TOKEN not in out.read_text()  # the results name no secret

    no_token = run_bench(*short(running.target, "-c", "1", *mutual))
    assert no_token.exit_code == 1 and "UNAUTHENTICATED" in no_token.output
    half = run_bench(*short(running.target, "--tls-ca", str(pki / "ca.crt"),
                            "--tls-cert", str(pki / "client.crt")))  # fmt: skip
    assert half.exit_code == 2
    assert half.output == "error: --tls-cert needs --tls-key, the certificate's private key\n"


def test_version_and_the_console_script() -> None:
    result = run_bench("--version")
    assert (result.exit_code, result.output) == (
        0,
        f"dcgan-client {metadata.version('dcgan-client')}\n",
    )
    installed = shutil.which("dcgan-bench", path=str(Path(sys.executable).parent))
    assert installed is not None
    process = subprocess.run([installed, "--version"], capture_output=True, text=True, timeout=60)
    assert (process.returncode, process.stdout) == (0, result.output)


def test_fuzz_every_option(server: ServerThread, tmp_path: Path) -> None:
    surface = Surface(
        bench.app,
        {
            "--target": [server.target],
            "-c": ["1"],
            "--duration-s": ["0.1"],
            "--warmup-s": ["0"],
            "--json": ["out.json"],
        },
        good={
            "--json": {"{file}", "{empty}", "{binary}"},  # files that are there are replaced
            "--model": {""},  # the server's only model
        },
        extremes={"--latents"},  # in range, more than the server takes: refused by it
    )
    fuzzed = fuzz(surface, tmp_path)
    assert fuzzed == {"--target", "--concurrency", "--rate", "--latents", "--encoding",
                      "--duration-s", "--warmup-s", "--timeout-s", "--channels", "--json",
                      "--token-file", "--tls-ca", "--tls-cert", "--tls-key", "--model",
                      "--model-version"}  # fmt: skip
