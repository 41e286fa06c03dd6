"""The training and inference levers of issue 26 on the demo's data, each against its baseline in the same process.

``python benchmarks/bench_levers.py [--size small|full] [--cache DIR] [--resamples 2000] [--threads T]``

On the demo's test split, with the demo's own CLIP (trained on its train split) and its bank (keyed by
that CLIP), prints the mean score of each entry and the paired per-image difference with a 95%
bootstrap interval over test images:
1. ``clip-text-map`` (zero-shot: the bank's ridge map, modality gap shifted by the test images' mean)
   vs the mean-vector baseline (the train + validation prompts' mean), and vs the map with no shift;
2. the fine-tuned clip-regressor with LP-FT and a text-map head vs the demo's current fine-tune
   (random head, no probe), the same settings and step budget (the demo's epochs);
3. 2 TTA views (the image, and a 12% zoom: resize to 72 px then crop 64) vs 1, on the LP-FT regressor.
Everything is cached under ``--cache`` (default: the demo's cache), so a rerun only prints.

Measured (``--size small``, 76 test images, 2 shared CPU cores): mean vector 0.6184, clip-text-map
0.6423 (+0.0239 [+0.0156, +0.0318]; unshifted 0.6417); current fine-tune 0.6676 vs LP-FT with a
text-map head 0.6731 (+0.0055 [-0.0002, +0.0113]); 2 TTA views 0.6738 (+0.0007 [-0.0009, +0.0026]).
"""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path

import numpy as np

from promptblend.cli import entry_point


def _per_image(run, truth) -> np.ndarray:
    from promptblend.metric import cosine_rows

    row = {i: k for k, i in enumerate(run.ids)}
    return cosine_rows(run.embeddings[[row[i] for i in truth.ids]], truth.embeddings)


@entry_point
def main(argv: list[str] | None = None) -> int:
    """Command line."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", choices=("small", "full"), default="small")
    p.add_argument("--cache", type=Path, default=None, help="the demo cache (default: $PROMPTBLEND_CACHE/demo)")
    p.add_argument("--resamples", type=int, default=2000)
    p.add_argument("--threads", type=int, default=None)
    a = p.parse_args(argv)
    import torch

    from experiments.demo.clip_train import train_demo_clip
    from experiments.demo.data import make_demo_data
    from experiments.demo.pipeline import (
        SIZES,
        _mean_vector,
        _train_truth,
        _truth,
        build_index,
        default_threads,
    )
    from experiments.simulate import simulate
    from predictors.clip_regressor import train_regressor
    from predictors.run import run_predictor
    from promptblend.cache import cache_dir
    from promptblend.metric import cosine_rows

    torch.set_num_threads(a.threads or default_threads())
    size = SIZES[a.size]
    root = a.cache or cache_dir() / "demo"
    data = make_demo_data(root, size.data, progress=False)
    models = root / "models" / data.root.name
    ckpt = train_demo_clip(data, models, size.clip, progress=False)
    bank = build_index(data, ckpt, [], root / "banks", progress=False)
    runs = root / "runs" / data.root.name / "test"
    truth = _truth(data, "test")
    clip = {"clip_model": ckpt.model, "clip_pretrained": str(ckpt.path)}

    def run(entry: str, config: dict) -> np.ndarray:
        return _per_image(run_predictor(entry, data.images("test"), runs, config, workers=0, batch_size=64,
                                        device="cpu", progress=False), truth)

    mean = _mean_vector(_train_truth(data), _truth(data, "val"))
    scores = {"mean-vector": cosine_rows(np.repeat(mean[None], len(truth.ids), 0), truth.embeddings)}
    scores["clip-text-map"] = run("clip-text-map-tiny", {"bank": str(bank), **clip})
    scores["clip-text-map (no gap shift)"] = run("clip-text-map-tiny", {"bank": str(bank), "gap": "none", **clip})

    settings = {"epochs": size.regressor_epochs, "val_frac": 0.1, **size.finetune_settings}
    heads = {}
    for name, extra in (("fine-tune (current)", {}), ("fine-tune LP-FT + text-map head", {"bank": str(bank)})):
        key = hashlib.sha256(json.dumps([settings, extra, ckpt.path.stem]).encode()).hexdigest()[:10]
        folder = models / f"bench-levers-{'lpft' if extra else 'ft'}-{key}"
        heads[name] = train_regressor(data.images("train"), None, folder, "finetune-tiny", clip=ckpt.clip, num_workers=0,
                                      progress=False, device="cpu", **settings, **extra)
        scores[name] = run("clip-regressor-tiny", {"checkpoint": str(heads[name])})
    lpft = str(heads["fine-tune LP-FT + text-map head"])
    scores["LP-FT, 2 TTA views"] = run("clip-regressor-tiny", {"checkpoint": lpft, "tta": [{}, {"resize": 72}]})

    print(f"demo '{a.size}' test split: {len(truth.ids)} images; 95% bootstrap intervals over images "
          f"({a.resamples} resamples)")
    for name, s in scores.items():
        print(f"  {name:36s} {s.mean():.4f}")
    sim = simulate(np.stack(list(scores.values())), list(scores), splits=a.resamples)  # paired: same resamples
    pairs = [("clip-text-map", "mean-vector"), ("clip-text-map", "clip-text-map (no gap shift)"),
             ("fine-tune LP-FT + text-map head", "fine-tune (current)"), ("LP-FT, 2 TTA views", "fine-tune LP-FT + text-map head")]
    for x, y in pairs:
        c = sim.compare(x, y)
        d, (lo, hi) = c.diff, c.ci
        print(f"  {x} - {y}: {d:+.4f} [{lo:+.4f}, {hi:+.4f}]")
    lp = json.loads((Path(lpft) / "config.json").read_text())
    print(f"  (same settings and {size.regressor_epochs} epochs for both fine-tunes; LP-FT text map: "
          f"{json.dumps(lp.get('head_init'))})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
