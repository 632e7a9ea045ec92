"""A seeded fuzz of dcgan-serve's start-up: every start-up option given hostile values, one or
two at a time, in real processes.

Each value is one that must be refused (a file that is garbage, empty, binary, a folder or
missing; a host that does not resolve or is not this machine's; a port taken, out of range or
not a number; a number out of range, not finite or not a number; an export with some damage).
Whichever the server meets first, the contract holds: exit 1 or 2, never a traceback nor
"error: unexpected", a last line that is the error (or click's usage box), nothing else on stderr
but the server's own log lines, and no port file. A run still going after a minute started with
bad input: that fails too.
"""

from __future__ import annotations

import os
import random
import re
import socket
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.support.exports import damaged_export
from tests.support.servers import free_port

RUNS = 40
LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d [\d:,]+ (DEBUG|INFO|WARNING) dcgan\.")
DAMAGES = [
    "nz", "shape", "range", "nz not a number", "no range", "no model", "not an export",
    "garbage graph", "graph without pixels", "graph missing", "manifest garbage",
    "manifest a list", "manifest a folder", "a file, not a folder",
]  # fmt: skip
COUNTS = ["0", "-5", str(2**32), "1e3", "nan", "x"]
SECONDS = ["-1", "nan", "inf", "1e12", "x", ""]
FILES = ["{garbage}", "{binary}", "{empty}", "{folder}", "{missing}", "/proc/dcgan-fuzz/x"]
HOSTS = ["bogus.invalid", "10.255.255.1", "300.1.2.3", "", "::g", "a b", "127.0.0.1:80"]
PORTS = ["http", "70000", "9-1", "-1", "1-2-3", "", "{busy}", "{busy}-{busy}"]
CHOICES: dict[str, list[list[str]]] = {
    "--model-dir": [[f"{{damage:{d}}}"] for d in DAMAGES] + [["{missing}"], ["{folder}"]],
    "--device": [["tpu"], [""]],
    "--instances": [[str(len(os.sched_getaffinity(0)) + 1)], ["-1"], ["1.5"], ["x"]],
    "--intra-op-threads": [[str(10**6)], ["-1"], ["x"]],
    "--max-batch-size": [[v] for v in COUNTS],
    "--max-queue-size": [[v] for v in COUNTS],
    "--max-latents-per-request": [[v] for v in COUNTS],
    "--max-stream-latents": [[v] for v in COUNTS],
    "--max-queue-delay-us": [["-1"], ["nan"], ["x"]],
    "--max-response-bytes": [["10"], ["-1"], ["x"]],
    "--max-message-bytes": [["10"], [str(2**31)], ["x"]],
    "--max-concurrent-rpcs": [["-1"], [str(2**31)], ["x"]],
    "--host": [[v] for v in HOSTS],
    "--port": [[v] for v in PORTS],
    "--port-file": [["{folder}"], ["{missing}/port"], ["/proc/dcgan-fuzz/port"]],
    "--metrics-port": [["{busy}"], ["{port}"], ["70000"], ["-1"], ["x"]],
    "--grace-s": [[v] for v in SECONDS],
    "--max-connection-age-s": [[v] for v in SECONDS],
    "--tls-cert": [[v, "--tls-key", "{pki}/server.key"] for v in FILES] + [["{pki}/server.crt"]],
    "--tls-key": [["{pki}/client.key", "--tls-cert", "{pki}/server.crt"]]
    + [[v, "--tls-cert", "{pki}/server.crt"] for v in FILES],
    "--tls-client-ca": [[v, "--tls-cert", "{pki}/server.crt", "--tls-key", "{pki}/server.key"]
                        for v in FILES] + [["{pki}/ca.crt"]],
    "--token-file": [[v] for v in FILES] + [["{garbage}"]],
    "--log-level": [["LOUD"], [""]],
}  # fmt: skip


# Options the server itself checks are drawn more often than those click's own types refuse
# (whichever comes first is the one a run reports).
CHECKED_BY_THE_SERVER = {
    "--model-dir", "--host", "--port", "--port-file", "--metrics-port", "--tls-cert", "--tls-key",
    "--tls-client-ca", "--token-file", "--instances", "--intra-op-threads",
}  # fmt: skip


