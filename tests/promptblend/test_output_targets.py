"""The atomic writer and its outputs: only regular files (and folders) are replaced; symlinks are written
through to their target, as coreutils does; a device, FIFO or socket, or an unwritable folder, is one
named error."""

from __future__ import annotations

import os
import socket
import stat

import numpy as np
import pytest

from promptblend import atomic
from promptblend.errors import OutputError
from promptblend.runs import Run, save_run


def _char_device(tmp_path):
    """A character device to aim at: a private /dev/null twin when root (so a bug replaces only it), else
    /dev/null itself, which a non-root process cannot replace."""
    if os.geteuid() != 0:
        return "/dev/null"
    path = tmp_path / "null"
    os.mknod(path, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    return path


def _special(kind, tmp_path):
    if kind == "device":
        return _char_device(tmp_path)
    path = tmp_path / kind
    if kind == "fifo":
        os.mkfifo(path)
    else:
        sock = socket.socket(socket.AF_UNIX)
        sock.bind(str(path))
        sock.close()
    return path


def _same_kind(path, test) -> bool:
    return test(os.lstat(path).st_mode)


KINDS = {"device": stat.S_ISCHR, "fifo": stat.S_ISFIFO, "socket": stat.S_ISSOCK}


@pytest.mark.parametrize("kind", sorted(KINDS))
@pytest.mark.parametrize("via_symlink", [False, True])
def test_a_special_file_is_refused_and_kept(tmp_path, kind, via_symlink):
    target = _special(kind, tmp_path)
    path = tmp_path / "link.csv" if via_symlink else target
    if via_symlink:
        path.symlink_to(target)
    with pytest.raises(OutputError, match=f"{path}.*it is a"):
        atomic.write_text(path, "hello\n")
    with pytest.raises(OutputError, match="not a folder"):
        with atomic.atomic_dir(path):
            pass
    assert _same_kind(target, KINDS[kind])
    assert not via_symlink or os.path.islink(path)
    assert not [p for p in tmp_path.iterdir() if ".tmp" in p.name]


def test_a_symlinked_file_is_written_through(tmp_path):
    real = tmp_path / "real" / "out.csv"
    real.parent.mkdir()
    real.write_text("old\n")
    link = tmp_path / "out.csv"
    link.symlink_to(real)
    atomic.write_text(link, "new\n")
    assert link.is_symlink() and os.readlink(link) == str(real)
    assert real.read_text() == "new\n"
    atomic.save_npy(link.with_name("arr.npy"), np.zeros(3, np.float32))  # an ordinary path beside it still works
    assert not [p for p in real.parent.iterdir() if ".tmp" in p.name]


def test_a_dangling_symlink_creates_its_target(tmp_path):
    link = tmp_path / "out.txt"
    link.symlink_to(tmp_path / "elsewhere.txt")
    atomic.write_text(link, "x")
    assert link.is_symlink() and (tmp_path / "elsewhere.txt").read_text() == "x"


def test_a_symlinked_folder_is_replaced_through_the_link(tmp_path):
    real = tmp_path / "store" / "run"
    run = Run(["a", "b"], np.eye(2, 384, dtype=np.float32))
    save_run(real, run)
    link = tmp_path / "run"
    link.symlink_to(real, target_is_directory=True)
    save_run(link, Run(["c"], np.ones((1, 384), np.float32)))
    assert link.is_symlink()
    assert (real / "ids.txt").read_text().split() == ["c"]


def test_a_file_where_a_folder_belongs_is_refused_before_any_work(tmp_path):
    path = tmp_path / "run"
    path.write_text("mine\n")
    with pytest.raises(OutputError, match="it is a regular file, not a folder"):
        with atomic.atomic_dir(path):
            raise AssertionError("the body must not run")
    assert path.read_text() == "mine\n"


def test_an_unwritable_folder_is_one_named_error(unwritable_dir):
    with pytest.raises(OutputError, match=f"cannot write {unwritable_dir / 'x.txt'}"):
        atomic.write_text(unwritable_dir / "x.txt", "x")
    with pytest.raises(OutputError, match=f"cannot write {unwritable_dir / 'sub' / 'run'}"):
        save_run(unwritable_dir / "sub" / "run", Run(["a"], np.ones((1, 384), np.float32)))
    assert list(unwritable_dir.iterdir()) == []


def test_a_failed_command_leaves_resumable_work_or_nothing(tmp_path):
    def fail_in(path, write=None):
        with pytest.raises(RuntimeError) as e, atomic.output_folder(path, lambda p: (p / "ckpt").is_file()):
            if write:
                (path / write).write_text("x")
            raise RuntimeError("boom")
        return e.value.__notes__

    assert fail_in(tmp_path / "new", "log.txt") == [f"nothing to resume: {tmp_path / 'new'} removed"]
    assert not (tmp_path / "new").exists()
    assert fail_in(tmp_path / "resumable", "ckpt") == [f"work kept in {tmp_path / 'resumable'}: run the same command again to resume"]
    assert (tmp_path / "resumable" / "ckpt").is_file()
    (tmp_path / "theirs").mkdir()
    assert not hasattr(RuntimeError(), "__notes__")
    with pytest.raises(RuntimeError) as e, atomic.output_folder(tmp_path / "theirs", lambda p: False):
        raise RuntimeError("boom")
    assert (tmp_path / "theirs").is_dir() and not hasattr(e.value, "__notes__")  # a folder that was there stays
    with pytest.raises(OutputError, match="it is a FIFO"):
        os.mkfifo(tmp_path / "fifo")
        with atomic.output_folder(tmp_path / "fifo", lambda p: False):
            pass


def test_the_error_line_says_what_was_left(capsys):
    from promptblend.cli import entry_point
    from promptblend.errors import ConfigError

    @entry_point
    def main(argv=None):
        err = ConfigError("bad lr")
        err.add_note("nothing to resume: out removed")
        raise err

    assert main([]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == "error: bad lr (nothing to resume: out removed)"
