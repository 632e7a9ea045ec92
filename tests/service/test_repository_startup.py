"""dcgan-serve's model options at start-up: each bad combination or repository refused with one
line and the exit code the README gives (2 a bad option, 1 bad data), before any port opens."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

# name, arguments ({export}, {root} filled in), exit code, the last line of stderr
CASES = [
    ("drain longer than grace", ["--model-dir", "{export}", "--drain-s", "5", "--grace-s", "1"], 2,
     "error: --drain-s 5 is longer than --grace-s 1: the drain is part of the grace, give "
     "--grace-s at least as much"),
    ("no model source", [], 2,
     "error: give --model-dir (one export) or --model-repository (DIR/<model>/<version>/)"),
    ("both model sources", ["--model-dir", "{export}", "--model-repository", "{root}/models"], 2,
     "error: give --model-dir or --model-repository, not both (--model-dir is a repository of "
     "one model)"),
    ("policy of latest 0", ["--model-repository", "{root}/models", "--version-policy", "latest:0"],
     2, "error: --version-policy 'latest:0': N of latest:N must be a positive integer"),
    ("policy unknown", ["--model-repository", "{root}/models", "--version-policy", "newest"], 2,
     "error: --version-policy 'newest': expected latest, latest:N, all or specific:A,B,..."),
    ("poll of one export", ["--model-dir", "{export}", "--model-control", "poll"], 2,
     "error: --model-control poll needs --model-repository: --model-dir serves one export for "
     "the server's life"),
    ("repository missing", ["--model-repository", "{root}/missing"], 1,
     "error: --model-repository {root}/missing does not exist"),
    ("repository empty", ["--model-repository", "{root}/empty"], 1,
     "error: cannot serve {root}/empty: {root}/empty holds no model"),
    ("only version broken", ["--model-repository", "{root}/broken"], 1,
     "error: cannot serve {root}/broken: model m: version 1 failed: {root}/broken/m/1/"
     "generator.onnx is missing"),
]  # fmt: skip


def serve(args: list[str]) -> tuple[int, str]:
    clean = {key: value for key, value in os.environ.items() if not key.startswith("DCGAN_")}
    result = subprocess.run(
        [sys.executable, "-m", "dcgan.service.cli", "--host", "127.0.0.1", "--port", "0",
         "--metrics-port", "0", "--device", "cpu", *args],
        env=clean, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    return result.returncode, result.stderr


@pytest.fixture(scope="module")
def outcomes(
    export_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, tuple[int, str, str]]:
    root = tmp_path_factory.mktemp("repositories")
    (root / "models").mkdir()
    (root / "empty").mkdir()
    shutil.copytree(export_dir, root / "broken" / "m" / "1")
    (root / "broken" / "m" / "1" / "generator.onnx").unlink()
    places = {"export": str(export_dir), "root": str(root)}
    with ThreadPoolExecutor(3) as pool:
        runs = {
            name: pool.submit(serve, [arg.format(**places) for arg in args])
            for name, args, _, _ in CASES
        }
        return {name: (*runs[name].result(), says.format(**places)) for name, _, _, says in CASES}


@pytest.mark.parametrize(("name", "code"), [(name, code) for name, _, code, _ in CASES])
def test_a_bad_model_option_or_repository_gets_one_line_and_its_exit_code(
    outcomes: dict[str, tuple[int, str, str]], name: str, code: int
) -> None:
    returncode, stderr, says = outcomes[name]
    assert "Traceback" not in stderr, stderr
    assert returncode == code, stderr
    assert stderr.strip().splitlines()[-1] == says
