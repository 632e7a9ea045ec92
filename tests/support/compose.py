"""Helpers of the end-to-end tests: docker and compose through subprocess, on loopback only.

The tests run docker-compose.yml with docker/compose.e2e.yml, which puts every container on the
host network (CI's dockerd has no bridge) with its servers on 127.0.0.1. docker-compose 1.29
refuses published `ports` on the host network and an override cannot remove a list, so the two
files are merged with `compose config`, `ports` dropped where the network is the host's, and
compose runs on the result (`Compose.configure`, again whenever the variables change).
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import socket
import subprocess
import time
import tomllib
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parents[2]
SERVE_IMAGE = os.environ.get("DCGAN_SERVE_IMAGE", "dcgan-serve:cpu")
TRAIN_IMAGE = os.environ.get("DCGAN_TRAIN_IMAGE", "dcgan-train:latest")
BUILD_HINT = "build the images first: bash scripts/docker-build.sh"
HEALTH_TIMEOUT_S = 120.0
# Fixed loopback ports, checked free first; scaling takes the next one of each too.
PORT = int(os.environ.get("E2E_PORT", "56051"))
METRICS_PORT = int(os.environ.get("E2E_METRICS_PORT", "56090"))
# The model the jobs make: small enough to train in seconds on two CPU cores.
TRAIN_ARGS = ["--dataset", "digits", "--image-size", "32", "--ngf", "16", "--ndf", "16",
              "--max-steps", "20", "--device", "cpu"]  # fmt: skip
TRAIN_STEPS = 20  # the --max-steps above
# A setting passed through to the servers (docker-compose.yml); the others keep their defaults.
MAX_BATCH_SIZE = 32


@dataclass(frozen=True)
class Replica:
    """One serve container and the loopback ports it bound."""

    container: str
    port: int
    metrics_port: int

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"


def run(args: list[str], *, timeout: float = 120, env: dict[str, str] | None = None) -> str:
    """`args`' standard output; a failure names the command and ends with its output's tail."""
    try:
        done = subprocess.run(
            args, capture_output=True, text=True, timeout=timeout, env=env, check=False
        )
    except subprocess.TimeoutExpired:
        raise AssertionError(f"`{shlex.join(args)}` ran past {timeout:.0f} s") from None
    if done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).splitlines()[-40:])
        raise AssertionError(f"`{shlex.join(args)}` exited {done.returncode}:\n{tail}")
    return done.stdout


def compose_command() -> list[str]:
    """$DOCKER_COMPOSE, else docker-compose (1.29, Debian's), else the `docker compose` plugin."""
    if os.environ.get("DOCKER_COMPOSE"):
        return shlex.split(os.environ["DOCKER_COMPOSE"])
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    return ["docker", "compose"]


def yaml_to_json(text: str, command: list[str]) -> Any:
    """docker-compose 1.29 prints its configuration as YAML only: read by the PyYAML it runs on."""
    executable = shutil.which(command[0])
    assert executable, f"{command[0]} is not on PATH"
    interpreter = Path(executable).read_bytes()[:200].split(b"\n")[0].removeprefix(b"#!").strip()
    assert interpreter, f"{executable} is no Python script: set DOCKER_COMPOSE='docker compose'"
    return json.loads(
        subprocess.run(
            [*interpreter.decode().split(), "-c", _YAML_TO_JSON],
            input=text,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )


_YAML_TO_JSON = "import json, sys, yaml; json.dump(yaml.safe_load(sys.stdin), sys.stdout)"


def clean_environ(variables: dict[str, str]) -> dict[str, str]:
    """This process' environment without DCGAN_*, E2E_* and COMPOSE_* settings, plus `variables`.

    A developer's own DCGAN_PORT or COMPOSE_FILE must not reach the deployment under test.
    """
    kept = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("DCGAN_", "E2E_", "COMPOSE_"))
    }
    return kept | variables


def compose_config(
    files: list[Path], variables: dict[str, str], env_file: Path, profiles: list[str]
) -> dict[str, Any]:
    """The configuration compose makes of `files` under `variables`, as a dict."""
    command = compose_command()
    args = [*command, "--project-directory", str(ROOT), "--env-file", str(env_file)]
    for file in files:
        args += ["-f", str(file)]
    for profile in profiles:
        args += ["--profile", profile]
    env = clean_environ(variables)
    if command[:2] == ["docker", "compose"]:
        config: dict[str, Any] = json.loads(run([*args, "config", "--format", "json"], env=env))
        return config
    parsed: dict[str, Any] = yaml_to_json(run([*args, "config"], env=env), command)
    return parsed


