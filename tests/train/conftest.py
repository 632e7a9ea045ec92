"""Fixtures of the training tests: a digits classifier made once, and a private score cache."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.training import digits_classifier


@pytest.fixture(autouse=True)
def eval_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """dcgan-eval's cache of real features, per test session rather than in ~/.cache."""
    cache = tmp_path_factory.getbasetemp() / "eval-cache"
    monkeypatch.setenv("DCGAN_EVAL_CACHE", str(cache))
    return cache


@pytest.fixture(scope="session")
def classifier(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return digits_classifier(tmp_path_factory.mktemp("classifier") / "digits.pt")
