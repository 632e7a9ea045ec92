"""dcgan-sample: pictures from an export, a run directory or a checkpoint with no server. From an
export they are, byte for byte, what dcgan-client writes from a real server of that export; every
bad input gets one line and its exit code, and nothing is written."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner, Result

from dcgan.clients import cli as client_cli
from dcgan.contract.seeded import seeded_latents
from dcgan.export import sample_cli
from dcgan.train.checkpoint import load_checkpoint
from dcgan.train.model import Generator, ModelConfig
from dcgan.train.train import resolve_config, train
from tests.support.exports import Exported
from tests.support.fuzz import Surface, contents, fuzz
from tests.support.servers import ServerThread, server_config


def clean_env() -> dict[str, str | None]:
    return {name: None for name in os.environ if name.startswith("DCGAN_")}


def sample(*args: str) -> Result:
    return CliRunner(env=clean_env()).invoke(sample_cli.app, list(args))


def client(*args: str) -> Result:
    return CliRunner(env=clean_env()).invoke(client_cli.app, list(args))


@pytest.fixture(scope="module")
def served(small_export: Exported) -> Iterator[ServerThread]:
    running = ServerThread(server_config(small_export.directory))
    yield running
    running.stop()


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real run of one training step (32x32 RGB, ngf 8)."""
    run = tmp_path_factory.mktemp("run") / "run"
    settings = {"dataset": "fake", "ngf": 8, "ndf": 8, "image_size": 32, "batch_size": 8,
                "max_steps": 1, "seed": 0, "out": str(run), "workers": 0, "samples": 4}  # fmt: skip
    train(resolve_config(settings))
    return run


def eager_pixels(generator: torch.nn.Module, latents: np.ndarray) -> np.ndarray:
    """The serving graph's post-processing written out in torch: the oracle for PyTorch sources."""
    with torch.no_grad():
        image = generator(torch.from_numpy(latents))
    scaled = ((image + 1.0) * 127.5).round().clamp(0, 255).to(torch.uint8)
    return scaled.permute(0, 2, 3, 1).numpy()


def pngs(folder: Path) -> np.ndarray:
    return np.stack([np.asarray(Image.open(path)) for path in sorted(folder.glob("*.png"))])


def test_an_export_gives_the_bytes_the_server_gives(
    small_export: Exported, served: ServerThread, tmp_path: Path
) -> None:
    source = str(small_export.directory)
    cases = [
        (["-n", "64", "--seed", "1"], ["generate", "-n", "64", "--seed", "1"], "grid.png"),
        (["-n", "5", "--seed", "7", "--columns", "2"],
         ["generate", "-n", "5", "--seed", "7", "--columns", "2"], "grid.jpg"),
        (["-n", "300", "--seed", "3"], ["generate", "-n", "300", "--seed", "3"], "pngs"),
        (["--walk", "3", "9", "--steps", "7"],
         ["interpolate", "--start", "3", "--end", "9", "--steps", "7"], "walk.gif"),
        (["--walk", "3", "9", "--steps", "7", "--method", "linear"],
         ["interpolate", "--start", "3", "--end", "9", "--steps", "7", "--method", "linear"],
         "walk.webp"),
    ]  # fmt: skip
    for index, (sample_args, client_args, name) in enumerate(cases):
        mine, theirs = tmp_path / f"sample-{index}", tmp_path / f"client-{index}"
        mine.mkdir()
        theirs.mkdir()
        drawn = sample(source, *sample_args, "--out", str(mine / name))
        assert drawn.exit_code == 0, drawn.output
        served_result = client("--target", served.target, *client_args, "--out", str(theirs / name))
        assert served_result.exit_code == 0, served_result.output
        assert contents(mine) == contents(theirs), name
        assert len(contents(mine)) == (301 if name == "pngs" else 1)


