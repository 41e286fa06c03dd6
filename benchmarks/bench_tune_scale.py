"""The tuner at Kaggle scale and past it: prompt groups on real prompts, the truth encoder, growth table.

``python benchmarks/bench_tune_scale.py [--sections groups encoder growth] [--sizes 2000 16000 100000]
[--ks 5 20 50] [--trials 20] [--encoder-n 1024] [--work DIR]``

groups: real Discord prompts (a seeded sample of ``discord-sd-prompts.txt.gz``, case/space
duplicates removed), embedded once with the scoring model (cached in ``--work``): the largest prompt
group and the 5 fold sizes of today's transitive grouping and of ``ensemble.cv`` (bounded groups,
near-duplicates merged, folds placed by similar pairs), and how many similar / near-duplicate
pairs land in different folds (goal: largest group < 2% of the images, every fold within 5% of the
mean, no near-duplicate pair split).

encoder: the truth of ``--encoder-n`` of those prompts through ``promptblend.truth.truth_run`` with
the torch backend and with the ONNX one (fresh caches, same process, best of two): speed-up (goal
>= 2x) and the lowest cosine between the two (goal >= 0.99999).

growth: ``ensemble.tune`` (5 folds, ``--trials`` TPE trials per study, no report) on synthetic runs
around real prompt vectors, each cell in a fresh process: runs written with the project's
``save_run`` and read back with ``load_runs`` (memory-mapped) as a user would. Truth rows are the
real prompt vectors up to 16,000; beyond that (embedding 100k prompts on 2 busy cores takes too
long) each further row is derived from two random real rows a, b as normalise(w a + (1-w) b + e),
w ~ U(0.35, 0.65), e Gaussian with norm ~0.3 (new points among the real ones, about 0.8 from
each parent, below the near-duplicate cosine). Run j of K: normalise(y + s_j * noise) * scale,
s_j from 0.6 to 1.6, per-row log-normal scale. Prints wall time, peak memory above the process
baseline (RSS after a tiny warm-up tuning has loaded the code, before any data; VmHWM reset there) against the runs' bytes (goal
<= 1.5x at N=16,000, K=50), and the fold balance.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "prompt-bank" / "discord-sd-prompts.txt.gz"
LINES = 1_900_479  # lines in DATA (see its README)
REAL_MAX = 16000


def sample_prompts(n: int, seed: int = 0) -> list[str]:
    """``n`` distinct prompts (case and spacing ignored) drawn at random from DATA, in random order."""
    rng = np.random.default_rng(seed)
    want = set(rng.choice(LINES, size=int(n * 1.2), replace=False).tolist())
    picked = []
    with gzip.open(DATA, "rt", encoding="utf-8", errors="replace") as f:
        for i, line in enumerate(f):
            if i in want:
                picked.append(line.strip())
    seen, out = set(), []
    for j in rng.permutation(len(picked)):
        key = " ".join(picked[j].lower().split())
        if picked[j] and key not in seen:
            seen.add(key)
            out.append(picked[j])
        if len(out) == n:
            break
    return out


def real_vectors(work: Path, n: int = REAL_MAX) -> np.ndarray:
    """MiniLM vectors of :func:`sample_prompts` (``n`` <= 16,000: a prefix of the 16,000), cached in ``work``."""
    path = work / f"real-{REAL_MAX}.npy"
    if not path.is_file():
        from promptblend.text import encode

        print(f"embedding {REAL_MAX} real prompts once (cached in {path})...", flush=True)
        vec = encode(sample_prompts(REAL_MAX), show_progress=True)
        np.save(path, vec)
    return np.load(path, allow_pickle=False)[:n]


def truth_vectors(work: Path, n: int, seed: int = 0) -> np.ndarray:
    """Real prompt vectors, extended past 16,000 rows by the derivation in the module docstring."""
    from promptblend.vectors import l2_normalise

    real = real_vectors(work, min(n, REAL_MAX))
    if n <= len(real):
        return real
    rng = np.random.default_rng(seed + 17)
    extra = n - len(real)
    a, b = rng.integers(0, len(real), extra), rng.integers(0, len(real), extra)
    w = rng.uniform(0.35, 0.65, (extra, 1)).astype(np.float32)
    mixed = w * real[a] + (1 - w) * real[b] + rng.normal(0, 0.3 / np.sqrt(real.shape[1]), (extra, real.shape[1])).astype(np.float32)
    return np.concatenate([real, l2_normalise(mixed).astype(np.float32)])


def write_runs(folder: Path, truth: np.ndarray, k: int, seed: int = 0) -> None:
    """K synthetic runs around ``truth`` and the truth run, saved with the project's ``save_run``."""
    from promptblend.runs import Run, save_run
    from promptblend.vectors import l2_normalise

    rng = np.random.default_rng(seed)
    n, d = truth.shape
    ids = [f"img{i:07d}" for i in range(n)]
    save_run(folder / "truth", Run(ids, truth, {"name": "truth"}))
    for j in range(k):
        noise = rng.standard_normal((n, d), dtype=np.float32) * np.float32((0.6 + j / max(k - 1, 1)) / np.sqrt(d))
        noise += truth
        rows = l2_normalise(noise) * rng.lognormal(0.0, 0.3, (n, 1)).astype(np.float32)
        save_run(folder / "runs" / f"run{j:02d}", Run(ids, rows.astype(np.float32, copy=False), {"name": f"run{j:02d}"}))


