"""Training metrics: validation rows and per-step losses (``metrics.json``/``metrics.csv``) and the curves PNG."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from promptblend import atomic
from promptblend.figures import new_figure, save_figure

METRICS_FIELDS = (
    "step", "epoch", "train_loss", "val_loss", "val_score", "baseline_score", "lr", "images_per_s", "seconds"
)


def read_metrics(out: str | Path) -> list[dict]:
    """The validation rows of ``metrics.json`` in a training folder (empty if none)."""
    path = Path(out) / "metrics.json"
    return json.loads(path.read_text(encoding="utf-8"))["rows"] if path.is_file() else []


def read_step_losses(out: str | Path) -> list[float]:
    """The global training loss of every optimiser step so far (empty if none)."""
    path = Path(out) / "metrics.json"
    return json.loads(path.read_text(encoding="utf-8"))["losses"] if path.is_file() else []


def write_metrics(out: Path, rows: list[dict], losses: list[float]) -> None:
    """Write ``metrics.json`` (rows + step losses) and ``metrics.csv`` (rows), atomically."""
    atomic.write_text(out / "metrics.json", json.dumps({"rows": rows, "losses": losses}, indent=1))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=METRICS_FIELDS, lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    atomic.write_text(out / "metrics.csv", buf.getvalue())


def plot_metrics(out: str | Path) -> Path | None:
    """Write ``training_curves.png``: step losses, validation loss, and the score vs the mean-prompt baseline."""
    rows, losses = read_metrics(out), read_step_losses(out)
    if not rows:
        return None
    fig = new_figure(10, 4)
    a, b = fig.subplots(1, 2)
    a.plot(range(1, len(losses) + 1), losses, "-", lw=0.8, alpha=0.6, label="train (per step)")
    steps = [r["step"] for r in rows]
    if any(r["val_loss"] is not None for r in rows):
        a.plot(steps, [r["val_loss"] for r in rows], "s-", label="validation")
        b.plot(steps, [r["val_score"] for r in rows], "o-", label="validation score")
        b.plot(steps, [r["baseline_score"] for r in rows], "--", label="mean-prompt baseline")
    a.set(xlabel="step", ylabel="loss", title="loss")
    b.set(xlabel="step", ylabel="mean cosine (competition score)", title="validation score")
    for ax in (a, b):
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend()
    fig.tight_layout()
    return save_figure(fig, Path(out) / "training_curves.png", dpi=90)
