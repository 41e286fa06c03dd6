"""The whole loop on the demo task: data, models, runs, bank index, tuned blend, submission, leaderboard.

Stages (each cached: a second run only reads what the first wrote):

1. generate the task (:mod:`.data`) and train the tiny CLIP (:mod:`.clip_train`);
2. build the prompt-bank index (demo bank + the user's banks) with the CLIP text tower as keys;
3. train ``clip-regressor`` (frozen head, and the tower fine-tuned end to end by LP-FT: a head started
   as the bank's CLIP-text-to-MiniLM map, a linear-probe phase, then end to end; the better on the
   validation split is the demo's ``clip-regressor``) and ``clipcap`` on the train split with that CLIP;
4. run ``clip-regressor``, ``clipcap``, ``clip-interrogator`` (demo label banks), ``knn`` and
   ``clip-text-map`` (zero-shot, from the bank) on the validation and test splits;
5. tune the blend on the validation split (grouped nested CV), apply it to the test split, write and
   validate ``submission.csv``;
6. score everything on the test split with the offline leaderboard (intervals, plots) and print the
   final table: every predictor, the mean-vector baseline and the blend.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Sequence

import numpy as np

from promptblend import atomic
from promptblend.cache import cache_dir
from promptblend.errors import ConfigError
from promptblend.runs import Run
from promptblend.timing import Timer

from .clip_train import ClipCheckpoint, ClipTrainConfig, train_demo_clip
from .data import DataConfig, DemoData, make_demo_data

log = logging.getLogger(__name__)

#: Display names of the demo's predictors (run names in the blend and the table).
PREDICTORS = ("clip-regressor", "clipcap", "clip-interrogator", "knn", "clip-text-map")
#: Predictors with weights trained on the demo's train split (the others rank labels or bank prompts).
TRAINED = ("clip-regressor", "clipcap")
BASELINE = "mean-vector"
#: The clip-regressor trained with its CLIP tower fine-tuned end to end by LP-FT (a candidate for "clip-regressor").
FINETUNED = "clip-regressor-finetuned"
BLEND = "blend"
#: Prompt cosine that ties validation images into one CV group when tuning.
GROUP_THRESHOLD = 0.85


@dataclass(frozen=True, eq=False)
class DemoSize:
    """How big the demo is: data, CLIP training, head training, tuning and leaderboard settings."""

    name: str
    data: DataConfig
    clip: ClipTrainConfig
    regressor_epochs: int = 12
    clipcap_epochs: int = 6
    clipcap_settings: dict = field(default_factory=lambda: {"lr": 3e-3})
    #: clip-regressor with the tower fine-tuned end to end (same data and epochs as the frozen head); the
    #: one that scores better on the validation split is the demo's clip-regressor. EMA 0.995 was chosen
    #: on validation (full: 0.7372 vs 0.7248 without EMA; small: 0.6744 vs 0.6548)
    finetune_settings: dict = field(default_factory=lambda: {
        "lr": 1e-3, "head_lr": 5e-3, "batch_size": 8, "warmup": 5, "ema": 0.995, "schedule": "constant", "augment": True,
    })
    #: clipcap's embedding: the mean of this many sampled captions' (one greedy caption: val 0.52, below
    #: the mean-vector's 0.63; the mean of 8: 0.66)
    clipcap_samples: int = 8
    trials: int = 150
    folds: int = 5
    splits: int = 1000


SIZES: dict[str, DemoSize] = {
    "full": DemoSize("full", DataConfig(n_pairs=2000, n_bank=2000), ClipTrainConfig(), trials=60),
    "small": DemoSize(
        "small",
        DataConfig(n_pairs=400, n_bank=300),
        ClipTrainConfig(epochs=12, warmup_steps=5),
        regressor_epochs=20,
        clipcap_epochs=6,
        trials=40,
        folds=3,
        splits=200,
    ),
}


@dataclass
class DemoResult:
    """The demo's outcome: test-split scores (with intervals) of every entry, tuning figures, files."""

    table: list[dict]
    scores: dict[str, float]
    blend_val_oof: float | None
    blend_val_in_sample: float
    weights: dict[str, float]
    submission: Path
    out: Path
    timings: dict[str, float] = field(default_factory=dict)
    clip_metrics: dict = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)
    #: clip-regressor's two modes: validation and test scores of the frozen head and the fine-tuned tower,
    #: and how the fine-tune was trained (``finetune_recipe``: head init, probe and total steps)
    regressors: dict = field(default_factory=dict)

    @property
    def blend_beats_all(self) -> bool:
        """Whether the blend scores above every single predictor and the baseline on the test split."""
        return all(self.scores[BLEND] > v for k, v in self.scores.items() if k != BLEND)

    @property
    def trained_beat_baseline(self) -> bool:
        """Whether every trained predictor scores above the mean-vector baseline on the test split."""
        return all(self.scores[k] > self.scores[BASELINE] for k in TRAINED if k in self.scores)

    def to_json(self) -> dict:
        """JSON-able summary (written as ``demo.json``)."""
        d = asdict(self)
        d.update(submission=str(self.submission), out=str(self.out))
        d.update(blend_beats_all=self.blend_beats_all, trained_beat_baseline=self.trained_beat_baseline)
        return d


