"""The README's "Real use" walk-through, executed as written on real images with the tiny twins.

Every ``<!-- step: NAME -->`` fenced block of the README is run command by command in a fresh folder
holding ``val_images/`` (8 drawbench-sd1 images + prompts.csv), ``test_images/`` (8 others, no prompts)
and ``prompts.txt.gz`` (300 real prompts). The only changes are the README's own
``<!-- real-use substitutions -->`` list. Each command must exit 0 and print a quiet console: no traceback,
no library INFO line, no carriage-return redraw (stdout is a file here), and its log file beside its output.
"""

from __future__ import annotations

import csv
import gzip
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
STEP = re.compile(r"<!-- step: ([\w-]+) -->\s*```bash\n(.*?)```", re.DOTALL)
SUBS = re.compile(r"<!-- real-use substitutions -->\s*```text\n(.*?)```", re.DOTALL)
N_EACH, N_PROMPTS = 8, 300
MAX_CONSOLE_LINES = 40  # tables included; the point is: no library chatter, no redraws


def readme_steps(text: str) -> list[tuple[str, list[str]]]:
    """``[(step, [command, ...])]`` in README order (continuation lines joined, comments dropped)."""
    steps = []
    for name, body in STEP.findall(text):
        body = body.replace("\\\n", " ")
        commands = [ln.strip() for ln in body.splitlines() if ln.strip() and not ln.strip().startswith("#")]
        steps.append((name, commands))
    return steps


def substitutions(text: str) -> list[tuple[str, str]]:
    """The README's ``FROM -> TO`` list: the only changes the test may make to a command."""
    found = SUBS.search(text)
    assert found, "the README lost its real-use substitutions block"
    pairs = [tuple(x.strip() for x in ln.split(" -> ")) for ln in found.group(1).splitlines() if " -> " in ln]
    return [p for p in pairs if len(p) == 2]


def substitute(command: str, subs: list[tuple[str, str]]) -> str:
    """Apply each substitution to whole words of ``command`` (``knn`` does not touch ``knn-tiny``)."""
    for old, new in subs:
        command = re.sub(rf"(?<![\w./-]){re.escape(old)}(?![\w-])", new, command)
    return command


def test_readme_blocks_parse():
    """Fast guard: the section has its steps and every substitution applies to some command."""
    text = README.read_text(encoding="utf-8")
    steps = readme_steps(text)
    assert [name for name, _ in steps] == ["bank", "predict", "tune", "blend", "compare"]
    commands = [c for _, cs in steps for c in cs]
    assert all(c.startswith("python -m ") for c in commands)
    for old, new in substitutions(text):
        assert any(substitute(c, [(old, new)]) != c for c in commands), f"substitution {old!r} matches no command"


def _workspace(root: Path, drawbench: Path, shared_data: Path) -> None:
    with open(drawbench / "prompts.csv", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    picks = {"val_images": [r for r in rows if r["model"] == "sd14"][::25][:N_EACH],
             "test_images": [r for r in rows if r["model"] == "sd15"][3::25][:N_EACH]}
    for folder, chosen in picks.items():
        (root / folder).mkdir()
        for r in chosen:
            src = next((drawbench / "images").glob(r["imgId"] + ".*"))
            shutil.copy(src, root / folder / src.name)
        with open(root / f"{folder}_truth.csv", "w", newline="", encoding="utf-8") as f:
            csv.writer(f).writerows([("imgId", "prompt"), *((r["imgId"], r["prompt"]) for r in chosen)])
    shutil.copy(root / "val_images_truth.csv", root / "val_images" / "prompts.csv")
    with gzip.open(shared_data / "prompt-bank" / "curated-sd-prompts.txt.gz", "rt", encoding="utf-8") as f:
        prompts = [next(f) for _ in range(N_PROMPTS)]
    with gzip.open(root / "prompts.txt.gz", "wt", encoding="utf-8") as g:
        g.writelines(prompts)


def _run(command: str, cwd: Path, log: Path) -> tuple[int, str]:
    """Run ``command`` (``python -m ...``) with stdout and stderr to a file, as a CI log would hold it."""
    argv = shlex.split(command)
    argv[0] = sys.executable
    with open(log, "w", encoding="utf-8") as out:
        code = subprocess.run(argv, check=False, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, timeout=900,
                              env={**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}).returncode
    return code, log.read_text(encoding="utf-8", errors="replace")


@pytest.mark.slow
def test_readme_real_use_runs_as_written(tmp_path, drawbench, shared_data):
    text = README.read_text(encoding="utf-8")
    subs = substitutions(text)
    work = tmp_path / "work"
    work.mkdir()
    _workspace(work, drawbench, shared_data)
    counts = {}
    for step, commands in readme_steps(text):
        for i, command in enumerate(commands):
            command = substitute(command, subs)
            code, console = _run(command, work, tmp_path / f"{step}-{i}.console")
            lines = console.splitlines()
            counts[command] = len(lines)
            assert code == 0, f"{command} exited {code}:\n{console[-3000:]}"
            assert "Traceback" not in console, console
            assert "\r" not in console, f"{command}: progress redrawn in a file"
            assert not [ln for ln in lines if ln.startswith(("INFO ", "DEBUG "))], console
            assert len(lines) <= MAX_CONSOLE_LINES, console
    print("\n".join(f"{n:3d} console lines: {c}" for c, n in counts.items()))

    # stumble 1: the tuned folder's submission is the test set's, so the README's check of it holds
    from promptblend.imagesets import open_image_set
    from promptblend.submission import read_submission

    test_ids = open_image_set(work / "test_images").ids
    assert sorted(read_submission(work / "tuned" / "submission.csv")[0]) == sorted(test_ids)
    # stumble 2 and 4: the board applied the blend to the validation runs and has the mean-vector baseline
    board = (work / "board" / "leaderboard.csv").read_text(encoding="utf-8")
    assert "tuned" in board and "mean (val),baseline" in board
    # the logging policy: library chatter went to each output folder's log file
    assert "faiss" in (work / "bank" / "index.build.log").read_text(encoding="utf-8")
    assert (work / "runs-val" / "predictors.run.log").is_file()
