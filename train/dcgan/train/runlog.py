"""What a run leaves in its directory besides checkpoints, and what it shows while it runs.

RUN_DIR/config.json        the resolved settings and model config
RUN_DIR/metrics.jsonl      one line per logged step: losses, D(x), D(G(z)), images/s; and one
                           per score (--eval-every): eval_metric, eval_value, eval_best, ...
RUN_DIR/losses.jsonl       D's and G's loss at every step
RUN_DIR/real.png           a grid of real training images
RUN_DIR/samples/           a fixed-noise sample grid per epoch, and final.png
RUN_DIR/loss.png           the loss curves of every step, smoothed over the faint raw values
RUN_DIR/quality.png        the score against the step (--eval-every)
RUN_DIR/tensorboard/       TensorBoard event files

A resumed run first drops the lines logged after its checkpoint, so both files read as if the
run had never stopped.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from torchvision.utils import make_grid, save_image

from dcgan.train.checkpoint import write_atomic
from dcgan.train.config import LOWER_IS_BETTER

if TYPE_CHECKING:
    from dcgan.train.evaluation import Score

METRICS = "metrics.jsonl"
LOSSES = "losses.jsonl"
LOSS_PLOT = "loss.png"
QUALITY_PLOT = "quality.png"
# Everything a run writes into RUN_DIR (besides temporary dot-files): a directory holding
# anything else is not a run's, and a new run refuses it.
RUN_ENTRIES = frozenset(
    {
        "checkpoints", "config.json", METRICS, LOSSES, "real.png", "samples", LOSS_PLOT,
        QUALITY_PLOT, "tensorboard",
    }
)  # fmt: skip
LOSS_FLUSH = 1024  # steps whose losses wait on the device, at most, before they are written


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


def truncate_rows(path: Path, last_step: int) -> None:
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


def score_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The lines of metrics.jsonl that hold a score (--eval-every), oldest first."""
    return [row for row in rows if isinstance(row.get("eval_value"), int | float)]


def smoothing_window(count: int) -> int:
    """Steps a smoothed loss averages over: about a fiftieth of the run, odd, at least 1."""
    return max(1, count // 50) | 1


def smoothed(values: np.ndarray, window: int) -> np.ndarray:
    """The centred moving mean of `values`, over fewer values near the ends."""
    kernel = np.ones(window)
    totals = np.convolve(values, kernel, mode="same")
    counts = np.convolve(np.ones_like(values), kernel, mode="same")
    result: np.ndarray = totals / counts
    return result


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_losses(losses_path: Path, out: Path) -> None:
    """D's and G's loss at every step: smoothed in full colour, the raw values faint behind."""
    rows = metric_rows(losses_path)
    if not rows:
        return
    plt = _pyplot()
    steps = np.array([row["step"] for row in rows])
    window = smoothing_window(len(rows))
    figure, axis = plt.subplots(figsize=(10, 5), dpi=100)
    for key, label, colour in (("loss_d", "D", "tab:blue"), ("loss_g", "G", "tab:orange")):
        values = np.array([row[key] for row in rows], dtype=np.float64)
        axis.plot(steps, values, color=colour, alpha=0.25, linewidth=0.6)
        axis.plot(steps, smoothed(values, window), color=colour, linewidth=1.6, label=label)
    axis.set_xlabel("step")
    axis.set_ylabel("BCE loss")
    smoothing = f" (mean over {window} steps; faint: each step's)" if window > 1 else ""
    axis.set_title(f"Generator and discriminator loss at every step{smoothing}")
    axis.legend()
    figure.tight_layout()
    figure.savefig(out)
    plt.close(figure)


def plot_quality(metrics_path: Path, out: Path) -> None:
    """The scores of a run against the step, its best marked; those of its latest metric."""
    rows = score_rows(metric_rows(metrics_path))
    if not rows:
        return
    last = rows[-1]
    rows = [
        row
        for row in rows
        if (row["eval_metric"], row.get("eval_features"), row.get("eval_samples"))
        == (last["eval_metric"], last.get("eval_features"), last.get("eval_samples"))
    ]
    metric = last["eval_metric"]
    lower = metric in LOWER_IS_BETTER
    values = [row["eval_value"] for row in rows]
    finite = [value for value in values if np.isfinite(value)]
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(8, 4), dpi=100)
    axis.plot([row["step"] for row in rows], values, marker="o", color="tab:green")
    if finite:
        best = min(finite) if lower else max(finite)
        at = rows[values.index(best)]["step"]
        axis.plot([at], [best], marker="*", markersize=16, color="tab:red", linestyle="none",
                  label=f"best: {best:.4g} at step {at} (best.pt)")  # fmt: skip
        axis.legend()
    axis.set_xlabel("step")
    axis.set_ylabel(f"{metric} ({'lower' if lower else 'higher'} is better)")
    axis.set_title(
        f"{metric} of {last.get('eval_samples')} generated images, in "
        f"{last.get('eval_features')} features"
    )
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


