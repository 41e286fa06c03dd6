"""One executor for local and Ray work: order of results, named errors, Ray's life cycle.

The Ray tests start real local instances (in this process or in a ``python -m predictors.run``
subprocess) under a private, short temp folder, and list processes with psutil.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

from promptblend.errors import ClusterError, ConfigError
from promptblend.executors import DRIVER_HELPS_ENV, RAY_DIR_PREFIX, Builder, open_executor

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "predictors"))  # shapes.py


class Doubler:
    """A worker object for the local tests (``Builder`` needs a module-level target)."""

    def __init__(self, factor: int) -> None:
        self.factor, self.closed = factor, False

    def twice(self, x: int) -> int:
        return self.factor * x

    def close(self) -> None:
        self.closed = True


def test_local_pool_keeps_job_order_and_closes_its_object():
    with open_executor("local") as ex, ex.pool(Builder(Doubler, (2,))) as pool:
        assert pool.backend == "local" and pool.size == 1
        assert list(pool.map("twice", [(i,) for i in range(5)])) == [0, 2, 4, 6, 8]
        obj = pool.obj
    assert obj.closed


def test_unknown_backend_and_an_address_without_ray_are_named_errors():
    with pytest.raises(ConfigError, match="unknown backend 'spark'"):
        open_executor("spark")
    with pytest.raises(ConfigError, match="needs --backend ray"):
        open_executor("local", "auto")


# ---------------------------------------------------------------- --ray-address with nothing listening


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def no_cluster(tmp_path, monkeypatch):
    """No ``ray start`` cluster to find: an empty Ray temp folder, no RAY_ADDRESS."""
    pytest.importorskip("ray")
    empty = tmp_path / "no-ray"
    empty.mkdir()
    monkeypatch.setenv("RAY_TMPDIR", str(empty))
    monkeypatch.delenv("RAY_ADDRESS", raising=False)


def _commands(tmp: Path) -> dict[str, tuple]:
    """Every command that takes --ray-address: (main, argv without the address, output folder)."""
    from experiments.generate.__main__ import main as generate
    from index.build import main as build
    from predictors.run import main as run
    from shapes import make_shapes

    images = make_shapes(tmp / "images", 2, size=32)
    prompts = tmp / "prompts.txt"
    prompts.write_text("a red circle\na blue square\na green triangle\n")
    return {
        "predictors.run": (run, ["clip-regressor-tiny", "--images", str(images), "--out", str(tmp / "out"),
                                 "--backend", "ray", "--quiet"], tmp / "out"),
        "experiments.generate": (generate, ["--prompts", str(prompts), "--out", str(tmp / "out"), "--n", "2",
                                            "--model", "tiny", "--steps", "1", "--backend", "ray", "--quiet"],
                                 tmp / "out"),
        "index.build": (build, ["--prompts", str(prompts), "--out", str(tmp / "out"), "--backend", "ray"],
                        tmp / "out"),
    }


@pytest.mark.parametrize("command", ["predictors.run", "experiments.generate", "index.build"])
@pytest.mark.parametrize("address", ["auto", "port"])
def test_ray_address_with_nothing_listening_is_one_error_line_and_writes_nothing(
        no_cluster, tmp_path, capsys, command, address):
    main, argv, out = _commands(tmp_path)[command]
    address = "auto" if address == "auto" else f"127.0.0.1:{_free_port()}"
    capsys.readouterr()
    t0 = time.perf_counter()
    assert main([*argv, "--ray-address", address]) == 2
    assert time.perf_counter() - t0 < 30
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "Ray" in err[0], err
    assert not out.exists() or not any(out.iterdir())


def test_an_address_that_is_not_host_port_is_a_cluster_error(no_cluster):
    with pytest.raises(ClusterError, match="not HOST:PORT"):
        open_executor("ray", "nowhere")


# ---------------------------------------------------------------- a predictor registered at run time


@pytest.fixture
def short_tmp(monkeypatch):
    """A private temp folder with a short path (Ray's socket paths are limited to ~107 characters)."""
    folder = Path(tempfile.mkdtemp(prefix="pbt", dir="/tmp"))
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.slow
def test_a_ray_pool_driver_computes_jobs_in_order_until_an_actor_is_ready(short_tmp, monkeypatch):
    """The driver helps while the actors start: it takes the first jobs, in order, then hands over."""
    pytest.importorskip("ray")
    from fractions import Fraction  # a worker object every actor can import

    monkeypatch.delenv(DRIVER_HELPS_ENV, raising=False)  # the default on a local instance: the driver helps
    n = 5000
    with open_executor("ray") as ex, ex.pool(Builder(Fraction, (3,))) as pool:
        results, deadline = [], time.time() + 240
        for value in pool.map("__mul__", [(i,) for i in range(n)]):
            results.append(value)
            if len(pool.on_driver) == len(results) and time.time() < deadline:
                time.sleep(0.05)  # the driver still computes: slow it down until an actor is ready
        helper_left = pool.helper
    assert results == [3 * i for i in range(n)]
    k = len(pool.on_driver)
    assert 1 <= k < n and pool.on_driver == list(range(k)), k  # a prefix here, the rest on the actor
    assert helper_left is None  # the driver's object was released when the actor took over


@pytest.mark.slow
@pytest.mark.parametrize("helps", ["1", "0"])
def test_a_named_build_error_is_raised_by_the_ray_pool_before_any_job(short_tmp, monkeypatch, helps):
    """With the driver helping its own build fails first; without it, the actors' failure is unwrapped."""
    pytest.importorskip("ray")
    monkeypatch.setenv(DRIVER_HELPS_ENV, helps)
    with open_executor("ray") as ex, pytest.raises(ConfigError, match="unknown backend 'spark'"):
        ex.pool(Builder(open_executor, ("spark",)))  # raises ConfigError wherever it is built


def test_a_bad_driver_helps_value_is_a_named_error(short_tmp, monkeypatch):
    pytest.importorskip("ray")
    monkeypatch.setenv(DRIVER_HELPS_ENV, "yes")
    with open_executor("ray") as ex, pytest.raises(ConfigError, match=f"{DRIVER_HELPS_ENV} must be 0 or 1"):
        ex.pool(Builder(int))


@pytest.mark.slow
@pytest.mark.parametrize("helps", ["0", "1"], ids=["actors-only", "driver-helps"])
def test_a_predictor_registered_at_run_time_gives_the_same_rows_on_ray(short_tmp, tmp_path, monkeypatch, helps):
    pytest.importorskip("ray")
    monkeypatch.setenv(DRIVER_HELPS_ENV, helps)  # 0: every row from an actor
    from predictors.registry import add_predictor_config, get_predictor_config
    from predictors.run import run_predictor
    from shapes import make_shapes

    entry = get_predictor_config("clip-regressor-tiny")
    entry["params"]["seed"] = 7  # not any built-in entry
    add_predictor_config("runtime-regressor", entry)
    images = make_shapes(tmp_path / "images", 6, size=48)
    local = run_predictor("runtime-regressor", images, tmp_path / "local", shard_size=2, workers=0, progress=False)
    remote = run_predictor("runtime-regressor", images, tmp_path / "ray", shard_size=2, backend="ray",
                           progress=False)
    assert remote.meta["backend"] == "ray" and remote.meta["actors"] >= 1
    on_driver = remote.meta["rows_on_driver"]
    # whole shards of 2 rows (the driver may finish all 3 shards before the actor is up, or none if it is faster)
    assert on_driver == 0 if helps == "0" else on_driver in (0, 2, 4, 6)
    assert remote.meta["device"] == local.meta["device"] == "cpu" and local.meta["rows_on_driver"] == 6
    assert remote.ids == local.ids and remote.path.name == local.path.name
    np.testing.assert_allclose(remote.embeddings, local.embeddings, atol=1e-5)
    # the executor started that Ray: it is shut down, its folder gone
    assert not list(short_tmp.glob(f"{RAY_DIR_PREFIX}*"))


# ---------------------------------------------------------------- signals: no Ray process outlives a run


@pytest.fixture(scope="module")
def many_images(tmp_path_factory) -> Path:
    """240 drawn images (enough for a few seconds of predicting on Ray)."""
    from shapes import make_shapes

    src = make_shapes(tmp_path_factory.mktemp("few") / "images", 6, size=96)
    folder = tmp_path_factory.mktemp("many") / "images"
    folder.mkdir()
    files = sorted(src.glob("*.png"))
    for i in range(240):
        shutil.copy(files[i % len(files)], folder / f"{i:05d}.png")
    return folder


def _start_run(images: Path, out: Path, tmp: Path, helps: str = "0") -> subprocess.Popen:
    """``predictors.run --backend ray`` in its own process group; ``helps=0``: only actors predict."""
    env = {**os.environ, "TMPDIR": str(tmp), "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT), DRIVER_HELPS_ENV: helps}
    env.pop("RAY_ADDRESS", None)
    cmd = [sys.executable, "-m", "predictors.run", "clip-regressor-tiny", "--images", str(images), "--out", str(out),
           "--backend", "ray", "--batch-size", "2", "--quiet"]
    return subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)  # its own process group, as a command in a terminal


def _wait_for_actors(proc: subprocess.Popen, timeout: float = 180, doing: str = "_Host.call") -> list:
    """The run's Ray processes (its descendants) once an actor's title names ``doing`` (predicting, by
    default); fails if the run ends first."""
    import psutil

    driver = psutil.Process(proc.pid)
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert proc.poll() is None, proc.communicate()
        try:
            family = driver.children(recursive=True)
            names = [" ".join(p.cmdline()) for p in family]
        except psutil.Error:
            continue
        if any(doing in n for n in names):
            return family
        time.sleep(0.1)
    raise AssertionError("the run's Ray actors never started predicting")


def _alive(procs: list) -> list:
    import psutil

    left = []
    for p in procs:
        try:
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                left.append(p)
        except psutil.Error:
            pass
    return left


@pytest.fixture
def run_tmp():
    folder = Path(tempfile.mkdtemp(prefix="pbs", dir="/tmp"))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def more_images(many_images, tmp_path_factory) -> Path:
    """The 240 images ten times over: the driver is still predicting when its actor starts."""
    folder = tmp_path_factory.mktemp("more") / "images"
    folder.mkdir()
    files = sorted(many_images.glob("*.png"))
    for i in range(10 * len(files)):
        os.link(files[i % len(files)], folder / f"{i:05d}.png")
    return folder


@pytest.mark.slow
@pytest.mark.parametrize("sig, group, helps", [(signal.SIGINT, False, "0"), (signal.SIGINT, True, "0"),
                                               (signal.SIGTERM, False, "0"), (signal.SIGTERM, False, "1")],
                         ids=["SIGINT", "Ctrl-C", "SIGTERM", "SIGTERM-while-the-actor-starts"])
def test_no_ray_process_outlives_a_run_ended_by_a_signal(many_images, more_images, run_tmp, tmp_path, sig, group,
                                                         helps):
    """Ctrl-C in a terminal sends SIGINT to the whole process group (Ray's processes included). With the
    driver helping, the signal comes while it predicts and its actor is still being built."""
    pytest.importorskip("psutil")
    proc = _start_run(many_images if helps == "0" else more_images, tmp_path / "out", run_tmp, helps)
    family = _wait_for_actors(proc, doing="_Host.call" if helps == "0" else "ray::_Host")
    if group:
        os.killpg(proc.pid, sig)
    else:
        proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode != 0 and "Traceback" not in err, err
    deadline = time.time() + 10
    while _alive(family) and time.time() < deadline:
        time.sleep(0.2)
    assert not _alive(family), [" ".join(p.cmdline()) for p in _alive(family)]
    assert not list(run_tmp.glob(f"{RAY_DIR_PREFIX}*"))  # the session folder went with it


@pytest.mark.slow
def test_after_a_sigkill_the_next_run_cleans_the_leftover_ray(many_images, run_tmp, tmp_path):
    pytest.importorskip("psutil")
    killed = _start_run(many_images, tmp_path / "a", run_tmp)
    family = _wait_for_actors(killed)
    (old,) = run_tmp.glob(f"{RAY_DIR_PREFIX}*")
    killed.kill()
    killed.communicate()
    time.sleep(1)
    left = _alive(family)  # what a SIGKILL leaves: the owner could not clean up
    nxt = _start_run(many_images, tmp_path / "b", run_tmp)
    try:
        _wait_for_actors(nxt)  # the next run has started (its Ray is up)
        assert not _alive(left) and not old.exists()
    finally:
        nxt.send_signal(signal.SIGTERM)
        nxt.communicate(timeout=120)
