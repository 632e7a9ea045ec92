"""What the serving install promises: no torch, and stubs that match the .proto."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]

SERVING_MODULES = [
    "dcgan.service.server",
    "dcgan.service.cli",
    "dcgan.clients.client",
    "dcgan.clients.cli",
    "dcgan.clients.bench",
    "dcgan.contract.manifest",
]


def locked_closure(package: str, extras: tuple[str, ...] = ()) -> set[str]:
    """Every package that installing `package[extras]` from uv.lock brings, itself included."""
    locked = {
        entry["name"]: entry for entry in tomllib.loads((ROOT / "uv.lock").read_text())["package"]
    }
    visited: set[tuple[str, tuple[str, ...]]] = set()
    pending = [(package, extras)]
    while pending:
        name, wanted = pending.pop()
        if (name, wanted) in visited:
            continue
        visited.add((name, wanted))
        entry: dict[str, Any] = locked[name]
        dependencies = list(entry.get("dependencies", []))
        for extra in wanted:
            dependencies += entry.get("optional-dependencies", {}).get(extra, [])
        pending += [(dep["name"], tuple(dep.get("extra", ()))) for dep in dependencies]
    return {name for name, _ in visited}


@pytest.mark.parametrize(
    ("package", "extras"),
    [("dcgan-serve", ("cpu",)), ("dcgan-serve", ("gpu",)), ("dcgan-client", ())],
)
def test_the_serving_packages_depend_on_no_torch(package: str, extras: tuple[str, ...]) -> None:
    closure = locked_closure(package, extras)
    assert "dcgan-protos" in closure and "grpcio" in closure
    assert not closure & {"torch", "torchvision", "dcgan-train", "dcgan-export"}


def test_the_training_side_does_bring_torch() -> None:
    assert {"torch", "torchvision", "dcgan-train"} <= locked_closure("dcgan-export")


def test_serving_and_clients_import_without_torch() -> None:
    blocker = "import sys\nfor name in ('torch', 'torchvision'):\n    sys.modules[name] = None\n"
    imports = "".join(f"import {module}\n" for module in SERVING_MODULES)
    check = "assert 'torch' not in [m for m in sys.modules if sys.modules[m] is not None]\n"
    result = subprocess.run(
        [sys.executable, "-c", blocker + imports + check], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr


def test_committed_stubs_match_the_proto(tmp_path: Path) -> None:
    subprocess.run(["bash", str(ROOT / "scripts" / "gen-protos.sh"), str(tmp_path)], check=True)
    generated = sorted(path.relative_to(tmp_path) for path in tmp_path.rglob("*_pb2*"))
    assert [str(path) for path in generated] == [
        "dcgan/oip/inference_pb2.py",
        "dcgan/oip/inference_pb2.pyi",
        "dcgan/v1/generator_pb2.py",
        "dcgan/v1/generator_pb2.pyi",
        "dcgan/v1/generator_pb2_grpc.py",
    ]
    for path in generated:
        committed = ROOT / "protos" / path
        assert committed.read_text() == (tmp_path / path).read_text(), (
            f"{committed} is stale: run bash scripts/gen-protos.sh"
        )
