"""Fault-suite plumbing: run CLIs as subprocesses, SIGKILL them at seeded random moments, compare outputs.

Shared by the slow tests under tests/faults and by ``benchmarks/fault_table.py``.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parents[2]
SHARED = Path(os.environ.get("PROMPTBLEND_SHARED", REPO.parent / "shared"))
ENV = {
    **os.environ,
    "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
    "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONPATH": str(REPO),
}
# outputs that legitimately differ between two identical runs: clocks, durations, cache flags, paths, work split
# (and any key ending in _s or _mb: durations and memory peaks)
VOLATILE = {
    "created", "cache_hit", "seconds", "images_per_s", "times", "timings", "stage_peak_rss_mb", "started", "finished",
    "timestamp", "storage", "out", "path", "shards_reused", "shards_computed", "seconds_per_image",
    "rows_on_driver", "images_on_driver", "shards_on_driver",
}


def _volatile(key: str) -> bool:
    return key in VOLATILE or key.endswith(("_s", "_mb"))


def python_m(module: str, *args: str) -> list[str]:
    """The command line of ``python -m module args``."""
    return [sys.executable, "-m", module, *map(str, args)]


def cli(cmd: list[str], timeout: float = 600, preexec_fn: Callable | None = None,
        env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run a command to completion in the repo with the offline, one-thread environment (plus ``env``)."""
    return subprocess.run(cmd, cwd=REPO, env={**ENV, **(env or {})}, capture_output=True, text=True, timeout=timeout,
                          preexec_fn=preexec_fn)


def start(cmd: list[str], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) -> subprocess.Popen:
    """Start a command in its own process group (so a kill takes its workers too)."""
    return subprocess.Popen(cmd, cwd=REPO, env=ENV, stdout=stdout, stderr=stderr, start_new_session=True)


def kill_after(cmd: list[str], seconds: float) -> tuple[bool, str]:
    """Run ``cmd`` and SIGKILL its process group after ``seconds``; (killed?, stderr tail)."""
    proc = start(cmd, stderr=subprocess.PIPE)
    try:
        _, err = proc.communicate(timeout=seconds)
        return False, err.decode(errors="replace")[-3000:]
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        _, err = proc.communicate()
        return True, err.decode(errors="replace")[-3000:]


def _strip(doc):
    if isinstance(doc, dict):
        return {k: _strip(v) for k, v in doc.items() if not _volatile(k)}
    if isinstance(doc, list):
        return [_strip(v) for v in doc]
    return doc


def _csv_without_volatile(data: bytes) -> str:
    rows = list(csv.DictReader(io.StringIO(data.decode())))
    return json.dumps([{k: v for k, v in r.items() if not _volatile(k)} for r in rows])


def _safetensors_content(path: Path) -> bytes:
    """Tensors and metadata in a fixed order (the header's metadata order varies between processes)."""
    from safetensors import safe_open

    h = hashlib.sha256()
    with safe_open(str(path), "np") as f:
        h.update(json.dumps(f.metadata(), sort_keys=True).encode())
        for key in sorted(f.keys()):
            t = f.get_tensor(key)
            h.update(f"{key}{t.dtype}{t.shape}".encode() + t.tobytes())
    return h.digest()


def _hidden(rel: str) -> bool:
    return any(part.startswith(".") for part in rel.split("/"))


def snapshot(folder: Path, skip: tuple[str, ...] = ()) -> dict[str, str]:
    """sha256 of every visible file under ``folder`` (JSON and CSV files without their volatile fields;
    safetensors by content, as their header's key order varies). Hidden files are work files, locks or
    temp files: :func:`litter` lists those; ``*.log`` files are the commands' logs, not their outputs."""
    out = {}
    for path in sorted(p for p in Path(folder).rglob("*") if p.is_file()):
        rel = path.relative_to(folder).as_posix()
        if _hidden(rel) or rel.endswith(".log") or any(rel == s or rel.endswith(s) for s in skip):
            continue
        data = path.read_bytes()
        if path.suffix == ".json":
            data = json.dumps(_strip(json.loads(data)), sort_keys=True).encode()
        elif path.suffix == ".safetensors":
            data = _safetensors_content(path)
        elif path.suffix == ".csv" and b"seconds" in data.split(b"\n", 1)[0]:
            data = _csv_without_volatile(data).encode()
        out[rel] = hashlib.sha256(data).hexdigest()
    return out


