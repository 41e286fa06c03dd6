"""The index at full scale: real MiniLM bank embeddings extended to 1.9M vectors (normalised
mixtures of two real embeddings plus small noise), the auto-chosen index within a memory budget,
16,000 held-out queries: recall@10 against exact search and queries/s against exact Flat search
in the same run, and the index build time.

    python benchmarks/bench_index_scale.py --base BANK/values.npy [--n 1900000] [--queries 16000] [--key KEY]

``BANK`` is a bank built by ``python -m index.build`` (e.g. OUT/full of bench_index_build.py).
"""

from __future__ import annotations

import argparse
import resource
import time
from pathlib import Path

import numpy as np


def mixtures(base: np.ndarray, n: int, rng: np.random.Generator, noise: float = 0.01) -> np.ndarray:
    """``n`` unit vectors ``w*a + (1-w)*b + noise`` of random real rows a, b, w ~ U(0.5, 1)."""
    a = base[rng.integers(0, len(base), n)]
    b = base[rng.integers(0, len(base), n)]
    w = rng.uniform(0.5, 1.0, (n, 1)).astype(np.float32)
    x = w * a + (1 - w) * b + rng.normal(0, noise, a.shape).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def main() -> None:
    import faiss
    from tqdm.auto import tqdm

    from index.choose import IndexChoice, choose_index
    from index.faiss_index import (
        build_index,
        exact_search,
        recall_at_k,
        set_search_param,
        tune_search,
    )

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--base", type=Path, required=True, help="real bank embeddings (.npy, N x 384)")
    p.add_argument("--n", type=int, default=1_900_000)
    p.add_argument("--queries", type=int, default=16_000)
    p.add_argument("--exact-queries", type=int, default=None,
                   help="held-out queries searched exactly for recall and Flat q/s (default: all)")
    p.add_argument("--budget-gb", type=float, default=2.0)
    p.add_argument("--recall-target", type=float, default=0.95)
    p.add_argument("--key", default=None, help="build this faiss factory key instead of the auto-chosen one "
                                                "(e.g. IVF4096,SQfp16, to compare at the same nprobe values)")
    p.add_argument("--work", type=Path, default=Path("/tmp/promptblend-bench-scale"))
    args = p.parse_args()
    base = np.load(args.base).astype(np.float32)
    rng = np.random.default_rng(0)
    args.work.mkdir(parents=True, exist_ok=True)
    path = args.work / f"keys-{args.n}-{len(base)}.npy"  # deterministic (seeded): reused by a rerun
    if not path.is_file():
        keys = np.lib.format.open_memmap(path.with_suffix(".tmp"), mode="w+", dtype=np.float32,
                                         shape=(args.n, base.shape[1]))
        keys[: len(base)] = base
        for s in tqdm(range(len(base), args.n, 200_000), desc="synthesise", unit="chunk"):
            e = min(s + 200_000, args.n)
            keys[s:e] = mixtures(base, e - s, rng)
        keys.flush()
        del keys
        path.with_suffix(".tmp").rename(path)
    keys = np.load(path, mmap_mode="r")
    queries = mixtures(base, args.queries, np.random.default_rng(1))  # held out: never added
    print(f"{args.n:,} vectors ({len(base):,} real) x {base.shape[1]}; {args.queries:,} held-out queries; "
          f"faiss {faiss.__version__}, {faiss.omp_get_max_threads()} threads")

    choice = choose_index(args.n, base.shape[1], int(args.budget_gb * 2**30))
    if args.key:
        choice = IndexChoice(args.key, 0, "nprobe" if "IVF" in args.key else "efSearch" if "HNSW" in args.key else None)
    t = time.perf_counter()
    index = build_index(keys, choice)
    build_s = time.perf_counter() - t
    t = time.perf_counter()
    tuning = tune_search(index, choice, keys, target=args.recall_target)
    tune_s = time.perf_counter() - t
    how = "given by --key" if args.key else f"auto-chosen, est. {choice.gib:.2f} GiB"
    print(f"{choice.key} ({how}): trained+added in {build_s:.1f} s, tuned "
          f"{tuning['param']}={tuning['value']} in {tune_s:.1f} s (sample recall {tuning['recall']:.4f}); "
          f"curve {tuning['curve']}")

    t = time.perf_counter()
    _, found = index.search(queries, 10)
    ann_s = time.perf_counter() - t
    n_exact = min(args.exact_queries or args.queries, args.queries)
    t = time.perf_counter()
    _, truth = exact_search(keys, queries[:n_exact], 10)
    flat_s = time.perf_counter() - t
    recall = recall_at_k(found[:n_exact], truth)
    faiss.write_index(index, str(args.work / "index.faiss"))
    index_bytes = (args.work / "index.faiss").stat().st_size
    ann_qps, flat_qps = args.queries / ann_s, n_exact / flat_s
    print(f"RESULT {choice.key} {tuning['param']}={tuning['value']}: recall@10 {recall:.4f} on {n_exact:,} "
          f"held-out queries; {ann_qps:,.0f} q/s ({args.queries:,} queries) vs exact Flat {flat_qps:,.1f} q/s "
          f"({n_exact:,} queries) = {ann_qps / flat_qps:.1f}x; build {build_s + tune_s:.1f} s (train+add {build_s:.1f} s, tune {tune_s:.1f} s); "
          f"index file {index_bytes / 2**30:.2f} GiB; "
          f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB")
    if tuning["param"]:  # the same trade-off on the held-out queries (the tuner only saw its own sample)
        held_out = []
        for value, *_ in tuning["curve"]:
            set_search_param(index, tuning["param"], value)
            t = time.perf_counter()
            _, found = index.search(queries[:n_exact], 10)
            qps = n_exact / (time.perf_counter() - t)
            held_out.append(f"{value}: {recall_at_k(found, truth):.4f} at {qps / flat_qps:.0f}x")
        print(f"held-out recall@10 by {tuning['param']}: " + ", ".join(held_out))


if __name__ == "__main__":
    main()
