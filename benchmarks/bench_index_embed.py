"""Bank embedding throughput: promptblend ``encode(backend='onnx')`` vs sentence-transformers'
own ``encode`` in the same process, on real prompts from the prompt bank, with mean/min cosine.

    python benchmarks/bench_index_embed.py [--n 5000] [--reps 2]

Runs alternate (ST, ONNX, ST, ONNX, ...) so load from other processes hits both alike; the ratio
is of total times. The ONNX export (once, cached) is timed apart.
"""

from __future__ import annotations

import argparse
import gzip
import itertools
import os
import time
from pathlib import Path

import numpy as np

BANK = Path(os.environ.get("PROMPTBLEND_SHARED", Path(__file__).resolve().parents[2] / "shared")) / "data" / "prompt-bank"


def real_prompts(n: int, skip: int = 100_000) -> list[str]:
    """``n`` real prompts (cleaned, distinct) from the Discord bank, after the first ``skip`` lines."""
    from index.normalise import CleanStats, clean_unique

    with gzip.open(BANK / "discord-sd-prompts.txt.gz", "rt", encoding="utf-8") as f:
        cleaned = clean_unique(((0, line) for line in itertools.islice(f, skip, None)), CleanStats())
        return list(itertools.islice(cleaned, n))


def main() -> None:
    from promptblend.text import encode, load_text_model, resolve_model
    from promptblend.text.onnx import load_onnx_encoder

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=5000)
    p.add_argument("--reps", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=64)
    args = p.parse_args()
    texts = real_prompts(args.n)
    st = load_text_model(None)
    lengths = [len(st.tokenizer(t)["input_ids"]) for t in texts[:2000]]
    print(f"{len(texts)} real prompts, median {int(np.median(lengths))} tokens; torch threads {__import__('torch').get_num_threads()}")
    t = time.perf_counter()
    load_onnx_encoder(resolve_model(None))
    print(f"onnx export/load (once, cached): {time.perf_counter() - t:.1f} s")
    encode(texts[:128], batch_size=args.batch_size, show_progress=False)
    encode(texts[:128], batch_size=args.batch_size, show_progress=False, backend="onnx")
    t_st = t_ox = 0.0
    for rep in range(args.reps):
        t = time.perf_counter()
        ref = st.encode(texts, batch_size=args.batch_size, convert_to_numpy=True, normalize_embeddings=True)
        a = time.perf_counter() - t
        t = time.perf_counter()
        got = encode(texts, batch_size=args.batch_size, show_progress=False, backend="onnx")
        b = time.perf_counter() - t
        t_st, t_ox = t_st + a, t_ox + b
        print(f"rep {rep}: sentence-transformers {len(texts) / a:.1f}/s, onnx {len(texts) / b:.1f}/s, ratio {a / b:.3f}")
    cos = (ref * got).sum(1)
    print(f"RESULT onnx fp32 vs sentence-transformers encode: {t_st / t_ox:.3f}x "
          f"({len(texts) * args.reps / t_st:.1f} vs {len(texts) * args.reps / t_ox:.1f} prompts/s), "
          f"cosine mean {cos.mean():.6f} min {cos.min():.6f}")


if __name__ == "__main__":
    main()
