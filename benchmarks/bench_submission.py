"""Time writing and checking a 16,000-image submission (6.1M rows); target <= 10 s each on 2 cores.

Also times pandas' ``to_csv``/``read_csv`` on the same rows as an in-process baseline.
Run: ``python benchmarks/bench_submission.py [--images 16000]``.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from promptblend.submission import DIM, check_submission, write_submission


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=16_000)
    args = ap.parse_args()
    n = args.images
    rng = np.random.default_rng(0)
    ids = [f"{k:09x}" for k in rng.choice(16**9, n, replace=False)]
    emb = rng.normal(size=(n, DIM)).astype(np.float32)
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "submission.csv"
        t0 = time.perf_counter()
        write_submission(path, ids, emb)  # includes its own validation of the written file
        t_write = time.perf_counter() - t0
        t0 = time.perf_counter()
        check_submission(path, expected_ids=ids)
        t_check = time.perf_counter() - t0
        size = path.stat().st_size

        import pandas as pd

        t0 = time.perf_counter()
        keys = np.char.add(np.repeat(np.asarray(ids), DIM), np.tile(np.char.add("_", np.arange(DIM).astype(str)), n))
        pd.DataFrame({"imgId_eId": keys, "val": emb.reshape(-1)}).to_csv(Path(d) / "pandas.csv", index=False)
        t_pd_write = time.perf_counter() - t0
        t0 = time.perf_counter()
        pd.read_csv(Path(d) / "pandas.csv")
        t_pd_read = time.perf_counter() - t0
    rows = n * DIM
    print(f"submission: {n} images, {rows:,} rows, {size / 2**20:.0f} MiB")
    print(f"write (incl. validation): {t_write:6.2f} s   target <= 10 s   pandas to_csv baseline {t_pd_write:6.2f} s ({t_pd_write / t_write:.1f}x)")
    print(f"check:                    {t_check:6.2f} s   target <= 10 s   pandas read_csv only   {t_pd_read:6.2f} s ({t_pd_read / t_check:.1f}x)")


if __name__ == "__main__":
    main()
