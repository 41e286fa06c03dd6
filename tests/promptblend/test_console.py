"""The console policy of every command (set up by ``entry_point``): library chatter to a log file in the
output folder, ``-v`` shows it, ``--quiet`` leaves errors and the final result line, misleading warnings never."""

from __future__ import annotations

import logging
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from promptblend.cli import entry_point
from promptblend.console import command_name
from promptblend.errors import ConfigError
from promptblend.progress import progress_bar


@entry_point
def chatty(argv=None):
    """A command that does what the libraries and our own code do during a real command."""
    out = argv[argv.index("--out") + 1]
    logging.getLogger("faiss.loader").info("Loading faiss with AVX2 support.")
    logging.getLogger().info("Parsing model identifier. Schema: None")  # open_clip logs on the root logger
    logging.getLogger().warning("No pretrained weights loaded for model 'pb-tiny-clip'. Model initialized randomly.")
    warnings.warn("Converting a tensor to a Python boolean might cause the trace to be incorrect")
    sys.stderr.write("Loading weights: 100%|##########| 103/103\r\n")  # a library's own bar
    logging.getLogger("promptblend.runs").info("cache hit: somewhere")
    logging.getLogger("promptblend.runs").warning("cached run fails its checks: rebuilding it")
    for _ in progress_bar(range(4), desc="images", unit="img"):
        pass
    if "--fail" in argv:
        raise ConfigError("bad input")
    print("a table line")
    print(f"wrote {out}/result.csv")
    return 0


def _console(capsys):
    got = capsys.readouterr()
    return got.out.splitlines(), got.err.splitlines()


LOG = f"{command_name(chatty.__wrapped__.__module__)}.log"


def test_default_console_shows_progress_results_and_own_warnings_only(tmp_path, capsys):
    streams, handlers = (sys.stdout, sys.stderr), list(logging.getLogger().handlers)
    assert chatty(["--out", str(tmp_path)]) == 0
    assert (sys.stdout, sys.stderr) == streams and logging.getLogger().handlers == handlers  # all restored
    out, err = _console(capsys)
    assert out == ["a table line", f"wrote {tmp_path}/result.csv"]
    assert err[0] == "WARNING promptblend.runs: cached run fails its checks: rebuilding it"
    assert len(err) == 2 and err[1].startswith("images: 4 img in ")  # a file, not a terminal: one summary line
    log = (tmp_path / LOG).read_text()
    for chatter in ("INFO faiss.loader: Loading faiss", "Parsing model identifier", "Converting a tensor",
                    "Loading weights", "cache hit", "No pretrained weights loaded"):
        assert chatter in log


def test_verbose_shows_the_log_but_never_the_misleading_warnings(tmp_path, capsys):
    assert chatty(["--out", str(tmp_path), "-v"]) == 0
    _, err = _console(capsys)
    text = "\n".join(err)
    for chatter in ("INFO faiss.loader: Loading faiss", "Parsing model identifier", "Converting a tensor",
                    "Loading weights", "INFO promptblend.runs: cache hit"):
        assert chatter in text
    assert "No pretrained weights loaded" not in text


def test_quiet_prints_only_the_final_result_line(tmp_path, capsys):
    assert chatty(["--out", str(tmp_path), "--quiet"]) == 0
    out, err = _console(capsys)
    assert out == [f"wrote {tmp_path}/result.csv"] and err == []


def test_a_failed_command_prints_one_error_line_and_keeps_its_log_in_the_cache(tmp_path, capsys):
    from promptblend.cache import cache_dir

    assert chatty(["--out", str(tmp_path / "out"), "--fail", "--quiet"]) == 2
    out, err = _console(capsys)
    assert out == [] and err == ["error: bad input"]
    assert not (tmp_path / "out").exists()
    assert "faiss" in (cache_dir() / "logs" / LOG).read_text()


def test_usage_errors_still_reach_the_console(capsys):
    from ensemble.score import main

    with pytest.raises(SystemExit):
        main(["--no-such-flag"])
    assert "usage:" in capsys.readouterr().err


@pytest.mark.slow
def test_a_real_command_in_a_file_is_its_result_only(kaggle_sample, tmp_path):
    """``ensemble.score`` on a fresh cache loads MiniLM (sentence-transformers and transformers chatter)."""
    args = [sys.executable, "-m", "ensemble.score", "--truth", str(kaggle_sample / "prompts.csv"),
            "--submission", str(kaggle_sample / "sample_submission.csv")]
    env = {"PROMPTBLEND_CACHE": str(tmp_path / "cache"), "HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"}
    res = subprocess.run(args, check=False, capture_output=True, text=True, env=env, timeout=600)
    assert res.returncode == 0 and res.stdout.strip() == "1.000000" and res.stderr == "", res.stderr
    log = (tmp_path / "cache" / "logs" / "ensemble.score.log").read_text()
    assert "sentence_transformers" in log


def test_an_unwritable_cache_or_a_device_output_never_gets_a_log(tmp_path, monkeypatch, capsys):
    blocker = tmp_path / "cache-is-a-file"
    blocker.write_text("")
    monkeypatch.setenv("PROMPTBLEND_CACHE", str(blocker))  # logs/ cannot be made under it
    assert chatty(["--out", "/dev/null"]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "wrote /dev/null/result.csv"
    assert not (tmp_path / "dev").exists() and not list(Path("/dev").glob("*.log"))
