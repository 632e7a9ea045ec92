"""How the clients reach a server, with the defaults that dcgan-client, dcgan-bench and the
Python clients share. Plain dataclasses: the command lines parse without loading grpc."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ConnectionOptions:
    target: str = "localhost:50051"  # host:port, or dns:///name:port for every replica
    timeout_s: float = 30.0  # each call's deadline: the server drops work past it
    token_file: Path | None = None  # a bearer token, for servers that ask for one
    tls_ca: Path | None = None  # the server's CA certificate: connect with TLS
    tls_cert: Path | None = None  # a client certificate, for mutual TLS
    tls_key: Path | None = None  # its private key
