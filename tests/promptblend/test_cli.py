"""entry_point: typed errors, a full disk and OSErrors naming a path give one `error:` line and exit 2."""

from __future__ import annotations

import errno

import pytest

from promptblend.cli import entry_point
from promptblend.errors import DiskFullError


def _raising(err):
    @entry_point
    def main(argv=None):
        raise err

    return main


@pytest.mark.parametrize(
    "err,line",
    [
        (OSError(errno.ENOSPC, "No space left on device", "/data/out/x.npy"), "error: no space left on device writing /data/out/x.npy"),
        (OSError(errno.EFBIG, "File too large"), "error: file size limit exceeded writing output"),
        (DiskFullError("not enough disk space for index"), "error: not enough disk space for index"),
        (NotADirectoryError(errno.ENOTDIR, "Not a directory", "out/file"), "error: Not a directory: out/file (a file stands where a folder is needed)"),
        (IsADirectoryError(errno.EISDIR, "Is a directory", "a/dir"), "error: Is a directory: a/dir"),
        (PermissionError(errno.EACCES, "Permission denied", "/root/x"), "error: Permission denied: /root/x"),
    ],
)
def test_one_error_line_and_exit_2(capsys, err, line):
    assert _raising(err)([]) == 2
    assert capsys.readouterr().err.splitlines() == [line]


def test_other_os_errors_stay_tracebacks():
    with pytest.raises(ConnectionResetError):
        _raising(ConnectionResetError(errno.ECONNRESET, "reset"))([])
    with pytest.raises(FileNotFoundError):  # no path named: a bug, not bad input
        _raising(FileNotFoundError("gone"))([])
