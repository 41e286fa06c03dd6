"""The table of bad inputs every CLI is fed: each must exit 2 with one ``error:`` line and write nothing.

``make_inputs(root)`` draws the good and bad inputs once (``unlock_inputs(root)`` before removing them);
``CASES`` names each bad input, the command and its arguments (``{name}`` fields are paths under the inputs
folder, ``{out}`` a fresh output path, ``{cache}`` the case's own cache). Three expectations:

- ``refused`` (most rows): exit 2, one ``error:`` line, no traceback, nothing written (no file, and no
  folder left behind: what a failed command leaves is resumable or removed);
- ``rebuilt``: a damaged cache entry (``damage``: glob + how, applied after a first good run) is removed
  with a warning and rebuilt: the second run exits 0 and says ``fails its checks``;
- ``through``: ``--out`` is a symlink: the command writes through it (exit 0), the link stays a link.

Every command that writes is in ``WRITERS`` (its arguments with ``{target}`` for ``--out``): adding a
command there gives it the unwritable, special-file and symlinked output rows. ``run_case`` runs one case
and says what happened. Shared by tests/faults/test_bad_inputs.py and ``benchmarks/fault_table.py``.
"""

from __future__ import annotations

import gzip
import os
import pickle
import re
import shutil
import socket
import stat
import subprocess
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
    _special_outputs(root / "bad")
    tuned = cli(python_m(T, "--runs", root / "runs", "--truth", root / "truth_run", "--out", root / "tuned", *TUNE[2:]))
    assert tuned.returncode == 0, tuned.stderr[-2000:]
    return root


def _special_outputs(bad: Path) -> None:
    """What ``--out`` must never replace: a FIFO, a character device, a socket, a symlink to a FIFO; an
    unwritable folder (``locked``); a regular file and a folder that symlinks point to (written through)."""
    os.mkfifo(bad / "fifo")
    if os.geteuid() == 0:  # a private twin of /dev/null: a bug replaces only it
        os.mknod(bad / "null", 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    else:  # a normal user cannot replace /dev/null itself
        os.symlink("/dev/null", bad / "null")
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(bad / "socket"))
    os.symlink(bad / "fifo", bad / "link_to_fifo")
    (bad / "locked").mkdir()
    lock = ["chattr", "+i"] if os.geteuid() == 0 else ["chmod", "555"]
    subprocess.run([*lock, str(bad / "locked")], check=True)


def unlock_inputs(root: Path) -> None:
    """Make the unwritable folder of :func:`make_inputs` removable again."""
    locked = root / "bad" / "locked"
    if locked.exists():
        unlock = ["chattr", "-i"] if os.geteuid() == 0 else ["chmod", "755"]
        subprocess.run([*unlock, str(locked)], check=True)


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
    """One bad input: what it is, the module, its arguments, what must happen (``refused``, ``rebuilt`` after
    ``damage``, written ``through`` a symlink), and an owner's open item when not yet handled."""

    kind: str
    module: str
    args: tuple[str, ...]
    todo: str = ""  # non-empty: known gap owned elsewhere (the test expects it to fail until fixed)
    expect: str = "refused"
    damage: tuple[tuple[str, str], ...] = ()  # (glob under the case's {out} or {cache}, truncate|junk|remove)


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


G, V, W, X = "experiments.generate", "experiments.sets", "ensemble.submission", "predictors.external"
#: Every command that writes, with ``{target}`` where its output goes (otherwise a good run).
WRITERS: dict[str, tuple[str, ...]] = {
    P: ("captioner-tiny", "--images", "{bad}/images_small", "--out", "{target}", "--quiet", "--workers", "0"),
    B: ("--prompts", "{root}/prompts.txt", "--out", "{target}"),
    T: ("--runs", "{root}/runs", "--truth", "{root}/truth_run", "--out", "{target}", *TUNE[2:]),
    L: ("--blend", "{root}/tuned", "--runs", "{root}/runs", "--out", "{target}"),
    E: ("--runs", "{root}/runs", "--truth", "{root}/truth_run", "--out", "{target}", "--no-record", "--splits", "20"),
    R: ("--images", "{root}/train_images", "--out", "{target}", *TRAIN),
    K: ("--images", "{root}/train_images", "--out", "{target}", *TRAIN),
    G: ("--prompts", "{root}/prompts.txt", "--out", "{target}", "--n", "2", "--model", "tiny", "--steps", "2", "--quiet"),
    V: ("convert", "{root}/train_images", "--out", "{target}"),
    W: ("write", "--run", "{root}/truth_run", "--out", "{target}"),
    X: ("{root}/good_sub.csv", "--out", "{target}"),
}
#: Where ``--out`` points in the refused rows: every writer gets the unwritable folder; the special files
#: rotate over the writers (each kind is met by several commands).
SPECIAL = (("a FIFO", "{bad}/fifo"), ("a character device", "{bad}/null"), ("a socket", "{bad}/socket"),
           ("a symlink to a FIFO", "{bad}/link_to_fifo"))