def draw(rng: random.Random) -> list[str]:
    """One or two options, each with one of its bad values (and the options it needs)."""
    options = sorted(CHOICES)
    weights = [6 if option in CHECKED_BY_THE_SERVER else 1 for option in options]
    arguments: list[str] = []
    for option in set(rng.choices(options, weights, k=rng.randint(1, 2))):
        arguments += [option, *rng.choice(CHOICES[option])]
    return arguments


def filled(template: list[str], places: dict[str, str]) -> list[str]:
    return [re.sub(r"\{([^}]+)\}", lambda found: places[found[1]], arg) for arg in template]


def with_defaults(arguments: list[str], directory: Path) -> list[str]:
    """The options a run does not fuzz: the good export, loopback, a free port, a port file."""
    defaults = {"--model-dir": "{export}", "--host": "127.0.0.1", "--port": "{port}",
                "--metrics-port": "0", "--port-file": str(directory / "port")}  # fmt: skip
    for option, value in defaults.items():
        if option not in arguments:
            arguments = [*arguments, option, value]
    return arguments


def serve(arguments: list[str]) -> tuple[int | None, str]:
    clean = {key: value for key, value in os.environ.items() if not key.startswith("DCGAN_")}
    process = subprocess.Popen(
        [sys.executable, "-m", "dcgan.service.cli", *arguments],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=clean,
    )  # fmt: skip
    try:
        _, stderr = process.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()
        return None, process.communicate()[1]
    return process.returncode, stderr


def test_hostile_start_up_options_get_one_line_and_the_right_code(
    export_dir: Path, pki: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "folder").mkdir()
    (tmp_path / "garbage").write_text("two\nlines\n")
    (tmp_path / "empty").write_bytes(b"")
    (tmp_path / "binary").write_bytes(bytes(range(256)))
    places = {
        "export": str(export_dir), "pki": str(pki), "missing": str(tmp_path / "missing"),
        **{name: str(tmp_path / name) for name in ("folder", "garbage", "empty", "binary")},
    }  # fmt: skip
    rng = random.Random(20261202)
    runs = [draw(rng) for _ in range(RUNS)]
    for index, damage in enumerate(DAMAGES):
        places[f"damage:{damage}"] = str(damaged_export(export_dir, tmp_path / f"x{index}", damage))
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        places["busy"] = str(busy.getsockname()[1])
        jobs = []
        for index, template in enumerate(runs):
            directory = tmp_path / f"run-{index}"
            directory.mkdir()
            arguments = with_defaults(template, directory)
            jobs.append((filled(arguments, {**places, "port": str(free_port())}), directory))
        with ThreadPoolExecutor(4) as pool:
            outcomes = list(pool.map(serve, [arguments for arguments, _ in jobs]))
    broken = []
    codes: dict[int | None, int] = {}
    for (arguments, directory), (code, stderr) in zip(jobs, outcomes, strict=True):
        codes[code] = codes.get(code, 0) + 1
        lines = stderr.strip().splitlines()
        problems = []
        if code not in (1, 2):
            problems.append(f"exit {code}")
        if "Traceback" in stderr or "error: unexpected" in stderr:
            problems.append("a traceback")
        if "Invalid value for" not in stderr and "No such option" not in stderr:  # click's box
            if not lines or not lines[-1].startswith("error: "):
                problems.append("no error line last")
            if [line for line in lines[:-1] if not LOG_LINE.match(line)]:
                problems.append("lines other than the error and the log")
        if (directory / "port").exists():
            problems.append("a port file written")
        if problems:
            broken.append(f"{' '.join(arguments)}: {'; '.join(problems)}\n{stderr[-600:]}")
    assert not broken, f"{len(broken)} of {RUNS} runs broke the contract:\n" + "\n".join(broken)
    with capsys.disabled():
        print(f"\nstart-up fuzz: {RUNS} runs of 1-2 hostile options, exit codes {codes}")