def _key(*parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:10]


@contextlib.contextmanager
def _torch_threads(n: int | None):
    """Limit torch's intra-op threads for the demo's tiny models (restored afterwards)."""
    import torch

    old = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def default_threads() -> int:
    """Every core this process may use (its CPU affinity, or its share in a Ray actor): the demo's work is
    torch on CPU, and leaving a core idle halves it on a 2-core machine."""
    from promptblend.executors import worker_cpus

    return worker_cpus()


# ---------------------------------------------------------------- stages


def train_heads(
    data: DemoData, ckpt: ClipCheckpoint, models: Path, size: DemoSize, bank: Path, progress: bool
) -> dict[str, Path]:
    """Train (or reuse) clip-regressor and clipcap on the train split with the demo CLIP; the fine-tuned
    regressor by LP-FT: its head starts as ``bank``'s CLIP-text-to-MiniLM map and trains alone first (the
    ``finetune-tiny`` preset's ``head_init: auto`` with a bank; probe steps: its share of the same steps)."""
    from predictors.clip_regressor import train_regressor
    from predictors.clipcap import train_clipcap
    from predictors.run import default_workers
    from predictors.training import read_metrics

    # clipcap's held-out score generates text every epoch: the demo scores it on its own splits instead
    regressor = {"epochs": size.regressor_epochs, "val_frac": 0.1}
    trainers = {
        "clip-regressor": (train_regressor, "tiny", regressor),
        FINETUNED: (train_regressor, "finetune-tiny", {**regressor, **size.finetune_settings, "bank": str(bank)}),
        "clipcap": (train_clipcap, "tiny", {"epochs": size.clipcap_epochs, "val_frac": 0.0, **size.clipcap_settings}),
    }
    out = {}
    for name, (train, preset, settings) in trainers.items():
        keyed = {**settings, "bank": bank.name} if "bank" in settings else settings  # the bank by its content key
        folder = models / f"{name}-{_key(ckpt.path.name, keyed, data.root.name)}"
        rows = read_metrics(folder) if (folder / "model.safetensors").is_file() else []
        if not rows or rows[-1]["epoch"] < settings["epochs"]:
            train(
                data.images("train"), None, folder, preset, clip=ckpt.clip, num_workers=default_workers(), progress=progress,
                device="cpu", **settings,
            )
        else:
            log.info("demo: reusing %s", folder)
        out[name] = folder
    return out


def build_index(data: DemoData, ckpt: ClipCheckpoint, banks: Sequence[Path], root: Path, progress: bool) -> Path:
    """Index the demo bank and the user's banks, keyed by the demo CLIP's text tower."""
    from index.build import BuildConfig, build_bank

    prompts = [str(data.bank)] + [str(Path(b).resolve()) for b in banks]
    digests = [hashlib.sha256(Path(p).read_bytes()).hexdigest()[:12] for p in prompts[1:]]
    folder = root / f"bank-{_key(data.root.name, ckpt.path.name, prompts[1:], digests)}"
    cfg = BuildConfig(prompts=prompts, keys=ckpt.model, keys_pretrained=str(ckpt.path), budget_gb=0.5)
    build_bank(cfg, folder, progress=progress)
    return folder


