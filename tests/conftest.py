"""Fixtures shared by every part's tests: the real MNIST test set and small copies of it, a real
export, servers of it on 127.0.0.1, and test certificates."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.certificates import make_pki
from tests.support.data import copy_mnist_subset, mnist_dir
from tests.support.exports import make_export
from tests.support.servers import ServerThread, server_config


@pytest.fixture(scope="session")
def mnist_png() -> Path:
    """The 10,000 MNIST test PNGs as an ImageFolder (class subfolders 0..9)."""
    return mnist_dir() / "png"


@pytest.fixture
def mnist_subset(mnist_png: Path, tmp_path: Path) -> Path:
    """256 real MNIST PNGs in class folders: enough for a few quick training steps."""
    return copy_mnist_subset(mnist_png, tmp_path / "mnist256", 256)


@pytest.fixture(scope="session")
def export_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """make_export's export (64x64 RGB, nz 100, ngf 16), made once."""
    return make_export(tmp_path_factory.mktemp("export"))


@pytest.fixture(scope="module")
def server(export_dir: Path) -> Iterator[ServerThread]:
    """One server shared by a module's tests that leave it as they found it."""
    running = ServerThread(server_config(export_dir))
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
def fresh_server(export_dir: Path) -> Iterator[Callable[..., ServerThread]]:
    """Start servers with settings of the test's own; all are stopped at the end."""
    started: list[ServerThread] = []

    def start(**changes: Any) -> ServerThread:
        running = ServerThread(server_config(export_dir, **changes))
        started.append(running)
        return running

    try:
        yield start
    finally:
        for running in started:
            running.stop()


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CA, and a server and a client certificate it signed (see make_pki)."""
    return make_pki(tmp_path_factory.mktemp("pki"))
