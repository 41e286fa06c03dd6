"""Apply a tuned blend to new runs: ``python -m ensemble.blend --blend TUNED_DIR --runs RUNS... --out submission.csv``.

Runs are matched to the blend's weights by run name, else by predictor name and config (as recorded in
best.json), and each match is printed;
runs of predictors the blend does not know are reported and ignored. The submission is written
atomically and validated; on any error nothing is written.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from promptblend.cli import entry_point
from promptblend.errors import ConfigError

from ..align import load_runs
from . import blend_to_submission, load_params


def build_parser() -> argparse.ArgumentParser:
    """The argument parser."""
    ap = argparse.ArgumentParser(prog="python -m ensemble.blend", description=__doc__.splitlines()[0])
    ap.add_argument("--blend", required=True, help="folder written by ensemble.tune (best.json, mean_vector.npy)")
    ap.add_argument("--runs", nargs="+", required=True, help="run folders, or folders holding runs")
    ap.add_argument("--out", required=True, help="submission CSV to write")
    ap.add_argument("--images", help="the image folder the runs were made on: picks its runs, and the "
                                     "submission must cover exactly its ids")
    ap.add_argument("--index", help="prompt-bank folder of a snapping blend, when it moved since tuning "
                                    "(it must be the same build)")
    return ap


@entry_point
def main(argv: list[str] | None = None) -> int:
    """CLI entry point."""
    args = build_parser().parse_args(argv)
    out = Path(args.out)
    if out.is_dir():
        raise ConfigError(f"--out {out} is a folder: give the submission CSV's path")
    params = load_params(args.blend)
    blended = blend_to_submission(params, load_runs(args.runs), out, images=args.images, index=args.index)
    for run in blended.ignored:
        print(f"ignored {run.name}: the blend does not weight its predictor ({run.meta.get('predictor', '?')})")
    for (weight, how), run in zip(blended.matched.items(), blended.used):
        print(f"{weight}: run {run.name} (matched by {how})")
    used = ", ".join(f"{r.name}" for r in blended.used)
    print(f"wrote {out}: {len(blended.ids)} images blended from {len(blended.used)} runs ({used})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