def run_predictors(
    data: DemoData, ckpt: ClipCheckpoint, heads: dict[str, Path], index: Path, runs_root: Path, split: str,
    progress: bool, clipcap_samples: int = 0,
) -> list[Run]:
    """Every demo predictor on ``split`` as runs named by :data:`PREDICTORS`."""
    from predictors.run import default_workers, run_predictor

    from . import interrogator

    configs = {
        "clip-regressor": ("clip-regressor-tiny", {"checkpoint": str(heads["clip-regressor"])}),
        "clipcap": (
            "clipcap-tiny", {"checkpoint": str(heads["clipcap"]), "decoding": "greedy", "samples": clipcap_samples}
        ),
        "clip-interrogator": (
            interrogator.register(),
            {"labels": str(data.labels), "clip_model": ckpt.model, "clip_pretrained": str(ckpt.path)},
        ),
        "knn": ("knn-tiny", {"index": str(index), "clip_model": ckpt.model, "clip_pretrained": str(ckpt.path)}),
        "clip-text-map": (
            "clip-text-map-tiny", {"bank": str(index), "clip_model": ckpt.model, "clip_pretrained": str(ckpt.path)}
        ),
    }
    runs = []
    for name in PREDICTORS:
        entry, config = configs[name]
        run = run_predictor(
            entry, data.images(split), runs_root / split, config, workers=default_workers(), batch_size=64, device="cpu",
            progress=progress,
        )
        runs.append(Run(run.ids, run.embeddings, {**run.meta, "name": name}, run.prompts, run.path))
    return runs


def choose_regressor(
    data: DemoData, heads: dict[str, Path], runs_root: Path, progress: bool
) -> tuple[dict[str, Path], dict]:
    """Score the frozen head and the fine-tuned tower on validation and test; the better on validation
    becomes the demo's clip-regressor (its table row and the blend's input)."""
    from predictors.run import default_workers, run_predictor
    from promptblend.metric import score

    scores: dict = {}
    for mode, name in (("frozen", "clip-regressor"), ("finetuned", FINETUNED)):
        for split in ("val", "test"):
            truth = _truth(data, split)
            run = run_predictor(
                "clip-regressor-tiny", data.images(split), runs_root / split, {"checkpoint": str(heads[name])},
                workers=default_workers(), batch_size=64, device="cpu", progress=progress,
            )
            row = {i: k for k, i in enumerate(run.ids)}
            scores[f"{mode}_{split}"] = score(run.embeddings[[row[i] for i in truth.ids]], truth.embeddings)
    scores["chosen"] = "finetuned" if scores["finetuned_val"] > scores["frozen_val"] else "frozen"
    scores["finetune_recipe"] = finetune_recipe(heads[FINETUNED])
    log.info("demo: clip-regressor test score: fine-tuned %.4f vs frozen head %.4f (validation %.4f vs %.4f): %s",
             scores["finetuned_test"], scores["frozen_test"], scores["finetuned_val"], scores["frozen_val"],
             scores["chosen"])
    chosen = heads[FINETUNED] if scores["chosen"] == "finetuned" else heads["clip-regressor"]
    return {**heads, "clip-regressor": chosen}, scores


def finetune_recipe(folder: Path) -> dict:
    """How a fine-tuned regressor was trained, from its checkpoint: head init, probe and total steps."""
    from predictors.training import CHECKPOINT_FILE, read_checkpoint_state

    if not (folder / CHECKPOINT_FILE).is_file():  # a folder trained before checkpoints were kept
        return {}
    state = read_checkpoint_state(folder / CHECKPOINT_FILE)
    return {"head_init": state.get("head_init"), "lp_steps": state.get("lp_steps"), "steps": state.get("step")}


def _truth(data: DemoData, split: str) -> Run:
    from promptblend.truth import truth_run

    return truth_run(data.prompts_csv(split))


def _train_truth(data: DemoData) -> Run:
    """MiniLM embeddings of the training prompts (the trainers' cached targets: no second encode)."""
    from predictors.training import prompt_targets
    from promptblend.imagesets import read_prompts_csv

    prompts = read_prompts_csv(data.prompts_csv("train"))
    return Run(list(prompts), prompt_targets(list(prompts.values())), {"name": "train-truth"})


# ---------------------------------------------------------------- the demo


