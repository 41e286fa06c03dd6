"""Atomic writes: modes follow the umask, killed writers' temp files are swept, a full disk is named."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from promptblend import atomic
from promptblend.errors import DiskFullError
from promptblend.runs import Run, save_run


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.fixture
def umask():
    old = os.umask(0o022)
    yield lambda mask: os.umask(mask)
    os.umask(old)


@pytest.mark.parametrize("mask", [0o022, 0o002, 0o077, 0o027])
def test_published_files_and_folders_follow_the_umask(tmp_path, umask, mask):
    umask(mask)
    atomic.write_text(tmp_path / "a.txt", "x")
    atomic.save_npy(tmp_path / "b.npy", np.zeros(3))
    with atomic.atomic_dir(tmp_path / "d") as tmp:
        (tmp / "inner.txt").write_text("y")
    save_run(tmp_path / "run", Run(["a"], np.eye(1, 384, dtype=np.float32)))
    assert atomic.current_umask() == mask
    for f in ("a.txt", "b.npy", "d/inner.txt", "run/embeddings.npy", "run/ids.txt", "run/meta.json"):
        assert _mode(tmp_path / f) == 0o666 & ~mask, f
    for d in ("d", "run"):
        assert _mode(tmp_path / d) == 0o777 & ~mask, d


KILLED = textwrap.dedent(
    """
    import os, signal, sys
    from promptblend import atomic
    folder = sys.argv[1]
    ctx = atomic.atomic_path(os.path.join(folder, "big.bin"), ".bin")
    tmp = ctx.__enter__()
    tmp.write_bytes(b"x" * 1000)
    ctx2 = atomic.atomic_dir(os.path.join(folder, "run"))
    d = ctx2.__enter__()
    (d / "f").write_text("y")
    os.kill(os.getpid(), signal.SIGKILL)
    """
)


def test_temp_files_of_killed_writers_are_swept(tmp_path):
    script = tmp_path / "k.py"
    script.write_text(KILLED)
    out = tmp_path / "out"
    out.mkdir()
    assert subprocess.run([sys.executable, str(script), str(out)]).returncode == -9
    litter = sorted(p.name for p in out.iterdir())
    assert len(litter) == 2 and all(".tmp" in n for n in litter)
    # a live writer's temp file (ours) and unrelated dot files are kept
    with atomic.atomic_path(out / "mine.txt") as mine:
        mine.write_text("in progress")
        (out / ".hidden").write_text("keep")
        removed = atomic.sweep_stale(out)
        assert sorted(p.name for p in removed) == litter
        assert sorted(p.name for p in out.iterdir()) == sorted([".hidden", mine.name])
    assert sorted(p.name for p in out.iterdir()) == [".hidden", "mine.txt"]
    # the next atomic write of a target sweeps that target's litter by itself
    assert subprocess.run([sys.executable, str(script), str(out)]).returncode == -9
    run_litter = [p.name for p in out.iterdir() if p.name.startswith(".run.")]
    atomic.write_text(out / "big.bin", "done")
    assert len(run_litter) == 1 and [p.name for p in out.iterdir() if ".tmp" in p.name] == run_litter
    with atomic.atomic_dir(out / "run"):
        pass
    assert sorted(p.name for p in out.iterdir()) == [".hidden", "big.bin", "mine.txt", "run"]


def test_a_reused_pid_does_not_keep_old_litter(tmp_path):
    # a temp file older than the live process holding its pid is stale too
    name = f".f.{atomic._host_tag()}-1.abcdefgh.tmp"
    (tmp_path / name).write_text("x")
    os.utime(tmp_path / name, (time.time() - 10 ** 8, time.time() - 10 ** 8))
    assert [p.name for p in atomic.sweep_stale(tmp_path)] == [name]


FSIZE = textwrap.dedent(
    """
    import resource, sys
    import numpy as np
    from promptblend import atomic
    from promptblend.errors import DiskFullError
    resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, 100_000))
    try:
        atomic.save_npy(sys.argv[1] + "/big.npy", np.zeros(100_000))
    except DiskFullError as e:
        print("named:", e)
    try:  # numpy's own file path (tofile) loses errno: still a named error
        with atomic.atomic_path(sys.argv[1] + "/raw.npy") as tmp, open(tmp, "wb") as f:
            np.save(f, np.zeros(100_000))
    except DiskFullError as e:
        print("named:", e)
    """
)


def test_a_file_size_limit_is_a_named_error_and_leaves_nothing(tmp_path):
    script = tmp_path / "f.py"
    script.write_text(FSIZE)
    out = tmp_path / "out"
    out.mkdir()
    res = subprocess.run([sys.executable, str(script), str(out)], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    first, second = res.stdout.splitlines()
    assert first.startswith("named: file size limit exceeded writing") and first.endswith("big.npy (needs 781.2 KB)")
    assert second.startswith("named: short write (disk full or file size limit) writing") and "raw.npy" in second
    assert list(out.iterdir()) == []


def test_ensure_free_space(tmp_path):
    atomic.ensure_free_space(tmp_path / "not" / "yet", 1, "a byte")
    with pytest.raises(DiskFullError, match=r"needs 1024\.0 TB") as info:
        atomic.ensure_free_space(tmp_path / "x", 2 ** 50, "a huge index")
    assert info.value.needed == 2 ** 50 and info.value.free >= 0
    with pytest.raises(DiskFullError, match="not enough disk space for big.npy"):
        with atomic.atomic_path(tmp_path / "big.npy", needed=2 ** 50):
            pass
    assert list(tmp_path.iterdir()) == []


LOCKER = textwrap.dedent(
    """
    import sys, time
    from promptblend import atomic
    with atomic.file_lock(sys.argv[1]):
        with open(sys.argv[2], "a") as f:
            f.write(f"in {sys.argv[3]} {time.time()}\\n")
        time.sleep(0.3)
        with open(sys.argv[2], "a") as f:
            f.write(f"out {sys.argv[3]} {time.time()}\\n")
    """
)


def test_file_lock_admits_one_holder_at_a_time(tmp_path):
    script = tmp_path / "l.py"
    script.write_text(LOCKER)
    log = tmp_path / "log"
    procs = [subprocess.Popen([sys.executable, str(script), str(tmp_path / ".x.lock"), str(log), str(k)]) for k in range(3)]
    assert [p.wait(timeout=60) for p in procs] == [0, 0, 0]
    events = [line.split()[:2] for line in log.read_text().splitlines()]
    assert len(events) == 6
    for k in range(0, 6, 2):  # in/out pairs never interleave
        assert events[k][0] == "in" and events[k + 1] == ["out", events[k][1]]
    assert not (tmp_path / ".x.lock").exists()


def test_rust_io_errors_of_a_full_disk_are_named(tmp_path):
    from safetensors import SafetensorError

    with pytest.raises(DiskFullError, match=r"no space left on device writing .*w.safetensors"):
        with atomic.atomic_path(tmp_path / "w.safetensors"):
            raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")
    with pytest.raises(SafetensorError):  # other library errors pass through
        with atomic.atomic_path(tmp_path / "w.safetensors"):
            raise SafetensorError("Error while serializing: I/O error: Permission denied (os error 13)")
    assert list(tmp_path.iterdir()) == []
