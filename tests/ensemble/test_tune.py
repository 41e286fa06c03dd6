"""ensemble.tune end to end on small synthetic runs: outputs, nested CV, resume, CLI."""

import json

import numpy as np
import optuna
import pytest
from drawn import assert_drawn
from optuna.trial import TrialState

from ensemble.blend import apply_blend, load_params
from ensemble.objective import direct_cosines
from ensemble.synthetic import synthetic_problem
from ensemble.tune import BlendSpace, tune
from ensemble.tune.__main__ import main
from promptblend.runs import Run, save_run
from promptblend.submission import read_submission
from promptblend.vectors import l2_normalise

N, K, TRIALS, FOLDS = 240, 3, 10, 2


@pytest.fixture(scope="module")
def problem():
    return synthetic_problem(N, K, seed=7)


@pytest.fixture(scope="module")
def tuned(problem, tmp_path_factory):
    runs, truth = problem
    out = tmp_path_factory.mktemp("tune")
    return tune(runs, truth, out, trials=TRIALS, folds=FOLDS, seed=1, progress=False), out


def _study(out, name):
    return optuna.load_study(study_name=name, storage=f"sqlite:///{out / 'optuna.db'}")


def test_outputs_are_written(tuned, problem):
    result, out = tuned
    runs, truth = problem
    doc = json.loads((out / "best.json").read_text())
    for key in ("weights", "in_sample", "out_of_fold", "fold_scores", "gradient_gap", "normalise", "mean_weight"):
        assert key in doc
    assert set(doc["weights"]) == {"run0", "run1", "run2"} and max(doc["weights"].values()) == pytest.approx(1.0)
    assert len(doc["fold_scores"]) == FOLDS
    for png in ("history.png", "weights.png", "folds.png"):
        assert_drawn(out / png)
    ids, emb = read_submission(out / "submission.csv")
    assert ids == runs[0].ids
    score = float(np.einsum("ij,ij->i", emb.astype(np.float64), truth.embeddings).mean())
    assert score == pytest.approx(result.in_sample, abs=1e-5)
    np.testing.assert_allclose(apply_blend(load_params(out), runs), emb, atol=1e-5)


def test_plots_show_every_study_and_run(tuned):
    from ensemble.report import folds_figure, history_figure, weights_figure

    result, out = tuned
    studies = [_study(out, name) for name in result.studies]
    ax = history_figure(result, studies).axes[0]
    assert len(ax.lines) == len(studies) + 1  # best-so-far per study + the gradient optimum
    assert ax.lines[-1].get_ydata()[0] == pytest.approx(result.gradient_optimum)
    final = ax.lines[len(studies) - 1]
    assert final.get_ydata()[-1] == pytest.approx(max(t.value for t in studies[-1].trials[1:]))
    bars = weights_figure(result).axes[0].patches
    assert [b.get_height() for b in bars] == pytest.approx(list(result.params.weights.values()))
    fold_bars = folds_figure(result).axes[0].patches
    assert [b.get_height() for b in fold_bars] == pytest.approx(result.fold_in_sample + result.fold_scores)


def test_report_page_is_self_contained(tuned):
    import re

    result, out = tuned
    page = (out / "report.html").read_text()
    assert not re.search(r"(src|href)=\"(?!data:|#)", page)  # nothing fetched from outside the page
    assert page.count("data:image/png;base64,") == 3
    weights = page[page.index('id="weights"'):page.index("</table>", page.index('id="weights"'))]
    assert all(f"fold {f}" in weights for f in range(FOLDS)) and all(n in weights for n in result.params.weights)
    folds = page[page.index('id="folds"'):page.index("</table>", page.index('id="folds"'))]
    assert all(f"{s:.5f}" in folds for s in result.fold_scores + result.fold_in_sample)
    assert f"{result.gradient_gap:+.2e}" in page


def test_tuned_result_reaches_the_gradient_optimum(tuned):
    result, _ = tuned
    assert result.in_sample >= result.gradient_optimum - 1e-5
    assert abs(result.gradient_gap) <= 1e-5
    assert result.in_sample > max(result.single_scores.values())


def test_nested_cv_is_grouped_and_honest(tuned, problem):
    result, out = tuned
    runs, truth = problem
    rows = np.loadtxt(out / "folds.csv", delimiter=",", skiprows=1, dtype=str)
    assert rows[:, 0].tolist() == runs[0].ids
    fold, group = rows[:, 1].astype(int), rows[:, 2].astype(int)
    for g in np.unique(group):
        assert len(set(fold[group == g])) == 1
    stack = np.stack([r.embeddings for r in runs])
    y = l2_normalise(truth.embeddings)  # the tuner re-normalises the truth rows
    pooled = np.zeros(N)
    for f in range(FOLDS):
        train, test = fold != f, fold == f
        st = _study(out, f"blend-fold{f}")
        best = max((t for t in st.trials if t.state == TrialState.COMPLETE), key=lambda t: t.value)
        c, norm = BlendSpace.of(["run0", "run1", "run2"], True, None).decode(best.params)
        # the mean vector comes from the training folds only (unit, float32 as saved)
        mu = l2_normalise(y[train].mean(axis=0, dtype=np.float64)[None])[0]
        assert best.value == pytest.approx(direct_cosines(stack[:, train], y[train], c, norm, mu).mean(), abs=1e-9)
        pooled[test] = direct_cosines(stack[:, test], y[test], c, norm, mu)
        assert result.fold_scores[f] == pytest.approx(pooled[test].mean(), abs=1e-9)
    assert result.out_of_fold == pytest.approx(pooled.mean(), abs=1e-9)


