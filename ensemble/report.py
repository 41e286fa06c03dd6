"""Tuning results for people: a rich table on the terminal, PNG plots and ``report.html`` in the output folder.

Figures are built with :func:`promptblend.figures.new_figure` (no pyplot, no backend switch); the page
with :class:`promptblend.page.Page`, in the leaderboard page's style.
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from . import search


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
    if result.fold_sizes:
        split = result.pair_split or {}
        console.print(f"folds: {'/'.join(map(str, result.fold_sizes))} images; largest prompt group "
                      f"{result.largest_group} of {result.n_images}; similar prompt pairs in different folds: "
                      f"{split.get('similar_split', 0.0):.1%} of {split.get('similar_pairs', 0)}, "
                      f"near-duplicates: {split.get('near_split', 0)} of {split.get('near_pairs', 0)}")
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
    if result.budget is not None:
        b = result.budget
        front = Table(title=f"score-time frontier ({b.budget_s / 3600:g} h budget, {b.test_images} test images)")
        for col in ("runs", "projected hours", "out-of-fold", ""):
            front.add_column(col, justify="left" if col == "runs" else "right")
        for row in budget_rows(b):
            front.add_row(row["runs"], f"{row['hours']:.2f}", f"{row['score']:.5f}", row["chosen"])
        console.print(front)
        for name, why in b.dropped.items():
            console.print(f"dropped {name}: {why}")
        if b.untimed:
            console.print(f"no recorded inference time (counted as free): {', '.join(b.untimed)}")
    if result.out is not None:
        html = f", {result.out / 'report.html'}" if (result.out / "report.html").is_file() else ""
        console.print(f"wrote {result.out / 'best.json'}, {result.submission}{html}; "
                      f"browse the studies with: optuna-dashboard {result.storage}")
        if result.submission_of == "tuned":
            console.print(f"{result.submission} holds the {result.n_images} tuned (validation) images, not a test set: "
                          f"give --test-runs TEST_RUNS, or run python -m ensemble.blend --blend {result.out} "
                          "--runs TEST_RUNS --out submission.csv")
        elif result.submission_of == "test":
            console.print(f"{result.submission}: the blend applied to the --test-runs")


def _searched(study) -> tuple[np.ndarray, np.ndarray]:
    """(trial numbers, values) of a study's complete trials, the warm-start trial left out."""
    done = [(t.number, t.value) for t in study.get_trials(deepcopy=False)
            if t.value is not None and t.user_attrs.get("source") != search.WARM_START]
    return tuple(map(np.asarray, zip(*done))) if done else (np.zeros(0), np.zeros(0))


def history_figure(result, studies):
    """Best-so-far per study and the final study's trials, against the gradient optimum."""
    from promptblend.figures import new_figure

    fig = new_figure(7, 4)
    ax = fig.add_subplot()
    final_vals = np.zeros(0)
    for st in studies:
        x, vals = _searched(st)
        if not len(x):
            continue
        final = st.study_name.endswith("-final")
        if final:
            final_vals = vals
            ax.scatter(x, vals, s=4, alpha=0.3, color="tab:blue", label="final: searched trials")
        ax.plot(x, np.maximum.accumulate(vals), lw=2 if final else 1, alpha=1 if final else 0.6,
                label=f"{st.study_name}: best searched so far")
    if len(final_vals):
        ax.set_ylim(min(np.percentile(final_vals, 10), result.gradient_optimum - 0.01), result.gradient_optimum + 0.005)
    warm = "warm-start trial 0" if result.warm_start else "not enqueued"
    ax.axhline(result.gradient_optimum, color="k", ls="--", lw=1, label=f"gradient optimum (final; {warm})")
    ax.set_xlabel("trial")
    ax.set_ylabel("mean cosine (tuned-on images)")
    ax.set_title("optimisation history")
    ax.legend(fontsize=7, loc="lower right")
    return fig


