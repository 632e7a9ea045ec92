"""Session fixtures of the evaluation tests: a digits classifier, trained and untrained runs,
an export, a running server, all real and made once."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from dcgan.eval.classifier import ClassifierReport, train_classifier
from dcgan.train.data import DataSpec
from tests.support.exports import export_run
from tests.support.servers import ServerThread, server_config
from tests.support.training import train_run

TRAINED_STEPS = "300"


@pytest.fixture(scope="session")
def classifier(mnist_png: Path, tmp_path_factory: pytest.TempPathFactory) -> ClassifierReport:
    """A digits classifier on the 10,000 MNIST test images; 2 epochs: a feature network, quickly."""
    out = tmp_path_factory.mktemp("classifier") / "new" / "digits.pt"  # a folder it makes
    return train_classifier(DataSpec("folder", mnist_png, 32, 1), out, epochs=2)


@pytest.fixture(scope="session")
def trained_run(mnist_png: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("trained") / "run"
    return train_run(mnist_png, out, "--batch-size", "64", "--max-steps", TRAINED_STEPS)


@pytest.fixture(scope="session")
def untrained_run(mnist_png: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One step from the paper's initialisation: a generator that has learned nothing yet."""
    out = tmp_path_factory.mktemp("untrained") / "run"
    return train_run(mnist_png, out, "--batch-size", "64", "--max-steps", "1")


@pytest.fixture(scope="session")
def trained_export(trained_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export_run(trained_run, tmp_path_factory.mktemp("export") / "trained")


@pytest.fixture(scope="session")
def server(trained_export: Path) -> Iterator[ServerThread]:
    running = ServerThread(server_config(trained_export))
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
def cache_dir(tmp_path: Path) -> Path:
    return tmp_path / "cache"
