"""dcgan-serve refuses every bad start-up input with its own line: files that are garbage, missing
or folders, hosts, ports, and exports with each kind of damage.

Each case runs the real command in a process of its own (they run side by side), and is held to
the command-line contract: its exit code (2 for a bad option, 1 for bad data or environment), a
last line `error: ...` that names the true reason, nothing else on stderr but the server's own log
lines (no traceback, no line from grpc's core), and no port file written.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from dcgan.contract.providers import NVIDIA_CONTROL_DEVICE
from tests.support.exports import damaged_export
from tests.support.servers import free_port

LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d [\d:,]+ (DEBUG|INFO|WARNING) dcgan\.")
CORES = len(os.sched_getaffinity(0))  # the cores this process may run on


@dataclass(frozen=True)
class Case:
    name: str
    args: tuple[str, ...]  # {placeholders} filled from the places the fixture makes
    code: int
    says: str  # the last line of stderr, or a part of it
    damage: str | None = None  # served: a copy of the export with this damage (conftest)
    model: str = "{export}"  # served otherwise


CASES = [
    # exports with each kind of damage
    Case("model dir missing", (), 1, "error: cannot serve {missing}: {missing} is not an export directory: no manifest.json", model="{missing}"),
    Case("model dir is a file", (), 1, "Not a directory", damage="a file, not a folder"),
    Case("manifest garbage", (), 1, "manifest.json: Expecting property name", damage="manifest garbage"),
    Case("manifest a list", (), 1, "manifest.json is not a JSON object", damage="manifest a list"),
    Case("manifest a folder", (), 1, "Is a directory", damage="manifest a folder"),
    Case("manifest of something else", (), 1, "not a dcgan-serving export manifest", damage="not an export"),
    Case("manifest without model", (), 1, "malformed manifest: KeyError('model')", damage="no model"),
    Case("nz not a number", (), 1, "malformed manifest: model.nz is 'abc', not a positive integer", damage="nz not a number"),
    Case("output range of one number", (), 1, "model.output_range is (1.0,), not two numbers", damage="no range"),
    Case("nz disagrees with the graph", (), 1, "manifest.json disagrees with generator_serving.onnx: input z is tensor(float) [batch, 100] in the graph, tensor(float) [batch, 128] by the manifest", damage="nz"),
    Case("shape disagrees with the graph", (), 1, "output image is tensor(float) [batch, 3, 64, 64] in the graph, tensor(float) [batch, 1, 32, 32] by the manifest; output pixels is tensor(uint8) [batch, 64, 64, 3] in the graph, tensor(uint8) [batch, 32, 32, 1] by the manifest", damage="shape"),
    Case("range disagrees with the graph", (), 1, "output_range is [-1.0, 1.0] in the graph, [0.0, 1.0] in the manifest", damage="range"),
    Case("garbage graph, sha256 recorded", (), 1, "onnxruntime cannot load generator_serving.onnx: [ONNXRuntimeError]", damage="garbage graph"),
    Case("graph without pixels, sha256 recorded", (), 1, "it has no output pixels (it has image)", damage="graph without pixels"),
    Case("graph missing", (), 1, "generator_serving.onnx is missing", damage="graph missing"),
    # TLS files
    Case("garbage certificate", ("--tls-cert", "{garbage}", "--tls-key", "{pki}/server.key"), 1, "error: --tls-cert {garbage} holds no PEM certificate"),
    Case("binary certificate", ("--tls-cert", "{binary}", "--tls-key", "{pki}/server.key"), 1, "error: --tls-cert {binary} holds no PEM certificate"),
    Case("garbage key", ("--tls-cert", "{pki}/server.crt", "--tls-key", "{garbage}"), 1, "error: --tls-key {garbage} holds no PEM private key"),
    Case("a certificate as the key", ("--tls-cert", "{pki}/server.crt", "--tls-key", "{pki}/server.crt"), 1, "error: --tls-key {pki}/server.crt holds no PEM private key"),
    Case("another certificate's key", ("--tls-cert", "{pki}/server.crt", "--tls-key", "{pki}/client.key"), 1, "error: --tls-key {pki}/client.key is not the key of the certificate in --tls-cert {pki}/server.crt"),
    Case("encrypted key", ("--tls-cert", "{pki}/server.crt", "--tls-key", "{encrypted}"), 1, "error: --tls-key {encrypted} is encrypted: give the server an unencrypted key"),
    Case("garbage client CA", ("--tls-cert", "{pki}/server.crt", "--tls-key", "{pki}/server.key", "--tls-client-ca", "{garbage}"), 1, "error: --tls-client-ca {garbage} holds no PEM certificate"),
    Case("missing certificate", ("--tls-cert", "{missing}", "--tls-key", "{pki}/server.key"), 1, "error: cannot read --tls-cert {missing}: No such file or directory"),
    Case("certificate a folder", ("--tls-cert", "{folder}", "--tls-key", "{pki}/server.key"), 1, "error: cannot read --tls-cert {folder}: Is a directory"),
    Case("client CA a folder", ("--tls-cert", "{pki}/server.crt", "--tls-key", "{pki}/server.key", "--tls-client-ca", "{folder}"), 1, "error: cannot read --tls-client-ca {folder}: Is a directory"),
    Case("certificate without key", ("--tls-cert", "{pki}/server.crt"), 2, "error: TLS needs both --tls-cert and --tls-key"),
    Case("client CA alone", ("--tls-client-ca", "{pki}/ca.crt"), 2, "error: --tls-client-ca needs --tls-cert and --tls-key"),
    # hosts
    Case("host that does not resolve", ("--host", "bogus.invalid"), 1, "error: --host bogus.invalid: cannot resolve it ("),
    Case("host not of this machine", ("--host", "10.255.255.1"), 1, "error: --host 10.255.255.1 is not an address of this machine (Cannot assign requested address)"),
    Case("host not an address", ("--host", "300.1.2.3"), 1, "error: --host 300.1.2.3: cannot resolve it ("),
    Case("host empty", ("--host", ""), 2, "error: --host is empty"),
    # ports
    Case("port in use", ("--port", "{busy}"), 1, "error: port {busy} is in use on 127.0.0.1"),
    Case("port range in use", ("--port", "{busy}-{busy_next}"), 1, "error: ports {busy}-{busy_next} are in use on 127.0.0.1"),
    Case("port not a number", ("--port", "http"), 2, "error: --port: expected a port or a range A-B, not 'http'"),
    Case("port too large", ("--port", "70000"), 2, "error: --port: expected ports within 0-65535 with A <= B, not '70000'"),
    Case("metrics port busy", ("--metrics-port", "{busy}"), 1, "error: --metrics-port {busy} is in use on 127.0.0.1"),
    Case("metrics port is the port", ("--port", "{free}", "--metrics-port", "{free}"), 2, "error: --metrics-port {free} is --port too: give each its own port"),
    Case("metrics port in the range", ("--port", "{free}-{free_plus_2}", "--metrics-port", "{free_plus_1}"), 2, "error: the metrics ports {free_plus_1}-{free_plus_3} (--metrics-port plus the offset of the port bound) overlap the gRPC ports {free}-{free_plus_2} of --port: give them ranges apart"),
    Case("metrics ports past 65535", ("--port", "{free}-{free_plus_2}", "--metrics-port", "65535"), 2, "error: --metrics-port 65535 leaves no room for the 3 ports of --port {free}-{free_plus_2}: it would need 65537"),
    Case("port file a folder", ("--port-file", "{folder}"), 1, "error: --port-file {folder} is a directory"),
    Case("port file in no folder", ("--port-file", "{missing}/port"), 1, "error: --port-file {missing}/port: its folder {missing} does not exist"),
    # tokens
    Case("token file missing", ("--token-file", "{missing}"), 1, "error: cannot read the token file {missing}: No such file or directory"),
    Case("token file a folder", ("--token-file", "{folder}"), 1, "error: cannot read the token file {folder}: Is a directory"),
    Case("token file empty", ("--token-file", "{empty}"), 1, "error: the bearer token is empty"),
    Case("token file binary", ("--token-file", "{binary}"), 1, "error: the token file {binary} is not text"),
    Case("token of two lines", ("--token-file", "{garbage}"), 1, "error: the bearer token holds spaces, line breaks or non-ASCII characters"),
    # threads and devices
    Case("more instances than cores", ("--instances", str(CORES + 1)), 2, f"error: --instances {CORES + 1} is more than the {CORES} CPU cores this process may run on"),
    Case("more threads than cores", ("--intra-op-threads", "64"), 2, f"error: --intra-op-threads 64 is more than the {CORES} CPU cores this process may run on"),
    Case("cuda without a GPU", ("--device", "cuda"), 1, "error: cannot serve {export}: --device cuda was asked for, but "),
    # options click refuses
    Case("log level unknown", ("--log-level", "LOUD"), 2, "Invalid value for '--log-level'"),
    Case("batch size 0", ("--max-batch-size", "0"), 2, "Invalid value for '--max-batch-size'"),
    Case("negative grace", ("--grace-s", "-1"), 2, "Invalid value for '--grace-s'"),
    Case("grace not a number", ("--grace-s", "nan"), 2, "Invalid value for '--grace-s'"),
    Case("connection age forever", ("--max-connection-age-s", "inf"), 2, "Invalid value for '--max-connection-age-s'"),
    Case("message limit past grpc's", ("--max-message-bytes", str(2**31)), 2, "Invalid value for '--max-message-bytes'"),
]  # fmt: skip
CLICK = "Invalid value for"  # click's usage errors come in its own box, not as `error:`


@pytest.fixture(scope="module")
def places(
    export_dir: Path, pki: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, str]]:
    """Every file, folder, port and export the cases point at; two ports held busy meanwhile."""
    root = tmp_path_factory.mktemp("startup")
    (root / "folder").mkdir()
    (root / "garbage").write_text("two\nlines\n")
    (root / "empty").write_bytes(b"")
    (root / "binary").write_bytes(bytes(range(256)))
    key = (pki / "server.key").read_text()
    encrypted = key.replace("BEGIN PRIVATE KEY", "BEGIN ENCRYPTED PRIVATE KEY")
    (root / "encrypted.key").write_text(
        encrypted.replace("END PRIVATE KEY", "END ENCRYPTED PRIVATE KEY")
    )
    found: dict[str, str] = {
        "export": str(export_dir), "pki": str(pki), "missing": str(root / "missing"),
        "folder": str(root / "folder"), "garbage": str(root / "garbage"),
        "empty": str(root / "empty"), "binary": str(root / "binary"),
        "encrypted": str(root / "encrypted.key"),
    }  # fmt: skip
    for index, case in enumerate(CASES):
        if case.damage is not None:
            damaged = damaged_export(export_dir, root / f"export-{index}", case.damage)
            found[f"damaged {case.damage}"] = str(damaged)
    with busy_ports() as (busy, busy_next):
        free = free_port()
        found.update(
            busy=str(busy), busy_next=str(busy_next), free=str(free),
            free_plus_1=str(free + 1), free_plus_2=str(free + 2), free_plus_3=str(free + 3),
        )  # fmt: skip
        yield found


@contextmanager
def busy_ports() -> Iterator[tuple[int, int]]:
    """Two consecutive ports on 127.0.0.1, each held by a listening socket."""
    for _ in range(100):
        with socket.socket() as first, socket.socket() as second:
            try:
                first.bind(("127.0.0.1", 0))
                port = first.getsockname()[1]
                second.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
            first.listen()
            second.listen()
            yield port, port + 1
            return
    raise AssertionError("no two consecutive free ports")


def serve(case: Case, places: dict[str, str], directory: Path) -> tuple[str, int | None]:
    """The case's stderr and exit code (None: still running after a minute, so killed)."""
    model = places[f"damaged {case.damage}"] if case.damage else case.model.format(**places)
    args = [arg.format(**places) for arg in case.args]
    defaults = {"--host": "127.0.0.1", "--port": "0", "--metrics-port": "0",
                "--port-file": str(directory / "port")}  # fmt: skip
    for option, value in defaults.items():
        if option not in args:
            args += [option, value]
    clean = {key: value for key, value in os.environ.items() if not key.startswith("DCGAN_")}
    process = subprocess.Popen(
        [sys.executable, "-m", "dcgan.service.cli", "--model-dir", model, *args],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=clean,
    )  # fmt: skip
    try:
        return process.communicate(timeout=60)[1], process.returncode
    except subprocess.TimeoutExpired:  # it started, bad input and all
        process.kill()
        return process.communicate()[1], None


