"""TLS, mutual TLS and the bearer token, with certificates made at test time."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from dcgan.clients.client import GeneratorClient, credentials
from dcgan.v1 import generator_pb2 as pb
from dcgan.v1 import generator_pb2_grpc as pb_grpc

TOKEN = "s3cret-token"


def test_tls_serves_clients_that_trust_the_ca(fresh_server: Any, pki: Path) -> None:
    running = fresh_server(tls_cert=pki / "server.crt", tls_key=pki / "server.key")
    with GeneratorClient(running.target, tls=credentials(pki / "ca.crt")) as client:
        assert client.generate(n=1, seed=1).shape == (1, 64, 64, 3)
    with (
        GeneratorClient(running.target, timeout=3) as plaintext,
        pytest.raises(grpc.RpcError) as raised,
    ):
        plaintext.generate(n=1, seed=1)
    assert raised.value.code() == grpc.StatusCode.UNAVAILABLE


def test_mutual_tls_refuses_clients_without_a_certificate(fresh_server: Any, pki: Path) -> None:
    running = fresh_server(
        tls_cert=pki / "server.crt", tls_key=pki / "server.key", tls_client_ca=pki / "ca.crt"
    )
    mutual = credentials(pki / "ca.crt", pki / "client.crt", pki / "client.key")
    with GeneratorClient(running.target, tls=mutual) as client:
        assert client.health() == "SERVING"
        assert client.generate(n=2, seed=1).shape[0] == 2
    anonymous = GeneratorClient(running.target, timeout=3, tls=credentials(pki / "ca.crt"))
    with anonymous, pytest.raises(grpc.RpcError) as raised:
        anonymous.generate(n=1, seed=1)
    assert raised.value.code() == grpc.StatusCode.UNAVAILABLE


def test_the_token_guards_everything_but_health(fresh_server: Any) -> None:
    running = fresh_server(token=TOKEN)
    channel = grpc.insecure_channel(running.target)
    health = health_pb2_grpc.HealthStub(channel)
    assert (
        health.Check(health_pb2.HealthCheckRequest()).status
        == health_pb2.HealthCheckResponse.SERVING
    )
    generator = pb_grpc.GeneratorStub(channel)
    request = pb.GenerateRequest(seeded=pb.SeededLatents(count=1))
    for metadata in (None, (("authorization", "Bearer wrong"),), (("authorization", TOKEN),)):
        with pytest.raises(grpc.RpcError) as raised:
            generator.Generate(request, metadata=metadata)
        assert raised.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert "bearer token" in raised.value.details()
    with pytest.raises(grpc.RpcError) as raised:
        list(generator.GenerateStream(request))
    assert raised.value.code() == grpc.StatusCode.UNAUTHENTICATED
    walk = pb.InterpolateRequest(start=pb.Endpoint(seed=1), end=pb.Endpoint(seed=2), steps=300)
    with pytest.raises(grpc.RpcError) as raised:
        list(generator.InterpolateStream(walk))
    assert raised.value.code() == grpc.StatusCode.UNAUTHENTICATED
    reflection = channel.stream_stream(
        "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"
    )
    with pytest.raises(grpc.RpcError) as raised:
        list(reflection(iter([b""])))
    assert raised.value.code() == grpc.StatusCode.UNAUTHENTICATED
    with GeneratorClient(running.target, token=TOKEN) as client:
        assert client.generate(n=1, seed=1).shape == (1, 64, 64, 3)
        assert client.info()["nz"] == 100
        assert client.interpolate(1, 2, steps=300).shape == (300, 64, 64, 3)  # streamed
    counted = running.server.metrics.registry.get_sample_value(
        "dcgan_requests_total", {"method": "Generate", "code": "UNAUTHENTICATED"}
    )
    assert counted == 3


def test_client_cli_sends_the_token_from_a_file(fresh_server: Any, tmp_path: Path) -> None:
    running = fresh_server(token=TOKEN)
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    base = [sys.executable, "-m", "dcgan.clients.cli", "--target", running.target]
    refused = subprocess.run([*base, "info"], capture_output=True, text=True, timeout=60)
    assert refused.returncode == 1 and "UNAUTHENTICATED" in refused.stderr
    allowed = subprocess.run(
        [*base, "--token-file", str(token_file), "info"], capture_output=True, text=True, timeout=60
    )
    assert allowed.returncode == 0, allowed.stderr


def test_serve_refuses_bad_security_settings(export_dir: Path, tmp_path: Path, pki: Path) -> None:
    def serve(*args: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "dcgan.service.cli", "--model-dir", str(export_dir),
                   "--port", "0", "--metrics-port", "0", "--host", "127.0.0.1", *args]  # fmt: skip
        return subprocess.run(command, capture_output=True, text=True, timeout=60)

    missing = serve("--tls-cert", str(tmp_path / "nope.crt"), "--tls-key", str(pki / "server.key"))
    assert missing.returncode == 1 and "No such file or directory" in missing.stderr
    half = serve("--tls-cert", str(pki / "server.crt"))  # a bad combination of options
    assert half.returncode == 2 and "needs both --tls-cert and --tls-key" in half.stderr
    (tmp_path / "empty").write_text("\n")
    empty = serve("--token-file", str(tmp_path / "empty"))
    assert empty.returncode == 1 and "the bearer token is empty" in empty.stderr
    for result in (missing, half, empty):
        assert "Traceback" not in result.stderr
