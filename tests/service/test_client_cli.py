"""dcgan-client's command line against a real server: every bad input gets one line and its exit
code before the server is asked for anything, nothing already written is damaged, and --out
follows one rule of extensions (dcgan.clients.outputs)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
from cryptography.hazmat.primitives import serialization
from PIL import Image
from typer.testing import CliRunner, Result

from dcgan.clients import cli
from dcgan.clients.client import GeneratorClient
from dcgan.clients.outputs import RULE
from tests.support.fuzz import Surface, fuzz
from tests.support.servers import ServerThread

CLOSED = "127.0.0.1:1"  # nothing listens there: a call fails at once
CELL = 64 + 2  # a 64x64 image and the gap of a grid


def client(*args: str) -> Result:
    clean = {name: None for name in os.environ if name.startswith("DCGAN_")}
    return CliRunner(env=clean).invoke(cli.app, list(args))


def test_seeds_beyond_uint64_are_usage_errors(server: ServerThread, tmp_path: Path) -> None:
    out = str(tmp_path / "out.png")
    for args in (
        ["generate", "--seed", str(2**64)],
        ["interpolate", "--start", str(2**64)],
        ["interpolate", "--end", str(2**64)],
        ["generate", "--seed", "-1"],
    ):
        result = client("--target", server.target, *args, "--out", out)
        assert result.exit_code == 2, (args, result.output)
        assert "Traceback" not in result.output
    assert list(tmp_path.iterdir()) == []
    largest = client("--target", server.target, "generate", "-n", "1", "--seed", str(2**64 - 1),
                     "--out", out)  # fmt: skip
    assert largest.exit_code == 0, largest.output
    with GeneratorClient(server.target) as direct:
        expected = direct.generate(n=1, seed=2**64 - 1)[0]
    np.testing.assert_array_equal(np.asarray(Image.open(out))[2:-2, 2:-2], expected)


def test_an_unwritable_out_is_refused_before_the_server_is_asked(
    server: ServerThread, tmp_path: Path
) -> None:
    (tmp_path / "a-file").write_text("not a directory\n")
    refusals = {
        "/nonexistent/dir/g.png": "the directory /nonexistent/dir does not exist",
        f"{tmp_path}/a-file/g.png": f"{tmp_path}/a-file is not a directory",
        "/proc/g.png": "cannot write in /proc",
        f"{tmp_path}/a-file": "exists and is not a directory",  # no suffix: a directory of PNGs
        f"{tmp_path}/{'x' * 300}.png": "File name too long",
    }
    for out, reason in refusals.items():
        for target in (server.target, CLOSED):  # the closed port proves no call was made first
            for command in (["generate", "-n", "2"], ["interpolate", "--steps", "3"]):
                result = client("--target", target, *command, "--out", out)
                assert result.exit_code == 1, (out, result.output)
                line = result.output.strip()
                assert line.startswith(f"error: --out {out}") and reason in line, line
                assert len(result.output.splitlines()) == 1
    assert sorted(path.name for path in tmp_path.iterdir()) == ["a-file"]


def test_out_follows_one_rule_of_extensions(server: ServerThread, tmp_path: Path) -> None:
    with GeneratorClient(server.target) as direct:
        expected = direct.generate(n=3, seed=5)
        walk = direct.interpolate(1, 2, steps=4, method="slerp")
    grid_size = (2 * CELL + 2, 2 * CELL + 2)  # 3 images, 2 a row
    formats = {"g.png": "PNG", "g.jpg": "JPEG", "g.JPEG": "JPEG", "g.webp": "WEBP", "g.bmp": "BMP"}
    for name, file_format in formats.items():
        result = client("--target", server.target, "generate", "-n", "3", "--seed", "5",
                        "--columns", "2", "--out", str(tmp_path / name))  # fmt: skip
        assert result.exit_code == 0, result.output
        picture = Image.open(tmp_path / name)
        assert (picture.format, picture.size) == (file_format, grid_size), name
    lossless = np.asarray(Image.open(tmp_path / "g.png"))
    np.testing.assert_array_equal(lossless[2 : 2 + 64, CELL + 2 : CELL + 66], expected[1])

    assert client("--target", server.target, "generate", "-n", "3", "--seed", "5",
                  "--out", str(tmp_path / "g.gif")).exit_code == 0  # fmt: skip
    animation = Image.open(tmp_path / "g.gif")
    assert (animation.format, animation.n_frames, animation.size) == ("GIF", 3, (64, 64))

    existing = tmp_path / "made.d"  # a suffix, but a directory that exists: one PNG per image
    existing.mkdir()
    for folder in (tmp_path / "pngs", existing):
        result = client("--target", server.target, "generate", "-n", "3", "--seed", "5",
                        "--out", str(folder))  # fmt: skip
        assert result.exit_code == 0, result.output
        assert sorted(path.name for path in folder.iterdir()) == [
            "5-00000.png", "5-00001.png", "5-00002.png"
        ]  # fmt: skip
        np.testing.assert_array_equal(np.asarray(Image.open(folder / "5-00002.png")), expected[2])

    strip = tmp_path / "walk.jpg"
    assert client("--target", server.target, "interpolate", "--steps", "4",
                  "--out", str(strip)).exit_code == 0  # fmt: skip
    assert (Image.open(strip).format, Image.open(strip).size) == ("JPEG", (4 * CELL + 2, CELL + 2))
    frames = tmp_path / "walk.gif"
    assert client("--target", server.target, "interpolate", "--steps", "4",
                  "--out", str(frames)).exit_code == 0  # fmt: skip
    assert Image.open(frames).n_frames == 6  # there and back
    steps = tmp_path / "walk"
    assert client("--target", server.target, "interpolate", "--steps", "4",
                  "--out", str(steps)).exit_code == 0  # fmt: skip
    assert sorted(path.name for path in steps.iterdir()) == [f"1-2-0000{i}.png" for i in range(4)]
    np.testing.assert_array_equal(np.asarray(Image.open(steps / "1-2-00003.png")), walk[3])

    before = sorted(path.name for path in tmp_path.iterdir())
    for command in (["generate"], ["interpolate"]):
        refused = client("--target", server.target, *command, "--out", str(tmp_path / "g.tiff"))
        assert refused.exit_code == 2
        assert refused.output.strip() == f"error: --out {tmp_path}/g.tiff: .tiff is not a picture " \
            f"format; {RULE}"  # fmt: skip
    assert sorted(path.name for path in tmp_path.iterdir()) == before  # no .partial left either


def test_a_grid_too_large_for_its_format_is_refused_before_generating(
    server: ServerThread, tmp_path: Path
) -> None:
    out = tmp_path / "tall.webp"
    result = client("--target", server.target, "generate", "-n", "300", "--columns", "1",
                    "--out", str(out))  # fmt: skip
    assert result.exit_code == 2
    assert result.output.strip() == (
        f"error: --out {out}: a grid of 300 images of 64x64 is 68x19802 pixels, and WEBP holds "
        "at most 16383 a side: write .png, or a directory"
    )
    long_walk = client("--target", server.target, "interpolate", "--steps", "256",
                       "--out", str(out))  # fmt: skip
    assert long_walk.exit_code == 2 and "WEBP holds at most 16383" in long_walk.output
    assert list(tmp_path.iterdir()) == []


def test_a_grid_is_never_wider_than_its_images(server: ServerThread, tmp_path: Path) -> None:
    out = tmp_path / "row.png"
    result = client("--target", server.target, "generate", "-n", "3", "--columns", "9" * 30,
                    "--out", str(out))  # fmt: skip
    assert result.exit_code == 0, result.output
    assert Image.open(out).size == (3 * CELL + 2, CELL + 2)


def test_a_failed_run_leaves_what_was_there(server: ServerThread, tmp_path: Path) -> None:
    grid = tmp_path / "grid.png"
    assert (
        client("--target", server.target, "generate", "-n", "4", "--out", str(grid)).exit_code == 0
    )
    kept = grid.read_bytes()
    folder = tmp_path / "pngs"
    folder.mkdir()
    (folder / "mine.txt").write_text("kept\n")
    for target, extra in ((CLOSED, []), (server.target, ["-n", "5000"])):  # refused by the server
        for out in (grid, folder):
            result = client("--target", target, "generate", *extra, "--out", str(out))
            assert result.exit_code == 1 and result.output.startswith(f"error: {target}: ")
    assert grid.read_bytes() == kept
    assert sorted(path.name for path in tmp_path.iterdir()) == ["grid.png", "pngs"]
    assert [path.name for path in folder.iterdir()] == ["mine.txt"]
    again = client("--target", server.target, "generate", "-n", "2", "--out", str(grid))
    assert again.exit_code == 0 and grid.read_bytes() != kept  # replaced whole, nothing beside
    assert sorted(path.name for path in tmp_path.iterdir()) == ["grid.png", "pngs"]


def test_targets_grpc_would_misread_are_usage_errors() -> None:
    for target, reason in (
        ("127.0.0.1:99999", "port 99999 is not within 1-65535"),  # gRPC would dial 34463
        ("127.0.0.1:", "no port after the ':'"),
        ("", "expected host:port, or dns:///name:port"),
        ("local host:50051", "expected host:port, or dns:///name:port"),
        ("dns:///", "names no host, expected host:port, or dns:///name:port"),
        ("ipv4:127.0.0.1:1,127.0.0.1:70000", "port 70000 is not within 1-65535"),
    ):
        result = client("--target", target, "health")
        assert result.exit_code == 2, (target, result.output)
        assert result.output == f"error: --target {target!r}: {reason}\n"


def test_token_files_that_hold_no_token_get_one_line(tmp_path: Path) -> None:
    files = {
        "empty": (b"\n", "is empty"),
        "two-lines": (b"first\nsecond\n", "holds more than one line"),
        "binary": (bytes(range(256)), "holds characters other than ASCII, which a token cannot"),
        "control": (b"to\x07ken\n", "holds control characters"),
        "huge": (b"x" * (64 * 2**10 + 1), "is larger than 65536 bytes"),
    }
    for name, (content, reason) in files.items():
        (tmp_path / name).write_bytes(content)
        result = client("--target", CLOSED, "--token-file", str(tmp_path / name), "health")
        assert result.exit_code == 1
        assert result.output == f"error: --token-file {tmp_path / name} {reason}\n"


def test_a_fifo_as_token_file_is_refused_not_read(tmp_path: Path) -> None:
    """A real process: reading a FIFO that no one writes would block it for ever."""
    fifo = tmp_path / "token"
    os.mkfifo(fifo)
    result = subprocess.run(
        [sys.executable, "-m", "dcgan.clients.cli", "--target", CLOSED, "--token-file", str(fifo),
         "health"], capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 1
    assert result.stderr == f"error: --token-file {fifo} is not a regular file\n"


def test_tls_files_are_checked_before_grpc_sees_them(
    fresh_server: Any, pki: Path, tmp_path: Path
) -> None:
    """Real processes: gRPC's C core aborts one (exit 134) given a certificate without its key."""
    running = fresh_server(
        tls_cert=pki / "server.crt", tls_key=pki / "server.key", tls_client_ca=pki / "ca.crt"
    )
    ca, cert, key = (str(pki / name) for name in ("ca.crt", "client.crt", "client.key"))

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "dcgan.clients.cli", "--target", running.target,
                   "--timeout-s", "10", *args, "health"]  # fmt: skip
        return subprocess.run(command, capture_output=True, text=True, timeout=60)

    half = run("--tls-ca", ca, "--tls-cert", cert)
    assert (half.returncode, half.stderr) == (
        2, "error: --tls-cert needs --tls-key, the certificate's private key\n"
    )  # fmt: skip
    key_only = run("--tls-ca", ca, "--tls-key", key)
    assert (key_only.returncode, key_only.stderr) == (
        2, "error: --tls-key needs --tls-cert, the certificate it belongs to\n"
    )  # fmt: skip
    mutual = run("--tls-ca", ca, "--tls-cert", cert, "--tls-key", key)
    assert (mutual.returncode, mutual.stdout) == (0, "SERVING\n"), mutual.stderr

    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    der = tmp_path / "ca.der"
    der.write_bytes(bytes(range(256)))
    broken = tmp_path / "broken.crt"
    broken.write_text("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
    encrypted = tmp_path / "encrypted.key"
    private_key = serialization.load_pem_private_key((pki / "client.key").read_bytes(), None)
    encrypted.write_bytes(private_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"secret"),
    ))  # fmt: skip
    refusals = [
        (["--tls-ca", str(garbage)], f"--tls-ca {garbage} holds no PEM certificate"),
        (["--tls-ca", key], f"--tls-ca {key} holds no PEM certificate"),
        (["--tls-ca", str(der)], f"--tls-ca {der} is not a PEM certificate (binary data"),
        (["--tls-ca", str(broken)], f"--tls-ca {broken}: a certificate in it cannot be read"),
        (["--tls-ca", ca, "--tls-cert", key, "--tls-key", key],
         f"--tls-cert {key} holds no PEM certificate"),
        (["--tls-ca", ca, "--tls-cert", cert, "--tls-key", cert],
         f"--tls-key {cert} holds no PEM private key"),
        (["--tls-ca", ca, "--tls-cert", cert, "--tls-key", str(pki / "server.key")],
         f"--tls-key {pki / 'server.key'} is not the key of --tls-cert {cert}"),
        (["--tls-ca", ca, "--tls-cert", cert, "--tls-key", str(encrypted)],
         f"--tls-key {encrypted} is encrypted: gRPC takes unencrypted PEM keys"),
    ]  # fmt: skip
    for args, reason in refusals:
        result = client("--target", running.target, *args, "health")
        assert result.exit_code == 1, (args, result.output)
        assert result.output.startswith(f"error: {reason}"), result.output
        assert len(result.output.splitlines()) == 1


