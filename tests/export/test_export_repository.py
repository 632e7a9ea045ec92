"""`dcgan-export --repository DIR --name NAME`: each export the model's next version, written
whole or not at all, and the options that go with it refused one clear line each."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from dcgan.contract.manifest import read_manifest, verified_artifact
from dcgan.export.cli import app
from dcgan.export.export import ExportError, export_version
from dcgan.train.model import Generator, ModelConfig

TINY = {"nz": 8, "ngf": 4, "channels": 1, "image_size": 32}
TINY_FLAGS = ["--nz=8", "--ngf=4", "--channels=1", "--image-size=32", "--onnx"]


@pytest.fixture(scope="module")
def state_dict(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A bare state_dict of a tiny generator: the export's shape options describe it."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("tiny") / "generator.pth"
    torch.save(Generator(ModelConfig(**TINY)).state_dict(), path)
    return path


def export(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.output


def test_each_export_is_the_next_version_whole_and_nothing_staged_is_left(
    state_dict: Path, tmp_path: Path
) -> None:
    repository = tmp_path / "models"
    for expected in (1, 2):
        code, output = export(
            str(state_dict), *TINY_FLAGS, "--repository", str(repository), "--name", "tiny"
        )
        assert code == 0, output
        version = repository / "tiny" / str(expected)
        assert f"to {version}" in output
        manifest = read_manifest(version)
        assert manifest.model.nz == 8 and manifest.model.image_size == 32
        for record in manifest.artifacts.values():
            verified_artifact(version, manifest, record.kind)
    assert sorted(entry.name for entry in (repository / "tiny").iterdir()) == ["1", "2"]


def test_a_version_taken_by_another_export_meanwhile_moves_it_to_the_next(
    state_dict: Path, tmp_path: Path
) -> None:
    repository = tmp_path / "models"
    (repository / "tiny" / "7").mkdir(parents=True)
    (repository / "tiny" / "7" / "manifest.json").write_text("{}")  # not empty: not replaced
    (repository / "tiny" / "notes").mkdir()  # not a version: no bearing on the next one
    shape: dict[str, int | None] = dict(TINY)
    manifest, directory = export_version(
        state_dict, repository, "tiny", ["onnx"], shape=shape, batch_sizes=(1,)
    )
    assert directory == (repository / "tiny" / "8").resolve()
    assert read_manifest(directory) == manifest
    assert (repository / "tiny" / "7" / "manifest.json").read_text() == "{}"


def test_a_file_where_the_models_folder_goes_is_refused_and_nothing_is_written(
    state_dict: Path, tmp_path: Path
) -> None:
    repository = tmp_path / "models"
    repository.mkdir()
    (repository / "tiny").write_text("a file")
    with pytest.raises(ExportError, match="exists and is not a directory"):
        export_version(state_dict, repository, "tiny", ["onnx"], shape=dict(TINY))
    assert [entry.name for entry in repository.iterdir()] == ["tiny"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--repository", "R"], "--repository needs --name"),
        (["--name", "tiny"], "--name needs --repository"),
        (["--repository", "R", "--name", "tiny", "--out", "X"], "not both"),
        (["--repository", "R", "--name", "tiny", "--force"], "always adds a new version"),
        (["--repository", "R", "--name", ".hidden"], "is no model name"),
        (["--repository", "R", "--name", "a/b"], "is no model name"),
    ],
)
def test_repository_options_that_do_not_fit_exit_2_with_one_line(
    state_dict: Path, tmp_path: Path, args: list[str], message: str
) -> None:
    args = [str(tmp_path / arg) if arg in ("R", "X") else arg for arg in args]
    code, output = export(str(state_dict), *TINY_FLAGS, *args)
    assert code == 2, output
    assert message in output
    assert "Traceback" not in output
    assert list(tmp_path.iterdir()) == []