def _trial_of_a_killed_process(db, name):
    """What a process SIGKILLed mid-trial leaves behind: a RUNNING trial claimed by a dead worker."""
    import os
    import signal
    import subprocess
    import sys
    from pathlib import Path

    code = ("import os, signal, optuna; from ensemble import search; "
            f"st = optuna.load_study(study_name={name!r}, storage={f'sqlite:///{db}'!r}); t = st.ask(); "
            "t.suggest_float('w[run0]', 0, 1); t.set_user_attr('worker', search.worker_tag(t.number)); "
            "os.kill(os.getpid(), signal.SIGKILL)")
    root = Path(__file__).resolve().parents[2]
    res = subprocess.run([sys.executable, "-c", code], cwd=root, env={**os.environ, "PYTHONPATH": str(root)}, check=False)
    assert res.returncode == -signal.SIGKILL
    (orphan,) = _study(db.parent, name).get_trials(states=(TrialState.RUNNING,))
    return orphan


def test_study_resumes_past_a_killed_trial_as_if_uninterrupted(problem, tmp_path):
    runs, truth = problem
    out = tmp_path / "killed"
    tune(runs, truth, out, trials=6, folds=0, progress=False, report=False)
    st = _study(out, "blend-final")
    assert len(st.trials) == 6 and st.trials[0].user_attrs["source"] == "gradient"
    orphan = _trial_of_a_killed_process(out / "optuna.db", "blend-final")
    tune(runs, truth, out, trials=9, folds=0, progress=False, report=False)
    st = _study(out, "blend-final")
    states = [t.state for t in st.trials]
    assert states.count(TrialState.COMPLETE) == 9 and TrialState.RUNNING not in states
    # the killed trial, a sampled one, is failed and not re-queued with the param it had drawn...
    assert st.trials[orphan.number].state == TrialState.FAIL and TrialState.WAITING not in states
    assert not [t for t in st.trials if t.system_attrs.get("failed_trial") == orphan.number]
    # ...so the study holds the very trials of an uninterrupted one (each trial seeded by the complete count)
    tune(runs, truth, tmp_path / "ref", trials=9, folds=0, progress=False, report=False)
    done = lambda study: [(t.params, t.value) for t in study.trials if t.state == TrialState.COMPLETE]
    assert done(st) == done(_study(tmp_path / "ref", "blend-final"))
    tune(runs, truth, out, trials=9, folds=0, progress=False, report=False)  # nothing left to do
    assert len(_study(out, "blend-final").trials) == len(st.trials)
    assert sum(t.user_attrs.get("source") == "gradient" for t in st.trials) == 1


def test_resume_with_other_data_is_refused(problem, tmp_path):
    runs, truth = problem
    tune(runs, truth, tmp_path, trials=3, folds=0, progress=False, report=False)
    other = [Run(r.ids, r.embeddings[::-1].copy(), dict(r.meta)) for r in runs]
    from promptblend.errors import ConfigError

    with pytest.raises(ConfigError, match="other data"):
        tune(other, truth, tmp_path, trials=3, folds=0, progress=False, report=False)


@pytest.mark.parametrize("sampler", ["cmaes", "random"])
def test_other_samplers(problem, tmp_path, sampler):
    runs, truth = problem
    result = tune(runs, truth, tmp_path, trials=8, folds=0, sampler=sampler, normalise=True, progress=False, report=False)
    assert result.sampler == sampler and result.params.normalise is True
    assert len(_study(tmp_path, "blend-final").trials) == 8


