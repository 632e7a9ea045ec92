"""docker-compose.yml's settings of the servers, as compose resolves them (no engine needed).

Compose sets only what a container needs and the code's defaults do not give; every other
DCGAN_* variable of dcgan-serve reaches the servers when the shell or the .env file sets it,
and is absent otherwise, so that the server's own default holds.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import typer

from dcgan.service.cli import app
from tests.support.compose import ROOT, compose_config

pytestmark = pytest.mark.e2e

SERVERS = ("serve", "serve-gpu")
# What compose sets itself: the `models` volume as a polled model repository, every interface,
# and for the GPU flavour its device (named by DCGAN_GPU_DEVICE).
OWN = {"DCGAN_MODEL_REPOSITORY": "/models", "DCGAN_MODEL_CONTROL": "poll", "DCGAN_HOST": "0.0.0.0"}
GPU_OWN = OWN | {"DCGAN_DEVICE": "cuda"}
# The settings README's "Deployment with Docker" names.
README_KNOBS = {
    "DCGAN_PORT",
    "DCGAN_METRICS_PORT",
    "DCGAN_DEVICE",
    "DCGAN_MAX_BATCH_SIZE",
    "DCGAN_MAX_QUEUE_DELAY_US",
    "DCGAN_MAX_QUEUE_SIZE",
    "DCGAN_GRACE_S",
    "DCGAN_LOG_LEVEL",
}
# Variables naming files inside the container, and the bearer token: a host path or a secret in
# the shell must not reach the servers (docker-compose.yml says why).
NOT_PASSED = {
    "DCGAN_MODEL_DIR",
    "DCGAN_MODEL_REPOSITORY",
    "DCGAN_TLS_CERT",
    "DCGAN_TLS_KEY",
    "DCGAN_TLS_CLIENT_CA",
    "DCGAN_TOKEN_FILE",
    "DCGAN_TOKEN",
    "DCGAN_PORT_FILE",
}


def serve_variables() -> list[str]:
    """Every environment variable dcgan-serve reads: each option's own, or the one its command's
    prefix gives it (click's rule: DCGAN_ and the option's name in capitals, unless the option
    opts out, as --version does)."""
    command = typer.main.get_command(app)
    prefix = command.context_settings["auto_envvar_prefix"]
    names = []
    for param in command.params:
        if isinstance(param.envvar, str):
            names.append(param.envvar)
        elif param.name and getattr(param, "allow_from_autoenv", False):
            names.append(f"{prefix}_{param.name.upper()}")
    return names


def servers_environment(
    tmp_path: Path, variables: dict[str, str], env_file_text: str = ""
) -> dict[str, dict[str, Any]]:
    env_file = tmp_path / "test.env"
    env_file.write_text(env_file_text)
    config = compose_config([ROOT / "docker-compose.yml"], variables, env_file, profiles=["gpu"])
    return {name: config["services"][name].get("environment", {}) for name in SERVERS}


def set_values(environment: dict[str, Any]) -> dict[str, str]:
    """The variables given a value (docker-compose 1.29 lists the unset ones as null)."""
    return {name: value for name, value in environment.items() if value is not None}


def test_with_no_dcgan_variable_set_compose_sets_only_the_repository_and_the_host(
    tmp_path: Path,
) -> None:
    environment = servers_environment(tmp_path, {})
    assert set_values(environment["serve"]) == OWN
    assert set_values(environment["serve-gpu"]) == GPU_OWN


def test_every_dcgan_serve_variable_set_in_the_shell_reaches_both_servers(tmp_path: Path) -> None:
    # Numbers, so that DCGAN_PORT and DCGAN_METRICS_PORT still make valid port mappings.
    shell = {name: str(1000 + index) for index, name in enumerate(serve_variables())}
    environment = servers_environment(tmp_path, shell)
    passed = {name: value for name, value in shell.items() if name not in NOT_PASSED}
    assert passed.keys() >= README_KNOBS
    repository = {"DCGAN_MODEL_REPOSITORY": "/models"}
    assert set_values(environment["serve"]) == passed | repository
    assert set_values(environment["serve-gpu"]) == passed | repository | {"DCGAN_DEVICE": "cuda"}


def test_a_variable_from_the_env_file_reaches_the_servers_and_dcgan_model_names_the_export(
    tmp_path: Path,
) -> None:
    environment = servers_environment(
        tmp_path, {"DCGAN_MODEL": "run2"}, env_file_text="DCGAN_MAX_BATCH_SIZE=8\n"
    )
    for name in SERVERS:
        assert set_values(environment[name])["DCGAN_MAX_BATCH_SIZE"] == "8"
    env_file = tmp_path / "test.env"
    config = compose_config([ROOT / "docker-compose.yml"], {"DCGAN_MODEL": "run2"}, env_file,
                            profiles=["train"])  # fmt: skip
    command = config["services"]["export"]["command"]
    assert command[1:] == ["--repository", "/models", "--name", "run2"]  # its next version


def test_the_published_ports_follow_dcgan_port_and_default_to_the_servers_default(
    tmp_path: Path,
) -> None:
    env_file = tmp_path / "test.env"
    env_file.write_text("")
    default = compose_config([ROOT / "docker-compose.yml"], {}, env_file, profiles=[])
    moved = compose_config(
        [ROOT / "docker-compose.yml"],
        {"DCGAN_PORT": "6000", "DCGAN_PUBLISH_PORTS": "6000-6003"},
        env_file,
        profiles=[],
    )
    assert [port["target"] for port in default["services"]["serve"]["ports"]] == [50051, 9090]
    assert [port["target"] for port in moved["services"]["serve"]["ports"]] == [6000, 9090]
    assert str(moved["services"]["serve"]["ports"][0]["published"]) == "6000-6003"
