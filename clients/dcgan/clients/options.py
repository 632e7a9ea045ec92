"""How the clients reach a server, with the defaults and checks that dcgan-client, dcgan-bench and
the Python clients share. No grpc here: the command lines parse, and refuse bad connection
settings in one line, before grpc is loaded (its C core aborts the process on some of them,
such as a client certificate without its key)."""

from __future__ import annotations

import re
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from dcgan.contract.manifest import MAX_VERSION, MODEL_NAME

if TYPE_CHECKING:
    import grpc

UINT32_MAX = 2**32 - 1  # counts and steps travel as uint32
UINT64_MAX = 2**64 - 1  # seeds travel as uint64
MAX_TIMEOUT_S = 1e6  # gRPC turns much longer deadlines into ones already past
TOKEN_LIMIT = 64 * 2**10  # bytes of --token-file: a bearer token is a line
PEM_LIMIT = 2**20  # bytes of each PEM file: certificate chains take a few KiB


@dataclass(frozen=True)
class ConnectionOptions:
    target: str = "localhost:50051"  # host:port, or dns:///name:port for every replica
    timeout_s: float = 30.0  # each call's deadline: the server drops work past it
    token_file: Path | None = None  # a bearer token, for servers that ask for one
    tls_ca: Path | None = None  # the server's CA certificate: connect with TLS
    tls_cert: Path | None = None  # a client certificate, for mutual TLS
    tls_key: Path | None = None  # its private key


@dataclass(frozen=True)
class ModelOptions:
    """Which model of the server's repository the calls ask for."""

    name: str = ""  # empty: the only model the server serves
    version: int = 0  # 0: the newest version the server serves


# The connection options of every client command, each with its DCGAN_* variable. Files are
# checked by click when the command line is parsed: a missing one is a usage error.
READABLE: dict[str, Any] = {"exists": True, "dir_okay": False, "readable": True}
Target = Annotated[
    str,
    typer.Option(
        envvar="DCGAN_TARGET",
        help="host:port, or dns:///name:port to spread calls over every replica.",
    ),
]
TimeoutS = Annotated[
    float,
    typer.Option(
        envvar="DCGAN_TIMEOUT_S", min=0.001, max=MAX_TIMEOUT_S, help="Deadline of each call."
    ),
]
TokenFile = Annotated[
    Path | None,
    typer.Option(
        envvar="DCGAN_TOKEN_FILE", help="Bearer token for servers that ask for one.", **READABLE
    ),
]
TlsCa = Annotated[
    Path | None,
    typer.Option(envvar="DCGAN_TLS_CA", help="CA certificate: connect with TLS.", **READABLE),
]
TlsCert = Annotated[
    Path | None,
    typer.Option(envvar="DCGAN_TLS_CERT", help="Client certificate, for mutual TLS.", **READABLE),
]
TlsKey = Annotated[
    Path | None,
    typer.Option(envvar="DCGAN_TLS_KEY", help="Client key, for mutual TLS.", **READABLE),
]


ModelName = Annotated[
    str,
    typer.Option(
        envvar="DCGAN_MODEL",
        help="Model to run, by its name in the server's repository.",
        show_default="the only one served",
    ),
]
ModelVersion = Annotated[
    int,
    typer.Option(
        envvar="DCGAN_MODEL_VERSION",
        min=0,
        max=MAX_VERSION,
        help="Version of --model to run (0: the newest served).",
    ),
]


def given_path(value: str | Path) -> Path:
    """A path option's parser: refuses an empty value, which pathlib would take for '.'."""
    if isinstance(value, str) and not value.strip():
        raise typer.BadParameter("is empty")
    return Path(value)


OUT_PATH: dict[str, Any] = {"parser": given_path, "metavar": "<path>"}


class OptionError(ValueError):
    """A bad option or combination of options: a usage error (exit 2)."""


class CredentialError(Exception):
    """A token or PEM file whose content cannot be used (exit 1)."""


@dataclass(frozen=True)
class Credentials:
    """What the token and TLS files hold, checked."""

    token: str | None = None
    root_certificates: bytes | None = None
    certificate_chain: bytes | None = None
    private_key: bytes | None = None
    tls: bool = False

    @property
    def metadata(self) -> tuple[tuple[str, str], ...] | None:
        return (("authorization", f"Bearer {self.token}"),) if self.token else None

    def channel_credentials(self) -> grpc.ChannelCredentials | None:
        """TLS credentials for a secure channel, or None for plaintext."""
        if not self.tls:
            return None
        import grpc

        return grpc.ssl_channel_credentials(
            root_certificates=self.root_certificates,
            private_key=self.private_key,
            certificate_chain=self.certificate_chain,
        )


def check_connection(options: ConnectionOptions) -> Credentials:
    """Check the target and read the credential files; raises OptionError or CredentialError."""
    check_target(options.target)
    if options.tls_cert and not options.tls_key:
        raise OptionError("--tls-cert needs --tls-key, the certificate's private key")
    if options.tls_key and not options.tls_cert:
        raise OptionError("--tls-key needs --tls-cert, the certificate it belongs to")
    token = _token(options.token_file) if options.token_file else None
    ca = _certificates(options.tls_ca, "--tls-ca") if options.tls_ca else None
    cert = key = None
    if options.tls_cert and options.tls_key:
        cert = _certificates(options.tls_cert, "--tls-cert")
        key = _private_key(options.tls_key, options.tls_cert)
    return Credentials(token, ca, cert, key, tls=bool(options.tls_ca or options.tls_cert))