def test_a_run_directory_and_its_checkpoint_run_the_pytorch_generator(
    run_dir: Path, tmp_path: Path
) -> None:
    checkpoint = run_dir / "checkpoints" / "latest.pt"
    for source, out in ((run_dir, tmp_path / "run"), (checkpoint, tmp_path / "checkpoint")):
        result = sample(str(source), "-n", "6", "--seed", "2", "--out", str(out))
        assert result.exit_code == 0, result.output
        assert result.output.strip().endswith(f"on PyTorch -> {out}")
    assert contents(tmp_path / "run") == contents(tmp_path / "checkpoint")
    state = load_checkpoint(checkpoint)
    generator = Generator(ModelConfig.from_dict(state["model_config"]))
    generator.load_state_dict(state["generator"])
    expected = eager_pixels(generator.eval(), seeded_latents(2, 6, generator.config.nz))
    np.testing.assert_array_equal(pngs(tmp_path / "run"), expected)


def test_a_bare_state_dict_takes_its_shape_and_agrees_with_its_export(
    small_export: Exported, tmp_path: Path
) -> None:
    shape = ["--nz", "16", "--ngf", "8", "--channels", "3", "--image-size", "64"]
    eager = sample(str(small_export.source), *shape, "-n", "8", "--seed", "4",
                   "--out", str(tmp_path / "eager"))  # fmt: skip
    assert eager.exit_code == 0, eager.output
    exported = sample(str(small_export.directory), "-n", "8", "--seed", "4",
                      "--out", str(tmp_path / "export"))  # fmt: skip
    assert exported.exit_code == 0, exported.output
    pixels = pngs(tmp_path / "eager")
    np.testing.assert_array_equal(
        pixels, eager_pixels(small_export.generator, seeded_latents(4, 8, 16))
    )
    difference = np.abs(pixels.astype(int) - pngs(tmp_path / "export").astype(int))
    assert difference.max() <= 1 and (difference > 0).mean() < 1e-3  # rounding ties at most


def test_bad_sources_get_one_line_and_exit_1(small_export: Exported, tmp_path: Path) -> None:
    export = small_export.directory
    (tmp_path / "empty").mkdir()
    (tmp_path / "notes.pt").write_text("not a checkpoint\n")
    damaged = tmp_path / "damaged"
    shutil.copytree(export, damaged)
    with open(damaged / "generator_serving.onnx", "ab") as handle:
        handle.write(b"\0")
    malformed = tmp_path / "malformed"
    shutil.copytree(export, malformed)
    (malformed / "manifest.json").write_text("{")
    torchscript_only = tmp_path / "torchscript-only"
    shutil.copytree(export, torchscript_only)
    manifest = json.loads((torchscript_only / "manifest.json").read_text())
    del manifest["artifacts"]["generator_serving.onnx"]
    (torchscript_only / "manifest.json").write_text(json.dumps(manifest))
    out = tmp_path / "out"
    out.mkdir()
    refusals = {
        (str(tmp_path / "missing"),): f"checkpoint not found: {tmp_path / 'missing'}",
        (str(tmp_path / "empty"),): f"{tmp_path / 'empty'} holds no checkpoint (looked for "
        f"{tmp_path / 'empty' / 'checkpoints' / 'latest.pt'}); nor is it an export directory "
        "(no manifest.json)",
        (str(tmp_path / "notes.pt"),): f"{tmp_path / 'notes.pt'} is not a PyTorch file",
        (str(damaged),): f"{damaged / 'generator_serving.onnx'} does not match its manifest",
        (str(malformed),): f"cannot read {malformed / 'manifest.json'}",
        (str(torchscript_only),): "the export holds no onnx-serving artifact",
        (str(export / "manifest.json"),): f"is a file of an export: give its directory, {export}",
        (str(export), "--nz", "16"): f"{export} is an export, which carries its shape: drop --nz",
    }  # fmt: skip
    for args, reason in refusals.items():
        result = sample(*args, "-n", "2", "--out", str(out / "grid.png"))
        assert result.exit_code == 1, (args, result.output)
        assert result.output.startswith("error: ") and reason in result.output, result.output
        assert len(result.output.splitlines()) == 1
    assert list(out.iterdir()) == []


