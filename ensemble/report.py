"""Tuning results for people: a rich table on the terminal and PNG plots in the output folder."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def print_table(result, console=None) -> None:
    """Scores (per fold, out-of-fold, in-sample, gradient optimum) and the weights, as rich tables."""
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    scores = Table(title=f"ensemble.tune: {result.n_images} images, {result.folds} folds, {result.trials} {result.sampler} trials/study")
    scores.add_column("what")
    scores.add_column("tuned on (in-sample)", justify="right")
    scores.add_column("held out", justify="right")
    for f, (a, b) in enumerate(zip(result.fold_in_sample, result.fold_scores)):
        scores.add_row(f"fold {f}", f"{a:.5f}", f"{b:.5f}")
    if result.out_of_fold is not None:
        scores.add_row("[bold]out-of-fold (pooled)", "", f"[bold]{result.out_of_fold:.5f}")
    scores.add_row("[bold]final study", f"[bold]{result.in_sample:.5f}", "")
    scores.add_row("gradient optimum (final)", f"{result.gradient_optimum:.5f}", "")
    scores.add_row("gap: optimum - best trial", f"{result.gradient_gap:+.2e}", "")
    if result.search_gap is not None:
        scores.add_row("gap: optimum - best searched trial", f"{result.search_gap:+.2e}", "")
    if result.snap:
        t = result.snap["threshold"]
        scores.add_row("snap-to-bank", f"t={t:.3f}, {result.snap['n_snapped']} rows" if t is not None else "off", "")
    console.print(scores)
    weights = Table(title="blend weights (largest = 1)")
    weights.add_column("run")
    weights.add_column("weight", justify="right")
    weights.add_column("alone (in-sample)", justify="right")
    for name, w in result.params.weights.items():
        weights.add_row(name, f"{w:.4f}", f"{result.single_scores[name]:.5f}")
    if result.params.mean_vector is not None:
        weights.add_row("mean vector", f"{result.params.mean_weight:.4f}", "")
    weights.add_row("per-run L2 normalisation", str(result.params.normalise), "")
    console.print(weights)
    if result.out is not None:
        console.print(f"wrote {result.out / 'best.json'} and {result.submission}; "
                      f"browse the studies with: optuna-dashboard {result.storage}")


def write_plots(out: Path, result, studies) -> list[Path]:
    """``history.png`` (best-so-far per study), ``weights.png`` (per run, final and per fold), ``folds.png``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out)
    paths = []

    fig, ax = plt.subplots(figsize=(7, 4))
    final_vals = []
    for st in studies:
        done = [t for t in st.get_trials(deepcopy=False) if t.value is not None]
        searched = [(t.number, t.value) for t in done if t.user_attrs.get("source") != "gradient"]
        if not searched:
            continue
        x, vals = map(np.asarray, zip(*searched))
        final = st.study_name.endswith("-final")
        if final:
            final_vals = vals
            ax.scatter(x, vals, s=4, alpha=0.3, color="tab:blue", label="final: searched trials")
        ax.plot(x, np.maximum.accumulate(vals), lw=2 if final else 1, alpha=1 if final else 0.6,
                label=f"{st.study_name}: best searched so far")
    if len(final_vals):
        ax.set_ylim(min(np.percentile(final_vals, 10), result.gradient_optimum - 0.01), result.gradient_optimum + 0.005)
    ax.axhline(result.gradient_optimum, color="k", ls="--", lw=1, label="gradient optimum (final; warm-start trial 0)")
    ax.set_xlabel("trial")
    ax.set_ylabel("mean cosine (tuned-on images)")
    ax.set_title("optimisation history")
    ax.legend(fontsize=7, loc="lower right")
    paths.append(_save(fig, out / "history.png"))

    names = list(result.params.weights)
    fig, ax = plt.subplots(figsize=(max(5, 0.8 * len(names) + 2), 4))
    x = np.arange(len(names))
    ax.bar(x, [result.params.weights[n] for n in names], color="tab:blue", label="final")
    for f, fw in enumerate(result.fold_weights):
        ax.scatter(x + 0.25, [fw[n] for n in names], s=12, color="tab:orange", label="folds" if f == 0 else None)
    ax.set_xticks(x, names, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("weight (largest = 1)")
    ax.set_title(f"weights per run (mean vector: {result.params.mean_weight:.3f}, normalise: {result.params.normalise})")
    ax.legend(fontsize=8)
    paths.append(_save(fig, out / "weights.png"))

    if result.fold_scores:
        fig, ax = plt.subplots(figsize=(6, 4))
        x = np.arange(len(result.fold_scores))
        ax.bar(x - 0.2, result.fold_in_sample, 0.4, label="tuned on (other folds)")
        ax.bar(x + 0.2, result.fold_scores, 0.4, label="held out")
        ax.axhline(result.out_of_fold, color="k", ls="--", lw=1, label=f"out-of-fold {result.out_of_fold:.4f}")
        lo = min(result.fold_scores + result.fold_in_sample)
        hi = max(result.fold_scores + result.fold_in_sample)
        ax.set_ylim(lo - 0.5 * (hi - lo + 0.01), hi + 0.5 * (hi - lo + 0.01))
        ax.set_xticks(x, [f"fold {f}" for f in x])
        ax.set_ylabel("mean cosine")
        ax.set_title("per-fold scores")
        ax.legend(fontsize=8)
        paths.append(_save(fig, out / "folds.png"))
    return paths


def _save(fig, path: Path) -> Path:
    from promptblend import atomic

    fig.tight_layout()
    with atomic.atomic_path(path, ".png") as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path