def check_model(
    model: ModelOptions, options: tuple[str, str] = ("--model", "--model-version")
) -> None:
    """Refuse a name no repository folder can have, or a version no request can carry.

    `options`: how the message names the two (the command's flags, or the client's arguments).
    """
    name_option, version_option = options
    if model.name and not MODEL_NAME.fullmatch(model.name):
        raise OptionError(
            f"{name_option} {model.name!r} is not a model name: 1-128 letters, digits, "
            "'_', '.' or '-', the first a letter or digit"
        )
    if not 0 <= model.version <= MAX_VERSION:
        raise OptionError(
            f"{version_option} {model.version} is not 0 (the newest) or a version 1-{MAX_VERSION}"
        )


# gRPC's name schemes (grpc/doc/naming.md); a target without one is a DNS host[:port].
_SCHEMES = ("dns:", "ipv4:", "ipv6:", "unix:", "unix-abstract:", "vsock:")


def check_target(target: str) -> None:
    """Refuse a target gRPC would misread: empty, with spaces, no name, or a port out of range.

    (gRPC takes 127.0.0.1:99999 for port 34463, 99999 modulo 65536.)
    """
    expected = "expected host:port, or dns:///name:port"
    if not target or any(char.isspace() or not char.isprintable() for char in target):
        raise OptionError(f"--target {target!r}: {expected}")
    scheme = next((scheme for scheme in _SCHEMES if target.startswith(scheme)), "")
    names = target[len(scheme) :]
    if scheme == "dns:" and names.startswith("//"):
        names = names[2:].partition("/")[2]  # dns://authority/name
    if not names:
        raise OptionError(f"--target {target!r}: names no host, {expected}")
    if scheme in ("", "dns:", "ipv4:", "ipv6:"):
        for address in names.split(",") if scheme else [names]:
            if address.endswith(":"):
                raise OptionError(f"--target {target!r}: no port after the ':'")
            port = address.rpartition(":")[2] if ":" in address else ""
            if port.isdigit() and not 0 < int(port) <= 65535:
                raise OptionError(f"--target {target!r}: port {port} is not within 1-65535")


def _read(path: Path, option: str, limit: int) -> bytes:
    if not path.is_file():  # a FIFO or a device would block or never end
        raise CredentialError(f"{option} {path} is not a regular file")
    try:
        with open(path, "rb") as handle:
            data = handle.read(limit + 1)
    except OSError as error:
        raise CredentialError(f"cannot read {option} {path}: {error.strerror}") from None
    if len(data) > limit:
        raise CredentialError(f"{option} {path} is larger than {limit} bytes")
    return data


def _text(data: bytes, path: Path, option: str, kind: str) -> str:
    try:
        return data.decode("ascii")
    except UnicodeDecodeError:
        raise CredentialError(
            f"{option} {path} is not a PEM {kind} (binary data; convert DER files to PEM)"
        ) from None


def _token(path: Path) -> str:
    data = _read(path, "--token-file", TOKEN_LIMIT)
    try:
        token = data.decode("ascii").strip()
    except UnicodeDecodeError:
        raise CredentialError(
            f"--token-file {path} holds characters other than ASCII, which a token cannot"
        ) from None
    if not token:
        raise CredentialError(f"--token-file {path} is empty")
    if "\n" in token or "\r" in token:
        raise CredentialError(f"--token-file {path} holds more than one line")
    if not token.isprintable():
        raise CredentialError(f"--token-file {path} holds control characters")
    return token


def _certificates(path: Path, option: str) -> bytes:
    data = _read(path, option, PEM_LIMIT)
    text = _text(data, path, option, "certificate")
    if "-----BEGIN CERTIFICATE-----" not in text:
        raise CredentialError(
            f"{option} {path} holds no PEM certificate (no -----BEGIN CERTIFICATE----- line)"
        )
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cadata=text)
    except (ssl.SSLError, ValueError) as error:
        raise CredentialError(
            f"{option} {path}: a certificate in it cannot be read: {error}"
        ) from None
    return data


_PRIVATE_KEY = re.compile(r"-----BEGIN ([A-Z0-9]+ )?PRIVATE KEY-----")


def _private_key(path: Path, cert: Path) -> bytes:
    data = _read(path, "--tls-key", PEM_LIMIT)
    text = _text(data, path, "--tls-key", "private key")
    if "ENCRYPTED" in text:
        raise CredentialError(f"--tls-key {path} is encrypted: gRPC takes unencrypted PEM keys")
    if not _PRIVATE_KEY.search(text):
        raise CredentialError(
            f"--tls-key {path} holds no PEM private key (no -----BEGIN PRIVATE KEY----- line)"
        )
    try:  # the standard library's OpenSSL parses the pair, and says whether they match
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_cert_chain(cert, path, password=b"")
    except ssl.SSLError as error:
        if "KEY_VALUES_MISMATCH" in str(error):
            raise CredentialError(f"--tls-key {path} is not the key of --tls-cert {cert}") from None
        raise CredentialError(
            f"--tls-key {path} cannot be read as a private key: {error}"
        ) from None
    return data