def test_bad_options_are_usage_errors_before_any_work(
    small_export: Exported, tmp_path: Path
) -> None:
    source = str(small_export.directory)
    refusals = {
        ("--walk", "1", "2", "-n", "3"): "error: -n does not apply to --walk, which draws a walk",
        ("--walk", "1", "2", "--seed", "3"): "error: --seed does not apply to --walk",
        ("--walk", "1", "2", "--columns", "3"): "error: --columns does not apply to --walk",
        ("--steps", "3",): "error: --steps applies to a walk only: give --walk START END",
        ("--method", "linear"): "error: --method applies to a walk only",
        ("--out", str(tmp_path / "grid.tiff")): f"error: --out {tmp_path / 'grid.tiff'}: .tiff is "
        "not a picture format",
        ("-n", "300", "--columns", "1", "--out", str(tmp_path / "tall.webp")): "WEBP holds at most "
        "16383 a side",
        ("--seed", str(2**64)): "Invalid value for '--seed'",
        ("-n", "65537"): "Invalid value for '-n' / '--count'",
    }  # fmt: skip
    for args, message in refusals.items():
        result = sample(source, *args)
        assert result.exit_code == 2, (args, result.output)
        assert message in result.output, result.output
    empty_source = sample("", "-n", "2")
    assert empty_source.exit_code == 2 and "is empty" in empty_source.output
    assert list(tmp_path.iterdir()) == []


def test_an_unwritable_out_is_refused_before_the_source_is_read(tmp_path: Path) -> None:
    for out, reason in (
        ("/nonexistent/dir/grid.png", "the directory /nonexistent/dir does not exist"),
        ("/proc/grid.png", "cannot write in /proc"),
    ):
        result = sample(str(tmp_path / "missing"), "--out", out)  # a bad source, named second
        assert result.exit_code == 1
        assert result.output.startswith(f"error: --out {out}: {reason}"), result.output
        assert len(result.output.splitlines()) == 1


def test_the_console_script(small_export: Exported, tmp_path: Path) -> None:
    scripts = {
        script.name: script.value for script in metadata.distribution("dcgan-export").entry_points
    }
    assert scripts["dcgan-sample"] == "dcgan.export.sample_cli:run"  # through entry_point
    installed = shutil.which("dcgan-sample", path=str(Path(sys.executable).parent))
    assert installed is not None
    version = subprocess.run([installed, "--version"], capture_output=True, text=True, timeout=60)
    assert (version.returncode, version.stdout) == (
        0,
        f"dcgan-export {metadata.version('dcgan-export')}\n",
    )
    missing = subprocess.run([installed, str(tmp_path / "nothing")], capture_output=True,
                             text=True, timeout=120)  # fmt: skip
    assert missing.returncode == 1
    assert missing.stderr == f"error: checkpoint not found: {tmp_path / 'nothing'}\n"
    out = tmp_path / "grid.png"
    drawn = subprocess.run([installed, str(small_export.directory), "-n", "4", "--out", str(out)],
                           capture_output=True, text=True, timeout=120)  # fmt: skip
    assert drawn.returncode == 0, drawn.stderr
    assert Image.open(out).size == (4 * 66 + 2, 68)


def test_fuzz_every_option(small_export: Exported, tmp_path: Path) -> None:
    source = [str(small_export.directory)]
    walk = {"source": source, "--walk": ["1", "2"], "--out": ["out.png"]}
    surface = Surface(
        sample_cli.app,
        {"source": source, "-n": ["2"], "--out": ["out.png"]},
        good={"--out": {"{dir}"}},
        bases={"--walk": walk, "--steps": walk, "--method": walk},
    )
    fuzzed = fuzz(surface, tmp_path)
    assert fuzzed == {"source", "--count", "--seed", "--walk", "--steps", "--method", "--out",
                      "--columns", "--nz", "--ngf", "--channels", "--image-size"}  # fmt: skip
