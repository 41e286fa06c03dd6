"""Bank build of N real prompts (default 100,000) from ../shared/data/prompt-bank: wall time, peak
memory, index size; then the same build SIGKILLed half-way and resumed, showing that the resumed
run only pays for the remaining half.

    python benchmarks/bench_index_build.py [--n 100000] [--out DIR] [--keep]

Runs ``python -m index.build`` as child processes: (1) a full build (its bank in OUT/full is what
bench_index_scale.py extends), (2) a second build into OUT/killed, SIGKILLed once half of its
embedding shards exist, (3) the same command again, which resumes.
"""

from __future__ import annotations

import argparse
import gzip
import itertools
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BANK = Path(os.environ.get("PROMPTBLEND_SHARED", REPO.parent / "shared")) / "data" / "prompt-bank"


def write_source(n: int, path: Path) -> None:
    """The first ``n`` raw lines of the Discord bank (the build cleans and deduplicates them)."""
    with gzip.open(BANK / "discord-sd-prompts.txt.gz", "rt", encoding="utf-8") as f, open(path, "w") as out:
        out.writelines(itertools.islice(f, n))


def build_cmd(src: Path, out: Path, shard_size: int) -> list[str]:
    return [sys.executable, "-m", "index.build", "--prompts", str(src), "--out", str(out),
            "--shard-size", str(shard_size)]


def timed(cmd: list[str]) -> float:
    t = time.perf_counter()
    subprocess.run(cmd, cwd=REPO, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=100_000, help="raw prompt lines to build from")
    p.add_argument("--out", type=Path, default=Path("/tmp/promptblend-bench-build"))
    p.add_argument("--shard-size", type=int, default=2048)
    p.add_argument("--skip-full", action="store_true", help="only the kill-and-resume pair")
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    src = args.out / "source.txt"
    write_source(args.n, src)

    if not args.skip_full:
        shutil.rmtree(args.out / "full", ignore_errors=True)
        wall = timed(build_cmd(src, args.out / "full", args.shard_size))
        m = json.loads((args.out / "full" / "manifest.json").read_text())
        size = sum(f.stat().st_size for f in (args.out / "full").iterdir() if f.is_file())
        print(f"RESULT full build of {args.n:,} raw lines -> {m['counts']['kept']:,} prompts: wall {wall:.1f} s, "
              f"peak RSS {m['peak_rss_mb']:.0f} MB, index {m['index']['key']} "
              f"{(args.out / 'full' / 'index.faiss').stat().st_size / 2**20:.1f} MiB, bank folder {size / 2**20:.1f} MiB, "
              f"recall@10 {m['index']['recall_at_10']:.4f}; stages {m['times']}; "
              f"peak RSS MB at the end of each stage {m['stage_peak_rss_mb']}")

    killed = args.out / "killed"
    shutil.rmtree(killed, ignore_errors=True)
    cmd = build_cmd(src, killed, args.shard_size)
    t = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    shards = killed / ".build" / "shards"
    clean = killed / ".build" / "clean.json"
    while not clean.is_file() and proc.poll() is None:
        time.sleep(0.5)
    total = -(-json.loads(clean.read_text())["kept"] // args.shard_size)

    def finished() -> int:  # not the hidden temp file of a shard being written
        return sum(not f.name.startswith(".") for f in shards.glob("*.npy"))

    while finished() < total // 2 and proc.poll() is None:
        time.sleep(0.5)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    first = time.perf_counter() - t
    done = finished()
    second = timed(cmd)
    m = json.loads((killed / "manifest.json").read_text())
    e = m["embedding"]["values"]
    print(f"RESULT kill-and-resume: killed after {first:.1f} s with {done}/{total} shards; resumed run "
          f"{second:.1f} s reusing {e['shards_reused']} shards and computing {e['shards_computed']} "
          f"(values stage {m['times']['values_s']:.1f} s)")
    print(f"driver peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")


if __name__ == "__main__":
    main()