def _writer_cases() -> tuple[Case, ...]:
    rows = []
    for k, (module, args) in enumerate(WRITERS.items()):
        short = ".".join(module.split(".")[1:])
        rows.append(Case(f"--out in a read-only folder ({short})", module, _at(args, "{bad}/locked/out")))
        what, path = SPECIAL[k % len(SPECIAL)]
        rows.append(Case(f"{what} as --out ({short})", module, _at(args, path)))
    for module in (L, W, T):  # a file and a folder output reached through a symlink
        rows.append(Case(f"symlinked --out written through ({'.'.join(module.split('.')[1:])})", module,
                         _at(WRITERS[module], "{out}.link"), expect="through"))
    return tuple(rows)


def _at(args: tuple[str, ...], target: str) -> tuple[str, ...]:
    return tuple(a.replace("{target}", target) for a in args)


TRUTH_CACHE = ("--truth", "{root}/truth.csv", "--submission", "{root}/good_sub.csv")
LABELS = ("clip-interrogator-tiny", "--images", "{bad}/images_small", *RUN, "--config", "label_limit=40",
          "label_cache={cache}/labels")
#: A cache entry of each kind damaged after a good run: the rerun rebuilds it with a warning.
DAMAGED = (
    Case("truncated cached run embeddings.npy", P, _at(WRITERS[P], "{out}"), expect="rebuilt",
         damage=(("{out}/captioner-tiny-*/embeddings.npy", "truncate"),)),
    Case("junk cached run meta.json", P, _at(WRITERS[P], "{out}"), expect="rebuilt",
         damage=(("{out}/captioner-tiny-*/meta.json", "junk"),)),
    Case("cached run ids.txt cut short", P, _at(WRITERS[P], "{out}"), expect="rebuilt",
         damage=(("{out}/captioner-tiny-*/ids.txt", "truncate"),)),
    Case("truncated truth cache", S, TRUTH_CACHE, expect="rebuilt", damage=(("{cache}/truth/*/embeddings.npy", "truncate"),)),
    Case("truncated label-embedding cache", P, LABELS, expect="rebuilt",
         damage=(("{cache}/labels/**/*.npy", "truncate"), ("{out}/*", "remove"))),
    Case("truncated training checkpoint", R, _at(WRITERS[R], "{out}"), expect="rebuilt",
         damage=(("{out}/checkpoint.safetensors", "truncate"),)),
)
#: More of our own: unwritable and half-made outputs, odd arguments.
OWN = (
    Case("--out under a regular file (blend)", L, _at(WRITERS[L], "{bad}/a_file/sub.csv")),
    Case("--out is a folder (blend)", L, _at(WRITERS[L], "{bad}/empty_dir")),
    Case("--out is a folder (submission write)", W, _at(WRITERS[W], "{bad}/empty_dir")),
    Case("--out under /proc", B, _at(WRITERS[B], "/proc/promptblend-out")),
    Case("--out under /sys", E, _at(WRITERS[E], "/sys/promptblend-out")),
    Case("--out is a regular file (leaderboard)", E, _at(WRITERS[E], "{bad}/a_file")),
    Case("--out is a regular file (convert)", V, _at(WRITERS[V], "{bad}/a_file")),
    Case("--out is a regular file (generate)", G, _at(WRITERS[G], "{bad}/a_file")),
    Case("--out is a regular file (external)", X, _at(WRITERS[X], "{bad}/a_file")),
    Case("--out is a regular file (submission write)", W, _at(WRITERS[W], "{bad}/a_file/x.csv")),
    Case("unreadable --images in a FIFO", P, ("captioner-tiny", "--images", "{bad}/fifo", *RUN)),
    Case("FIFO as --truth", S, ("--truth", "{bad}/fifo", "--submission", "{root}/good_sub.csv")),
    Case("device as --submission", S, ("--truth", "{root}/truth.csv", "--submission", "{bad}/null")),
    Case("FIFO as prompt file", B, ("--prompts", "{bad}/fifo", "--out", "{out}")),
    Case("truth folder that is not a run", T, ("--runs", "{root}/runs", "--truth", "{bad}/empty_dir", *TUNE)),
    Case("empty folder as --blend", L, ("--blend", "{bad}/empty_dir", "--runs", "{root}/runs", "--out", "{out}.csv")),
    Case("--blend is a file", L, ("--blend", "{bad}/a_file", "--runs", "{root}/runs", "--out", "{out}.csv")),
    Case("run folder without runs (blend)", L, ("--blend", "{root}/tuned", "--runs", "{bad}/empty_dir", "--out", "{out}.csv")),
    Case("zero --n (generate)", G, ("--prompts", "{root}/prompts.txt", "--out", "{out}", "--n", "0", "--model", "tiny")),
    Case("missing source (convert)", V, ("convert", "{bad}/nowhere", "--out", "{out}")),
    Case("truncated PNG (convert)", V, ("convert", "{bad}/images_truncated", "--out", "{out}")),
    Case("missing run (submission write)", W, ("write", "--run", "{bad}/nowhere", "--out", "{out}.csv")),
    Case("pickled source (external)", X, ("{bad}/pickle.pt", "--out", "{out}")),
    Case("zero --splits", E, ("--runs", "{root}/runs", "--truth", "{root}/truth_run", "--out", "{out}", "--no-record",
                              "--splits", "0")),
    Case("negative --batch-size", P, ("captioner-tiny", "--images", "{bad}/images_small", *RUN, "--batch-size", "-4")),
    Case("unknown --backend", P, ("captioner-tiny", "--images", "{bad}/images_small", *RUN, "--backend", "spark")),
    Case("negative --shard-size", B, ("--prompts", "{root}/prompts.txt", "--out", "{out}", "--shard-size", "-1")),
    Case("empty training folder (regressor)", R, ("--images", "{bad}/empty_dir", "--out", "{out}", *TRAIN)),
    Case("--record in a read-only folder", E, ("--runs", "{root}/runs", "--truth", "{root}/truth_run", "--out", "{out}",
                                               "--splits", "20", "--record", "{bad}/locked/rec.sqlite")),
    Case("--storage in a read-only folder", T, ("--runs", "{root}/runs", "--truth", "{root}/truth_run", *TUNE,
                                                "--storage", "sqlite:///{bad}/locked/study.db")),
    Case("training diverges before a checkpoint", R, ("--images", "{root}/train_images", "--out", "{out}", *TRAIN,
                                                      "--set", "lr=1e20")),
)
CASES = CASES + _writer_cases() + DAMAGED + OWN


