"""``examples.png``: a few test images with their true prompt, the generated prompts and every entry's cosine."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Sequence

import numpy as np

from promptblend import atomic
from promptblend.images import load_image
from promptblend.runs import Run


def plot_examples(
    images: Path, truth: Run, prompts: dict[str, str], runs: Sequence[Run], blend: np.ndarray, path: Path, n: int = 6
) -> Path:
    """Draw ``n`` evenly spaced test images with the truth, text predictions and per-entry cosines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from promptblend.metric import cosine_rows

    rows = np.linspace(0, len(truth.ids) - 1, n).astype(int)
    cos = {r.name: cosine_rows(r.select(truth.ids).embeddings, truth.embeddings) for r in runs}
    cos["blend"] = cosine_rows(blend, truth.embeddings)
    texts = {r.name: r.select(truth.ids).prompts for r in runs if r.prompts is not None}
    fig, axes = plt.subplots(n, 2, figsize=(11, 2.1 * n), gridspec_kw={"width_ratios": [1, 6]})
    for ax_img, ax_txt, i in zip(axes[:, 0], axes[:, 1], rows):
        id_ = truth.ids[i]
        ax_img.imshow(load_image(next(images.glob(f"{id_}.*"))))
        ax_img.set_axis_off()
        lines = [f"truth: {prompts[id_]}"]
        lines += [f"{name}: {t[i]}" for name, t in texts.items()]
        lines.append("cosine  " + "   ".join(f"{k} {v[i]:.2f}" for k, v in cos.items()))
        printable = ("".join(c if c.isprintable() else "?" for c in line) for line in lines)
        wrapped = "\n".join(textwrap.shorten(line, 150) for line in printable)
        ax_txt.text(0, 0.5, wrapped, va="center", ha="left", fontsize=8, family="monospace")
        ax_txt.set_axis_off()
    fig.suptitle("demo test images: true prompt, generated prompts, cosine of every entry", fontsize=10)
    fig.tight_layout()
    with atomic.atomic_path(path, ".png") as tmp:
        fig.savefig(tmp, format="png", dpi=90)
    plt.close(fig)
    return path