def litter(folder: Path) -> list[str]:
    """Hidden files and folders (work folders, locks, temp files) under ``folder``."""
    return sorted({p.relative_to(folder).as_posix().split("/")[0] for p in Path(folder).rglob("*")
                   if _hidden(p.relative_to(folder).as_posix())})


def temp_litter(folder: Path) -> list[str]:
    """Names of temporary files or folders (``*.tmp*``, ``*.partial``) left under ``folder``."""
    return sorted(p.relative_to(folder).as_posix() for p in Path(folder).rglob("*") if ".tmp" in p.name or p.name.endswith(".partial"))


@dataclass
class KillReport:
    """What a kill campaign on one command found."""

    command: str
    kills: int = 0
    finished_before_kill: int = 0
    resumes: int = 0
    identical: int = 0
    different: int = 0
    corrupt: int = 0
    litter: int = 0
    notes: list[str] = field(default_factory=list)

    def line(self) -> str:
        """One markdown table row."""
        return (f"| {self.command} | {self.kills} | {self.resumes} | {self.identical} | {self.different} | "
                f"{self.corrupt} | {self.litter} | {self.finished_before_kill} |")


def kill_campaign(
    name: str, make_cmd: Callable[[Path], list[str]], output: Callable[[Path], Path | None], workdir: Path,
    reference: dict[str, str], seed: int, kills: int, window: tuple[float, float], per_chain: int = 4,
    skip: tuple[str, ...] = (), published: Callable[[Path], bool] | None = None,
) -> KillReport:
    """Chains of SIGKILLs at seeded random moments in ``window`` seconds, each run resuming the last, until
    ``kills`` have landed (at most ``per_chain`` per chain; a chain whose run finishes first ends there).
    After each kill, a published result must equal the reference; each chain is finished and compared.

    ``output(work)`` is the output folder (None when absent); ``published(work)`` says whether the command
    has published its result (default: an output folder exists).
    """
    published = published or (lambda work: output(work) is not None and output(work).exists())
    rng = random.Random(seed)
    report = KillReport(name)
    for c in range(2 * kills):
        if report.kills >= kills:
            break
        work = workdir / f"{name.replace(' ', '_')}-chain{c}"
        cmd = make_cmd(work)
        for k in range(min(per_chain, kills - report.kills)):
            # later runs of a chain resume with less left to do: kill them sooner
            killed, err = kill_after(cmd, rng.uniform(*window) * 0.75 ** k)
            if not killed:
                report.finished_before_kill += 1
                break
            report.kills += 1
            seen = snapshot(output(work), skip) if published(work) else reference
            if seen != reference:
                report.corrupt += 1
                diff = sorted(f for f in set(seen) | set(reference) if seen.get(f) != reference.get(f))
                report.notes.append(f"chain {c}: a published output differs after kill {k + 1}: {diff}")
        res = cli(cmd)
        report.resumes += 1
        if res.returncode != 0:
            report.corrupt += 1
            report.notes.append(f"chain {c}: resume failed ({res.returncode}): {res.stderr[-1500:]}")
            continue
        if output(work) is not None and snapshot(output(work), skip) == reference:
            report.identical += 1
        else:
            report.different += 1
            report.notes.append(f"chain {c}: resumed output differs from the uninterrupted run")
        left = litter(work) + sorted(p.name for p in work.glob("*.partial"))
        if left:
            report.litter += 1
            report.notes.append(f"chain {c}: left behind after the resume: {left}")
    return report


def record(line: str) -> None:
    """Print a result line and append it to ``$PROMPTBLEND_FAULT_LOG`` when set."""
    print(line)
    path = os.environ.get("PROMPTBLEND_FAULT_LOG")
    if path:
        with open(path, "a", encoding="utf-8") as f:
            f.write(line + "\n")


def wall(cmd: list[str]) -> tuple[subprocess.CompletedProcess, float]:
    """Run ``cmd`` to completion; (result, seconds)."""
    t0 = time.perf_counter()
    res = cli(cmd)
    return res, time.perf_counter() - t0