class _QuietWriterFailures:
    """A thread hook that leaves TensorBoard's writer thread failing without a traceback: the
    writer keeps its OSError (a full or read-only disk) and raises it again on the run's next
    write, which dcgan-train reports in one line. Every other thread's failure goes on as before."""

    def __init__(self, previous: Any) -> None:
        self.previous = previous

    def __call__(self, args: threading.ExceptHookArgs) -> None:
        if isinstance(args.exc_value, OSError) and type(args.thread).__module__.startswith(
            "tensorboard."
        ):
            return
        self.previous(args)


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
        self.pending: list[tuple[int, torch.Tensor]] = []  # (step, [loss_d, loss_g]) not written

    def start(self, real_images: torch.Tensor, resumed: bool) -> None:
        (self.run_dir / "samples").mkdir(parents=True, exist_ok=True)
        body = (json.dumps(self.settings, indent=2, sort_keys=True) + "\n").encode()
        write_atomic(self.run_dir / "config.json", lambda handle: handle.write(body))
        # a resumed run drops what was logged after its checkpoint; a new one, what a run that
        # was killed before its first checkpoint left in the same directory
        truncate_rows(self.run_dir / METRICS, self.last_step)
        truncate_rows(self.run_dir / LOSSES, self.last_step)
        save_grid(real_images, self.run_dir / "real.png")
        from torch.utils.tensorboard import SummaryWriter

        if not isinstance(threading.excepthook, _QuietWriterFailures):
            threading.excepthook = _QuietWriterFailures(threading.excepthook)
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

    def step_losses(self, step: int, loss_d: torch.Tensor, loss_g: torch.Tensor) -> None:
        """Keep one step's losses, on their device: fetching them every step would wait for
        the GPU every step. They are written with the next log line or checkpoint."""
        if not self.enabled:
            return
        self.pending.append((step, torch.stack((loss_d.float(), loss_g.float()))))
        if len(self.pending) >= LOSS_FLUSH:
            self.flush_losses()

    def flush_losses(self) -> None:
        """Write the losses kept since the last flush to losses.jsonl (one device sync)."""
        if not self.pending:
            return
        values = torch.stack([pair for _, pair in self.pending]).cpu().tolist()
        lines = "".join(
            json.dumps({"step": step, "loss_d": loss_d, "loss_g": loss_g}) + "\n"
            for (step, _), (loss_d, loss_g) in zip(self.pending, values, strict=True)
        )
        with open(self.run_dir / LOSSES, "a") as handle:
            handle.write(lines)
        self.pending.clear()

    def metrics(self, step: int, epoch: int, **values: float) -> None:
        if not self.enabled:
            return
        self.flush_losses()
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

    def score(self, step: int, epoch: int, score: Score) -> None:
        """One score of the generator: its line in metrics.jsonl, TensorBoard and the log."""
        row = {"step": step, "epoch": epoch, **score.row()}
        with open(self.run_dir / METRICS, "a") as handle:
            handle.write(json.dumps(row) + "\n")
        self.writer.add_scalar(f"eval/{score.metric}", score.value, step)
        best = "  (best so far: best.pt)" if score.best else ""
        print(
            f"step {step} epoch {epoch}  {score.metric} {score.value:.4g}{best}  "
            f"({score.samples} images, {score.seconds:.1f} s)",
            flush=True,
        )

    def epoch_samples(self, epoch: int, step: int, images: torch.Tensor) -> None:
        save_grid(images, self.run_dir / "samples" / f"epoch-{epoch:04d}.png")
        grid = make_grid(images, nrow=8, normalize=True, value_range=(-1, 1))
        self.writer.add_image("samples", grid, step)

    def finish(self, images: torch.Tensor) -> None:
        self.flush_losses()
        save_grid(images, self.run_dir / "samples" / "final.png")
        if (self.run_dir / LOSSES).exists():
            plot_losses(self.run_dir / LOSSES, self.run_dir / LOSS_PLOT)
        if (self.run_dir / METRICS).exists():
            plot_quality(self.run_dir / METRICS, self.run_dir / QUALITY_PLOT)
        if self.writer is not None:
            self.writer.close()
