"""Import outside predictions (a Kaggle submission CSV or a run folder) as an ``external`` run.

``python -m predictors.external SRC --out RUNS [--name NAME]``
"""

from __future__ import annotations

import argparse
import hashlib
from pathlib import Path

from promptblend.cli import entry_point
from promptblend.errors import RunError
from promptblend.runs import Run, is_run, load_run, run_key, save_run


def read_external(src: str | Path) -> Run:
    """Read a submission CSV or a run folder as a :class:`Run` (validated, not yet saved)."""
    from ensemble.submission import read_submission

    src = Path(src)
    if src.is_dir():
        if not is_run(src):
            raise RunError(f"{src} is a folder but not a run (needs embeddings.npy, ids.txt, meta.json)")
        run = load_run(src)
        return Run(run.ids, run.embeddings, {"source_meta": run.meta}, run.prompts)
    ids, emb = read_submission(src)
    return Run(ids, emb, {})


def import_external(src: str | Path, out_root: str | Path, name: str | None = None) -> Run:
    """Copy outside predictions into ``out_root`` as a run of predictor ``external``."""
    src = Path(src)
    run = read_external(src)
    digest = hashlib.sha256("\n".join(run.ids).encode() + run.embeddings.tobytes()).hexdigest()[:16]
    label = name or src.stem
    run.meta.update(predictor="external", config={"source": str(src)}, fingerprint=digest, name=f"external-{label}")
    path = Path(out_root) / run_key(f"external-{label}", {"source": src.name}, digest)
    save_run(path, run)
    return run


@entry_point
def main(argv: list[str] | None = None) -> int:
    """CLI: import a submission CSV or run folder."""
    ap = argparse.ArgumentParser(prog="python -m predictors.external", description=__doc__.splitlines()[0])
    ap.add_argument("src", help="submission CSV or run folder")
    ap.add_argument("--out", required=True, help="runs folder")
    ap.add_argument("--name", help="label for the run (default: the source's stem)")
    args = ap.parse_args(argv)
    run = import_external(args.src, args.out, args.name)
    print(f"imported {len(run)} images -> {run.path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
