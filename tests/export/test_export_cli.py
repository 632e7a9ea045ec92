"""`dcgan-export` end to end: sources, bad input, EXPORT_DIR handling, exit codes, serving."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from typer.testing import CliRunner, Result

from dcgan.contract.manifest import ONNX_SERVING, file_sha256, read_manifest, verified_artifact
from dcgan.contract.providers import ort
from dcgan.export.cli import app
from dcgan.export.parity import latents, pixel_mismatch
from dcgan.export.sources import STATE_DICT_DEFAULTS
from dcgan.train.checkpoint import load_checkpoint
from dcgan.train.runlog import score_rows
from dcgan.train.train import resolve_config, train
from tests.support.exports import SMALL, SMALL_FLAGS, examples_state_dict
from tests.support.fuzz import (
    Param,
    Places,
    copy_places,
    make_places,
    option_cases,
    params_of,
    run_case,
)
from tests.support.models import pytorch_examples_netd, pytorch_examples_netg
from tests.support.training import TINY, digits_classifier, rows, scored_run


def invoke(*args: str | Path) -> Result:
    return CliRunner().invoke(app, [str(arg) for arg in args])


def run_cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "dcgan.export", *map(str, args)]
    return subprocess.run(command, capture_output=True, text=True, timeout=300)


def assert_one_error_line(result: Result, code: int, *fragments: str) -> None:
    assert result.exit_code == code, (result.exit_code, result.stderr, result.stdout)
    assert isinstance(result.exception, SystemExit)  # no exception escaped the command
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


def staging_leftovers(out: Path) -> list[str]:
    """Temporary directories an export left beside `out`."""
    return [path.name for path in out.parent.iterdir() if path.name.startswith(f".{out.name}.")]


@pytest.fixture
def small_pth(tmp_path: Path) -> Path:
    return examples_state_dict(tmp_path / "netG_epoch_24.pth", nz=SMALL["nz"], ngf=SMALL["ngf"])


# ----------------------------------------------------------------------------- exports that work


def test_help_is_fast_and_imports_no_torch() -> None:
    code = (
        "import sys; import dcgan.export.cli; assert 'torch' not in sys.modules, 'torch imported'"
    )
    assert (
        subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=60).returncode
        == 0
    )
    result = run_cli("--help")
    assert result.returncode == 0
    for option in ("--onnx", "--torchscript", "--fp16", "--out", "--force", "--nz", "--image-size"):
        assert option in result.stdout
    lines = result.stdout.splitlines()
    assert "[default: exports/dcgan]" in result.stdout
    for field, default in STATE_DICT_DEFAULTS.items():  # the shape options show what applies
        (line,) = [line for line in lines if f"--{field.replace('_', '-')} " in line]
        assert f"[default: ({default})]" in line, line


def test_a_pytorch_examples_state_dict_exports_and_serves_through_onnxruntime(
    small_pth: Path, tmp_path: Path
) -> None:
    out = tmp_path / "export"
    result = run_cli(small_pth, "--onnx", *SMALL_FLAGS, "--out", out)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert (
        f"exported generator.onnx, generator_serving.onnx and manifest.json to {out}"
        in result.stdout
    )
    assert (
        "parity: " in result.stdout
        and "checks passed, batch sizes 1, 2, 7, 64, 256" in result.stdout
    )

    # serve it as the server does: the manifest, the sha256, then only the output it needs
    manifest = read_manifest(out)
    session = ort.InferenceSession(
        str(verified_artifact(out, manifest, ONNX_SERVING)), providers=["CPUExecutionProvider"]
    )
    z = latents(7, manifest.model.nz)
    (pixels,) = session.run([manifest.onnx.pixels_output], {manifest.onnx.input: z})
    (image,) = session.run([manifest.onnx.output], {manifest.onnx.input: z})

    # against the verbatim pytorch/examples network, not ours
    reference = pytorch_examples_netg(nz=SMALL["nz"], ngf=SMALL["ngf"], nc=SMALL["channels"])
    reference.load_state_dict(torch.load(small_pth, weights_only=True))
    with torch.no_grad():
        expected = reference.eval()(torch.from_numpy(z).view(7, -1, 1, 1)).numpy()
    np.testing.assert_allclose(image, expected, rtol=1e-3, atol=1e-5)
    assert pixels.shape == (7, 64, 64, 3) and pixels.dtype == np.uint8
    _, largest, all_ties = pixel_mismatch(pixels, expected)
    assert all_ties and largest <= 1


def test_a_trained_run_exports_from_its_latest_checkpoint(
    mnist_subset: Path, tmp_path: Path
) -> None:
    run = tmp_path / "run"
    train(resolve_config({**TINY, "data_root": str(mnist_subset), "out": str(run), "max_steps": 2}))
    checkpoint = (run / "checkpoints" / "latest.pt").resolve()
    out = tmp_path / "export"

    result = invoke(run, "--out", out, "--nz=16", "--channels=1")  # agreeing with the file is fine
    assert result.exit_code == 0, result.stderr
    manifest = read_manifest(out)
    assert (manifest.source.kind, manifest.source.step) == ("checkpoint", 2)
    assert manifest.source.file == str(checkpoint) and checkpoint.name == "step-00000002.pt"
    assert manifest.source.sha256 == file_sha256(checkpoint)
    model = manifest.model
    assert (model.nz, model.ngf, model.channels, model.image_size) == (16, 8, 1, 32)
    assert set(manifest.artifacts) == {
        "generator.onnx",
        "generator_serving.onnx",
        "generator.ts",
        "generator.pt2",
    }
    assert "from step 2" in result.stdout

    contradicting = invoke(checkpoint, "--out", tmp_path / "other", "--nz=32")
    assert_one_error_line(contradicting, 1, "has nz=16, not 32", "drop --nz")

    tampered = tmp_path / "tampered.pt"
    data = bytearray(checkpoint.read_bytes())
    data[len(data) // 2] ^= 0x01
    tampered.write_bytes(bytes(data))
    result = invoke(tampered, "--out", tmp_path / "other")
    assert result.exit_code == 1 and (
        "corrupted" in result.stderr or "not a readable" in result.stderr
    )
    assert not (tmp_path / "other").exists() and not staging_leftovers(tmp_path / "other")


def test_best_exports_the_checkpoint_of_the_runs_best_score(
    mnist_subset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DCGAN_EVAL_CACHE", str(tmp_path / "cache"))
    classifier = digits_classifier(tmp_path / "digits.pt")
    run = tmp_path / "run"
    scored_run(mnist_subset, run, classifier, epochs=2, keep=1, eval_samples=50)
    scores = score_rows(rows(run / "metrics.jsonl"))
    values = [row["eval_value"] for row in scores]
    lowest = scores[values.index(min(values))]["step"]
    best = run / "checkpoints" / "best.pt"
    out = tmp_path / "export"

    result = invoke(run, "--best", "--onnx", "--out", out)
    assert result.exit_code == 0, result.stderr
    manifest = read_manifest(out)
    assert (manifest.source.kind, manifest.source.step) == ("checkpoint", lowest)
    assert manifest.source.file == str(best.resolve())
    assert manifest.source.sha256 == file_sha256(best)
    assert load_checkpoint(best)["step"] == lowest and f"from step {lowest}" in result.stdout

    plain = tmp_path / "plain"
    train(
        resolve_config({**TINY, "data_root": str(mnist_subset), "out": str(plain), "max_steps": 1})
    )
    no_best = invoke(plain, "--best", "--out", tmp_path / "other")
    assert_one_error_line(no_best, 1, "has no best checkpoint", "dcgan-train --eval-every N")
    a_file = invoke(best, "--best", "--out", tmp_path / "other")
    assert_one_error_line(a_file, 1, "--best takes a run directory", str(best))
    assert not (tmp_path / "other").exists() and not staging_leftovers(tmp_path / "other")


@pytest.mark.parametrize(
    ("flags", "files"),
    [
        (["--onnx"], {"generator.onnx", "generator_serving.onnx"}),
        (["--torchscript"], {"generator.ts", "generator.pt2"}),
    ],
)
def test_format_flags_choose_the_artifacts(
    small_pth: Path, tmp_path: Path, flags: list[str], files: set[str]
) -> None:
    out = tmp_path / "export"
    result = invoke(small_pth, *flags, *SMALL_FLAGS, "--out", out)
    assert result.exit_code == 0, result.stderr
    assert {path.name for path in out.iterdir()} == {*files, "manifest.json"}
    assert set(read_manifest(out).artifacts) == files


def test_fp16_without_onnx_is_a_bad_option(small_pth: Path, tmp_path: Path) -> None:
    assert_one_error_line(
        invoke(small_pth, "--torchscript", "--fp16", "--out", tmp_path / "x"), 2, "needs --onnx"
    )


# ----------------------------------------------------------------------------- bad input


def discriminator(tmp_path: Path) -> Path:
    torch.save(pytorch_examples_netd(ndf=8, nc=3).state_dict(), tmp_path / "netD_epoch_24.pth")
    return tmp_path / "netD_epoch_24.pth"


def plain_pickle(tmp_path: Path) -> Path:
    (tmp_path / "weights.pkl").write_bytes(pickle.dumps({"weights": [0.1, 0.2], "epoch": 3}))
    return tmp_path / "weights.pkl"


def torch_saved_notes(tmp_path: Path) -> Path:
    torch.save({"epoch": 3, "loss": 0.5}, tmp_path / "notes.pt")
    return tmp_path / "notes.pt"


def empty_run(tmp_path: Path) -> Path:
    (tmp_path / "run").mkdir()
    return tmp_path / "run"


BAD_INPUTS: list[tuple[str, Callable[[Path], Path], list[str], list[str]]] = [
    ("missing", lambda tmp: tmp / "netG.pth", [], ["checkpoint not found", "netG.pth"]),
    ("empty run dir", empty_run, [], ["holds no checkpoint"]),
    ("discriminator", discriminator, [], ["looks like a discriminator", "netD_epoch_24.pth"]),
    ("plain pickle", plain_pickle, [], ["is not a PyTorch file"]),
    (
        "torch.save of no generator",
        torch_saved_notes,
        [],
        ["neither a dcgan-serving checkpoint nor a generator"],
    ),
    (
        "wrong width",
        lambda tmp: examples_state_dict(tmp / "netG.pth", nz=16, ngf=8),
        ["--nz=16", "--ngf=16"],
        [
            "main.0.weight has shape [16, 64, 4, 4], expected [16, 128, 4, 4]",
            "looks like --nz 16 --ngf 8",
        ],
    ),
    (
        "wrong image size",
        lambda tmp: examples_state_dict(tmp / "netG.pth", nz=16, ngf=8),
        ["--nz=16", "--ngf=8", "--image-size=32"],
        ["main.0.weight has shape [16, 64, 4, 4], expected [16, 32, 4, 4]", "--image-size 64"],
    ),
    (
        "defaults for a small file",
        lambda tmp: examples_state_dict(tmp / "netG.pth", nz=16, ngf=8),
        [],
        ["expected [100, 512, 4, 4]"],
    ),
]


@pytest.mark.parametrize(
    ("make", "flags", "fragments"),
    [case[1:] for case in BAD_INPUTS],
    ids=[case[0] for case in BAD_INPUTS],
)
def test_bad_input_gets_one_line_and_exit_1(
    tmp_path: Path, make: Callable[[Path], Path], flags: list[str], fragments: list[str]
) -> None:
    out = tmp_path / "new" / "deeper" / "export"
    result = invoke(make(tmp_path), *flags, "--out", out)
    assert_one_error_line(result, 1, *fragments)
    assert not (tmp_path / "new").exists()  # nor the parents --out would have needed


BAD_OPTIONS = [
    (["--nz=-1"], "--nz must be at least 1, not -1"),
    (["--ngf=0"], "--ngf must be at least 1, not 0"),
    (["--channels=2"], "--channels must be 1 or 3, not 2"),
    (["--image-size=48"], "--image-size must be 32, 64 or 128, not 48"),
    (["--image-size=0"], "--image-size must be 32, 64 or 128, not 0"),
]


@pytest.mark.parametrize(("flags", "message"), BAD_OPTIONS, ids=[f[0] for f, _ in BAD_OPTIONS])
def test_shape_options_no_generator_has_exit_2_before_the_source_is_read(
    tmp_path: Path, flags: list[str], message: str
) -> None:
    out = tmp_path / "new" / "export"
    result = invoke(tmp_path / "netG.pth", *flags, "--out", out)  # missing: never looked at
    assert_one_error_line(result, 2, message)
    assert not (tmp_path / "new").exists()


def test_version_and_the_console_script() -> None:
    result = invoke("--version")
    assert result.exit_code == 0
    assert result.stdout.strip() == f"dcgan-export {metadata.version('dcgan-export')}"
    scripts = metadata.distribution("dcgan-export").entry_points.select(group="console_scripts")
    assert ("dcgan-export", "dcgan.export.cli:run") in [(s.name, s.value) for s in scripts]
    module = run_cli("--version")
    assert module.returncode == 0 and module.stdout.startswith("dcgan-export ")


class RunsCode:
    """Unpickling this creates `marker`: what a malicious checkpoint would do, harmlessly."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (str(self.marker), "w"))


