"""Do the speed settings cost quality? Our loop against the plain recipe, by the digits distance.

Same data (the MNIST PNGs), same networks, same steps and batch, several seeds. Our loop runs
with its defaults (bf16 autocast where the CPU has it, channels_last, fused Adam, BCEWithLogits);
the plain recipe is pytorch/examples' (fp32, NCHW, eager, a DataLoader decoding PNGs every step,
Sigmoid + BCELoss), the loop of plain_recipe.run_plain_recipe with pauses to score it. Every
`--eval-every` steps each generator is scored by `dcgan.eval.quality.score_generator`: the
Frechet distance in a digits classifier's features, on the same seeded latents. The clock stops
while scoring.

- Quality: ours' mean final distance over the plain recipe's (target: at most 1.1).
- Time to quality: wall time until the distance first falls below a threshold every plain run
  reaches (1.2 x the worst plain final distance); plain over ours (target: at least 1.5).

`probe` reproduces the paper's section 5.1 on the MNIST PNGs instead: the GAN trains on one
half (labels unused), the linear-SVM probe takes K labels a class from the other half, chooses C
on a validation split of it and tests on the rest, beside a random D and raw pixels.

Usage: python benchmarks/train_quality.py --data-root ../shared/data/mnist-test/png
       python benchmarks/train_quality.py probe --data-root ../shared/data/mnist-test/png
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from plain_recipe import plain_loader
from torch import nn

from dcgan.eval.classifier import train_classifier
from dcgan.eval.probe import probe, split_folder
from dcgan.eval.quality import digits_reference, score_generator
from dcgan.eval.reference import Reference
from dcgan.train.checkpoint import load_checkpoint
from dcgan.train.data import DataSpec
from dcgan.train.model import Discriminator, Generator, ModelConfig, init_weights
from dcgan.train.train import resolve_config, train

Curve = list[tuple[int, float, float]]  # (step, wall seconds of training so far, distance)
CPU_FLAGS = ("avx512_bf16", "amx_bf16", "avx512f", "avx2")


def cpu_flags() -> list[str]:
    """Which of the flags that decide CPU training speed this machine has."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    flags = next(
        (line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")),
        [],
    )
    return [flag for flag in CPU_FLAGS if flag in flags]


def plain_curve(
    root: Path, config: ModelConfig, batch_size: int, steps: int, eval_every: int, seed: int,
    score: Callable[[Generator], float], workers: int,
) -> Curve:  # fmt: skip
    """run_plain_recipe's loop, scored every `eval_every` steps with the clock stopped."""
    torch.manual_seed(seed)
    net_g = Generator(config)
    net_d = nn.Sequential(Discriminator(config), nn.Sigmoid())
    net_g.apply(init_weights)
    net_d.apply(init_weights)
    criterion = nn.BCELoss()
    opt_d = torch.optim.Adam(net_d.parameters(), lr=2e-4, betas=(0.5, 0.999))
    opt_g = torch.optim.Adam(net_g.parameters(), lr=2e-4, betas=(0.5, 0.999))
    curve: Curve = []
    step, clock, start = 0, 0.0, time.perf_counter()
    while step < steps:
        for real, _ in plain_loader(root, config.image_size, config.channels, batch_size, workers):
            # (1) update D: maximize log(D(x)) + log(1 - D(G(z)))
            net_d.zero_grad()
            label = torch.full((batch_size,), 1.0)
            criterion(net_d(real), label).backward()
            fake = net_g(torch.randn(batch_size, config.nz, 1, 1))
            label.fill_(0.0)
            criterion(net_d(fake.detach()), label).backward()
            opt_d.step()
            # (2) update G: maximize log(D(G(z)))
            net_g.zero_grad()
            label.fill_(1.0)
            criterion(net_d(fake), label).backward()
            opt_g.step()
            step += 1
            if step % eval_every == 0:
                clock += time.perf_counter() - start
                curve.append((step, clock, score(net_g)))
                start = time.perf_counter()
            if step == steps:
                break
    return curve