def test_version_and_the_console_script() -> None:
    result = client("--version")
    assert (result.exit_code, result.output) == (
        0,
        f"dcgan-client {metadata.version('dcgan-client')}\n",
    )
    scripts = {
        script.name: script.value for script in metadata.distribution("dcgan-client").entry_points
    }
    assert scripts == {
        "dcgan-client": "dcgan.clients.cli:run",
        "dcgan-bench": "dcgan.clients.bench:run",
    }
    installed = shutil.which("dcgan-client", path=str(Path(sys.executable).parent))
    assert installed is not None
    process = subprocess.run([installed, "--version"], capture_output=True, text=True, timeout=60)
    assert (process.returncode, process.stdout) == (0, result.output)


def test_fuzz_every_option_of_every_subcommand(server: ServerThread, tmp_path: Path) -> None:
    connection = {"--target": [server.target], "--timeout-s": ["10"]}
    surfaces = [
        Surface(
            cli.app,
            {},
            subcommand="info",
            group=connection,
            good={"--model": {""}},  # the server's only model
            fuzz_group=True,
        ),
        Surface(
            cli.app,
            {"-n": ["2"], "--out": ["out.png"]},
            subcommand="generate",
            group=connection,
            good={"--out": {"{dir}"}},
            extremes={"--count"},  # in range, more than the server streams: refused by it
        ),
        Surface(
            cli.app,
            {"--steps": ["3"], "--out": ["out.png"]},
            subcommand="interpolate",
            group=connection,
            good={"--out": {"{dir}"}},
            extremes={"--steps"},
        ),
    ]
    fuzzed = set().union(
        *(fuzz(surface, tmp_path / str(surface.subcommand)) for surface in surfaces)
    )
    assert fuzzed == {"--target", "--timeout-s", "--token-file", "--tls-ca", "--tls-cert",
                      "--tls-key", "--count", "--seed", "--out", "--columns", "--start", "--end",
                      "--steps", "--method", "--model", "--model-version"}  # fmt: skip
