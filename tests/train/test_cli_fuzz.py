"""Every option of dcgan-train and dcgan-train inspect, given every kind of wrong value.

A case is refused (exit 1 or 2, one error line or click's usage error, not one file touched) or
accepted (exit 0, writing only under its --out). Which values are acceptable is listed here; every
other value of every option must be refused. Each accepted case trains one step on 16 images.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from dcgan.train.cli import app
from dcgan.train.config import TrainConfig
from tests.support.fuzz import (
    Case,
    Param,
    Places,
    copy_places,
    make_places,
    option_cases,
    params_of,
    run_case,
)
from tests.support.training import digits_classifier

TRAIN_PARAMS = params_of(app)
CLASSIFIER = "classifier.pt"
INSPECT_PARAMS = params_of(app, "inspect")
BASE = {
    "--dataset": "folder",
    "--data-root": "data",
    "--image-size": "32",
    "--nz": "4",
    "--ngf": "4",
    "--ndf": "4",
    "--batch-size": "8",
    "--epochs": "1",
    "--max-steps": "1",
    "--workers": "0",
    "--samples": "4",
    "--precision": "fp32",
    "--log-every": "1",
    "--out": "out",
}  # 16 images in batches of 8: at most 2 steps, whatever one option is set to
# The evaluation options are fuzzed with evaluation on, where each of them is used.
EVAL_BASE = {**BASE, "--eval-every": "1", "--eval-classifier": CLASSIFIER, "--eval-samples": "10"}
INCEPTION_BASE = {
    **BASE,
    "--eval-every": "1",
    "--eval-features": "inception",
    "--eval-samples": "10",
}
EVAL_PARAMS = {"eval_every", "eval_metric", "eval_features", "eval_classifier", "eval_samples"}
ACCEPTED = {
    ("--workers", "zero"),
    ("--preload-limit-mb", "zero"),
    ("--preload-limit-mb", "huge"),
    ("--seed", "zero"),
    ("--beta1", "zero"),
    ("--lr", "huge"),
    ("--save-every", "zero"),
    ("--save-every", "huge"),
    ("--keep", "huge"),
    ("--log-every", "huge"),
    ("--epochs", "huge"),
    ("--max-steps", "huge"),
    ("--out", "a directory"),
    ("--out", "missing"),
    ("--out", "relative name"),
    ("--out", "dash name"),
    ("--eval-every", "huge"),  # a score at the end only
}


def base_for(param: Param) -> dict[str, str]:
    if param.name == "inception_weights":
        return INCEPTION_BASE
    return EVAL_BASE if param.name in EVAL_PARAMS else BASE


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Places:
    """16 noise images in data/, an empty directory, a text file, a digits classifier, and a
    one-step run in run/."""
    places = make_places(tmp_path_factory.mktemp("fuzz") / "places")
    digits_classifier(places.root / CLASSIFIER)
    generator = torch.Generator().manual_seed(0)
    for index in range(16):
        pixels = torch.randint(0, 256, (32, 32), dtype=torch.uint8, generator=generator)
        path = places.root / "data" / "0" / f"{index}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels.numpy()).save(path)
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(places.root)
        result = CliRunner().invoke(app, [*flatten({**BASE, "--out": "run"})])
    assert result.exit_code == 0, result.output
    return places


def flatten(options: dict[str, str]) -> list[str]:
    return [part for flag, value in options.items() for part in (flag, value)]


def test_every_setting_is_an_option_and_fuzzed() -> None:
    flags = {param.flag for param in TRAIN_PARAMS}
    settings = {f"--{name.replace('_', '-')}" for name in TrainConfig.__dataclass_fields__}
    assert settings - {"--beta2"} <= flags  # beta2 is fixed at the paper's value
    assert "--resume" in flags and len(TRAIN_PARAMS) >= 26
    assert [param.kind for param in INSPECT_PARAMS] == ["path", "switch"]


@pytest.mark.parametrize("param", TRAIN_PARAMS, ids=[param.name for param in TRAIN_PARAMS])
def test_train_option_fuzz(
    param: Param, template: Places, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cases = [
        case for owner, case in option_cases(TRAIN_PARAMS, base_for(param), []) if owner == param
    ]
    assert cases
    for index, case in enumerate(cases):
        places = copy_places(template, tmp_path / f"case-{index}")
        outcome = run_case(app, places, case, monkeypatch.chdir)
        label = case.label.split(" ", 1)[-1]
        expected = (param.flag, label) in ACCEPTED
        assert outcome.accepted == expected, (
            f"{case.label}: exit {outcome.result.exit_code}, "
            f"{'accepted' if outcome.accepted else 'refused'}: {outcome.result.output[-500:]}"
        )


def test_a_resume_with_the_run_options_is_accepted_and_has_nothing_to_do(
    template: Places, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    places = copy_places(template, tmp_path / "case")
    case = Case("--resume run", ["--resume", "run", *flatten(BASE)], None)
    outcome = run_case(app, places, case, monkeypatch.chdir)
    assert outcome.accepted and "nothing to do" in outcome.result.stdout
    assert outcome.changed == []


@pytest.mark.parametrize("param", INSPECT_PARAMS, ids=[param.name for param in INSPECT_PARAMS])
def test_inspect_option_fuzz(
    param: Param, template: Places, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cases = option_cases(INSPECT_PARAMS, {}, ["run"], prefix=("inspect",))
    for index, (owner, case) in enumerate(cases):
        if owner != param:
            continue
        places = copy_places(template, tmp_path / f"case-{index}")
        outcome = run_case(app, places, case, monkeypatch.chdir)
        assert not outcome.accepted, f"{case.label}: {outcome.result.output[-500:]}"
    places = copy_places(template, tmp_path / "valid")
    valid = run_case(app, places, Case("inspect run", ["inspect", "run"], None), monkeypatch.chdir)
    assert valid.accepted and valid.changed == []
