"""``python -m ensemble.submission check CSV [--images DIR]`` validates a submission;
``python -m ensemble.submission write (--run DIR | --prompts CSV) --out CSV`` writes one.

The format itself lives in :mod:`promptblend.submission`.
"""

from __future__ import annotations

import argparse

from promptblend.cli import entry_point
from promptblend.submission import (
    check_submission,
    submission_from_prompts,
    write_submission,
)
from promptblend.vectors import DIM


@entry_point
def main(argv: list[str] | None = None) -> int:
    """CLI: ``check`` or ``write`` a submission."""
    ap = argparse.ArgumentParser(prog="python -m ensemble.submission", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("check", help="validate a submission CSV")
    c.add_argument("csv")
    c.add_argument("--images", help="image folder whose ids the submission must cover exactly")
    w = sub.add_parser("write", help="write a submission from a run or from prompts")
    src = w.add_mutually_exclusive_group(required=True)
    src.add_argument("--run", help="run folder (embeddings.npy + ids.txt)")
    src.add_argument("--prompts", help="CSV with imgId,prompt")
    w.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    if args.cmd == "check":
        ids = check_submission(args.csv, images=args.images)
        print(f"ok: {len(ids)} images, {len(ids) * DIM} rows")
    else:
        if args.run:
            from promptblend.runs import load_run

            run = load_run(args.run)
            write_submission(args.out, run.ids, run.embeddings)
        else:
            from promptblend.imagesets import read_prompts_csv

            prompts = read_prompts_csv(args.prompts)
            submission_from_prompts(args.out, list(prompts), list(prompts.values()))
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
