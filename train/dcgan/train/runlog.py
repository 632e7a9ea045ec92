"""What a run leaves in its directory besides checkpoints, and what it shows while it runs.

RUN_DIR/config.json        the resolved settings and model config
RUN_DIR/metrics.jsonl      one line per logged step: losses, D(x), D(G(z)), images/s
RUN_DIR/real.png           a grid of real training images
RUN_DIR/samples/           a fixed-noise sample grid per epoch, and final.png
RUN_DIR/loss.png           the loss curves (matplotlib)
RUN_DIR/tensorboard/       TensorBoard event files
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from torchvision.utils import make_grid, save_image

from dcgan.train.checkpoint import write_atomic

METRICS = "metrics.jsonl"
# Everything a run writes into RUN_DIR (besides temporary dot-files): a directory holding
# anything else is not a run's, and a new run refuses it.
RUN_ENTRIES = frozenset(
    {"checkpoints", "config.json", METRICS, "real.png", "samples", "loss.png", "tensorboard"}
)


def save_grid(images: torch.Tensor, path: Path) -> None:
    """Images in [-1, 1] or uint8 as one 8-wide grid PNG."""
    if images.dtype == torch.uint8:
        images = images.float().div(127.5).sub(1.0)
    grid = make_grid(images, nrow=8, padding=2, normalize=True, value_range=(-1, 1))
    save_image(grid, path)


def _row(line: str) -> dict[str, Any] | None:
    """One line of metrics.jsonl, or None for a line that a kill cut short."""
    try:
        row = json.loads(line)
    except ValueError:
        return None
    return row if isinstance(row, dict) and isinstance(row.get("step"), int) else None


def metric_rows(path: Path) -> list[dict[str, Any]]:
    """The rows of metrics.jsonl, oldest first."""
    return [row for line in path.read_text().splitlines() if (row := _row(line)) is not None]


def truncate_metrics(path: Path, last_step: int) -> None:
    """Drop the lines a crashed run logged after the checkpoint being resumed (all, at step 0)."""
    if not path.exists():
        return
    kept = []
    for line in path.read_text().splitlines():
        row = _row(line)
        if row is not None and row["step"] <= last_step:
            kept.append(line + "\n")
    body = "".join(kept).encode()
    write_atomic(path, lambda handle: handle.write(body))


def plot_losses(metrics_path: Path, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = metric_rows(metrics_path)
    figure, axis = plt.subplots(figsize=(8, 4), dpi=100)
    steps = [row["step"] for row in rows]
    axis.plot(steps, [row["loss_d"] for row in rows], label="D loss")
    axis.plot(steps, [row["loss_g"] for row in rows], label="G loss")
    axis.set_xlabel("step")
    axis.set_ylabel("BCE loss")
    axis.set_title("DCGAN training losses")
    axis.legend()
    figure.tight_layout()
    figure.savefig(out)
    plt.close(figure)


class _Progress:
    """A rich progress bar on a terminal; plain log lines (printed by RunLog) elsewhere."""

    def __init__(self, bar: Progress | None, total: int, done: int) -> None:
        self.bar = bar
        self.task = (
            bar.add_task("training", total=total, completed=done, status="") if bar else None
        )

    def advance(self) -> None:
        if self.bar is not None and self.task is not None:
            self.bar.advance(self.task)

    def status(self, text: str) -> None:
        if self.bar is not None and self.task is not None:
            self.bar.update(self.task, status=text)


class RunLog:
    """Metrics, grids, plots and progress of one run; silent on ranks other than 0.

    `settings` is what config.json records; `batch_size` (the global batch) turns steps per
    second into images per second.
    """

    def __init__(
        self, run_dir: Path, settings: dict[str, Any], batch_size: int, step: int, enabled: bool
    ) -> None:
        self.run_dir = run_dir
        self.settings = settings
        self.batch_size = batch_size
        self.enabled = enabled
        self.interactive = enabled and sys.stdout.isatty()
        self.last_step = step
        self.last_time = time.perf_counter()
        self.writer: Any = None
        self.bar: _Progress | None = None

    def start(self, real_images: torch.Tensor, resumed: bool) -> None:
        (self.run_dir / "samples").mkdir(parents=True, exist_ok=True)
        body = (json.dumps(self.settings, indent=2, sort_keys=True) + "\n").encode()
        write_atomic(self.run_dir / "config.json", lambda handle: handle.write(body))
        # a resumed run drops what was logged after its checkpoint; a new one, what a run that
        # was killed before its first checkpoint left in the same directory
        truncate_metrics(self.run_dir / METRICS, self.last_step)
        save_grid(real_images, self.run_dir / "real.png")
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(
            str(self.run_dir / "tensorboard"), purge_step=self.last_step if resumed else None
        )

    @contextmanager
    def progress(self, total: int, done: int) -> Iterator[_Progress]:
        if not self.interactive:
            yield _Progress(None, total, done)
            return
        columns = (
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            TextColumn("{task.fields[status]}"),
        )
        with Progress(*columns, transient=False) as bar:
            self.bar = _Progress(bar, total, done)
            yield self.bar
        self.bar = None

    def metrics(self, step: int, epoch: int, **values: float) -> None:
        if not self.enabled:
            return
        now = time.perf_counter()
        images_per_s = (step - self.last_step) * self.batch_size / (now - self.last_time)
        self.last_step, self.last_time = step, now
        row = {"step": step, "epoch": epoch, **values, "images_per_s": images_per_s}
        with open(self.run_dir / METRICS, "a") as handle:
            handle.write(json.dumps(row) + "\n")
        for key, value in row.items():
            if key not in ("step", "epoch"):
                self.writer.add_scalar(key, value, step)
        text = (
            f"loss D {values['loss_d']:.3f}  G {values['loss_g']:.3f}  "
            f"D(x) {values['d_x']:.2f}  D(G(z)) {values['d_g_z1']:.2f}/{values['d_g_z2']:.2f}  "
            f"{images_per_s:.0f} img/s"
        )
        if self.bar is not None:
            self.bar.status(text)
        else:
            print(f"step {step} epoch {epoch}  {text}", flush=True)

    def epoch_samples(self, epoch: int, step: int, images: torch.Tensor) -> None:
        save_grid(images, self.run_dir / "samples" / f"epoch-{epoch:04d}.png")
        grid = make_grid(images, nrow=8, normalize=True, value_range=(-1, 1))
        self.writer.add_image("samples", grid, step)

    def finish(self, images: torch.Tensor) -> None:
        save_grid(images, self.run_dir / "samples" / "final.png")
        if (self.run_dir / METRICS).exists():
            plot_losses(self.run_dir / METRICS, self.run_dir / "loss.png")
        if self.writer is not None:
            self.writer.close()