def weights_figure(result):
    """Final weight per run (bars) and each fold's weights (dots)."""
    from promptblend.figures import new_figure

    names = list(result.params.weights)
    fig = new_figure(max(5, 0.8 * len(names) + 2), 4)
    ax = fig.add_subplot()
    x = np.arange(len(names))
    ax.bar(x, [result.params.weights[n] for n in names], color="tab:blue", label="final")
    for f, fw in enumerate(result.fold_weights):
        ax.scatter(x + 0.25, [fw[n] for n in names], s=12, color="tab:orange", label="folds" if f == 0 else None)
    ax.set_xticks(x, names, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("weight (largest = 1)")
    ax.set_title(f"weights per run (mean vector: {result.params.mean_weight:.3f}, normalise: {result.params.normalise})")
    ax.legend(fontsize=8)
    return fig


def folds_figure(result):
    """In-sample and held-out score per fold, with the pooled out-of-fold score."""
    from promptblend.figures import new_figure

    fig = new_figure(6, 4)
    ax = fig.add_subplot()
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
    return fig


def write_plots(out: Path, result, studies) -> dict[str, Path]:
    """``history.png`` (best-so-far per study), ``weights.png`` (per run, final and per fold), ``folds.png``."""
    from promptblend.figures import save_figure

    out = Path(out)
    figures = {"history": history_figure(result, studies), "weights": weights_figure(result)}
    if result.fold_scores:
        figures["folds"] = folds_figure(result)
    if result.budget is not None:
        from .budget import frontier_figure

        figures["frontier"] = frontier_figure(result.budget)
    return {key: save_figure(fig, out / f"{key}.png") for key, fig in figures.items()}


PLOT_CAPTIONS = {
    "history": "Search history: best searched trial so far per study, against the gradient optimum",
    "weights": "Weights per run: final blend (bars) and each fold's blend (dots)",
    "folds": "Per-fold scores: on the folds tuned on vs the held-out fold",
    "frontier": "Score-time frontier: out-of-fold score of each predictor subset against its projected inference time",
}


def _weight_rows(result) -> list[dict]:
    rows = []
    for name, w in result.params.weights.items():
        row = {"run": name, "final": w, "alone": result.single_scores.get(name)}
        row.update({f"fold{f}": fw.get(name) for f, fw in enumerate(result.fold_weights)})
        rows.append(row)
    if result.params.mean_vector is not None:
        rows.append({"run": "mean vector", "final": result.params.mean_weight})
    return rows


def budget_rows(budget) -> list[dict]:
    """The frontier's subsets as table rows, the chosen one marked."""
    return [{"runs": " + ".join(c.runs) or "(mean vector)", "hours": c.hours, "score": c.score,
             "chosen": "chosen" if c == budget.chosen else ""} for c in budget.frontier]


def _budget_section(page, budget, plots: dict[str, Path]) -> None:
    from promptblend.page import Column

    page.section(f"Time budget: {budget.budget_s / 3600:g} h for {budget.test_images} test images")
    page.text(f"Chosen: {' + '.join(budget.chosen.runs)} (out-of-fold {budget.chosen.score:.5f}, projected "
              f"{budget.chosen.hours:.2f} h). " + " ".join(f"Dropped {n}: {why}." for n, why in budget.dropped.items())
              + (f" No recorded time (counted as free): {', '.join(budget.untimed)}." if budget.untimed else ""))
    page.table([Column("runs"), Column("hours", "projected hours", fmt=".2f"), Column("score", "out-of-fold", fmt=".5f"),
                Column("chosen")], budget_rows(budget), name="frontier", pin=1)
    if "frontier" in plots:
        page.images([(plots["frontier"], PLOT_CAPTIONS["frontier"], PLOT_CAPTIONS["frontier"])])


def report_page(result, plots: dict[str, Path]):
    """``report.html``'s page: key scores, weights per fold, fold scores, search history, gradient gap."""
    from promptblend import __version__
    from promptblend.page import Column, Page

    page = Page(
        f"Tuned blend: {result.n_images} images",
        subtitle=f"{result.folds} folds, {result.trials} {result.sampler} trials per study, storage {result.storage}",
        footer=f"written by promptblend {__version__} at {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC",
    )
    page.facts({
        "in-sample (final study)": result.in_sample,
        "out-of-fold": "-" if result.out_of_fold is None else result.out_of_fold,
        "gradient optimum": result.gradient_optimum,
        "gap: optimum - best trial": f"{result.gradient_gap:+.2e}",
        "gap: optimum - best searched": "-" if result.search_gap is None else f"{result.search_gap:+.2e}",
        "per-run normalisation": str(result.params.normalise),
    })
    page.section("Weights per fold")
    cols = [Column("run"), Column("final", fmt=".4f", tip="final blend (largest = 1)")]
    cols += [Column(f"fold{f}", f"fold {f}", fmt=".4f") for f in range(len(result.fold_weights))]
    cols.append(Column("alone", "alone (in-sample)", fmt=".5f", tip="the run's score on its own"))
    page.table(cols, _weight_rows(result), name="weights", pin=1)
    if result.fold_scores:
        page.section("Fold scores")
        rows = [{"fold": f, "in_sample": a, "held_out": b, "gap": a - b}
                for f, (a, b) in enumerate(zip(result.fold_in_sample, result.fold_scores))]
        page.table([Column("fold"), Column("in_sample", "tuned on (in-sample)", fmt=".5f"),
                    Column("held_out", "held out", fmt=".5f"), Column("gap", "over-fit", fmt="+.5f")],
                   rows, name="folds", pin=1)
    if result.budget is not None:
        _budget_section(page, result.budget, plots)
    page.section("Search history and gradient gap")
    page.text(
        f"The gradient optimum of the final study's objective is {result.gradient_optimum:.6f}; the best trial is "
        f"{result.gradient_gap:+.2e} below it" + (f" and the best searched trial {result.search_gap:+.2e}." if
                                                  result.search_gap is not None else ".")
    )
    page.images([(plots[k], PLOT_CAPTIONS[k], PLOT_CAPTIONS[k]) for k in ("history", "weights", "folds") if k in plots])
    return page
