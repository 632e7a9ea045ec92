"""The Python clients, dcgan-client and dcgan-bench against a real server."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from PIL import Image

from dcgan.clients.client import AsyncGeneratorClient, GeneratorClient
from dcgan.clients.codec import to_pil
from dcgan.contract.seeded import seeded_latents
from tests.support.latents import direct
from tests.support.servers import ServerThread


def test_sync_client_generates_walks_and_reports(server: ServerThread, export_dir: Path) -> None:
    with GeneratorClient(server.target) as client:
        images = client.generate(n=4, seed=7)
        assert images.shape == (4, 64, 64, 3) and images.dtype == np.uint8
        np.testing.assert_array_equal(images, direct(export_dir, seeded_latents(7, 4, 100))[1])
        latents = np.random.default_rng(1).standard_normal((2, 100), dtype=np.float32)
        values = client.generate(latents, encoding="float32")
        np.testing.assert_array_equal(values, direct(export_dir, latents)[0])
        walk = client.interpolate(7, 8, steps=5, method="slerp")
        np.testing.assert_array_equal(walk[0], images[0])
        pngs = client.generate(n=2, seed=7, encoding="png")
        assert [image.size for image in to_pil(pngs)] == [(64, 64), (64, 64)]
        pil = client.generate_images(n=2, seed=7)
        assert [image.mode for image in pil] == ["RGB", "RGB"]
        np.testing.assert_array_equal(np.asarray(pil[1]), images[1])
        chunks = list(client.generate_stream(n=300, seed=7))
        stream = np.concatenate([chunk.images for chunk in chunks])
        np.testing.assert_array_equal(stream[:4], images)
        assert client.info()["nz"] == 100
        assert client.health() == "SERVING"
        with pytest.raises(ValueError, match="either latents or n"):
            client.generate(latents, n=2)


def test_async_client_gives_the_same_answers(server: ServerThread) -> None:
    async def scenario() -> dict[str, Any]:
        async with AsyncGeneratorClient(server.target) as client:
            images = await asyncio.gather(*(client.generate(n=1, seed=s) for s in range(8)))
            assert (await client.generate_images(n=1, seed=3))[0].size == (64, 64)
            walk = await client.interpolate(0, 1, steps=3)
            chunks = [chunk async for chunk in client.generate_stream(n=70, seed=0)]
            return {
                "images": images,
                "walk": walk,
                "chunks": chunks,
                "health": await client.health(),
                "info": await client.info(),
            }

    result = asyncio.run(scenario())
    with GeneratorClient(server.target) as client:
        expected = client.generate(n=1, seed=3)
    np.testing.assert_array_equal(result["images"][3], expected)
    assert result["walk"].shape == (3, 64, 64, 3) and result["health"] == "SERVING"
    assert sum(len(chunk.images) for chunk in result["chunks"]) == 70
    assert result["info"]["image_size"] == 64


def test_a_client_deadline_reaches_the_server(server: ServerThread) -> None:
    with (
        GeneratorClient(server.target, timeout=0.0001) as client,
        pytest.raises(grpc.RpcError) as raised,
    ):
        client.generate(n=256, seed=1)
    assert raised.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED


def client_cli(target: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dcgan.clients.cli", "--target", target, *args],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def test_client_cli_writes_grids_walks_and_gifs(server: ServerThread, tmp_path: Path) -> None:
    grid = tmp_path / "grid.png"
    result = client_cli(
        server.target, "generate", "-n", "10", "--seed", "1", "--out", str(grid), "--columns", "5"
    )
    assert result.returncode == 0, result.stderr
    assert Image.open(grid).size == (5 * 66 + 2, 2 * 66 + 2)
    folder = tmp_path / "images"
    assert client_cli(server.target, "generate", "-n", "300", "--out", str(folder)).returncode == 0
    assert len(list(folder.glob("*.png"))) == 300  # more than one message carries: streamed
    walk = tmp_path / "walk.png"
    assert (
        client_cli(server.target, "interpolate", "--steps", "6", "--out", str(walk)).returncode == 0
    )
    assert Image.open(walk).size == (6 * 66 + 2, 68)
    gif = tmp_path / "walk.gif"
    assert (
        client_cli(server.target, "interpolate", "--steps", "4", "--out", str(gif)).returncode == 0
    )
    assert Image.open(gif).n_frames == 6  # there and back
    info = client_cli(server.target, "info")
    assert json.loads(info.stdout)["execution_provider"] == "CPUExecutionProvider"


def test_client_cli_health_exit_codes(server: ServerThread) -> None:
    healthy = client_cli(server.target, "health")
    assert (healthy.returncode, healthy.stdout.strip()) == (0, "SERVING")
    unreachable = client_cli("127.0.0.1:1", "--timeout-s", "1", "health")
    assert unreachable.returncode == 1 and "UNAVAILABLE" in unreachable.stderr
    assert "Traceback" not in unreachable.stderr


def test_client_cli_reports_server_errors_in_one_line(server: ServerThread, tmp_path: Path) -> None:
    # longer than Interpolate takes, so the client streams it; longer still than the stream takes
    bad_walk = client_cli(
        server.target, "interpolate", "--start", "1", "--end", "1", "--steps", "5000"
    )
    assert bad_walk.returncode == 1
    assert bad_walk.stderr.strip() == (
        f"error: {server.target}: INVALID_ARGUMENT: steps must be between 2 and 4096, not 5000"
    )
    bad_option = client_cli(
        server.target, "interpolate", "--method", "cubic", "--out", str(tmp_path / "x.png")
    )
    assert bad_option.returncode == 2 and "'cubic' is not one of" in bad_option.stderr


def test_client_cli_refuses_missing_credential_files(tmp_path: Path) -> None:
    for option, path in [("--token-file", tmp_path / "missing"), ("--tls-ca", tmp_path)]:
        refused = client_cli("127.0.0.1:1", option, str(path), "info")
        assert refused.returncode == 2, refused.stderr
        assert f"Invalid value for '{option}'" in refused.stderr
        assert "Traceback" not in refused.stderr


def test_bench_measures_and_writes_json(server: ServerThread, tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    result = subprocess.run(
        [sys.executable, "-m", "dcgan.clients.bench", "--target", server.target, "-c", "1",
         "-c", "4", "--rate", "50", "--duration-s", "0.5", "--warmup-s", "0.1", "--json", str(out)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "c=4" in result.stdout and "r=50/s" in result.stdout
    levels = json.loads(out.read_text())["levels"]
    assert [level["concurrency"] for level in levels] == [1, 4, None]
    for level in levels:
        assert level["requests"] > 0 and level["errors"] == {}
        assert level["images_per_s"] > 0 and level["latency_ms"]["p50"] > 0
        assert level["server_compute_us"] > 0


def test_walks_too_long_for_one_answer_stream_through_both_clients(server: ServerThread) -> None:
    with GeneratorClient(server.target) as client:
        short = client.interpolate(3, 4, steps=200)  # one Interpolate call
        chunks = list(client.interpolate_stream(3, 4, steps=200))
        assert len(chunks) > 1 and chunks[0].offset == 0
        np.testing.assert_array_equal(np.concatenate([chunk.images for chunk in chunks]), short)
        long = client.interpolate(3, 4, steps=300)  # more steps than Interpolate takes
        assert long.shape == (300, 64, 64, 3)
        np.testing.assert_array_equal(long[[0, -1]], short[[0, -1]])
        values = client.interpolate(3, 4, steps=100, encoding="float32")  # more than 4 MiB
        assert values.shape == (100, 3, 64, 64) and values.dtype == np.float32
        pngs = client.interpolate(3, 4, steps=300, encoding="png")
        assert isinstance(pngs, list) and len(pngs) == 300

    async def walk() -> tuple[Any, int]:
        async with AsyncGeneratorClient(server.target) as client:
            streamed = [chunk async for chunk in client.interpolate_stream(3, 4, steps=300)]
            return await client.interpolate(3, 4, steps=300), len(streamed)

    async_long, chunk_count = asyncio.run(walk())
    np.testing.assert_array_equal(async_long, long)
    assert chunk_count > 1
