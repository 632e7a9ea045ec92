"""Training throughput: our loop against the plain pytorch/examples recipe, same data, same batch.

Steady-state images/s after a warm-up, in one run: the plain recipe (fp32, NCHW, eager,
DataLoader decoding PNGs every step, Sigmoid + BCELoss), then our loop with its defaults and
with some speed-ups turned off, so the table shows where the ratio comes from.
--variants picks our loop's settings (see VARIANTS): "compile-max-autotune" sets inductor's
max_autotune for that run, as torch.compile(mode="max-autotune") would. --threads sets
torch's intra-op threads for every run, the plain recipe's included.
A CPU without native bf16 can be emulated on one with it: ATEN_CPU_CAPABILITY=avx2
ONEDNN_MAX_CPU_ISA=AVX2 (the header line shows what torch and oneDNN then use; precision "auto"
then picks fp32, as on such a CPU).
Usage: python benchmarks/train_throughput.py --data-root ../shared/data/mnist-test/png
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
from pathlib import Path
from typing import Any

import torch
import torch._inductor.config as inductor
from machine import describe_machine, machine
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


VARIANTS: dict[str, dict[str, Any]] = {  # our loop's settings, by name
    "defaults": {},
    "fp32": {"precision": "fp32"},
    "fp32-nchw": {"precision": "fp32", "channels_last": False},
    "bf16": {"precision": "bf16"},
    "compile": {"compile": True},
    "compile-max-autotune": {"compile": True},
    "compile-nchw": {"compile": True, "channels_last": False},
    "workers-0": {"workers": 0},
}
DEFAULT_VARIANTS = ["defaults", "fp32", "fp32-nchw"]


def run_variant(args: argparse.Namespace, name: str, common: dict[str, Any]) -> float:
    inductor.max_autotune = name == "compile-max-autotune"
    try:
        return run_ours(
            args.data_root, args.batch_size, args.warmup, args.steps, **common, **VARIANTS[name]
        )
    finally:
        inductor.max_autotune = False


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
    parser.add_argument(
        "--variants",
        nargs="+",
        choices=list(VARIANTS),
        default=DEFAULT_VARIANTS,
        help=f"our loop's settings to measure (default: {' '.join(DEFAULT_VARIANTS)})",
    )
    parser.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--no-plain", action="store_true", help="skip the plain recipe")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if args.compile and "compile" not in args.variants:
        args.variants.append("compile")
    if args.threads:
        torch.set_num_threads(args.threads)
    started = machine()
    print(describe_machine(started), flush=True)
    isa = {key: os.environ.get(key, "-") for key in ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA")}
    print(
        f"torch {torch.__version__}, cpu capability {torch.backends.cpu.get_cpu_capability()}, "
        f"oneDNN bf16 {torch.ops.mkldnn._is_mkldnn_bf16_supported()}, "
        f"{torch.get_num_threads()} threads; "
        + ", ".join(f"{key}={value}" for key, value in isa.items()),
        flush=True,
    )

    channels = 1  # the MNIST PNGs are grayscale; both sides train the 1-channel model
    plain = None
    if not args.no_plain:
        plain, _ = run_plain_recipe(
            args.data_root, ModelConfig(channels=channels, image_size=args.image_size),
            args.batch_size, args.warmup + args.steps, args.warmup,
        )  # fmt: skip
    common = {"image_size": args.image_size, "channels": channels}
    ours = {f"ours {name}": run_variant(args, name, common) for name in args.variants}

    runtime = setup_runtime(resolve_config({"dataset": "digits"}))
    precision = runtime.autocast_dtype or "fp32"
    cpu = platform.processor() or platform.machine()
    threads = torch.get_num_threads()
    print(f"device {runtime.device}, default precision {precision}, {threads} threads, {cpu}")
    size = f"{args.image_size}x{args.image_size}"
    print(f"batch {args.batch_size}, {size}, {args.steps} steps after {args.warmup}")
    print(f"{'loop':<28} {'images/s':>9} {'x plain':>8}")
    if plain is not None:
        print(f"{'plain recipe':<28} {plain:9.1f} {1.0:8.2f}")
    for name, value in ours.items():
        ratio = f"{value / plain:8.2f}" if plain else "       -"
        print(f"{name:<28} {value:9.1f} {ratio}")
    print(describe_machine(machine()))
    if args.json:
        record = {
            "plain": plain,
            **ours,
            "batch_size": args.batch_size,
            "image_size": args.image_size,
            "threads": torch.get_num_threads(),
            "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "isa_env": isa,
            "machine_before": started,
        }
        args.json.write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
