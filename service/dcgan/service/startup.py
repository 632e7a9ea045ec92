"""What a server needs from its machine before it listens, each checked for its own true reason.

grpc answers every failure to listen with the same RuntimeError, and prints its own log lines:
a certificate it cannot parse, a host it cannot resolve and a port that is taken look alike.
So the TLS files are read and checked with the standard library's ssl module first, the host is
resolved with getaddrinfo, and a plain socket tries each port before grpc does, telling a port in
use (EADDRINUSE) from an address this machine does not have (EADDRNOTAVAIL).
"""

from __future__ import annotations

import errno
import os
import socket
import ssl
from dataclasses import dataclass
from pathlib import Path


class StartupError(Exception):
    """The server cannot start as configured; the message says what to change, in one line."""


class OptionConflict(StartupError):
    """Settings that contradict each other, or one that needs another: a bad option."""


@dataclass(frozen=True)
class TlsMaterial:
    """PEM bytes that grpc.ssl_server_credentials takes, already proven to load."""

    key: bytes
    certificate_chain: bytes
    client_ca: bytes | None


def _read(path: Path, option: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as error:
        raise StartupError(f"cannot read {option} {path}: {error.strerror}") from None


def tls_material(cert: Path | None, key: Path | None, client_ca: Path | None) -> TlsMaterial | None:
    """The TLS files as bytes, each checked: a PEM certificate chain, its own private key, a CA."""
    if cert is None and key is None:
        if client_ca is not None:
            raise OptionConflict("--tls-client-ca needs --tls-cert and --tls-key")
        return None
    if cert is None or key is None:
        raise OptionConflict("TLS needs both --tls-cert and --tls-key")
    chain, private_key = _read(cert, "--tls-cert"), _read(key, "--tls-key")
    ca = _read(client_ca, "--tls-client-ca") if client_ca is not None else None
    _check_certificates(chain, f"--tls-cert {cert}")
    if b"ENCRYPTED" in private_key:
        raise StartupError(f"--tls-key {key} is encrypted: give the server an unencrypted key")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(cert, key, password=b"")  # never a prompt on the terminal
    except ssl.SSLError as error:
        if error.reason == "KEY_VALUES_MISMATCH":
            raise StartupError(
                f"--tls-key {key} is not the key of the certificate in --tls-cert {cert}"
            ) from None
        raise StartupError(f"--tls-key {key} holds no PEM private key") from None
    if ca is not None:
        _check_certificates(ca, f"--tls-client-ca {client_ca}")
    return TlsMaterial(private_key, chain, ca)


def _check_certificates(pem: bytes, where: str) -> None:
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(
            cadata=pem.decode("ascii", errors="ignore")  # PEM is ASCII: the rest is no certificate
        )
    except (ssl.SSLError, ValueError):
        raise StartupError(f"{where} holds no PEM certificate") from None


def listen_address(host: str, port: int) -> str:
    """host:port as grpc takes it: an IPv6 address in brackets."""
    return f"[{host}]:{port}" if ":" in host and not host.startswith("[") else f"{host}:{port}"


def resolve(host: str) -> list[tuple[int, tuple[object, ...]]]:
    """The (family, address) pairs a listening socket on `host` would bind."""
    try:
        found = socket.getaddrinfo(
            host.strip("[]"), 0, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except (socket.gaierror, UnicodeError) as error:
        reason = error.strerror if isinstance(error, socket.gaierror) else str(error)
        raise StartupError(f"--host {host}: cannot resolve it ({reason})") from None
    return [(family, address) for family, _, _, _, address in found]


def bind_error(host: str, port: int, reuse_port: bool) -> OSError | None:
    """Why a listening socket cannot bind host:port, or None when it can (with grpc's options).

    grpc listens when any address of the host binds, so this reports an error only when none does.
    """
    first: OSError | None = None
    for family, address in resolve(host):
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if reuse_port:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            try:
                probe.bind((address[0], port, *address[2:]))
                return None
            except OSError as error:
                first = first or error
    return first


def describe_bind_error(error: OSError, host: str, port: int, what: str = "port") -> str:
    """One line for a failed bind, naming the option at fault."""
    if error.errno == errno.EADDRINUSE:
        return f"{what} {port} is in use on {host}"
    if error.errno == errno.EADDRNOTAVAIL:
        return f"--host {host} is not an address of this machine ({error.strerror})"
    if error.errno == errno.EACCES:
        return f"{what} {port} on {host} needs privileges ({error.strerror}): use one above 1023"
    return f"cannot listen on {listen_address(host, port)}: {error.strerror}"


def check_port_file(path: Path) -> None:
    """Refuse a --port-file that cannot be written, before the port is opened."""
    if path.is_dir():
        raise StartupError(f"--port-file {path} is a directory")
    folder = path.parent
    if not folder.is_dir():
        raise StartupError(f"--port-file {path}: its folder {folder} does not exist")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise StartupError(f"--port-file {path}: its folder {folder} is not writable")