def our_curve(
    root: Path, config: ModelConfig, batch_size: int, steps: int, eval_every: int, seed: int,
    score: Callable[[Generator], float],
) -> Curve:  # fmt: skip
    """dcgan.train with its defaults, checkpointing every `eval_every` steps; scored afterwards.

    A checkpoint's time is its file's mtime from the moment train() was called (data
    preloading and the checkpoints' own writing included).
    """
    with tempfile.TemporaryDirectory() as scratch:
        settings = {
            "dataset": "folder", "data_root": str(root), "image_size": config.image_size,
            "channels": config.channels, "nz": config.nz, "ngf": config.ngf, "ndf": config.ndf,
            "batch_size": batch_size, "epochs": 10_000, "max_steps": steps, "seed": seed,
            "save_every": eval_every, "keep": 10_000, "log_every": eval_every,
            "out": scratch,
        }  # fmt: skip
        start = time.time()
        train(resolve_config(settings))
        curve: Curve = []
        for step in range(eval_every, steps + 1, eval_every):
            file = Path(scratch) / "checkpoints" / f"step-{step:08d}.pt"
            state = load_checkpoint(file)
            generator = Generator(ModelConfig.from_dict(state["model_config"]))
            generator.load_state_dict(state["generator"])
            curve.append((step, file.stat().st_mtime - start, score(generator)))
        return curve


def time_to(curve: Curve, threshold: float) -> float | None:
    return next((seconds for _, seconds, distance in curve if distance <= threshold), None)


