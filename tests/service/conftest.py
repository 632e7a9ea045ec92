"""A real export, real servers on 127.0.0.1 and test certificates for the service and client
tests."""

from __future__ import annotations

import asyncio
import datetime
import hashlib
import ipaddress
import json
import shutil
import socket
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from dcgan.service.options import BatchingOptions, RequestLimits, RuntimeOptions, ServerConfig
from dcgan.service.server import GeneratorServer


def make_export(out: Path, seed: int = 0) -> Path:
    """A real pipeline in miniature: one training step (64x64 RGB, ngf 16), then dcgan-export."""
    from dcgan.contract.manifest import ONNX
    from dcgan.export.export import export_generator
    from dcgan.train.train import resolve_config, train

    run = out.parent / f"{out.name}-run"
    settings = {
        "dataset": "fake",
        "ngf": 16,
        "ndf": 16,
        "batch_size": 16,
        "max_steps": 1,
        "seed": seed,
    }
    train(resolve_config({**settings, "out": str(run), "workers": 0, "samples": 4}))
    export_generator(run, out, formats=[ONNX])
    return out


@pytest.fixture(scope="session")
def export_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_export(tmp_path_factory.mktemp("export"))


class ServerThread:
    """A GeneratorServer on its own event loop in a background thread."""

    def __init__(self, config: ServerConfig, start: bool = True) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.server = GeneratorServer(config)
        if start:
            self.call(self.server.start())

    def call(self, coroutine: Any, timeout: float = 60) -> Any:
        future: Future[Any] = asyncio.run_coroutine_threadsafe(coroutine, self.loop)
        return future.result(timeout)

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.server.port}"

    def stop(self) -> None:
        if not self.server.stopped:
            self.call(self.server.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


def free_port() -> int:
    """A port nothing listens on now, on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def server_config(model_dir: Path, **changes: Any) -> ServerConfig:
    config = ServerConfig(
        model_dir=model_dir,
        host="127.0.0.1",
        port=0,
        metrics_port=0,
        runtime=RuntimeOptions(device="cpu", warmup_batch_sizes=(1,)),
        batching=BatchingOptions(max_batch_size=64, max_queue_delay_s=0.002),
        limits=RequestLimits(max_latents_per_request=256, max_stream_latents=4096),
        grace_s=5.0,
        drain_s=0.0,  # the lame-duck period: the drain tests set their own
    )
    return replace(config, **changes)


@pytest.fixture(scope="module")
def server(export_dir: Path) -> Iterator[ServerThread]:
    """One server shared by a module's tests that leave it as they found it."""
    running = ServerThread(server_config(export_dir))
    yield running
    running.stop()


@pytest.fixture
def fresh_server(export_dir: Path) -> Iterator[Any]:
    """Start servers with settings of the test's own; all are stopped at the end."""
    started: list[ServerThread] = []

    def start(**changes: Any) -> ServerThread:
        running = ServerThread(server_config(export_dir, **changes))
        started.append(running)
        return running

    yield start
    for running in started:
        running.stop()


# ------------------------------------------------------------------------------ certificates


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _certificate(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: tuple[str, ec.EllipticCurvePrivateKey] | None,
    ca: bool,
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    issuer_name, issuer_key = issuer if issuer else (subject, key)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(_name(issuer_name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if not ca:
        names = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def _write(
    directory: Path, name: str, key: ec.EllipticCurvePrivateKey, cert: x509.Certificate
) -> None:
    (directory / f"{name}.key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    (directory / f"{name}.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def make_pki(directory: Path) -> Path:
    """A CA, and a server (127.0.0.1, localhost) and a client certificate that it signed."""
    ca_key = ec.generate_private_key(ec.SECP256R1())
    _write(directory, "ca", ca_key, _certificate("test-ca", ca_key, None, ca=True))
    for name in ("server", "client"):
        key = ec.generate_private_key(ec.SECP256R1())
        _write(directory, name, key, _certificate(name, key, ("test-ca", ca_key), ca=False))
    return directory


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_pki(tmp_path_factory.mktemp("pki"))


# ------------------------------------------------------------------------------ damaged exports


def edit_manifest(export: Path, edit: Callable[[dict[str, Any]], None]) -> None:
    manifest = export / "manifest.json"
    data = json.loads(manifest.read_text())
    edit(data)
    manifest.write_text(json.dumps(data))


def replace_graph(export: Path, data: bytes) -> None:
    """Put `data` in place of the serving graph, with a manifest whose sha256 matches it."""
    (export / "generator_serving.onnx").write_bytes(data)

    def record(manifest: dict[str, Any]) -> None:
        manifest["artifacts"]["generator_serving.onnx"].update(
            sha256=hashlib.sha256(data).hexdigest(), bytes=len(data)
        )

    edit_manifest(export, record)


def damaged_export(export_dir: Path, dest: Path, damage: str) -> Path:
    """A copy of `export_dir` with one kind of damage that a server must refuse in one line."""
    shutil.copytree(export_dir, dest)
    edits: dict[str, Callable[[dict[str, Any]], None]] = {
        "nz": lambda m: m["model"].update(nz=128),
        "shape": lambda m: m["model"].update(channels=1, image_size=32),
        "range": lambda m: m["model"].update(output_range=[0.0, 1.0]),
        "nz not a number": lambda m: m["model"].update(nz="abc"),
        "no range": lambda m: m["model"].update(output_range=[1.0]),
        "no model": lambda m: m.pop("model"),
        "not an export": lambda m: m.update(format="something else"),
    }
    if damage in edits:
        edit_manifest(dest, edits[damage])
    elif damage == "garbage graph":
        replace_graph(dest, b"\x08\x07 this is not an ONNX graph " * 100)
    elif damage == "graph without pixels":
        replace_graph(dest, (dest / "generator.onnx").read_bytes())
    elif damage == "graph missing":
        (dest / "generator_serving.onnx").unlink()
    elif damage == "manifest garbage":
        (dest / "manifest.json").write_text("{ not json")
    elif damage == "manifest a list":
        (dest / "manifest.json").write_text("[1, 2]")
    elif damage == "manifest a folder":
        (dest / "manifest.json").unlink()
        (dest / "manifest.json").mkdir()
    elif damage == "a file, not a folder":
        shutil.rmtree(dest)
        dest.write_text("not a folder")
    else:
        raise ValueError(damage)
    return dest
