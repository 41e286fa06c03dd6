"""The table of bad inputs every CLI is fed: each must exit 2 with one ``error:`` line and write nothing.

``make_inputs(root)`` draws the good and bad inputs once; ``CASES`` names each bad input, the command
and its arguments (``{name}`` fields are paths under the inputs folder, ``{out}`` a fresh output path).
``run_case`` runs one and says what happened. Shared by tests/faults/test_bad_inputs.py and
``benchmarks/fault_table.py``.
"""

from __future__ import annotations

import gzip
import os
import pickle
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from harness import cli, python_m

N_IMAGES = 300
TRAIN_IMAGES = 24
N_PROMPTS = 120

WORDS = ("red", "castle", "misty", "forest", "portrait", "of", "a", "cat", "cyberpunk", "city", "oil", "painting",
         "golden", "hour", "dragon", "octane", "render", "8k", "astronaut", "riding", "horse", "watercolor", "ocean",
         "sunset", "by", "greg", "rutkowski", "trending", "artstation", "highly", "detailed", "neon", "robot")


def synthetic_prompts(n: int, seed: int = 0) -> list[str]:
    """``n`` distinct prompt-like lines drawn from a fixed word list."""
    rng = np.random.default_rng(seed)
    out: dict[str, None] = {}
    while len(out) < n:
        out[" ".join(rng.choice(WORDS, int(rng.integers(4, 12))))] = None
    return list(out)


def make_inputs(root: Path) -> Path:
    """Good inputs (images, prompts, runs, a bank) and bad ones, all under ``root``."""
    from shapes import make_shapes

    from promptblend.runs import Run, save_run
    from promptblend.submission import write_submission

    make_shapes(root / "images", N_IMAGES, size=32)
    make_shapes(root / "train_images", TRAIN_IMAGES, size=32, seed=3)
    (root / "prompts.txt").write_text("\n".join(synthetic_prompts(N_PROMPTS)) + "\n")
    _synthetic_runs(root, Run, save_run)
    ids = [f"shape{i:04d}" for i in range(4)]
    emb = np.random.default_rng(0).normal(size=(4, 384)).astype(np.float32)
    write_submission(root / "good_sub.csv", ids, emb)
    (root / "truth.csv").write_text("imgId,prompt\n" + "".join(f"{i},a prompt number {k}\n" for k, i in enumerate(ids)))
    _bad_files(root)
    return root


def _synthetic_runs(root: Path, Run, save_run) -> None:
    from ensemble.synthetic import synthetic_problem

    runs, truth = synthetic_problem(240, 3, seed=7)
    for r in runs:
        save_run(root / "runs" / r.name, r)
    save_run(root / "truth_run", truth)
    (root / "one_run").mkdir()
    shutil.copytree(root / "runs" / runs[0].name, root / "one_run" / runs[0].name)
    nan = truth.embeddings.copy()
    nan[3, 5] = np.nan
    (root / "nan_truth").mkdir()
    for f in ("ids.txt", "meta.json"):
        shutil.copy(root / "truth_run" / f, root / "nan_truth" / f)
    np.save(root / "nan_truth" / "embeddings.npy", nan)
    for name, damage in (("pickled_runs", "pickle"), ("misaligned_runs", "ids")):
        shutil.copytree(root / "runs", root / name)
        first = root / name / runs[0].name
        if damage == "pickle":
            np.save(first / "embeddings.npy", np.array([{"x": 1}], dtype=object))  # np.save pickles object arrays by default
        else:
            (first / "ids.txt").write_text((first / "ids.txt").read_text() + "extra\n")