def _status(field: str) -> int:
    """A ``/proc/self/status`` memory field in bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def measure_cell(folder: Path, trials: int, seed: int) -> dict:
    """In this (fresh) process: load the runs and truth as a user would, tune, report time and memory."""
    from ensemble.align import load_runs
    from ensemble.synthetic import synthetic_problem
    from ensemble.tune import tune
    from promptblend.runs import load_run

    tiny_runs, tiny_truth = synthetic_problem(60, 2)  # loads the code a tuning uses: part of the baseline
    tune(tiny_runs, tiny_truth, folder / "warm-up", trials=2, folds=2, progress=False, report=False)
    del tiny_runs, tiny_truth
    baseline = _status("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS
    t = time.perf_counter()
    runs = load_runs([folder / "runs"])
    truth = load_run(folder / "truth", mmap=True)
    result = tune(runs, truth, folder / "out", trials=trials, folds=5, seed=seed, progress=False, report=False)
    wall = time.perf_counter() - t
    sizes = np.asarray(result.fold_sizes)
    return {
        "wall_s": wall, "timings": result.timings, "baseline": baseline, "peak": _status("VmHWM"),
        "runs_bytes": sum(r.embeddings.nbytes for r in runs), "largest_group": result.largest_group,
        "n": result.n_images, "fold_spread": float(np.abs(sizes - sizes.mean()).max() / sizes.mean()),
        "pair_split": result.pair_split, "gradient_gap": result.gradient_gap,
    }


def growth(args) -> None:
    """The growth table: one fresh process per (N, K) cell."""
    print(f"\n== growth: ensemble.tune, 5 folds, {args.trials} TPE trials per study, runs memory-mapped ==")
    head = (f"{'N':>7} {'K':>3} {'wall s':>7} {'prep s':>7} {'studies s':>9} {'runs GiB':>8} {'peak-base GiB':>13} "
            f"{'ratio':>6} {'largest grp':>11} {'fold spread':>11} {'sim. split':>10}")
    print(head, flush=True)
    for n in args.sizes:
        truth = truth_vectors(args.work, n)
        for k in args.ks:
            with tempfile.TemporaryDirectory(dir=args.work) as tmp:
                write_runs(Path(tmp), truth, k)
                out = subprocess.run([sys.executable, __file__, "--cell", tmp, "--trials", str(args.trials)],
                                     capture_output=True, text=True)
                if out.returncode:
                    print(f"{n:>7} {k:>3} failed: {out.stderr.strip().splitlines()[-1:]}", flush=True)
                    continue
                r = json.loads(out.stdout.strip().splitlines()[-1])
            gib = 1 << 30
            extra = r["peak"] - r["baseline"]
            print(f"{n:>7} {k:>3} {r['wall_s']:>7.1f} {r['timings']['prepare_s']:>7.1f} {r['timings']['studies_s']:>9.1f} "
                  f"{r['runs_bytes'] / gib:>8.3f} {extra / gib:>13.3f} {extra / r['runs_bytes']:>6.2f} "
                  f"{r['largest_group']:>5} ({r['largest_group'] / r['n']:.2%}) {r['fold_spread']:>10.2%} "
                  f"{r['pair_split']['similar_split']:>10.2%}", flush=True)


def groups(args) -> None:
    """Largest group and fold sizes on real prompts: transitive components vs ensemble.cv."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    from ensemble.cv import group_folds, prompt_groups

    print("\n== groups: real Discord prompts, threshold 0.7, near-duplicates >= 0.9, 5 folds ==")
    for n in (2000, REAL_MAX):
        y = real_vectors(args.work, n)
        t = time.perf_counter()
        pg = prompt_groups(y, 0.7)
        folds = group_folds(pg.labels, 5, seed=0, pairs=(pg.i, pg.j))
        wall = time.perf_counter() - t
        _, old = connected_components(coo_matrix((np.ones(pg.i.size), (pg.i, pg.j)), shape=(n, n)), directed=False)
        old_folds = group_folds(old, 5, seed=0)
        for name, labels, f in (("transitive (before)", old, old_folds), ("ensemble.cv (now)", pg.labels, folds)):
            sizes = np.bincount(f, minlength=5)
            largest = int(np.bincount(labels).max())
            split = pg.split_share(f)
            print(f"N={n:>6} {name:<20} largest group {largest:>5} ({largest / n:6.2%}); folds {sizes.tolist()} "
                  f"(max {np.abs(sizes - sizes.mean()).max() / sizes.mean():.2%} from the mean); "
                  f"pairs 0.7-0.9 split {split['similar_split']:.2%} of {split['similar_pairs']}; "
                  f"near-duplicate pairs split {split['near_split']} of {split['near_pairs']}")
        print(f"N={n:>6} grouping + folds: {wall:.1f} s", flush=True)