def run_demo(
    out: str | Path = "demo-out",
    size: str | DemoSize = "full",
    bank: str | Path | Sequence[str | Path] | None = None,
    cache: str | Path | None = None,
    trials: int | None = None,
    seed: int = 0,
    threads: int | None = None,
    progress: bool = True,
    quiet: bool = False,
) -> DemoResult:
    """Run the built-in demo end to end; write reports into ``out`` and return the test-split scores.

    ``size``: ``full`` (2,000 pairs, the default) or ``small`` (400 pairs, for tests), or a
    :class:`DemoSize`. ``bank``: prompt file(s) added to the kNN index (txt, txt.gz, csv, parquet,
    jsonl). ``cache``: where data, models, runs and the index live (default
    ``$PROMPTBLEND_CACHE/demo``); a second call reuses all of it. ``threads``: torch threads
    (default :func:`default_threads`).
    """
    if isinstance(size, str):
        if size not in SIZES:
            raise ConfigError(f"unknown demo size '{size}'; known: {', '.join(SIZES)}")
        size = SIZES[size]
    if seed != size.data.seed:
        size = replace(size, data=replace(size.data, seed=seed), clip=replace(size.clip, seed=seed))
    banks = [Path(bank)] if isinstance(bank, (str, Path)) else [Path(b) for b in (bank or [])]
    for b in banks:
        if not b.is_file():
            raise ConfigError(f"prompt bank not found: {b}")
    out = Path(out)
    root = Path(cache) if cache is not None else cache_dir() / "demo"
    timer = Timer()
    with _torch_threads(threads or default_threads()):
        with timer.stage("data"):
            data = make_demo_data(root, size.data, progress=progress)
        models = root / "models" / data.root.name
        with timer.stage("clip"):
            ckpt = train_demo_clip(data, models, size.clip, progress=progress)
        with timer.stage("index"):
            index = build_index(data, ckpt, banks, root / "banks", progress)
        with timer.stage("heads"):
            heads = train_heads(data, ckpt, models, size, index, progress)
        with timer.stage("runs"):
            runs_root = root / "runs" / data.root.name
            heads, regressors = choose_regressor(data, heads, runs_root, progress)
            val_runs = run_predictors(data, ckpt, heads, index, runs_root, "val", progress, size.clipcap_samples)
            test_runs = run_predictors(data, ckpt, heads, index, runs_root, "test", progress, size.clipcap_samples)
        with timer.stage("truth"):
            val_truth, test_truth = _truth(data, "val"), _truth(data, "test")
            train_truth = _train_truth(data)
        with timer.stage("tune"):
            tuned = _tune(val_runs, val_truth, test_runs, out / "tune", size, trials, seed, progress, quiet)
        with timer.stage("leaderboard"):
            mean = _mean_vector(train_truth, val_truth)
            result = _leaderboard(data, test_runs, test_truth, mean, tuned, out, size, seed, progress)
            result.files["examples"] = str(_examples(data, test_runs, test_truth, tuned, out))
    stages = {k.removesuffix("_s"): round(v, 1) for k, v in timer.times.items()}
    result.timings = {**stages, "total": round(timer.total_s(), 1)}
    result.clip_metrics = ckpt.metrics
    result.regressors = regressors
    atomic.write_text(out / "demo.json", json.dumps(result.to_json(), indent=2, default=str))
    if not quiet:
        print_summary(result)
    return result


def _mean_vector(*truths: Run) -> np.ndarray:
    from promptblend.vectors import l2_normalise

    known = np.concatenate([t.embeddings for t in truths])
    return l2_normalise(known.mean(axis=0, dtype=np.float64)[None]).astype(np.float32)[0]


def _tune(val_runs, val_truth, test_runs, out: Path, size: DemoSize, trials, seed, progress, quiet):
    from ensemble.tune import tune

    # every demo prompt shares the templates, so the default grouping (cosine >= 0.7) ties most of
    # them into one group; 0.85 still keeps prompts of one subject and scene together
    # studies are named by what they tune (the runs' cache keys, the truth's), so a rerun after the
    # models or data changed starts new studies in the same storage instead of refusing the old ones
    keys = [r.path.name if r.path is not None else r.name for r in [*val_runs, val_truth]]
    inputs = "|".join(sorted(keys) + [str(trials or size.trials), str(seed)])
    return tune(
        val_runs, val_truth, out, trials=trials or size.trials, folds=size.folds, seed=seed, test_runs=test_runs,
        group_threshold=GROUP_THRESHOLD, progress=progress, report=not quiet,
        study=f"demo-{hashlib.sha256(inputs.encode()).hexdigest()[:10]}",
    )


def _examples(data: DemoData, test_runs, test_truth: Run, tuned, out: Path) -> Path:
    from ensemble.blend import apply_blend
    from promptblend.imagesets import read_prompts_csv

    from .examples import plot_examples

    blend = apply_blend(tuned, test_runs)
    prompts = read_prompts_csv(data.prompts_csv("test"))
    return plot_examples(data.images("test"), test_truth, prompts, test_runs, blend, out / "examples.png")


