"""The command lines' interface: each option's environment variable and default, as --help shows
them and as the commands read them."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path

import typer
from typer.testing import CliRunner

from dcgan.clients import bench
from dcgan.clients import cli as client_cli
from dcgan.service import cli as serve_cli

ROOT = Path(__file__).resolve().parents[2]

# help text, environment variable, default as --help shows it
SERVE_OPTIONS = [
    ("An export directory written by dcgan-export: a repository of one model.",
     "DCGAN_MODEL_DIR", None),
    ("A repository DIR/<model>/<version>/ of exports (dcgan-export --repository).",
     "DCGAN_MODEL_REPOSITORY", None),
    ("Versions served: latest, latest:N, all or specific:A,B.", "DCGAN_VERSION_POLICY", "latest"),
    ("none: load at start-up; poll: follow the repository; explicit: LoadModel.",
     "DCGAN_MODEL_CONTROL", "none"),
    ("Seconds between two scans of the repository (--model-control poll).", "DCGAN_POLL_S",
     "5.0"),
    ("auto takes CUDA when it truly works, and logs which.", "DCGAN_DEVICE", "auto"),
    ("Sessions running batches in parallel under load (0: CPU cores up to 4; CUDA 1).",
     "DCGAN_INSTANCES", "0"),
    ("CPU threads per session (0: cores / instances).", "DCGAN_INTRA_OP_THREADS", "0"),
    ("Calls one at a time: threads spin-wait between operators (off: cores shared).",
     "DCGAN_SPINNING", "spinning"),
    ("Under load, each one-thread session runs on a core of its own.", "DCGAN_PIN_CORES",
     "pin-cores"),
    ("Latents per model run.", "DCGAN_MAX_BATCH_SIZE", "64"),
    ("Longest wait for a batch to fill while one computes.", "DCGAN_MAX_QUEUE_DELAY_US", "0"),
    ("Latents waiting at most; more get RESOURCE_EXHAUSTED.", "DCGAN_MAX_QUEUE_SIZE", "4096"),
    ("Latents one Generate or Interpolate may ask for.", "DCGAN_MAX_LATENTS_PER_REQUEST", "256"),
    ("Latents one GenerateStream, or steps one InterpolateStream, may ask for.",
     "DCGAN_MAX_STREAM_LATENTS", "65536"),
    ("Largest Generate or Interpolate answer; more images must stream.",
     "DCGAN_MAX_RESPONSE_BYTES", "4194304"),
    ("Largest request message accepted.", "DCGAN_MAX_MESSAGE_BYTES", "4194304"),
    ("RPCs in progress at most (0: no limit).", "DCGAN_MAX_CONCURRENT_RPCS", "0"),
    ("Address to listen on.", "DCGAN_HOST", "0.0.0.0"),
    ("gRPC port, or a range A-B: the first free one is bound (replicas on one host).",
     "DCGAN_PORT", "50051"),
    ("Write the bound port here.", "DCGAN_PORT_FILE", None),
    ("Prometheus /metrics port, plus the bound port's offset in a range (0: off).",
     "DCGAN_METRICS_PORT", "9090"),
    ("Share the port with other servers (SO_REUSEPORT).", "DCGAN_REUSE_PORT", "no-reuse-port"),
    ("Close connections this old: clients re-resolve and find new replicas (0: never).",
     "DCGAN_MAX_CONNECTION_AGE_S", "0.0"),
    ("Seconds a SIGTERM drain may take.", "DCGAN_GRACE_S", "10.0"),
    ("Seconds after SIGTERM of answering new calls UNAVAILABLE (within --grace-s).",
     "DCGAN_DRAIN_S", "2.0"),
    ("PEM certificate chain: serve over TLS.", "DCGAN_TLS_CERT", None),
    ("PEM private key of --tls-cert.", "DCGAN_TLS_KEY", None),
    ("PEM CA: require client certificates (mutual TLS).", "DCGAN_TLS_CLIENT_CA", None),
    ("Require this bearer token (health checks stay open).", "DCGAN_TOKEN_FILE", None),
    ("DEBUG, INFO, WARNING or ERROR.", "DCGAN_LOG_LEVEL", "INFO"),
]  # fmt: skip
CLIENT_OPTIONS = [
    ("host:port, or dns:///name:port to spread calls over every replica.", "DCGAN_TARGET",
     "localhost:50051"),
    ("Deadline of each call.", "DCGAN_TIMEOUT_S", "30.0"),
    ("Bearer token for servers that ask for one.", "DCGAN_TOKEN_FILE", None),
    ("CA certificate: connect with TLS.", "DCGAN_TLS_CA", None),
    ("Client certificate, for mutual TLS.", "DCGAN_TLS_CERT", None),
    ("Client key, for mutual TLS.", "DCGAN_TLS_KEY", None),
    ("Model to run, by its name in the server's repository.", "DCGAN_MODEL",
     "(the only one served)"),
    ("Version of --model to run (0: the newest served).", "DCGAN_MODEL_VERSION", "0"),
]  # fmt: skip
GENERATE_OPTIONS = [
    ("Images to generate.", None, "64"),
    ("Seed of the server's latent generator.", None, "0"),
    ("Where to write, by extension: .png .jpg .jpeg .webp .bmp write one grid, .gif an animation, and a path with no suffix (or an existing directory) one PNG per image.", None, "grid.png"),
    ("Images per row of the grid (at most N).", None, "8"),
]  # fmt: skip
INTERPOLATE_OPTIONS = [
    ("Seed of the first latent.", None, "1"),
    ("Seed of the last latent.", None, "2"),
    ("Images in the walk, both ends included.", None, "10"),
    ("Straight line, or great circle.", None, "slerp"),
    ("Where to write, by extension: .png .jpg .jpeg .webp .bmp write one grid, .gif an animation, and a path with no suffix (or an existing directory) one PNG per image.", None, "walk.png"),
]  # fmt: skip
BENCH_OPTIONS = [
    ("host:port, or dns:///name:port to spread calls over every replica.", "DCGAN_TARGET",
     "localhost:50051"),
    ("Deadline of each call.", "DCGAN_TIMEOUT_S", "30.0"),
    *CLIENT_OPTIONS[2:],  # the token and TLS files and the model, as dcgan-client's
    ("Callers in a closed loop; repeat for a sweep (none with --rate alone).", None,
     "(1 4 16 64)"),
    ("Requests per second in an open loop; repeat for several.", None, None),
    ("Latents per request.", None, "1"),
    ("uint8, float32 or png.", None, "uint8"),
    ("Seconds measured per level.", None, "10.0"),
    ("Seconds of load before measuring.", None, "1.0"),
    ("Connections the callers share.", None, "1"),
    ("Also write the results here.", None, None),
]  # fmt: skip


def help_text(app: typer.Typer, *args: str) -> str:
    """`--help` of a command as one line: the panels' borders gone, wrapped lines joined."""
    result = CliRunner().invoke(app, [*args, "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    return " ".join(re.sub("[│╭╮╰╯─]", " ", result.output).split())


def assert_documents(text: str, options: Sequence[tuple[str, str | None, str | None]]) -> None:
    for help_, envvar, default in options:
        entry = help_ + (f" [env var: {envvar}]" if envvar else "")
        if default is None:
            assert entry in text and f"{entry} [default:" not in text, entry
        else:
            assert f"{entry} [default: {default}]" in text, entry
    variables = [envvar for _, envvar, _ in options if envvar]
    assert sorted(re.findall(r"\[env var: (\w+)\]", text)) == sorted(variables)  # no others


def test_serve_help_shows_every_variable_and_default() -> None:
    text = help_text(serve_cli.app)
    assert_documents(text, SERVE_OPTIONS)
    assert "--token " not in text  # hidden: read from DCGAN_TOKEN, never advertised


def test_client_help_shows_the_connection_variables_and_every_default() -> None:
    assert_documents(help_text(client_cli.app), CLIENT_OPTIONS)
    assert_documents(help_text(client_cli.app, "generate"), GENERATE_OPTIONS)
    assert_documents(help_text(client_cli.app, "interpolate"), INTERPOLATE_OPTIONS)


def test_bench_help_shows_every_default() -> None:
    assert_documents(help_text(bench.app), BENCH_OPTIONS)


def run(module: str, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {key: value for key, value in os.environ.items() if not key.startswith("DCGAN_")}
    return subprocess.run(
        [sys.executable, "-m", module, *args], env={**clean, **env},
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def test_serve_reads_its_options_from_the_environment(tmp_path: Path) -> None:
    result = run("dcgan.service.cli", DCGAN_MODEL_DIR=str(tmp_path), DCGAN_PORT="9-1")
    assert result.returncode == 2  # both read: the model directory, then the bad port range
    assert (
        result.stderr.strip()
        == "error: --port: expected ports within 0-65535 with A <= B, not '9-1'"
    )


def test_client_reads_its_connection_from_the_environment(tmp_path: Path) -> None:
    unreachable = run(
        "dcgan.clients.cli", "health", DCGAN_TARGET="127.0.0.1:1", DCGAN_TIMEOUT_S="1"
    )
    assert unreachable.returncode == 1
    assert unreachable.stderr.startswith("error: 127.0.0.1:1: UNAVAILABLE")
    missing = run("dcgan.clients.cli", "info", DCGAN_TOKEN_FILE=str(tmp_path / "missing"))
    assert missing.returncode == 2 and "Invalid value for '--token-file'" in missing.stderr
    # a subcommand's options come from its command line alone: -n 0 would be a usage error (2)
    out = str(tmp_path / "grid.png")
    ignored = run("dcgan.clients.cli", "--target", "127.0.0.1:1", "--timeout-s", "1",
                  "generate", "--out", out, DCGAN_GENERATE_N="0")  # fmt: skip
    assert ignored.returncode == 1 and "UNAVAILABLE" in ignored.stderr, ignored.stderr


def test_serve_version_and_its_console_script() -> None:
    expected = f"dcgan-serve {metadata.version('dcgan-serve')}"
    for module in ("dcgan.service.cli", "dcgan.service"):
        shown = run(module, "--version", DCGAN_VERSION="1")
        assert (shown.returncode, shown.stdout.strip(), shown.stderr) == (0, expected, "")
    scripts = tomllib.loads((ROOT / "service" / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts == {"dcgan-serve": "dcgan.service.cli:run"}  # through entry_point
    script = Path(sys.executable).parent / "dcgan-serve"
    assert "from dcgan.service.cli import run" in script.read_text()
    installed = subprocess.run(
        [str(script), "--version"], capture_output=True, text=True, timeout=60
    )
    assert installed.returncode == 0 and installed.stdout.strip() == expected
