"""ensemble.budget and ``ensemble.tune --time-budget``: subsets scored out of fold, the frontier, the choice."""

import json

import numpy as np
import pytest
from drawn import assert_drawn

from ensemble.budget import choose_under_budget, parse_duration, pareto_frontier, Candidate
from ensemble.synthetic import synthetic_problem
from ensemble.tune import tune
from ensemble.tune.__main__ import main
from promptblend.errors import ConfigError
from promptblend.runs import save_run

N, K = 240, 3
#: seconds per image: run0 (best) is slow, run1 and run2 cheap
SPEED = {"run0": 3.0, "run1": 0.2, "run2": 0.1}


@pytest.fixture(scope="module")
def problem():
    runs, truth = synthetic_problem(N, K, seed=3)
    for r in runs:
        r.meta["seconds_per_image"] = SPEED[r.name]
    return runs, truth


def test_parse_duration():
    assert parse_duration("9h") == 9 * 3600
    assert parse_duration("90m") == 5400
    assert parse_duration("1.5h") == 5400
    assert parse_duration("3600") == 3600
    for bad in ("nine hours", "-1h", "0"):
        with pytest.raises(ConfigError):
            parse_duration(bad)


def test_frontier_keeps_only_undominated():
    cs = [Candidate(("a",), 1.0, 0.5), Candidate(("b",), 2.0, 0.4), Candidate(("a", "b"), 3.0, 0.6),
          Candidate(("c",), 0.5, 0.3)]
    assert [c.runs for c in pareto_frontier(cs)] == [("c",), ("a",), ("a", "b")]


def test_slow_predictor_is_dropped_though_it_adds_score(problem, tmp_path):
    runs, truth = problem
    # 16,000 images: run0 alone needs 13.3 h, run1 + run2 0.67 h
    free = tune(runs, truth, tmp_path / "free", trials=5, folds=2, progress=False, report=False,
                time_budget="100h")
    assert "run0" in free.budget.chosen.runs and "run0" in free.params.weights
    tight = tune(runs, truth, tmp_path / "tight", trials=5, folds=2, progress=False, time_budget="9h")
    b = tight.budget
    assert "run0" not in b.chosen.runs and b.chosen.seconds <= 9 * 3600
    assert set(tight.params.weights) == set(b.chosen.runs)
    assert "run0" in b.dropped and "budget" in b.dropped["run0"]
    # run0 would add held-out score: the best subset without a budget holds it and scores higher
    best = max(b.candidates, key=lambda c: c.score)
    assert "run0" in best.runs and best.score > b.chosen.score
    doc = json.loads((tmp_path / "tight" / "best.json").read_text())
    assert doc["budget"]["chosen"]["runs"] == list(b.chosen.runs)
    assert_drawn(tmp_path / "tight" / "frontier.png")
    html = (tmp_path / "tight" / "report.html").read_text()
    assert "Time budget" in html and "run0" in html
    frontier = (tmp_path / "tight" / "frontier.csv").read_text().splitlines()
    assert frontier[0].startswith("runs,") and len(frontier) == 1 + len(b.candidates)


def test_subset_scores_are_out_of_fold(problem):
    """Every subset (the mean vector alone included) is scored, and the held-out scores order as the runs' quality does."""
    from ensemble.align import align
    from ensemble.tune.plan import build_plan

    runs, truth = problem
    plan = build_plan(align(runs, truth), folds=2, seed=0, group_threshold=0.7, mean_vector="truth", bank=None,
                      normalise=True, prefix="b", trials=1)
    choice = choose_under_budget(plan, [r.meta for r in runs], "100h", 16000)
    by_runs = {c.runs: c for c in choice.candidates}
    assert len(by_runs) == 2 ** K  # every subset, the mean vector alone included
    # more runs never lose much held-out score here, and the mean vector alone is the worst
    assert by_runs[()].score == min(c.score for c in choice.candidates)
    assert 0 < by_runs[()].score < by_runs[("run0",)].score < 1


def test_without_flag_tuning_is_unchanged(problem, tmp_path):
    runs, truth = problem
    a = tune(runs, truth, tmp_path / "a", trials=5, folds=2, progress=False, report=False)
    assert a.budget is None and set(a.params.weights) == {"run0", "run1", "run2"}
    assert json.loads((tmp_path / "a" / "best.json").read_text())["budget"] is None


def test_cli_says_what_was_dropped(problem, tmp_path, capsys):
    runs, truth = problem
    paths = []
    for r in runs:
        save_run(tmp_path / "runs" / r.name, r)
        paths.append(str(tmp_path / "runs" / r.name))
    save_run(tmp_path / "truth", truth)
    code = main(["--runs", *paths, "--truth", str(tmp_path / "truth"), "--out", str(tmp_path / "o"), "--trials", "5",
                 "--folds", "2", "--no-progress", "--time-budget", "9h", "--test-images", "16000"])
    assert code == 0
    out = capsys.readouterr().out
    assert "dropped run0" in out and "frontier" in out
    assert main(["--runs", *paths, "--truth", str(tmp_path / "truth"), "--out", str(tmp_path / "o2"),
                 "--time-budget", "soon"]) == 2