def _leaderboard(data, test_runs, test_truth, mean, tuned, out: Path, size, seed, progress) -> DemoResult:
    from experiments.entries import (
        entry_from_arrays,
        entry_from_run,
        entry_from_submission,
    )
    from experiments.leaderboard import leaderboard, write_outputs
    from promptblend.submission import check_submission

    submission = tuned.submission
    check_submission(submission, images=data.images("test"))
    ids = test_truth.ids
    entries = [entry_from_run(r, r.name) for r in test_runs]
    entries.append(entry_from_arrays(BASELINE, ids, np.tile(mean, (len(ids), 1)), meta={"predictor": BASELINE}))
    blend_entry = entry_from_submission(BLEND, submission)
    blend_entry.tuning = {
        "in_sample": tuned.in_sample, "out_of_fold": tuned.out_of_fold,
        "overfit": (tuned.in_sample - tuned.out_of_fold) if tuned.out_of_fold is not None else None,
    }
    entries.append(blend_entry)
    board = leaderboard(entries, test_truth, splits=size.splits, seed=seed, progress=progress)
    files = write_outputs(board, out / "leaderboard")
    table = [
        {k: r[k] for k in ("rank", "name", "score", "ci_low", "ci_high", "private_low", "private_high", "p_first_private")}
        for r in board.rows
    ]
    for row in table:
        row["val_oof"] = tuned.out_of_fold if row["name"] == BLEND else None
    scores = {r["name"]: float(r["score"]) for r in board.rows}
    return DemoResult(
        table=table,
        scores=scores,
        blend_val_oof=tuned.out_of_fold,
        blend_val_in_sample=tuned.in_sample,
        weights={**tuned.params.weights, BASELINE: tuned.params.mean_weight},
        submission=submission,
        out=out,
        files={k: str(v) for k, v in files.items()},
    )


def _recipe_text(recipe: dict | None) -> str:
    """``LP-FT: text-map head, 58 of 580 steps head-only`` (or the plain fine-tune's words)."""
    if not recipe:
        return "recipe unknown"
    if recipe.get("lp_steps"):
        return f"LP-FT: {recipe['head_init']} head, {recipe['lp_steps']} of {recipe['steps']} steps head-only"
    return f"{recipe.get('head_init')} head, no linear probe"


def print_summary(result: DemoResult, console=None) -> None:
    """The final table: test-split score with its 95% interval for every entry, then the checks."""
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    table = Table(title="promptblend demo: test split (images no model or blend weight saw)")
    table.add_column("#", justify="right")
    table.add_column("entry", no_wrap=True, min_width=17)
    for col in ("test score", "95% interval", "P(1st)", "blend weight"):
        table.add_column(col, justify="right", no_wrap=True)
    for r in result.table:
        w = result.weights.get(r["name"])
        table.add_row(
            str(r["rank"]), r["name"], f"{r['score']:.4f}", f"{r['ci_low']:.4f}-{r['ci_high']:.4f}",
            f"{r['p_first_private']:.2f}", "" if w is None else f"{w:.2f}",
        )
    console.print(table)
    s = result.scores
    best_single = max(PREDICTORS, key=lambda k: s.get(k, -1))
    oof = f"{result.blend_val_oof:.4f}" if result.blend_val_oof is not None else "-"
    console.print(
        f"blend: validation in-sample {result.blend_val_in_sample:.4f}, out-of-fold {oof}; "
        f"test {s[BLEND]:.4f} vs best single ({best_single}) {s[best_single]:.4f} "
        f"and mean vector {s[BASELINE]:.4f}"
    )
    mark = {True: "yes", False: "NO"}
    console.print(
        f"blend beats every predictor and the baseline on test: {mark[result.blend_beats_all]}; "
        f"trained predictors ({', '.join(TRAINED)}) beat the mean vector: {mark[result.trained_beat_baseline]}"
    )
    r = result.regressors
    if r:
        console.print(
            f"clip-regressor, test: fine-tuned tower ({_recipe_text(r.get('finetune_recipe'))}) {r['finetuned_test']:.4f} "
            f"vs frozen head {r['frozen_test']:.4f} "
            f"({r['finetuned_test'] - r['frozen_test']:+.4f}); validation {r['finetuned_val']:.4f} vs "
            f"{r['frozen_val']:.4f}: the table and the blend use the {r['chosen']} one"
        )
    times = ", ".join(f"{k} {v:.0f}s" for k, v in result.timings.items())
    console.print(f"time: {times}")
    console.print(f"wrote {result.submission} (validated), plots and tables in {result.out}")