def _bad_files(root: Path) -> None:
    bad = root / "bad"
    bad.mkdir()
    (bad / "a_file").write_text("not a folder\n")
    (bad / "empty_dir").mkdir()
    (bad / "empty.txt").write_text("")
    (bad / "empty.csv").write_text("")
    (bad / "b.xlsx").write_bytes(b"PK\x03\x04junk")
    gz = gzip.compress(("\n".join(synthetic_prompts(200)) + "\n").encode())
    (bad / "truncated.txt.gz").write_bytes(gz[: len(gz) // 2])
    (bad / "notgzip.txt.gz").write_text("plain text pretending to be gzip\n")
    (bad / "noprompt.csv").write_text("id,caption_text\n1,a cat\n2,a dog\n")
    (bad / "junk.jsonl").write_text('{"prompt": "a cat"}\nthis is not json\n')
    (bad / "pickled.npy").write_bytes(_pickled_npy())
    (bad / "junk.npy").write_bytes(b"\x93NUMPY garbage that is not an array")
    np.save(bad / "dims.npy", np.zeros((4, 7), np.float32))
    (bad / "bad.json").write_text("{not json")
    (bad / "list.json").write_text("[1, 2, 3]")
    (bad / "pickle.pt").write_bytes(pickle.dumps({"weights": [1, 2, 3]}))
    images = bad / "images_small"  # bad image sets are small: a case that is not refused runs fast
    images.mkdir()
    for src in sorted((root / "images").glob("*.png"))[:8]:
        shutil.copy(src, images / src.name)
    for name, data in (("truncated", (images / "shape0000.png").read_bytes()[:120]), ("zero", b""),
                       ("text", b"hello, I am not an image\n")):
        folder = bad / f"images_{name}"
        shutil.copytree(images, folder)
        (folder / "shape0005.png").write_bytes(data)
    shutil.copytree(root / "train_images", bad / "images_noprompts")
    (bad / "images_noprompts" / "prompts.csv").unlink()
    folder = bad / "images_dangling"
    shutil.copytree(images, folder)
    os.symlink(bad / "no-such-target.png", folder / "dangling.png")
    sub = "imgId_eId,val\n" + "".join(f"shape0000_{k},{'nan' if k == 3 else '0.01'}\n" for k in range(384))
    (bad / "nan_sub.csv").write_text(sub)
    (bad / "short_sub.csv").write_text("imgId_eId,val\n" + "".join(f"shape0000_{k},0.01\n" for k in range(383)))
    (bad / "header_sub.csv").write_text("id,value\n" + "".join(f"shape0000_{k},0.01\n" for k in range(384)))
    (bad / "truth_header.csv").write_text("image,text\nshape0000,a cat\n")
    (bad / "truth_empty_prompt.csv").write_text('imgId,prompt\nshape0000,"  "\n')
    (bad / "truth_dup.csv").write_text("imgId,prompt\nshape0000,a cat\nshape0000,a dog\n")
    (bad / "blend").mkdir()
    (bad / "blend" / "best.json").write_text('{"weights": "all of them"}')
    (bad / "latin1.txt").write_bytes("caf\xe9 au lait, oil painting\nna\xefve robot\n".encode("latin-1"))


def _pickled_npy() -> bytes:
    import io

    buf = io.BytesIO()
    np.save(buf, np.array([{"evil": "payload"}], dtype=object))  # np.save pickles object arrays by default
    return buf.getvalue()


@dataclass(frozen=True)
class Case:
    """One bad input: what it is, the module, its arguments, and an owner's open item when not yet refused."""

    kind: str
    module: str
    args: tuple[str, ...]
    todo: str = ""  # non-empty: known gap owned elsewhere (the test expects it to fail until fixed)


P, B, Q, S, C, T, L, E = ("predictors.run", "index.build", "index.query", "ensemble.score", "ensemble.submission",
                          "ensemble.tune", "ensemble.blend", "experiments.leaderboard")
R, K = "predictors.clip_regressor.train", "predictors.clipcap.train"
RUN = ("--out", "{out}", "--quiet", "--workers", "0")
TUNE = ("--out", "{out}", "--no-progress", "--no-report", "--folds", "0", "--trials", "3")
TRAIN = ("--config", "tiny", "--epochs", "1", "--num-workers", "0", "--no-progress", "--device", "cpu")

CASES: tuple[Case, ...] = (
    Case("unknown predictor", P, ("no-such-predictor", "--images", "{images}", *RUN)),
    Case("missing image folder", P, ("captioner-tiny", "--images", "{bad}/nowhere", *RUN)),
    Case("file given as image folder", P, ("captioner-tiny", "--images", "{bad}/a_file", *RUN)),
    Case("empty image folder", P, ("captioner-tiny", "--images", "{bad}/empty_dir", *RUN)),
    Case("file given as --out", P, ("captioner-tiny", "--images", "{images}", "--out", "{bad}/a_file", "--quiet")),
    Case("truncated PNG", P, ("captioner-tiny", "--images", "{bad}/images_truncated", *RUN)),
    Case("zero-byte PNG", P, ("captioner-tiny", "--images", "{bad}/images_zero", *RUN)),
    Case("text file named .png", P, ("captioner-tiny", "--images", "{bad}/images_text", *RUN)),
    Case("dangling symlink among images", P, ("captioner-tiny", "--images", "{bad}/images_dangling", *RUN)),
    Case("unknown --config key", P, ("captioner-tiny", "--images", "{images}", *RUN, "--config", "nope=1")),
    Case("wrong --config value type", P, ("captioner-tiny", "--images", "{images}", *RUN, "--config", "num_beams=two")),
    Case("missing --config file", P, ("captioner-tiny", "--images", "{images}", *RUN, "--config", "{bad}/none.json")),
    Case("invalid JSON --config file", P, ("captioner-tiny", "--images", "{images}", *RUN, "--config", "{bad}/bad.json")),
    Case("JSON list as --config file", P, ("captioner-tiny", "--images", "{images}", *RUN, "--config", "{bad}/list.json")),
    Case("missing local model folder", P, ("captioner-tiny", "--images", "{images}", *RUN, "--config", "model=/nonexistent/blip")),
    Case("pickled .pt CLIP weights", P, ("clip-interrogator-tiny", "--images", "{images}", *RUN,
                                         "--config", "clip_pretrained={bad}/pickle.pt")),
    Case("external source with NaN", P, ("external", "--images", "{images}", *RUN, "--config", "source={bad}/nan_sub.csv")),
    Case("external run folder with pickled .npy", P, ("external", "--images", "{images}", *RUN,
                                                      "--config", "source={root}/pickled_runs/run0")),
    Case("missing prompt file", B, ("--prompts", "{bad}/nope.txt", "--out", "{out}")),
    Case("folder given as prompt file", B, ("--prompts", "{bad}/empty_dir", "--out", "{out}")),
    Case("empty prompt file", B, ("--prompts", "{bad}/empty.txt", "--out", "{out}")),
    Case("unsupported prompt format", B, ("--prompts", "{bad}/b.xlsx", "--out", "{out}")),
    Case("truncated .txt.gz", B, ("--prompts", "{bad}/truncated.txt.gz", "--out", "{out}")),
    Case("non-gzip .txt.gz", B, ("--prompts", "{bad}/notgzip.txt.gz", "--out", "{out}")),
    Case("CSV without a prompt column", B, ("--prompts", "{bad}/noprompt.csv", "--out", "{out}")),
    Case("junk line in .jsonl", B, ("--prompts", "{bad}/junk.jsonl", "--out", "{out}")),
    Case("file given as --out (bank)", B, ("--prompts", "{root}/prompts.txt", "--out", "{bad}/a_file")),
    Case("zero --budget-gb", B, ("--prompts", "{root}/prompts.txt", "--out", "{out}", "--budget-gb", "0")),
    Case("negative --dedup-cos", B, ("--prompts", "{root}/prompts.txt", "--out", "{out}", "--dedup-cos", "-0.5")),
    Case("pickled --tune-queries", B, ("--prompts", "{root}/prompts.txt", "--out", "{out}", "--tune-queries", "{bad}/pickled.npy")),
    Case("junk --tune-queries", B, ("--prompts", "{root}/prompts.txt", "--out", "{out}", "--tune-queries", "{bad}/junk.npy")),
    Case("wrong-dim --tune-queries", B, ("--prompts", "{root}/prompts.txt", "--out", "{out}", "--tune-queries", "{bad}/dims.npy")),
    Case("unknown --keys model", B, ("--prompts", "{root}/prompts.txt", "--out", "{out}", "--keys", "no-such-clip")),
    Case("non-UTF-8 prompt text, --strict-utf8", B, ("--prompts", "{bad}/latin1.txt", "--out", "{out}", "--strict-utf8")),
    Case("missing bank folder", Q, ("{bad}/nowhere", "a cat")),
    Case("empty folder as bank", Q, ("{bad}/empty_dir", "a cat")),
    Case("missing truth CSV", S, ("--truth", "{bad}/nope.csv", "--submission", "{root}/good_sub.csv")),
    Case("missing submission CSV", S, ("--truth", "{root}/truth.csv", "--submission", "{bad}/nope.csv")),
    Case("empty submission CSV", S, ("--truth", "{root}/truth.csv", "--submission", "{bad}/empty.csv")),
    Case("NaN in submission", S, ("--truth", "{root}/truth.csv", "--submission", "{bad}/nan_sub.csv")),
    Case("383 values per image", S, ("--truth", "{root}/truth.csv", "--submission", "{bad}/short_sub.csv")),
    Case("bad submission header", S, ("--truth", "{root}/truth.csv", "--submission", "{bad}/header_sub.csv")),
    Case("bad truth header", S, ("--truth", "{bad}/truth_header.csv", "--submission", "{root}/good_sub.csv")),
    Case("empty prompt in truth", S, ("--truth", "{bad}/truth_empty_prompt.csv", "--submission", "{root}/good_sub.csv")),
    Case("repeated id in truth", S, ("--truth", "{bad}/truth_dup.csv", "--submission", "{root}/good_sub.csv")),
    Case("pickle given as submission", C, ("check", "{bad}/pickle.pt")),
    Case("negative --trials", T, ("--runs", "{root}/runs", "--truth", "{root}/truth_run", *TUNE[:-1], "-3")),
    Case("missing --runs folder", T, ("--runs", "{bad}/nowhere", "--truth", "{root}/truth_run", *TUNE)),
    Case("a single run", T, ("--runs", "{root}/one_run", "--truth", "{root}/truth_run", *TUNE)),
    Case("file given as --out (tune)", T, ("--runs", "{root}/runs", "--truth", "{root}/truth_run", "--out", "{bad}/a_file",
                                           "--no-progress", "--no-report", "--folds", "0", "--trials", "3")),
    Case("NaN in truth run", T, ("--runs", "{root}/runs", "--truth", "{root}/nan_truth", *TUNE)),
    Case("pickled run embeddings", T, ("--runs", "{root}/pickled_runs", "--truth", "{root}/truth_run", *TUNE)),
    Case("run ids out of line with rows", T, ("--runs", "{root}/misaligned_runs", "--truth", "{root}/truth_run", *TUNE)),
    Case("unsupported --storage", T, ("--runs", "{root}/runs", "--truth", "{root}/truth_run", *TUNE, "--storage", "redis://x")),
    Case("negative --folds", T, ("--runs", "{root}/runs", "--truth", "{root}/truth_run", "--out", "{out}", "--no-progress",
                                 "--no-report", "--trials", "3", "--folds", "-1")),
    Case("missing --blend folder", L, ("--blend", "{bad}/nowhere", "--runs", "{root}/runs", "--out", "{out}.csv")),
    Case("junk best.json", L, ("--blend", "{bad}/blend", "--runs", "{root}/runs", "--out", "{out}.csv")),
    Case("missing truth (leaderboard)", E, ("--runs", "{root}/runs", "--truth", "{bad}/nope.csv", "--out", "{out}", "--no-record")),
    Case("missing training images", R, ("--images", "{bad}/nowhere", "--out", "{out}", *TRAIN)),
    Case("unknown training preset", R, ("--images", "{root}/train_images", "--out", "{out}", *TRAIN[2:], "--config", "no-such")),
    Case("negative --epochs", R, ("--images", "{root}/train_images", "--out", "{out}", *TRAIN[:2], "--epochs", "-1",
                                  *TRAIN[4:])),
    Case("unknown --set key", R, ("--images", "{root}/train_images", "--out", "{out}", *TRAIN, "--set", "nope=1")),
    Case("images without prompts.csv", K, ("--images", "{bad}/images_noprompts", "--out", "{out}", *TRAIN)),
    Case("empty training folder", K, ("--images", "{bad}/empty_dir", "--out", "{out}", *TRAIN)),
    Case("file given as --out (trainer)", K, ("--images", "{root}/train_images", "--out", "{bad}/a_file", *TRAIN)),
)


@dataclass
class Outcome:
    """What one bad input did."""

    case: Case
    command: str
    code: int
    error_lines: list[str]
    traceback: bool
    written: list[str]

    @property
    def ok(self) -> bool:
        """Exit 2, exactly one ``error:`` line, no traceback, nothing written."""
        return self.code == 2 and len(self.error_lines) == 1 and not self.traceback and not self.written


def _tree(folder: Path) -> dict[str, tuple[int, int]]:
    return {p.relative_to(folder).as_posix(): (p.lstat().st_size, p.lstat().st_mtime_ns) for p in folder.rglob("*")}


def run_case(case: Case, root: Path, scratch: Path) -> Outcome:
    """Run one bad input with a fresh ``{out}`` under ``scratch``; report exit code, lines and writes."""
    out = scratch / case.kind.replace(" ", "_").replace("/", "_")
    fields = {"root": root, "bad": root / "bad", "images": root / "images", "out": out}
    args = [a.format(**fields) for a in case.args]
    before = _tree(root)
    res = cli(python_m(case.module, *args), timeout=300)
    after = _tree(root)
    written = [k for k in after if after[k] != before.get(k)] + [k for k in before if k not in after]
    if out.exists():  # empty folders are not output; any file is
        written += [f"{{out}}/{p.relative_to(out)}" for p in out.rglob("*") if p.is_file()]
    if Path(f"{out}.csv").exists():
        written.append("{out}.csv")
    lines = [ln for ln in res.stderr.splitlines() if ln.startswith("error:")]
    shown = " ".join(case.args).replace("{root}/", "").replace("{bad}/", "bad/")
    return Outcome(case, f"python -m {case.module} {shown}", res.returncode, lines,
                   "Traceback (most recent call last)" in res.stderr, written)