@pytest.fixture(scope="module")
def outcomes(
    places: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, tuple[tuple[str, int | None], Path]]:
    root = tmp_path_factory.mktemp("startup-runs")
    directories = {case.name: root / f"case-{index}" for index, case in enumerate(CASES)}
    for directory in directories.values():
        directory.mkdir()
    with ThreadPoolExecutor(4) as pool:
        runs = {
            case.name: pool.submit(serve, case, places, directories[case.name]) for case in CASES
        }
        return {name: (run.result(), directories[name]) for name, run in runs.items()}


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_bad_start_up_input_gets_its_own_line(
    case: Case,
    places: dict[str, str],
    outcomes: dict[str, tuple[tuple[str, int | None], Path]],
) -> None:
    if case.name == "cuda without a GPU" and NVIDIA_CONTROL_DEVICE.exists():
        pytest.skip("this machine has an NVIDIA device")
    (stderr, code), directory = outcomes[case.name]
    says = case.says.format(**places)
    assert "Traceback" not in stderr and "error: unexpected" not in stderr, stderr
    assert code == case.code, stderr
    assert not (directory / "port").exists()  # nothing written by a server that did not start
    if case.says.startswith(CLICK):
        assert says in stderr
        return
    lines = stderr.strip().splitlines()
    assert says in lines[-1], stderr
    assert lines[-1].startswith("error: ")
    others = [line for line in lines[:-1] if not LOG_LINE.match(line)]
    assert others == [], stderr  # no traceback, no grpc core line, no second error
