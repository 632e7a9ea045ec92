"""What the serving install promises: no torch, and stubs that match the .proto."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

SERVING_MODULES = [
    "dcgan.service.server",
    "dcgan.service.cli",
    "dcgan.clients.client",
    "dcgan.clients.cli",
    "dcgan.clients.bench",
    "dcgan.export.manifest",
]


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
        "dcgan/v1/generator_pb2.py",
        "dcgan/v1/generator_pb2.pyi",
        "dcgan/v1/generator_pb2_grpc.py",
    ]
    for path in generated:
        committed = ROOT / "protos" / path
        assert committed.read_text() == (tmp_path / path).read_text(), (
            f"{committed} is stale: run bash scripts/gen-protos.sh"
        )