def test_cli_runs_and_rejects_bad_input(problem, tmp_path, capsys):
    runs, truth = problem
    for r in runs:
        save_run(tmp_path / "runs" / r.name, r)
    save_run(tmp_path / "truth", truth)
    code = main(["--runs", str(tmp_path / "runs"), "--truth", str(tmp_path / "truth"), "--trials", "4",
                 "--folds", "2", "--out", str(tmp_path / "out"), "--no-progress", "--normalise", "on"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "out-of-fold" in printed and "largest prompt group" in printed
    assert json.loads((tmp_path / "out" / "best.json").read_text())["normalise"] is True
    (tmp_path / "empty").mkdir()
    assert main(["--runs", str(tmp_path / "empty"), "--truth", str(tmp_path / "truth")]) == 2
    assert "no runs found" in capsys.readouterr().err
    assert main(["--runs", str(tmp_path / "runs" / "run0"), "--truth", str(tmp_path / "truth")]) == 2
    assert "at least 2 runs" in capsys.readouterr().err
    assert main(["--runs", str(tmp_path / "runs")]) == 2
    assert main(["--runs", str(tmp_path / "runs"), "--truth", str(tmp_path / "truth"), "--storage", "redis://x"]) == 2
    assert "unsupported --storage" in capsys.readouterr().err
    assert main(["--runs", str(tmp_path / "runs"), "--truth", str(tmp_path / "truth"), "--folds", "0",
                 "--storage", "postgresql://nobody@127.0.0.1:1/none", "--out", str(tmp_path / "pg")]) == 2
    assert "cannot open the study storage" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0


def test_snap_to_bank_threshold_is_tuned_and_applied(problem, tmp_path):
    runs, truth = problem
    rng = np.random.default_rng(0)
    # a bank that holds the exact prompts of half the images, plus unrelated prompts
    values = np.concatenate([truth.embeddings[: N // 2], l2_normalise(rng.normal(size=(200, 384)))]).astype(np.float32)
    (tmp_path / "bank").mkdir()
    np.save(tmp_path / "bank" / "values.npy", values)
    result = tune(runs, truth, tmp_path / "out", trials=4, folds=2, index=tmp_path / "bank", progress=False, report=False)
    assert result.snap["threshold"] is not None and result.snap["n_snapped"] > 0
    assert result.snap["in_sample_gain"] > 0 and result.in_sample > result.gradient_optimum
    assert result.out_of_fold > result.gradient_optimum - 0.05
    _, emb = read_submission(tmp_path / "out" / "submission.csv")
    score = float(np.einsum("ij,ij->i", emb.astype(np.float64), l2_normalise(truth.embeddings)).mean())
    assert score == pytest.approx(result.in_sample, abs=1e-5)
    params = load_params(tmp_path / "out")
    assert params.bank == str(tmp_path / "bank")
    np.testing.assert_allclose(apply_blend(params, runs), emb, atol=1e-5)


def test_submission_for_test_runs_and_intersect(problem, tmp_path):
    runs, truth = problem
    test_runs = [Run(r.ids[:40], r.embeddings[:40], dict(r.meta)) for r in runs]
    short = [runs[0], runs[1], Run(runs[2].ids[5:], runs[2].embeddings[5:], dict(runs[2].meta))]
    result = tune(short, truth, tmp_path, trials=3, folds=0, intersect=True, test_runs=test_runs,
                  progress=False, report=False)
    assert result.n_images == N - 5 and result.dropped == {"run0": 5, "run1": 5, "truth": 5}
    ids, emb = read_submission(tmp_path / "submission.csv")
    assert ids == runs[0].ids[:40]
    np.testing.assert_allclose(emb, apply_blend(result, test_runs), atol=1e-6)


@pytest.mark.slow
def test_snap_with_a_bank_built_by_index_build(problem, tmp_path):
    import subprocess
    import sys

    prompts = tmp_path / "prompts.txt"
    prompts.write_text("\n".join(f"a painting of a {w} number {i}" for i, w in enumerate(["cat", "dog", "ship"] * 8)) + "\n")
    subprocess.run([sys.executable, "-m", "index.build", "--prompts", str(prompts), "--out", str(tmp_path / "bank")],
                   check=True, capture_output=True)
    runs, truth = problem
    result = tune(runs, truth, tmp_path / "out", trials=3, folds=2, index=tmp_path / "bank", mean_vector="bank",
                  progress=False, report=False)
    doc = json.loads((tmp_path / "out" / "best.json").read_text())
    assert doc["bank"] == str(tmp_path / "bank") and "snap" in doc and result.snap is not None
    from promptblend.digest import file_digest

    assert doc["bank_digest"] == file_digest(tmp_path / "bank" / "manifest.json")  # what ensemble.blend checks
    assert result.params.mean_vector is not None


def test_report_page_in_a_browser(tuned, tmp_path):
    from browser import PHONE, browser, column, require_chromium, sort_by, visit

    require_chromium()
    result, out = tuned
    with browser(tmp_path) as context:
        v = visit(context, out / "report.html")
        v.assert_clean()  # no console error, no request but the page itself
        assert v.page.evaluate("Array.from(document.images).every(i => i.complete && i.naturalWidth > 300)")
        assert column(v, "weights", "run") == [*result.params.weights, "mean vector"]
        finals = {**result.params.weights, "mean vector": result.params.mean_weight}
        assert sort_by(v, "weights", "final") == "descending"
        assert column(v, "weights", "run") == sorted(finals, key=lambda n: -finals[n])
        assert sort_by(v, "weights", "final") == "ascending"
        assert column(v, "weights", "run") == sorted(finals, key=lambda n: finals[n])
        assert column(v, "folds", "held_out") == [f"{s:.5f}" for s in result.fold_scores]
        assert v.overflow() == 0
        v.screenshot(tmp_path, "report-1280.png")
        phone = visit(context, out / "report.html", PHONE)
        phone.assert_clean()
        assert phone.overflow() == 0  # wide tables scroll inside their own box
        phone.screenshot(tmp_path, "report-390.png")
