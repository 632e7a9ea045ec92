"""Training throughput: our loop against the plain pytorch/examples recipe, same data, same batch.

Steady-state images/s after a warm-up, in one run: the plain recipe (fp32, NCHW, eager,
DataLoader decoding PNGs every step, Sigmoid + BCELoss), then our loop with its defaults and
with some speed-ups turned off, so the table shows where the ratio comes from.
Usage: python benchmarks/train_throughput.py --data-root ../shared/data/mnist-test/png
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
from pathlib import Path
from typing import Any

import torch
from plain_recipe import run_plain_recipe

from dcgan.train.model import ModelConfig
from dcgan.train.train import resolve_config, setup_runtime, train


def run_ours(data_root: Path, batch_size: int, warmup: int, steps: int, **overrides: Any) -> float:
    """Steady-state images/s of dcgan.train over `steps` steps after `warmup` steps."""
    with tempfile.TemporaryDirectory() as scratch:
        config = resolve_config(
            {
                "dataset": "folder",
                "data_root": str(data_root),
                "batch_size": batch_size,
                "max_steps": warmup + steps,
                "log_every": warmup,
                "out": scratch,
                **overrides,
            }
        )
        if steps % warmup:
            raise ValueError("steps must be a multiple of warmup")
        train(config)
        rows = [
            json.loads(line) for line in (Path(scratch) / "metrics.jsonl").read_text().splitlines()
        ]
        measured = [row["images_per_s"] for row in rows[1:]]
        return sum(measured) / len(measured)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data-root", type=Path, required=True)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--warmup", type=int, default=4)
    parser.add_argument("--steps", type=int, default=16)
    parser.add_argument(
        "--compile", action="store_true", help="also measure --compile (slow to start)"
    )
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    channels = 1  # the MNIST PNGs are grayscale; both sides train the 1-channel model
    plain, _ = run_plain_recipe(
        args.data_root, ModelConfig(channels=channels, image_size=args.image_size),
        args.batch_size, args.warmup + args.steps, args.warmup,
    )  # fmt: skip
    common = {"image_size": args.image_size, "channels": channels}
    ours = {
        "ours (defaults)": run_ours(
            args.data_root, args.batch_size, args.warmup, args.steps, **common
        ),
        "ours fp32": run_ours(
            args.data_root, args.batch_size, args.warmup, args.steps, precision="fp32", **common
        ),
        "ours fp32, NCHW": run_ours(
            args.data_root,
            args.batch_size,
            args.warmup,
            args.steps,
            precision="fp32",
            channels_last=False,
            **common,
        ),
    }
    if args.compile:
        ours["ours + compile"] = run_ours(
            args.data_root, args.batch_size, args.warmup, args.steps, compile=True, **common
        )

    runtime = setup_runtime(resolve_config({"dataset": "digits"}))
    precision = runtime.autocast_dtype or "fp32"
    cpu = platform.processor() or platform.machine()
    threads = torch.get_num_threads()
    print(f"device {runtime.device}, default precision {precision}, {threads} threads, {cpu}")
    size = f"{args.image_size}x{args.image_size}"
    print(f"batch {args.batch_size}, {size}, {args.steps} steps after {args.warmup}")
    print(f"{'loop':<22} {'images/s':>9} {'x plain':>8}")
    print(f"{'plain recipe':<22} {plain:9.1f} {1.0:8.2f}")
    for name, value in ours.items():
        print(f"{name:<22} {value:9.1f} {value / plain:8.2f}")
    if args.json:
        record = {
            "plain": plain,
            **ours,
            "batch_size": args.batch_size,
            "image_size": args.image_size,
        }
        args.json.write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