@dataclass
class Outcome:
    """What one case did (for ``rebuilt``, the second run; ``first_code`` is the first run's exit code)."""

    case: Case
    command: str
    code: int
    error_lines: list[str]
    traceback: bool
    written: list[str]
    warned: bool = False
    first_code: int | None = None
    through: bool = False
    last: str = ""  # the warning of a rebuilt case, else the last line printed

    @property
    def ok(self) -> bool:
        """refused: exit 2, exactly one ``error:`` line, no traceback, nothing written; rebuilt: both runs exit 0
        and the second warns that the entry fails its checks; through: exit 0 and the link still points to
        what now holds the output."""
        if self.traceback:
            return False
        if self.case.expect == "rebuilt":
            return self.first_code == 0 and self.code == 0 and self.warned
        if self.case.expect == "through":
            return self.code == 0 and self.through
        return self.code == 2 and len(self.error_lines) == 1 and not self.written

    @property
    def line(self) -> str:
        """The line the table shows: the error line, else the warning, else the last line printed."""
        if self.error_lines:
            return self.error_lines[0] if len(self.error_lines) == 1 else f"{len(self.error_lines)} error lines"
        return self.last


ARGPARSE_ERROR = re.compile(r"^python -m [\w.]+( \w+)?: error: ")  # argparse's own one line (after its usage)


