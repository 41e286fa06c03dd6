"""Captioning throughput of promptblend's OFA against modelscope's, same weights and settings, one process.

``python benchmarks/bench_ofa.py [--images DIR] [--n 16] [--beams 5] [--max-new-tokens 16] [--threads T]
[--size base|tiny]``

A random OFA of the chosen size (base: d_model 768, 6 + 6 layers, 12 heads, ResNet-101, 384 px, the real
59,457-token vocabulary) is built with modelscope's code and written as an OFA-Sys checkpoint folder;
promptblend's ``ofa`` loads that folder. Both caption the same images (query " what does the image
describe?", beam search, no-repeat 3-grams) from the same pixels, encoder included, after one warm-up
call each; the tokens must be identical. Prints wall and CPU seconds and images/s of each, and the ratios
(on shared, busy cores the CPU-seconds ratio is the steadier one).
"""

from __future__ import annotations

import argparse
import logging
import os
import tempfile
import time
from pathlib import Path

from promptblend.cli import entry_point

DEFAULT_IMAGES = Path(__file__).resolve().parents[2] / "shared" / "data" / "drawbench-sd1" / "images"
QUERY = " what does the image describe?"
SIZES = {
    "base": dict(d_model=768, encoder_layers=6, decoder_layers=6, encoder_attention_heads=12,
                 decoder_attention_heads=12, encoder_ffn_dim=3072, decoder_ffn_dim=3072, resnet_type="resnet101"),
    "tiny": dict(d_model=256, encoder_layers=4, decoder_layers=4, encoder_attention_heads=4,
                 decoder_attention_heads=4, encoder_ffn_dim=1024, decoder_ffn_dim=1024, resnet_type="resnet50"),
}
RESOLUTION = {"base": 384, "tiny": 256}
VOCAB = 59457


def _timed(fn, warm, batch) -> tuple[float, float, object]:
    """(wall seconds, this process's CPU seconds, output) of ``fn(batch)`` after a warm-up call."""
    fn(warm)
    t0, c0 = time.perf_counter(), time.process_time()
    out = fn(batch)
    return time.perf_counter() - t0, time.process_time() - c0, out


@entry_point
def main(argv: list[str] | None = None) -> int:
    """Build, load, caption with both, print the table."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=Path, default=DEFAULT_IMAGES)
    ap.add_argument("--n", type=int, default=16, help="images captioned (one batch)")
    ap.add_argument("--beams", type=int, default=5)
    ap.add_argument("--max-new-tokens", type=int, default=16)
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    ap.add_argument("--size", choices=sorted(SIZES), default="base")
    args = ap.parse_args(argv)
    logging.getLogger().setLevel(logging.WARNING)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    from rich.console import Console
    from rich.table import Table

    from predictors.ofa.load import OFAPixels, generation_config, load_ofa
    from predictors.ofa.reference import reference_classes, save_reference_checkpoint
    from predictors.ofa.tiny import write_tokenizer
    from promptblend.imagesets import open_image_set

    if args.threads:
        torch.set_num_threads(args.threads)
    images = open_image_set(args.images)
    pixels = torch.stack([OFAPixels(RESOLUTION[args.size])(images.load(i)) for i in range(args.n)])
    config_class, model_class = reference_classes()
    with tempfile.TemporaryDirectory() as tmp:
        write_tokenizer(Path(tmp))
        torch.manual_seed(0)
        reference = model_class(config_class(vocab_size=VOCAB, **SIZES[args.size])).eval()
        folder = save_reference_checkpoint(reference, Path(tmp) / "ofa", tmp, patch_image_size=RESOLUTION[args.size])
        ours = load_ofa(str(folder), "cpu")
    settings = generation_config(ours.model.config, args.beams, 3, args.max_new_tokens)

    def theirs(batch):
        ids = ours.query_ids(QUERY, len(batch))
        with torch.inference_mode():
            masks = torch.ones(len(batch), dtype=torch.bool)
            enc = reference.encoder(input_ids=ids, patch_images=batch, patch_masks=masks)
            return reference.generate(encoder_outputs=enc, generation_config=settings)

    def mine(batch):
        return ours.generate(batch, QUERY, args.beams, 3, args.max_new_tokens)

    warm = pixels[:1]
    t_ref, cpu_ref, ref_tokens = _timed(theirs, warm, pixels)
    t_ours, cpu_ours, our_tokens = _timed(mine, warm, pixels)
    same = torch.equal(ref_tokens, our_tokens)
    table = Table(title=f"OFA-{args.size} (random weights), {args.n} images at {RESOLUTION[args.size]} px, beam "
                        f"{args.beams}, {args.max_new_tokens} new tokens, CPU, {torch.get_num_threads()} threads")
    for col in ("implementation", "wall s", "images/s", "vs modelscope", "CPU s", "CPU vs modelscope"):
        table.add_column(col, justify="left" if col == "implementation" else "right")
    table.add_row("modelscope OFAModel + generate", f"{t_ref:.1f}", f"{args.n / t_ref:.3f}", "1.00x", f"{cpu_ref:.1f}",
                  "1.00x")
    table.add_row("promptblend ofa", f"{t_ours:.1f}", f"{args.n / t_ours:.3f}", f"{t_ref / t_ours:.2f}x",
                  f"{cpu_ours:.1f}", f"{cpu_ref / cpu_ours:.2f}x")
    Console(width=120).print(table)
    print(f"same captions (token ids): {same}; caption lengths {our_tokens.shape[1]} tokens")
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())
