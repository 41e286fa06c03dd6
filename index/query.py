"""``python -m index.query DIR "text or image path" [-k 10]``: print a bank's nearest prompts."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from promptblend.bank import Bank, load_bank
from promptblend.cli import entry_point
from promptblend.errors import BankError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")


def embed_query(bank: Bank, query: str) -> np.ndarray:
    """Embed a text (or an image path, for CLIP-keyed banks) in the space of ``bank``'s keys."""
    km = bank.key_model
    is_image = Path(query).suffix.lower() in IMAGE_SUFFIXES and Path(query).is_file()
    if km is None:
        if is_image:
            raise BankError(f"bank {bank.folder} has MiniLM keys: image queries need a bank built with --keys MODEL")
        from promptblend.text import encode

        return encode([query], model=bank.manifest["values"]["model"]["name"])
    from promptblend.clip import embed_images, embed_texts, load_clip

    clip = load_clip(km["name"], km["pretrained"])
    if is_image:
        from promptblend.imagesets import load_image

        return embed_images(clip, clip.preprocess(load_image(query)).unsqueeze(0))
    return embed_texts(clip, [query])


def query_bank(folder: str | Path, query: str, k: int = 10) -> list[tuple[float, int, str]]:
    """``(similarity, row, prompt)`` of the ``k`` nearest bank prompts, best first."""
    bank = load_bank(str(folder))
    sims, rows = bank.search(embed_query(bank, query), k)
    return [(float(s), int(r), bank.prompts[r]) for s, r in zip(sims[0], rows[0]) if r >= 0]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m index.query", description=__doc__.split(":")[1].strip())
    p.add_argument("bank", help="bank folder written by python -m index.build")
    p.add_argument("query", help="a text, or an image path when the bank has CLIP keys")
    p.add_argument("-k", type=int, default=10, help="number of neighbours (default 10)")
    return p


@entry_point
def main(argv: list[str] | None = None) -> int:
    """CLI entry point."""
    args = _parser().parse_args(argv)
    if args.k < 1:
        raise BankError(f"-k must be at least 1, got {args.k}")
    for rank, (sim, row, prompt) in enumerate(query_bank(args.bank, args.query, args.k), 1):
        print(f"{rank:>3}  {sim:.4f}  #{row:<9} {prompt}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
