"""Write what a tuning found: submission.csv, folds.csv, the plots, report.html and best.json."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from promptblend import atomic
from promptblend.errors import BlendError, DiskFullError
from promptblend.runs import Run
from promptblend.vectors import DIM

from ..blend import blend_runs, blend_stack, save_params
from .plan import CvPlan
from .result import TuneResult


def write_folds(path: Path, ids: list[str], fold_of: np.ndarray, groups: np.ndarray) -> None:
    """``imgId,fold,group`` per image: which fold held it out and its prompt-similarity group."""
    lines = ["imgId,fold,group"] + [f"{i},{f},{g}" for i, f, g in zip(ids, fold_of.tolist(), groups.tolist())]
    atomic.write_text(path, "\n".join(lines) + "\n")


def write_submission(out: Path, result: TuneResult, plan: CvPlan, test_runs: Sequence[Run] | None, bank) -> Path:
    """Blend the test runs (or the tuned images) with the final params; write and validate submission.csv."""
    from promptblend.submission import write_submission as write_csv

    params = result.params
    if test_runs:
        blended = blend_runs(params, test_runs, bank=bank)
        ids, emb = blended.ids, blended.embeddings
    else:
        emb = blend_stack(plan.data.stack, params.coefficients(plan.data.names), params.normalise, params.mean_vector)
        if params.snap_threshold is not None:
            emb = bank.snap(emb, params.snap_threshold)
        ids = plan.data.ids
    result.submission_of = "test" if test_runs else "tuned"
    if emb.shape[1] != DIM:
        raise BlendError(f"blend has {emb.shape[1]} columns, expected {DIM}")
    return write_csv(out / "submission.csv", ids, emb)


def outputs_size(plan: CvPlan, test_runs: Sequence[Run] | None) -> int:
    """Rough bytes of the outputs: the submission's rows (id, eId, a float) plus ~1 MB of plots and JSON."""
    ids = test_runs[0].ids if test_runs else plan.data.ids
    return sum(len(i) + 18 for i in ids) * DIM + (1 << 20)


@contextlib.contextmanager
def disk_full_needs(out: Path, needed: int) -> Iterator[None]:
    """Add the space the outputs need to a :class:`DiskFullError` that does not say it."""
    try:
        yield
    except DiskFullError as e:
        if e.needed:
            raise
        raise DiskFullError(f"{e}; the tuning outputs need about {atomic.format_bytes(needed)} in {out}",
                            path=e.path, needed=needed, free=e.free) from e


def write_frontier(path: Path, budget) -> None:
    """Every scored predictor subset: runs, projected hours, out-of-fold score, on the frontier, chosen."""
    import pandas as pd

    front = set(budget.frontier)
    rows = [{"runs": "+".join(c.runs) or "(mean vector)", "n_runs": len(c.runs), "hours": round(c.hours, 4),
             "score": round(c.score, 6), "frontier": c in front, "chosen": c == budget.chosen}
            for c in budget.candidates]
    with atomic.atomic_path(path, ".csv") as tmp:
        pd.DataFrame(rows).to_csv(tmp, index=False)


def write_outputs(out: Path, result: TuneResult, plan: CvPlan, studies: list, test_runs, bank, report: bool) -> None:
    """submission.csv, folds.csv, and with ``report`` the plots and report.html (best.json: :func:`save_best`)."""
    from .. import report as rep

    with disk_full_needs(out, outputs_size(plan, test_runs)):
        result.submission = write_submission(out, result, plan, test_runs, bank)
        if plan.folds:
            write_folds(out / "folds.csv", plan.data.ids, plan.fold_of, plan.groups)
        if result.budget is not None:
            write_frontier(out / "frontier.csv", result.budget)
        if report:
            plots = rep.write_plots(out, result, studies)
            rep.report_page(result, plots).write(out / "report.html")


def withdraw_best(out: Path) -> None:
    """Remove an earlier run's ``best.json`` before ``out`` is worked on again (its study storage
    reopened, its outputs rewritten): a folder with best.json holds one finished run, untouched."""
    (out / "best.json").unlink(missing_ok=True)


def save_best(out: Path, result: TuneResult) -> Path:
    """``best.json`` and ``mean_vector.npy``, written last: a folder with best.json is complete."""
    with disk_full_needs(out, 1 << 20):
        return save_params(out, result.params, result.summary())
