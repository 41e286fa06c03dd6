"""Score a submission against truth prompts: ``python -m ensemble.score --truth CSV --submission CSV``.

The last line printed is the score (mean cosine over the truth's images)."""

from __future__ import annotations

import argparse
from pathlib import Path

from promptblend.cli import entry_point
from promptblend.errors import SubmissionError
from promptblend.metric import score
from promptblend.submission import read_submission
from promptblend.truth import load_truth, truth_run


def score_submission(truth_csv: str | Path, submission_csv: str | Path, model: str | None = None) -> float:
    """Mean cosine of a submission against the truth (see :func:`promptblend.truth.load_truth`); every truth id must be present."""
    ids, emb = read_submission(submission_csv)
    truth = load_truth(truth_csv) if model is None else truth_run(truth_csv, model=model)
    have = dict(zip(ids, range(len(ids))))
    missing = [i for i in truth.ids if i not in have]
    if missing:
        raise SubmissionError(f"{submission_csv} lacks {len(missing)} truth images, e.g. {missing[:3]}")
    rows = [have[i] for i in truth.ids]
    return score(emb[rows], truth.embeddings)


@entry_point
def main(argv: list[str] | None = None) -> int:
    """CLI entry point."""
    ap = argparse.ArgumentParser(prog="python -m ensemble.score", description=__doc__.splitlines()[0])
    ap.add_argument("--truth", required=True, help="prompts.csv (imgId,prompt), an image set with prompts (folder or WebDataset shards) or a truth run folder")
    ap.add_argument("--submission", required=True, help="submission CSV (imgId_eId,val)")
    ap.add_argument("--model", default=None, help="scoring model (default: packaged all-MiniLM-L6-v2)")
    args = ap.parse_args(argv)
    print(f"{score_submission(args.truth, args.submission, args.model):.6f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
