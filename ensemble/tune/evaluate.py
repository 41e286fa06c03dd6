"""Read the studies' best trials back: held-out fold scores, the snap threshold, the final blend."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from promptblend.runs import Run

from .. import search
from ..blend import BlendParams, bank_digest, blend_stack, run_source
from ..objective import BlendObjective
from .plan import CvPlan
from .result import TuneResult
from .studies import Optimum, SearchSettings


def _held_out(plan: CvPlan, decoded: list) -> np.ndarray:
    """Per-image cosine of each fold's blend on its held-out images (zeros without CV)."""
    oof = np.zeros(len(plan.data.ids))
    for f, test in enumerate(plan.tests):
        c, norm = decoded[f]
        job = plan.jobs[f]
        oof[test] = BlendObjective(plan.raw, norm, job.mean, rows=test).cosines(c)
    return oof


def tune_snap(plan: CvPlan, bank, decoded: list, oof: np.ndarray) -> tuple[float | None, dict, np.ndarray]:
    """Snap thresholds: per fold from its training images (applied to the held-out fold), then final."""
    from ..snap import best_threshold

    y = plan.data.truth.astype(np.float64)

    def parts(c, norm, mu):
        emb = blend_stack(plan.data.stack, c, norm, mu)
        sim, rows = bank.nearest_values(emb)
        snapped = np.einsum("ij,ij->i", bank.value_rows(rows).astype(np.float64), y)
        plain = np.einsum("ij,ij->i", emb.astype(np.float64), y)
        return sim, snapped, plain

    oof = oof.copy()
    for f, test in enumerate(plan.tests):
        sim, snapped, plain = parts(*decoded[f], plan.jobs[f].mu)
        t, _ = best_threshold(sim[plan.jobs[f].rows], snapped[plan.jobs[f].rows], plain[plan.jobs[f].rows])
        if t is not None:
            hit = test[sim[test] >= t]
            oof[hit] = snapped[hit]
    sim, snapped, plain = parts(*decoded[-1], plan.final.mu)
    threshold, gain = best_threshold(sim, snapped, plain)
    n_snapped = int((sim >= threshold).sum()) if threshold is not None else 0
    return threshold, {"threshold": threshold, "in_sample_gain": gain, "n_snapped": n_snapped}, oof


def final_params(plan: CvPlan, c: np.ndarray, norm: bool, runs: Sequence[Run], bank, threshold: float | None) -> BlendParams:
    """The blend of the final study's best trial, with what ``ensemble.blend`` needs to match new runs."""
    scale = max(float(c.max()), 1e-12)
    by_name = {r.name: r for r in runs}
    folder = getattr(bank, "path", None)
    return BlendParams(
        weights=plan.space.weights(c),
        mean_weight=float(c[-1] / scale) if plan.space.has_mean else 0.0,
        normalise=norm,
        mean_vector=plan.final.mu.astype(np.float32) if plan.space.has_mean else None,
        snap_threshold=threshold,
        bank=folder,
        bank_digest=bank_digest(folder) if folder is not None else None,
        sources={n: run_source(by_name[n]) for n in plan.data.names},
    )


def _image_set(params: BlendParams) -> str | None:
    sets = {s.get("image_set") for s in params.sources.values()}
    return sets.pop() if len(sets) == 1 else None


def evaluate(plan: CvPlan, settings: SearchSettings, optima: list[Optimum], runs: Sequence[Run], bank) -> tuple[TuneResult, list]:
    """The :class:`TuneResult` of the finished studies (and the studies, for the plots)."""
    studies = [search.open_study(settings.spec, job.name) for job in plan.jobs]
    best = [search.best_trial(st) for st in studies]
    decoded = [plan.space.decode(t.params) for t in best]
    oof = _held_out(plan, decoded)
    c, norm = decoded[-1]
    final_obj = plan.final.objectives(plan.raw)[norm]
    in_sample = final_obj(c)
    threshold, snap = None, None
    if bank is not None:
        threshold, snap, oof = tune_snap(plan, bank, decoded, oof)
        in_sample += snap["in_sample_gain"]
    params = final_params(plan, c, norm, runs, bank, threshold)
    searched = [t.value for t in studies[-1].get_trials(deepcopy=False)
                if t.value is not None and t.user_attrs.get("source") != search.WARM_START]
    grad = optima[-1].score
    result = TuneResult(
        params=params, in_sample=float(in_sample), out_of_fold=float(oof.mean()) if plan.folds else None,
        fold_scores=[float(oof[t].mean()) for t in plan.tests], fold_in_sample=[float(t.value) for t in best[:-1]],
        gradient_optimum=grad, gradient_gap=float(grad - best[-1].value),
        search_gap=float(grad - max(searched)) if searched else None,
        single_scores={n: float(final_obj(np.eye(len(plan.data.names) + 1)[j])) for j, n in enumerate(plan.data.names)},
        n_images=len(plan.data.ids), n_groups=plan.n_groups, largest_group=plan.largest_group,
        dropped=plan.data.dropped, studies=[job.name for job in plan.jobs], storage=settings.spec.public_url,
        sampler=settings.sampler, trials=plan.final.n_trials, folds=plan.folds, seed=settings.seed, snap=snap,
        fold_weights=[plan.space.weights(d[0]) for d in decoded[:-1]], warm_start=settings.warm_start,
        image_set=_image_set(params), fold_sizes=plan.fold_sizes, pair_split=plan.pair_split,
    )
    return result, studies