def encoder(args) -> None:
    """Truth embedding: torch vs the ONNX export, through truth_run, same process, best of two."""
    from promptblend.text import encode
    from promptblend.truth import truth_run

    prompts = sample_prompts(REAL_MAX)[: args.encoder_n]
    truth = {f"img{i:06d}": p for i, p in enumerate(prompts)}
    encode(prompts[:8], backend="torch")
    encode(prompts[:8], backend="onnx")  # load (and export once) outside the timing
    best, runs = {}, {}
    for _ in range(2):
        for backend in ("torch", "onnx"):
            with tempfile.TemporaryDirectory() as tmp:
                t = time.perf_counter()
                runs[backend] = truth_run(truth, cache=tmp, backend=backend)
                best[backend] = min(best.get(backend, np.inf), time.perf_counter() - t)
    a, b = (runs[x].embeddings.astype(np.float64) for x in ("torch", "onnx"))
    cos = np.einsum("ij,ij->i", a, b)
    print(f"\n== encoder: truth of {len(prompts)} real prompts (promptblend.truth.truth_run), best of 2 ==")
    print(f"torch (sentence-transformers): {best['torch']:.1f} s ({len(prompts) / best['torch']:.0f} prompts/s)")
    print(f"onnx (fp32 export, length-bucketed): {best['onnx']:.1f} s ({len(prompts) / best['onnx']:.0f} prompts/s)")
    print(f"speed-up {best['torch'] / best['onnx']:.2f}x (goal >= 2x); cosine onnx vs torch: min {cos.min():.7f}, "
          f"mean {cos.mean():.8f} (goal >= 0.99999); max |diff| {np.abs(a - b).max():.2e}", flush=True)


SECTIONS = {"groups": groups, "encoder": encoder, "growth": growth}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sections", nargs="+", default=list(SECTIONS), choices=list(SECTIONS))
    ap.add_argument("--sizes", nargs="+", type=int, default=[2000, 16000, 100000])
    ap.add_argument("--ks", nargs="+", type=int, default=[5, 20, 50])
    ap.add_argument("--trials", type=int, default=20)
    ap.add_argument("--encoder-n", type=int, default=1024)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "bench_tune_scale")
    ap.add_argument("--cell", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.cell:
        import logging

        logging.disable(logging.WARNING)
        print(json.dumps(measure_cell(args.cell, args.trials, args.seed)))
        return
    args.work.mkdir(parents=True, exist_ok=True)
    for name in args.sections:
        SECTIONS[name](args)


if __name__ == "__main__":
    main()