@pytest.mark.parametrize("saved_by", ["torch.save", "pickle.dump"])
def test_a_pickle_that_would_run_code_is_refused_and_runs_nothing(
    tmp_path: Path, saved_by: str
) -> None:
    marker = tmp_path / "code-ran"
    path = tmp_path / "netG_epoch_24.pth"
    payload = {"main.0.weight": RunsCode(marker)}
    if saved_by == "torch.save":
        torch.save(payload, path)
        torch.load(path, weights_only=False)  # the payload is live: an unsafe load runs it
    else:
        path.write_bytes(pickle.dumps(payload))
        pickle.loads(path.read_bytes())
    assert marker.exists()
    marker.unlink()

    result = run_cli(path, "--out", tmp_path / "export")
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert (
        ("refused" in result.stderr)
        if saved_by == "torch.save"
        else ("is not a PyTorch file" in result.stderr)
    )
    assert not marker.exists(), "loading the checkpoint ran code"
    assert not (tmp_path / "export").exists()


# ----------------------------------------------------------------------------- EXPORT_DIR


def test_an_export_dir_with_other_files_is_refused_unless_forced(
    small_pth: Path, tmp_path: Path
) -> None:
    out = tmp_path / "export"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    result = invoke(small_pth, "--onnx", *SMALL_FLAGS, "--out", out)
    assert_one_error_line(result, 1, "already exists and holds other files (notes.txt)", "--force")
    assert (out / "notes.txt").read_text() == "keep me"

    result = invoke(small_pth, "--onnx", *SMALL_FLAGS, "--out", out, "--force")
    assert result.exit_code == 0, result.stderr
    assert {path.name for path in out.iterdir()} == {
        "generator.onnx",
        "generator_serving.onnx",
        "manifest.json",
    }
    assert not staging_leftovers(out)