@dataclass
class Compose:
    """One compose project on the resolved e2e configuration; calling it runs compose."""

    project: str
    workdir: Path
    variables: dict[str, str]
    command: list[str] = field(default_factory=compose_command)
    env_file: Path = field(init=False)
    resolved_file: Path = field(init=False)

    def __post_init__(self) -> None:
        # An empty .env of the tests' own, so that one in the checkout does not count.
        self.env_file = self.workdir / "e2e.env"
        self.env_file.touch()
        self.resolved_file = self.workdir / "compose.resolved.json"

    def configure(self, **variables: str) -> None:
        """Set variables compose interpolates, and resolve the configuration again."""
        self.variables |= variables
        config = compose_config(
            [ROOT / "docker-compose.yml", ROOT / "docker" / "compose.e2e.yml"],
            self.variables,
            self.env_file,
            profiles=["train"],
        )
        for service in config["services"].values():
            if service.get("network_mode") == "host":
                service.pop("ports", None)
        self.resolved_file.write_text(json.dumps(config, indent=1))

    def __call__(self, *args: str, timeout: float = 300) -> str:
        if not self.resolved_file.exists():
            self.configure()
        return run(
            [
                *self.command,
                "--project-name",
                self.project,
                "--project-directory",
                str(ROOT),
                "--env-file",
                str(self.env_file),
                "-f",
                str(self.resolved_file),
                "--profile",
                "train",
                *args,
            ],
            timeout=timeout,
            env=clean_environ(self.variables | {"COMPOSE_HTTP_TIMEOUT": "300"}),
        )

    def container_ids(self, service: str) -> list[str]:
        return self("ps", "-q", service).split()

    def volume(self, name: str) -> str:
        return f"{self.project}_{name}"

    def down(self) -> None:
        self("down", "--volumes", "--remove-orphans", "--timeout", "20")

    def diagnostics(self) -> str:
        """compose ps, the services' last log lines and the serve replicas' health records."""
        parts = []
        for args in (["ps", "-a"], ["logs", "--no-color", "--timestamps", "--tail=100"]):
            try:
                parts.append(self(*args, timeout=60))
            except AssertionError as error:
                parts.append(str(error))
        try:
            for container in self.container_ids("serve"):
                state = inspect(container)["State"]
                parts.append(f"health of {container[:12]}: {json.dumps(state.get('Health'))}")
        except AssertionError as error:
            parts.append(str(error))
        return "\n".join(parts)


def inspect(container: str) -> dict[str, Any]:
    record: dict[str, Any] = json.loads(run(["docker", "inspect", container]))[0]
    return record


def wait_healthy(containers: list[str], timeout_s: float = HEALTH_TIMEOUT_S) -> None:
    """Until docker reports every container healthy. A replica may restart once or twice (the
    port race of docker/compose.e2e.yml); one that keeps failing fails the test."""
    deadline = time.monotonic() + timeout_s
    while True:
        pending = []
        for container in containers:
            record = inspect(container)
            state = record["State"]
            assert state["Status"] in ("running", "restarting", "created"), (
                f"container {container[:12]} is {state['Status']} (exit {state.get('ExitCode')})"
            )
            assert record["RestartCount"] <= 3, (
                f"container {container[:12]} restarted {record['RestartCount']} times"
            )
            if not (
                state["Status"] == "running" and state.get("Health", {}).get("Status") == "healthy"
            ):
                pending.append(container[:12])
        if not pending:
            return
        assert time.monotonic() < deadline, f"not healthy within {timeout_s:.0f} s: {pending}"
        time.sleep(1)


def process_environ(container: str) -> dict[str, str]:
    """The environment of the container's main process (dcgan-serve), as it sees it."""
    raw = run(["docker", "exec", container, "cat", "/proc/1/environ"])
    return dict(entry.split("=", 1) for entry in raw.split("\0") if "=" in entry)


def dcgan_variables(environ: dict[str, str]) -> dict[str, str]:
    return {name: value for name, value in environ.items() if name.startswith("DCGAN_")}


def volume_files(volume: str) -> set[str]:
    """The files of a named volume, listed by a throwaway container (no host paths involved)."""
    listing = run(
        ["docker", "run", "--rm", "--network", "none", "--user", "10001", "--entrypoint", "find",
         "-v", f"{volume}:/v:ro", TRAIN_IMAGE, "/v", "(", "-type", "f", "-o", "-type", "l", ")"]
    )  # fmt: skip
    return set(listing.split())


