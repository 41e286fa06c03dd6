"""The score-time frontier of ``ensemble.tune --time-budget`` on real Stable Diffusion images.

``python benchmarks/bench_budget.py [--images DIR] [--prompts-csv CSV] [--bank-prompts FILE] [--bank-size N]
[--work DIR] [--test-images 16000]``

Runs the tiny predictors (tiny random CLIP, BLIP and GPT-2 twins: the scores are low, the mechanism is
what is measured) over the shared 400 real SD 1.x DrawBench images, with their real inference
seconds per image recorded in each run's ``meta.json``, builds a small real prompt bank for
``knn-tiny`` and ``clip-text-map-tiny``, then tunes the blend under three budgets: a quarter, half
and all of the projected time of every predictor together. Prints each budget's chosen subset and
the frontier. Runs and the bank are cached in ``--work`` (a second call re-tunes only).
"""

from __future__ import annotations

import argparse
import logging
import os
import tempfile
import time
from pathlib import Path

from promptblend.cli import entry_point

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
PREDICTORS = ("clip-interrogator-tiny", "captioner-tiny", "clipcap-tiny", "knn-tiny", "clip-text-map-tiny")


def bank_file(source: Path, n: int, work: Path) -> Path:
    """The first ``n`` lines of a prompt file, as a text file in ``work``."""
    import gzip

    out = work / f"bank-prompts-{n}.txt"
    if not out.exists():
        opener = gzip.open if source.suffix == ".gz" else open
        with opener(source, "rt", encoding="utf-8") as f:
            lines = [next(f).strip() for _ in range(n)]
        out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return out


@entry_point
def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print the frontier for three budgets."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=Path, default=SHARED / "drawbench-sd1" / "images")
    ap.add_argument("--prompts-csv", type=Path, default=SHARED / "drawbench-sd1" / "prompts.csv")
    ap.add_argument("--bank-prompts", type=Path, default=SHARED / "prompt-bank" / "curated-sd-prompts.txt.gz")
    ap.add_argument("--bank-size", type=int, default=3000)
    ap.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "pb-bench-budget")
    ap.add_argument("--test-images", type=int, default=16000)
    ap.add_argument("--trials", type=int, default=40)
    args = ap.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    logging.getLogger().setLevel(logging.WARNING)
    from rich.console import Console
    from rich.table import Table

    from ensemble.tune import load_truth, tune
    from index.build import BuildConfig, build_bank
    from predictors.run import run_predictor

    console = Console()
    args.work.mkdir(parents=True, exist_ok=True)
    bank = args.work / "bank"
    t0 = time.perf_counter()
    build_bank(BuildConfig(prompts=[str(bank_file(args.bank_prompts, args.bank_size, args.work))], keys="pb-tiny-clip"),
               bank, progress=False)
    console.print(f"bank of {args.bank_size} real prompts (tiny CLIP keys): {time.perf_counter() - t0:.1f} s")
    extra = {"knn-tiny": {"index": str(bank)}, "clip-text-map-tiny": {"bank": str(bank)}}
    runs = []
    for name in PREDICTORS:
        run = run_predictor(name, args.images, args.work / "runs", extra.get(name, {}), progress=False)
        run.meta["name"] = name
        runs.append(run)
    truth = load_truth(str(args.prompts_csv))
    speed = Table(title=f"recorded inference speed ({len(truth.ids)} real SD images, this machine)")
    for col in ("predictor", "s / image", f"projected h for {args.test_images}", "device"):
        speed.add_column(col, justify="left" if col in ("predictor", "device") else "right")
    total = 0.0
    for r in runs:
        spi = r.meta.get("seconds_per_image")
        if spi is None:
            raise SystemExit(f"{r.name}: no seconds_per_image in meta.json (run made before it was recorded?)")
        total += spi * args.test_images
        speed.add_row(r.name, f"{spi:.4f}", f"{spi * args.test_images / 3600:.3f}", str(r.meta.get("device")))
    console.print(speed)
    for frac in (0.25, 0.5, 1.0):
        budget_s = total * frac
        t0 = time.perf_counter()
        result = tune(runs, truth, args.work / f"tune-{frac:g}", trials=args.trials, folds=5, progress=False,
                      report=True, time_budget=budget_s, test_images=args.test_images)
        b = result.budget
        table = Table(title=f"budget {budget_s / 3600:.3f} h ({frac:.0%} of all predictors): frontier")
        for col in ("runs", "projected h", "out-of-fold", ""):
            table.add_column(col, justify="left" if col == "runs" else "right")
        for c in b.frontier:
            table.add_row(" + ".join(c.runs) or "(mean vector)", f"{c.hours:.3f}", f"{c.score:.5f}",
                          "chosen" if c == b.chosen else ("over budget" if c.seconds > budget_s else ""))
        console.print(table)
        console.print(f"chosen: {' + '.join(b.chosen.runs)}; tuned out-of-fold {result.out_of_fold:.5f}; "
                      f"dropped: {', '.join(b.dropped) or 'none'}; tune {time.perf_counter() - t0:.1f} s; "
                      f"report {result.out / 'report.html'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