def test_force_never_deletes_a_tree_or_the_checkpoint(small_pth: Path, tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    (tree / "sub").mkdir(parents=True)
    assert_one_error_line(invoke(small_pth, "--out", tree, "--force"), 1, "holds subdirectories")
    holder = tmp_path / "holder"
    holder.mkdir()
    inside = holder / "netG.pth"
    inside.write_bytes(small_pth.read_bytes())
    assert_one_error_line(
        invoke(inside, *SMALL_FLAGS, "--out", holder, "--force"),
        1,
        "lies inside",
        "would delete it",
    )
    assert inside.exists() and (tree / "sub").is_dir()


def test_an_unwritable_export_dir_is_refused(small_pth: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "file.txt"
    blocker.write_text("a file, not a directory")
    result = invoke(small_pth, *SMALL_FLAGS, "--out", blocker / "export")
    assert_one_error_line(result, 1, "cannot write to", "is not a directory")
    assert_one_error_line(
        invoke(small_pth, *SMALL_FLAGS, "--out", blocker), 1, "exists and is not a directory"
    )


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes through directory permissions")
def test_a_read_only_parent_is_refused(small_pth: Path, tmp_path: Path) -> None:
    parent = tmp_path / "read-only"
    parent.mkdir(mode=0o555)
    try:
        assert_one_error_line(
            invoke(small_pth, *SMALL_FLAGS, "--out", parent / "export"), 1, "Permission denied"
        )
    finally:
        parent.chmod(0o755)


def test_a_failed_parity_check_exits_3_and_installs_nothing(tmp_path: Path) -> None:
    """float16 overflow: a weight past float16's 65504 on a channel ReLU always zeroes.

    float32 computes 1e6 * 0 = 0 and is untouched; the float16 graph holds inf, and inf * 0 is NaN.
    """
    net = pytorch_examples_netg(nz=SMALL["nz"], ngf=SMALL["ngf"], nc=SMALL["channels"])
    with torch.no_grad():
        net.main[10].weight[0], net.main[10].bias[0] = (
            0.0,
            -100.0,
        )  # channel 0 of the last block is dead
        net.main[12].weight[0] = 1e6
    source = tmp_path / "overflow.pth"
    torch.save(net.state_dict(), source)
    out = tmp_path / "export"
    out.mkdir()
    (out / "previous.txt").write_text("the export being replaced")

    result = invoke(source, "--fp16", *SMALL_FLAGS, "--out", out, "--force")
    assert_one_error_line(
        result, 3, "parity failed", "generator_fp16.onnx at batch size 1", "max abs error nan"
    )
    assert [path.name for path in out.iterdir()] == ["previous.txt"]
    assert not staging_leftovers(out)
    # the parents an EXPORT_DIR needed are gone again with its staging directory
    deep = tmp_path / "new" / "deeper" / "export"
    assert invoke(source, "--fp16", *SMALL_FLAGS, "--out", deep).exit_code == 3
    assert not (tmp_path / "new").exists()


# ----------------------------------------------------------------------------- every option

EXPORT_PARAMS = params_of(app)
EXPORT_BASE = {"--out": "export", "--nz": "16", "--ngf": "8"}
EXPORT_ACCEPTED = {
    ("--out", "a directory"),  # empty: the export takes its place
    ("--out", "missing"),
    ("--out", "relative name"),
    ("--out", "dash name"),
}


@pytest.fixture(scope="module")
def fuzz_places(tmp_path_factory: pytest.TempPathFactory) -> Places:
    places = make_places(tmp_path_factory.mktemp("fuzz") / "places")
    examples_state_dict(places.root / "netG.pth", nz=SMALL["nz"], ngf=SMALL["ngf"])
    return places


@pytest.mark.parametrize("param", EXPORT_PARAMS, ids=[param.name for param in EXPORT_PARAMS])
def test_export_option_fuzz(
    param: Param, fuzz_places: Places, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every option given every kind of wrong value (an --out that can be made is fine).

    Refused: exit 1 or 2, one line (or click's usage error), nothing written; accepted: only
    under --out. --onnx alone keeps the few accepted cases to one ONNX export each.
    """
    cases = option_cases(EXPORT_PARAMS, EXPORT_BASE, ["netG.pth"], prefix=("--onnx",))
    for index, (owner, case) in enumerate(cases):
        if owner != param:
            continue
        places = copy_places(fuzz_places, tmp_path / f"case-{index}")
        outcome = run_case(app, places, case, monkeypatch.chdir)
        expected = (param.flag, case.label.split(" ", 1)[-1]) in EXPORT_ACCEPTED
        assert outcome.accepted == expected, f"{case.label}: {outcome.result.output[-500:]}"