def probe_benchmark(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="train_quality.py probe")
    parser.add_argument("--data-root", type=Path, required=True, help="MNIST PNGs in class folders")
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--ngf", type=int, default=64)
    parser.add_argument("--ndf", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--labels-per-class", type=int, nargs="+", default=[10, 100])
    parser.add_argument("--validation-per-class", type=int, default=50)
    parser.add_argument("--work-dir", type=Path, default=Path("runs/train-quality"))
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    print(f"CPU flags: {' '.join(cpu_flags()) or 'none of ' + ', '.join(CPU_FLAGS)}; "
          f"{torch.get_num_threads()} threads")  # fmt: skip
    with tempfile.TemporaryDirectory() as scratch:
        parts = split_folder(args.data_root, Path(scratch) / "split", {"gan": 0.5, "probe": 0.5})
        run = args.work_dir / "probe-run"
        if not (run / "checkpoints" / "latest.pt").exists():
            start = time.perf_counter()
            train(resolve_config({
                "dataset": "folder", "data_root": str(parts["gan"]), "image_size": args.image_size,
                "channels": 1, "ngf": args.ngf, "ndf": args.ndf, "batch_size": args.batch_size,
                "epochs": args.epochs, "out": str(run),
            }))  # fmt: skip
            print(f"trained {args.epochs} epochs in {time.perf_counter() - start:.0f} s")
        result = probe(
            run, "folder", parts["probe"], args.labels_per_class, args.validation_per_class
        )
    print(f"probe of {result.checkpoint} (step {result.step}), {result.seconds:.0f} s")
    print(
        f"{'labels/class':>12} {'features':<22} {'dims':>6} {'C':>7} {'validation':>10} {'test':>7}"
    )
    for row in result.rows:
        print(f"{row.labels_per_class:>12} {row.features:<22} {row.dims:>6} {row.c:>7g} "
              f"{row.validation_accuracy:>10.2%} {row.test_accuracy:>7.2%}")  # fmt: skip
    if args.json:
        args.json.write_text(
            json.dumps({"cpu_flags": cpu_flags(), **result.to_dict()}, indent=2) + "\n"
        )


def main() -> None:
    if sys.argv[1:2] == ["probe"]:
        probe_benchmark(sys.argv[2:])
        return
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data-root", type=Path, required=True, help="MNIST PNGs in class folders")
    parser.add_argument("--classifier", type=Path, help="a digits classifier [default: train one]")
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--ngf", type=int, default=64)
    parser.add_argument("--ndf", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--eval-every", type=int, default=100)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--num-samples", type=int, default=1000, help="generated images a score")
    parser.add_argument("--workers", type=int, default=2, help="the plain recipe's DataLoader")
    parser.add_argument("--work-dir", type=Path, default=Path("runs/train-quality"))
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    print(f"CPU flags: {' '.join(cpu_flags()) or 'none of ' + ', '.join(CPU_FLAGS)}; "
          f"{torch.get_num_threads()} threads")  # fmt: skip
    args.work_dir.mkdir(parents=True, exist_ok=True)
    classifier = args.classifier
    if classifier is None:
        classifier = args.work_dir / "digits.pt"
        if not classifier.exists():
            report = train_classifier(DataSpec("folder", args.data_root, 32, 1), classifier)
            print(report.describe())
    config = ModelConfig(nz=100, ngf=args.ngf, ndf=args.ndf, channels=1, image_size=args.image_size)
    reference: Reference = digits_reference(
        "folder", args.data_root, classifier, args.image_size, 1, cache_dir=args.work_dir / "cache"
    )

    def score(generator: Generator) -> float:
        return score_generator(generator, reference, "fid", args.num_samples, seed=0)

    curves: dict[str, dict[int, Curve]] = {"plain": {}, "ours": {}}
    for seed in args.seeds:
        curves["plain"][seed] = plain_curve(
            args.data_root, config, args.batch_size, args.steps, args.eval_every, seed, score,
            args.workers,
        )  # fmt: skip
        curves["ours"][seed] = our_curve(
            args.data_root, config, args.batch_size, args.steps, args.eval_every, seed, score
        )
        for name in ("plain", "ours"):
            points = ", ".join(
                f"{step}: {distance:.1f} ({seconds:.0f} s)"
                for step, seconds, distance in curves[name][seed]
            )
            print(f"seed {seed} {name:<5} {points}", flush=True)

    final = {name: [curve[-1][2] for curve in by_seed.values()] for name, by_seed in curves.items()}
    threshold = 1.2 * max(final["plain"])
    reach = {
        name: [time_to(curve, threshold) for curve in by_seed.values()]
        for name, by_seed in curves.items()
    }
    quality_ratio = statistics.mean(final["ours"]) / statistics.mean(final["plain"])
    print(f"\n{args.image_size}x{args.image_size}, batch {args.batch_size}, {args.steps} steps, "
          f"seeds {args.seeds}, {args.num_samples} samples a score")  # fmt: skip
    reached = f"time to <= {threshold:.1f}"
    print(f"{'loop':<6} {'final distance by seed':<28} {'mean':>8} {reached:>22}")
    for name in ("plain", "ours"):
        times = ", ".join("never" if t is None else f"{t:.0f} s" for t in reach[name])
        by_seed = ", ".join(f"{d:.1f}" for d in final[name])
        print(f"{name:<6} {by_seed:<28} {statistics.mean(final[name]):8.1f} {times:>22}")
    print(f"quality: ours / plain mean distance = {quality_ratio:.2f} (target <= 1.1)")
    if all(t is not None for t in reach["ours"]):
        speedup = statistics.mean(t for t in reach["plain"] if t is not None) / statistics.mean(
            t for t in reach["ours"] if t is not None
        )
        print(f"time to quality: plain / ours = {speedup:.2f}x (target >= 1.5)")
    else:
        speedup = None
        print("time to quality: our loop did not reach the threshold in every seed")
    if args.json:
        record = {
            "cpu_flags": cpu_flags(), "threads": torch.get_num_threads(),
            "settings": {key: str(value) for key, value in vars(args).items()},
            "classifier": str(classifier), "curves": curves, "threshold": threshold,
            "quality_ratio": quality_ratio, "time_to_quality_speedup": speedup,
        }  # fmt: skip
        args.json.write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
