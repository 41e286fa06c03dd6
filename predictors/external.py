"""Import outside predictions (a Kaggle submission CSV or a run folder) as an ``external`` run.

``python -m predictors.external SRC --out RUNS [--name NAME]``
"""

from __future__ import annotations

import argparse
import hashlib
from pathlib import Path
from typing import Any

from promptblend.cli import entry_point
from promptblend.errors import AlignmentError, ConfigError, RunError
from promptblend.runkey import run_key
from promptblend.runs import Run, is_run, load_run, save_run

from .base import Prediction, Predictor


def read_external(src: str | Path) -> Run:
    """Read a submission CSV or a run folder as a :class:`Run` (validated, not yet saved)."""
    from promptblend.submission import read_submission

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


def source_digest(src: str | Path) -> str:
    """Hash of a submission CSV's bytes, or of a run folder's ids and embeddings."""
    src = Path(src)
    files = [src / "ids.txt", src / "embeddings.npy"] if src.is_dir() else [src]
    h = hashlib.sha256()
    for f in files:
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()[:16]


class ExternalPredictor(Predictor):
    """The ``external`` registry entry: rows of outside predictions (``source``) for the image set's ids."""

    reads_pixels = False

    def __init__(self, source: str | None = None) -> None:
        super().__init__(source=source)
        self.run: Run | None = None

    def _source(self) -> Path:
        if not self.params["source"]:
            raise ConfigError("predictor 'external' needs source=<submission CSV or run folder>")
        src = Path(self.params["source"]).expanduser()
        if not src.exists():
            raise RunError(f"external source not found: {src}")
        return src

    def cache_inputs(self) -> dict[str, Any]:
        """The source's content digest (a changed file is a new run)."""
        return {"source": source_digest(self._source())}

    def prepare(self, image_set) -> None:
        """Read the source and line its rows up with the image set's ids."""
        run = read_external(self._source())
        have, want = set(run.ids), set(image_set.ids)
        if have != want:
            missing, extra = sorted(want - have), sorted(have - want)
            raise AlignmentError(
                f"external source {self.params['source']} does not match the image set {image_set.root}: "
                f"{len(missing)} image ids missing (e.g. {missing[:3]}), {len(extra)} extra ids (e.g. {extra[:3]})"
            )
        self.run = run.select(image_set.ids)

    def predict_batch(self, batch: list[int]) -> Prediction:
        """Rows ``batch`` (image-set positions) of the aligned source."""
        return Prediction(self.run.embeddings[batch])


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
