"""Print the bad-input table of the fault suite as markdown: input kind | expected | command | exit code | line.

``python benchmarks/fault_table.py [--only SUBSTRING]`` draws the inputs into a temp folder, runs every
case of ``tests/faults/bad_inputs.py`` (each CLI as a subprocess) and prints one row per case; a last
line counts the cases that did what they must (refused in one line, rebuilt with a warning, or written
through a symlink).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "tests" / "faults"), str(REPO / "tests" / "predictors"), str(REPO)]

from bad_inputs import CASES, make_inputs, run_case, unlock_inputs  # noqa: E402


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def main() -> int:
    """Run the table and print it."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", default="", help="run only the cases whose kind or module contains this")
    ap.add_argument("--jobs", type=int, default=2, help="cases run at once")
    args = ap.parse_args()
    cases = [c for c in CASES if args.only in c.kind or args.only in c.module]
    with tempfile.TemporaryDirectory(prefix="fault-table-") as tmp:
        root = Path(tmp) / "inputs"
        try:
            make_inputs(root)
            scratch = Path(tmp) / "scratch"
            scratch.mkdir()
            with ThreadPoolExecutor(args.jobs) as pool:
                outcomes = list(pool.map(lambda c: run_case(c, root, scratch), cases))
        finally:
            unlock_inputs(root)
    print("| # | input kind | expected | command | exit code | line printed |")
    print("|---|---|---|---|---|---|")
    for i, o in enumerate(outcomes, 1):
        line = o.line
        if o.first_code not in (None, 0):
            line += f" **(first run: {o.first_code})**"
        if o.traceback:
            line += " **(traceback)**"
        if o.written:
            line += f" **(wrote {', '.join(o.written[:3])})**"
        if o.case.todo:
            line += f" _(open: {o.case.todo})_"
        print(f"| {i} | {_cell(o.case.kind)} | {o.case.expect} | `{_cell(o.command)}` | {o.code} | {_cell(line)} |")
    good = sum(o.ok for o in outcomes)
    print(f"\n{good}/{len(outcomes)} cases as expected (refused: exit 2, one error line, no traceback, nothing "
          "written; rebuilt: exit 0 with a warning; through: exit 0, written through the symlink)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
