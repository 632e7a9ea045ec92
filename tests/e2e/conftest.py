"""The deployment under test, built up in the order a user does it: train, export, serve, scale.

The images come from scripts/docker-build.sh. One compose project (E2E_PROJECT, default
dcgan-e2e) lives for the session, on fixed loopback ports (E2E_PORT and E2E_METRICS_PORT,
default 56051 and 56090; scaling takes the next one of each), and is taken down with its volumes
however the tests end. A failing test reports compose ps, the logs and the replicas' health.
"""

from __future__ import annotations

import os
from collections.abc import Generator, Iterator

import pytest

from tests.support.compose import (
    BUILD_HINT,
    MAX_BATCH_SIZE,
    METRICS_PORT,
    PORT,
    SERVE_IMAGE,
    TRAIN_ARGS,
    TRAIN_IMAGE,
    Compose,
    Replica,
    ports_taken,
    run,
    wait_healthy,
)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """A failing test's report carries what compose saw (ps, logs, health)."""
    report = yield
    project = getattr(item, "funcargs", {}).get("compose")
    if report.failed and isinstance(project, Compose):
        report.sections.append(("compose diagnostics", project.diagnostics()))
    return report


@pytest.fixture(scope="session")
def images() -> None:
    for image in (SERVE_IMAGE, TRAIN_IMAGE):
        try:
            run(["docker", "image", "inspect", "--format", "{{.Id}}", image])
        except AssertionError:
            pytest.fail(f"no image {image}: {BUILD_HINT}", pytrace=False)


@pytest.fixture(scope="session")
def compose(images: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Compose]:
    """A fresh compose project (an earlier run's volumes would make dcgan-train refuse),
    taken down with its volumes in the end, whatever happened."""
    taken = ports_taken([PORT, PORT + 1, METRICS_PORT, METRICS_PORT + 1])
    if taken:
        pytest.fail(f"ports the e2e needs are taken (set E2E_PORT, E2E_METRICS_PORT): {taken}")
    project = Compose(
        project=os.environ.get("E2E_PROJECT", "dcgan-e2e"),
        workdir=tmp_path_factory.mktemp("compose"),
        variables={
            "DCGAN_SERVE_IMAGE": SERVE_IMAGE,
            "DCGAN_TRAIN_IMAGE": TRAIN_IMAGE,
            "E2E_PORT": str(PORT),
            "E2E_SERVE_PORTS": f"{PORT}-{PORT}",
            "E2E_METRICS_PORT": str(METRICS_PORT),
            "DCGAN_MAX_BATCH_SIZE": str(MAX_BATCH_SIZE),
        },
    )
    project.configure()
    project.down()
    try:
        yield project
    finally:
        project.down()


@pytest.fixture(scope="session")
def trained(compose: Compose) -> str:
    """The compose `train` job, briefly; its output."""
    return compose("run", "--rm", "-T", "train", *TRAIN_ARGS, timeout=540)


@pytest.fixture(scope="session")
def exported(compose: Compose, trained: str) -> str:
    """The compose `export` job into the `models` volume; its output."""
    return compose("run", "--rm", "-T", "export", timeout=300)


@pytest.fixture(scope="session")
def serving(compose: Compose, exported: str) -> Replica:
    """`serve` up, one replica, healthy."""
    compose.configure(E2E_SERVE_PORTS=f"{PORT}-{PORT}")
    compose("up", "-d", "--no-build", "serve")
    containers = compose.container_ids("serve")
    assert len(containers) == 1, f"expected one serve container, got {containers}"
    wait_healthy(containers)
    return Replica(containers[0], PORT, METRICS_PORT)


@pytest.fixture(scope="session")
def scaled(compose: Compose, exported: str) -> list[Replica]:
    """`--scale serve=2` on a range of two ports: each replica binds the first free one (and
    its metrics port at the same offset) and records it in its port file. The environment
    changes, so compose recreates a replica that ran before with the range, too."""
    compose.configure(E2E_SERVE_PORTS=f"{PORT}-{PORT + 1}")
    compose("up", "-d", "--no-build", "--scale", "serve=2", "serve")
    containers = compose.container_ids("serve")
    assert len(containers) == 2, f"expected two serve replicas, got {containers}"
    wait_healthy(containers)
    replicas = []
    for container in containers:
        port = int(run(["docker", "exec", container, "cat", "/tmp/dcgan-serve.port"]))
        replicas.append(Replica(container, port, METRICS_PORT + port - PORT))
    return sorted(replicas, key=lambda replica: replica.port)
