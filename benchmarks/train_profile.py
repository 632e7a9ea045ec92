"""Where a training step's CPU time goes: torch.profiler over a few steps of our loop and of the
plain recipe, the operators grouped (convolutions forward and backward, batch norm, the
optimizer, activations and losses, the rest), so that what bounds images/s is measured.
The time includes the warm-up steps and, for our loop, the data preload: a few percent. The
plain recipe's DataLoader workers decode PNGs in processes of their own, on the same cores: their
time is not in its column.
Usage: python benchmarks/train_profile.py --data-root ../shared/data/mnist-test/png [--steps 6]
       [--precision fp32] [--no-channels-last]
"""

from __future__ import annotations

import argparse
import tempfile
from collections import defaultdict
from pathlib import Path

import torch
from machine import describe_machine, machine
from plain_recipe import run_plain_recipe
from torch.profiler import ProfilerActivity, profile

from dcgan.train.model import ModelConfig
from dcgan.train.train import resolve_config, train

GROUPS = [  # first match wins, on the operator's name
    ("convolution", ("conv", "mkldnn_convolution", "slow_conv")),
    ("batch norm", ("batch_norm", "native_batch_norm")),
    ("optimizer", ("adam", "_foreach", "lerp", "addcdiv", "addcmul", "sqrt")),
    ("activation, loss", ("relu", "tanh", "sigmoid", "binary_cross", "threshold")),
    (
        "copies, layout",
        ("copy_", "contiguous", "clone", "aten::to", "_to_copy", "empty", "fill_", "zero_"),
    ),
]


def group_of(name: str) -> str:
    lowered = name.lower()
    for group, needles in GROUPS:
        if any(needle in lowered for needle in needles):
            return group
    return "other"


def profiled(run: object) -> dict[str, float]:
    """Self CPU seconds by group, over the top-level operators `run` calls."""
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        run()  # type: ignore[operator]
    by_group: dict[str, float] = defaultdict(float)
    for event in prof.key_averages():
        by_group[group_of(event.key)] += event.self_cpu_time_total / 1e6
    return dict(by_group)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data-root", type=Path, required=True)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--no-channels-last", action="store_true")
    args = parser.parse_args()
    print(describe_machine(machine()), flush=True)
    capability = torch.backends.cpu.get_cpu_capability()
    print(f"cpu capability {capability}, {torch.get_num_threads()} threads")
    config = ModelConfig(channels=1)

    def plain() -> None:
        run_plain_recipe(args.data_root, config, args.batch_size, args.steps, 1)

    def ours() -> None:
        with tempfile.TemporaryDirectory() as scratch:
            train(
                resolve_config(
                    {
                        "dataset": "folder", "data_root": str(args.data_root),
                        "batch_size": args.batch_size, "max_steps": args.steps,
                        "log_every": args.steps, "out": scratch, "channels": 1,
                        "precision": args.precision,
                        "channels_last": not args.no_channels_last,
                    }
                )
            )  # fmt: skip

    results = {"plain recipe": profiled(plain), "ours": profiled(ours)}
    groups = [name for name, _ in GROUPS] + ["other"]
    print(f"{'loop':<14} " + " ".join(f"{g:>17}" for g in groups) + f" {'total s':>8}")
    for loop, by_group in results.items():
        total = sum(by_group.values())
        cells = " ".join(
            f"{by_group.get(g, 0.0):8.1f} s {by_group.get(g, 0.0) / total:5.1%}" for g in groups
        )
        print(f"{loop:<14} {cells} {total:8.1f}")
    print(describe_machine(machine()))


if __name__ == "__main__":
    main()