def volume_file(volume: str, path: str) -> bytes:
    """One file of a named volume, its bytes as they are."""
    done = subprocess.run(
        ["docker", "run", "--rm", "--network", "none", "--user", "10001", "--entrypoint", "cat",
         "-v", f"{volume}:/v:ro", TRAIN_IMAGE, f"/v/{path}"],
        capture_output=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, f"no {path} in volume {volume}: {done.stderr.decode()}"
    return done.stdout


def generate_calls_answered(metrics_port: int) -> int:
    """Generate calls the replica whose metrics are on `metrics_port` answered OK."""
    url = f"http://127.0.0.1:{metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    families = {family.name: family for family in text_string_to_metric_families(text)}
    assert "dcgan_requests" in families, f"no dcgan_requests counter at {url}"
    return round(
        sum(
            sample.value
            for sample in families["dcgan_requests"].samples
            if sample.name == "dcgan_requests_total"
            and sample.labels == {"method": "Generate", "code": "OK"}
        )
    )


def ports_taken(ports: list[int]) -> list[str]:
    """Why each of `ports` cannot be bound on 127.0.0.1 (as the servers bind: SO_REUSEADDR)."""
    taken = []
    for port in ports:
        try:
            socket.create_server(("127.0.0.1", port)).close()
        except OSError as error:
            taken.append(f"127.0.0.1:{port}: {error.strerror}")
    return taken


def docker_run(
    image: str, entrypoint: str, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """A throwaway container of `image` with no network; its exit status and output, unchecked."""
    options = [f"--env={name}={value}" for name, value in (env or {}).items()]
    return subprocess.run(
        ["docker", "run", "--rm", "--network", "none", *options, "--entrypoint", entrypoint,
         image, *args],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def docker_exec(container: str, *args: str) -> subprocess.CompletedProcess[str]:
    """`args` run in a running container; its exit status and output, unchecked."""
    return subprocess.run(
        ["docker", "exec", container, *args],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def workspace_uv() -> Path:
    """The uv that scripts/setup.sh installs, at the version pyproject.toml pins."""
    pinned = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["uv"]["required-version"]
    uv = ROOT / ".cache" / f"uv-{pinned.lstrip('=')}" / "bin" / "uv"
    assert uv.exists(), f"no {uv}: source scripts/setup.sh first"
    return uv


def uv_export(packages: list[str], extras: list[str]) -> list[str]:
    """`uv export` of uv.lock for `packages`, as the images run it: one requirement a line, the
    workspace members as their folders (./protos ...)."""
    args = [str(workspace_uv()), "export", "--project", str(ROOT), "--frozen", "--no-dev",
            "--no-header", "--no-annotate", "--no-hashes", "--no-editable"]  # fmt: skip
    args += [f"--package={package}" for package in packages]
    args += [f"--extra={extra}" for extra in extras]
    return run(args).splitlines()


def locked_members(packages: list[str], extras: list[str]) -> set[str]:
    """The workspace members `packages` need, by uv.lock: their project names."""
    return {
        tomllib.loads((ROOT / line / "pyproject.toml").read_text())["project"]["name"]
        for line in uv_export(packages, extras)
        if line.startswith("./")
    }


def locked_versions(
    packages: list[str], extras: list[str], environment: dict[str, str]
) -> dict[str, str]:
    """What uv.lock pins for `packages` (their third-party dependencies), name -> version, for
    the interpreter and platform `environment` describes (marker values)."""
    versions = {}
    for line in uv_export(packages, extras):
        if line.startswith("./"):
            continue
        requirement = Requirement(line)
        if requirement.marker is None or requirement.marker.evaluate(environment):
            (specifier,) = requirement.specifier
            versions[canonicalize_name(requirement.name)] = specifier.version
    return versions


def installed_versions(image: str) -> tuple[dict[str, str], dict[str, str]]:
    """The distributions installed in `image`, name -> version, and its marker environment."""
    done = docker_run(image, "python", "-c", _INSTALLED)
    assert done.returncode == 0, f"cannot list the packages of {image}: {done.stderr}"
    first, *lines = done.stdout.splitlines()
    python_full_version, machine = first.split()
    environment = {
        "python_full_version": python_full_version,
        "python_version": ".".join(python_full_version.split(".")[:2]),
        "platform_machine": machine,
        "sys_platform": "linux",
    }
    installed = dict(line.split("==") for line in lines)
    return {canonicalize_name(name): version for name, version in installed.items()}, environment


_INSTALLED = (
    "import importlib.metadata as m, platform; print(platform.python_version(), platform.machine());"
    " print(*sorted(f'{d.name}=={d.version}' for d in m.distributions()), sep='\\n')"
)