def _tree(folder: Path) -> dict[str, tuple[int, int, int]]:
    out = {}
    for p in folder.rglob("*"):
        st = p.lstat()
        out[p.relative_to(folder).as_posix()] = (st.st_size, st.st_mtime_ns, st.st_mode)
    return out


def _damage(pattern: str, how: str) -> int:
    """Damage every path matching ``pattern`` (absolute glob); return how many."""
    root = Path(pattern.split("*", 1)[0]).parent
    hits = sorted(root.glob(pattern[len(str(root)) + 1 :]))
    for path in hits:
        if how == "remove":
            shutil.rmtree(path) if path.is_dir() else path.unlink()
        elif how == "junk":
            path.write_text("{not json")
        else:
            data = path.read_bytes()
            path.write_bytes(data[: len(data) // 2])
    return len(hits)


def _through_target(case: Case, link: Path) -> Path:
    """``link`` -> a target that already exists: a folder for folder outputs, a file with old text for files."""
    target = link.with_name(link.name + ".target")
    if case.module == T:
        target.mkdir()
    else:
        target.write_text("old\n")
    link.symlink_to(target)
    return target


def run_case(case: Case, root: Path, scratch: Path) -> Outcome:
    """Run one case with a fresh ``{out}`` and ``{cache}`` under ``scratch``; report exit code, lines and writes."""
    slug = case.kind.replace(" ", "_").replace("/", "_")
    out = scratch / slug
    cache = scratch / f"{slug}.cache"
    fields = {"root": root, "bad": root / "bad", "images": root / "images", "out": out, "cache": cache}
    args = [a.format(**fields) for a in case.args]
    env = {"PROMPTBLEND_CACHE": str(cache)}
    target = _through_target(case, Path(f"{out}.link")) if case.expect == "through" else None
    first_code = None
    if case.expect == "rebuilt":
        first_code = cli(python_m(case.module, *args), timeout=300, env=env).returncode
        damaged = sum(_damage(glob.format(**fields), how) for glob, how in case.damage)
        first_code = first_code if damaged else -1  # nothing to damage: the case proves nothing
    before = _tree(root)
    res = cli(python_m(case.module, *args), timeout=300, env=env)
    after = _tree(root)
    written = [k for k in after if after[k] != before.get(k)] + [k for k in before if k not in after]
    if case.expect == "refused":
        if out.exists():  # a folder left behind is output too: a failed command leaves resumable work or nothing
            written += [f"{{out}}/{p.relative_to(out)}" for p in out.rglob("*") if p.is_file()] or ["{out} (empty folder)"]
        if Path(f"{out}.csv").exists():
            written.append("{out}.csv")
    through = False
    if target is not None:
        link = Path(f"{out}.link")
        through = link.is_symlink() and (any(target.iterdir()) if target.is_dir() else target.read_text() != "old\n")
    lines = [ln for ln in res.stderr.splitlines() if ln.startswith("error:") or ARGPARSE_ERROR.match(ln)]
    shown = " ".join(case.args).replace("{root}/", "").replace("{bad}/", "bad/")
    said = [ln for ln in (res.stderr + res.stdout).splitlines() if ln.strip()]
    logged = [ln for log in [*(out.rglob("*.log") if out.is_dir() else []), *cache.rglob("*.log")]
              for ln in log.read_text(errors="replace").splitlines()]  # --quiet sends warnings to the log file
    warned = [ln for ln in said + logged if "fails its checks" in ln]
    last = (warned[0] if warned else said[-1] if said else "")[:300]
    return Outcome(case, f"python -m {case.module} {shown}", res.returncode, lines,
                   "Traceback (most recent call last)" in res.stderr, written, bool(warned), first_code, through, last)
