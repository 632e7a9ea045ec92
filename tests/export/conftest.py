"""Export fixtures: exports made once per session, small and (for slow runs) full size."""

from __future__ import annotations

import pytest

from tests.support.exports import SMALL, Exported, export_once


@pytest.fixture(scope="session")
def small_export(tmp_path_factory: pytest.TempPathFactory) -> Exported:
    """Every artifact, fp16 included, of a small pytorch/examples-layout generator."""
    return export_once(tmp_path_factory.mktemp("small"), "small", **SMALL)


@pytest.fixture(scope="session")
def full_export(tmp_path_factory: pytest.TempPathFactory) -> Exported:
    """Every artifact, fp16 included, of the default 64x64 generator (nz=100, ngf=64): ~30 s."""
    return export_once(tmp_path_factory.mktemp("full"), "full")


@pytest.fixture(params=["small", pytest.param("full", marks=pytest.mark.slow)])
def exported(request: pytest.FixtureRequest) -> Exported:
    """Each of the two exports in turn; the full-size one only in slow runs."""
    fixture: Exported = request.getfixturevalue(f"{request.param}_export")
    return fixture
