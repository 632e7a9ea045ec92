"""The images as scripts/docker-build.sh built them: what they hold, who runs, what they send.

Each check starts a throwaway container with no network at all.
"""

from __future__ import annotations

import pytest

from tests.support.compose import (
    SERVE_IMAGE,
    TRAIN_IMAGE,
    docker_run,
    installed_versions,
    locked_members,
    locked_versions,
)

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("images")]

# An onnxruntime environment and a session attempt (the bytes are no model: it fails, after
# onnxruntime has set up its environment, which is where its telemetry would start), then
# every file in the home directory, where the telemetry keeps its device id.
ORT_SESSION_THEN_HOME = (
    'python -c "$1" && find "$HOME" -mindepth 1',
    "sh",
    "import contextlib, onnxruntime as ort\n"
    "with contextlib.suppress(Exception):\n"
    "    ort.InferenceSession(b'not a model')",
)


@pytest.mark.parametrize(
    ("image", "packages", "extras"),
    [
        (SERVE_IMAGE, ["dcgan-serve", "dcgan-client"], ["cpu"]),
        (TRAIN_IMAGE, ["dcgan-train", "dcgan-export"], []),
    ],
    ids=["serving", "training"],
)
def test_an_image_holds_exactly_what_uv_lock_pins_for_its_packages(
    image: str, packages: list[str], extras: list[str]
) -> None:
    installed, environment = installed_versions(image)
    members = locked_members(packages, extras)
    assert set(packages) <= members
    assert {name for name in installed if name.startswith("dcgan-")} == members
    third_party = {name: version for name, version in installed.items() if name not in members}
    assert third_party == locked_versions(packages, extras, environment)


def test_torch_is_absent_from_the_serving_image() -> None:
    installed, _ = installed_versions(SERVE_IMAGE)
    assert not {"torch", "torchvision", "dcgan-train", "dcgan-export"} & installed.keys()
    done = docker_run(SERVE_IMAGE, "python", "-c", "import torch")
    assert done.returncode == 1
    assert "ModuleNotFoundError: No module named 'torch'" in done.stderr


def test_the_serving_image_has_the_serving_commands_and_no_others() -> None:
    done = docker_run(SERVE_IMAGE, "ls", "/opt/venv/bin")
    commands = {name for name in done.stdout.split() if name.startswith("dcgan-")}
    assert commands == {"dcgan-serve", "dcgan-client", "dcgan-bench"}


@pytest.mark.parametrize("image", [SERVE_IMAGE, TRAIN_IMAGE], ids=["serving", "training"])
def test_an_image_runs_as_the_non_root_user_dcgan_uid_10001(image: str) -> None:
    done = docker_run(image, "id")
    assert done.stdout.split()[:2] == ["uid=10001(dcgan)", "gid=10001(dcgan)"]


@pytest.mark.parametrize("image", [SERVE_IMAGE, TRAIN_IMAGE], ids=["serving", "training"])
def test_onnxruntime_telemetry_is_off_in_an_image(image: str) -> None:
    done = docker_run(image, "sh", "-c", *ORT_SESSION_THEN_HOME)
    assert done.returncode == 0, done.stderr
    assert not [path for path in done.stdout.split() if "Microsoft" in path]


def test_the_telemetry_check_sees_a_device_id_when_telemetry_is_on() -> None:
    """The probe above can fail: with ORT_DISABLE_TELEMETRY=0, onnxruntime writes its id."""
    done = docker_run(
        SERVE_IMAGE, "sh", "-c", *ORT_SESSION_THEN_HOME, env={"ORT_DISABLE_TELEMETRY": "0"}
    )
    assert done.returncode == 0, done.stderr
    assert (
        "/home/dcgan/.cache/Microsoft/DeveloperTools/.onnxruntime/deviceid" in done.stdout.split()
    )
