"""``examples.png``: a few test images with their true prompt, the generated prompts and every entry's cosine."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Sequence

import numpy as np

from promptblend.figures import new_figure, save_figure
from promptblend.imagesets import load_image
from promptblend.runs import Run


def plot_examples(
    images: Path, truth: Run, prompts: dict[str, str], runs: Sequence[Run], blend: np.ndarray, path: Path, n: int = 6
) -> Path:
    """Draw ``n`` evenly spaced test images with the truth, text predictions and per-entry cosines."""
    from promptblend.metric import cosine_rows

    rows = np.linspace(0, len(truth.ids) - 1, n).astype(int)
    cos = {r.name: cosine_rows(r.select(truth.ids).embeddings, truth.embeddings) for r in runs}
    cos["blend"] = cosine_rows(blend, truth.embeddings)
    texts = {r.name: r.select(truth.ids).prompts for r in runs if r.prompts is not None}
    fig = new_figure(11, 2.1 * n)
    axes = fig.subplots(n, 2, gridspec_kw={"width_ratios": [1, 6]})
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
    return save_figure(fig, path, dpi=90, tight=False)  # laid out by tight_layout: keep its size
