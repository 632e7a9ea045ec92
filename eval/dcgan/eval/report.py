"""What an evaluation leaves: a rich table, a JSON file and the real_vs_fake.png figure.

Files are written whole or not at all (temporary file, fsync, rename).
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.table import Table

from dcgan.eval.errors import EvalError
from dcgan.train.checkpoint import write_atomic

LABELS = {
    "fid": "FID",
    "kid_mean": "KID (mean)",
    "kid_std": "KID (std)",
    "kid_subset_size": "KID subset size",
    "precision": "precision",
    "recall": "recall",
    "f_score": "F-score",
    "inception_score_mean": "Inception Score (mean)",
    "inception_score_std": "Inception Score (std)",
    "classifier_score_mean": "classifier score (mean)",
    "classifier_score_std": "classifier score (std)",
}


def write_bytes(path: Path, data: bytes) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, lambda handle: handle.write(data))
    except OSError as error:
        raise EvalError(f"cannot write {path}: {error.strerror or error}") from None


def write_json(path: Path, record: dict[str, Any]) -> None:
    write_bytes(path, (json.dumps(record, indent=2, sort_keys=True) + "\n").encode())


def metric_table(title: str, metrics: dict[str, float], caption: str) -> Table:
    table = Table(title=title, caption=caption, caption_justify="left")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for name, value in metrics.items():
        shown = f"{int(value)}" if name == "kid_subset_size" else f"{value:.6g}"
        table.add_row(LABELS.get(name, name), shown)
    return table


def print_table(table: Table, console: Console | None = None) -> None:
    (console or Console()).print(table)


def save_figure(
    path: Path, real: torch.Tensor, fake: torch.Tensor, real_title: str, fake_title: str
) -> None:
    """Real images beside generated ones, 8 x 8 each, as one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from torchvision.utils import make_grid

    figure, axes = plt.subplots(1, 2, figsize=(10, 5.4), dpi=100)
    for axis, images, title in ((axes[0], real, real_title), (axes[1], fake, fake_title)):
        grid = make_grid(images[:64], nrow=8, padding=2, pad_value=128)
        axis.imshow(grid.permute(1, 2, 0).numpy(), interpolation="nearest")
        axis.set_title(title, fontsize=9)
        axis.axis("off")
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    plt.close(figure)
    write_bytes(path, buffer.getvalue())
