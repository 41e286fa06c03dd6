"""Atomic file and folder writes: write to a temporary sibling, then rename into place.

Temporary names carry the writer's host and pid (``.NAME.HOST-PID.XXXXXXXX.tmp[SUFFIX]``) so that
:func:`sweep_stale` can remove the litter of killed writers (each atomic write sweeps its own target's). Published files and folders get the
modes the umask gives (not the 0600/0700 of temporary files). A full disk (ENOSPC, or EFBIG past
a file-size limit) raises :class:`DiskFullError`.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import os
import re
import shutil
import socket
import stat
import tempfile
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from .errors import DiskFullError, OutputError
from .owner import pid_alive

DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EFBIG)
UNWRITABLE_ERRNOS = (errno.EACCES, errno.EPERM, errno.EROFS)
_KINDS = ((stat.S_ISREG, "a regular file"), (stat.S_ISDIR, "a folder"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"))
_TEMP = re.compile(r"^\.(?P<name>.+)\.(?P<host>[0-9a-f]{6})-(?P<pid>\d+)\.[a-z0-9_]{8}\.tmp")


def _host_tag() -> str:
    return hashlib.sha256(socket.gethostname().encode()).hexdigest()[:6]


def _temp_prefix(path: Path) -> str:
    return f".{path.name}.{_host_tag()}-{os.getpid()}."


def aside_path(path: str | os.PathLike) -> Path:
    """A fresh temporary sibling name for ``path`` (to rename it away before removing it; swept if killed)."""
    path = Path(path)
    return path.with_name(f"{_temp_prefix(path)}{os.urandom(4).hex()}.tmp")


def current_umask() -> int:
    """The process umask (read from /proc where possible, which is thread-safe)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _publish_mode(path: Path, folder: bool) -> None:
    os.chmod(path, (0o777 if folder else 0o666) & ~current_umask())


def format_bytes(n: float) -> str:
    """``n`` bytes in a readable unit."""
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1024 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def _existing(path: Path) -> Path:
    path = path.absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def ensure_free_space(path: str | os.PathLike, nbytes: int, what: str) -> None:
    """Raise :class:`DiskFullError` when the disk holding ``path`` has less than ``nbytes`` free."""
    free = shutil.disk_usage(_existing(Path(path))).free
    if nbytes > free:
        raise DiskFullError(
            f"not enough disk space for {what} at {path}: needs {format_bytes(nbytes)}, {format_bytes(free)} free",
            path=path, needed=nbytes, free=free,
        )


_SHORT_WRITE = re.compile(r"^\d+ requested and \d+ written$")  # numpy's tofile loses errno
_RUST_IO = re.compile(rf"\(os error ({errno.ENOSPC}|{errno.EFBIG})\)")  # safetensors/tokenizers wrap io errors


def _disk_errno(err: BaseException) -> int | None:
    """ENOSPC/EFBIG when ``err`` reports one, 0 for numpy's errno-less short write, else None."""
    if isinstance(err, OSError) and err.errno in DISK_FULL_ERRNOS:
        return err.errno
    if isinstance(err, OSError) and err.errno is None and _SHORT_WRITE.match(str(err)):
        return 0
    m = None if isinstance(err, OSError) else _RUST_IO.search(str(err))
    return int(m.group(1)) if m else None


def is_disk_full(err: BaseException) -> bool:
    """Whether ``err`` reports a full disk or a file-size limit (an OSError, numpy's short write, or a
    Rust-backed library's "(os error 28)")."""
    return _disk_errno(err) is not None


def disk_full_error(err: BaseException, path: str | os.PathLike, needed: int | None = None) -> DiskFullError:
    """The :class:`DiskFullError` for a full-disk ``err`` (see :func:`is_disk_full`) while writing ``path``."""
    why = {errno.EFBIG: "file size limit exceeded", errno.ENOSPC: "no space left on device"}.get(
        _disk_errno(err), "short write (disk full or file size limit)"
    )
    need = f" (needs {format_bytes(needed)})" if needed else ""
    return DiskFullError(f"{why} writing {path}{need}", path=path, needed=needed)


@contextlib.contextmanager
def _disk_full_as_error(path: Path, needed: int | None) -> Iterator[None]:
    try:
        yield
    except Exception as e:
        if is_disk_full(e):
            raise disk_full_error(e, path, needed) from e
        raise


def describe_path(path: str | os.PathLike) -> str | None:
    """What stands at ``path`` (followed through symlinks): "a regular file", "a FIFO"...; None when absent."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return None
    return next((k for test, k in _KINDS if test(mode)), "a special file")


def output_target(path: str | os.PathLike, folder: bool = False) -> Path:
    """Where a write to ``path`` lands, as coreutils does it: through symlinks to their target.

    Only an absent path or a regular file (a folder when ``folder``) may be replaced: a device, FIFO,
    socket, or a file where a folder belongs (or the reverse) raises :class:`OutputError`.
    """
    real = Path(os.path.realpath(path))
    kind = describe_path(real)
    if kind is not None and kind != ("a folder" if folder else "a regular file"):
        via = f" (a symlink to {real})" if os.path.islink(path) else ""
        raise OutputError(f"refusing to write {path}{via}: it is {kind}, not {'a folder' if folder else 'a regular file'}")
    return real


@contextlib.contextmanager
def _unwritable_as_error(path: Path) -> Iterator[None]:
    """No permission or a read-only file system while making or publishing ``path``: :class:`OutputError`."""
    try:
        yield
    except OSError as e:
        if e.errno in UNWRITABLE_ERRNOS:
            raise OutputError(f"cannot write {path}: {e.strerror}") from e
        raise


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "", needed: int | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it onto ``path``, else remove it.

    A symlinked ``path`` is written through to its target; anything but a regular file there is refused
    (see :func:`output_target`). ``needed`` (bytes, when known) is checked against the free space first.
    """
    given = path
    path = output_target(path)
    with _unwritable_as_error(Path(given)):
        path.parent.mkdir(parents=True, exist_ok=True)
        if needed:
            ensure_free_space(path.parent, needed, path.name)
        sweep_stale(path.parent, path.name)
        fd, tmp = tempfile.mkstemp(prefix=_temp_prefix(path), suffix=f".tmp{suffix}", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    try:
        with _disk_full_as_error(path, needed):
            yield tmp
            _publish_mode(tmp, folder=False)
            with _unwritable_as_error(Path(given)):
                os.replace(tmp, output_target(given))
    finally:
        tmp.unlink(missing_ok=True)


def write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` atomically (UTF-8, newlines as given)."""
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8", newline="") as f:
            f.write(text)


class _Writes:
    """A file seen through ``write`` only, so numpy writes in chunks that keep the OSError's errno."""

    def __init__(self, f) -> None:
        self.write = f.write


def write_npy(f, array: np.ndarray) -> None:
    """``np.save`` into the open binary file ``f`` (no pickles; a full disk keeps its errno)."""
    np.save(_Writes(f), array, allow_pickle=False)


def save_npy(path: str | os.PathLike, array: np.ndarray) -> None:
    """Save one array as ``.npy`` atomically."""
    with atomic_path(path, ".npy", needed=int(array.nbytes)) as tmp:
        with open(tmp, "wb") as f:
            write_npy(f, array)


def load_npy(path: str | os.PathLike, mmap: bool = False) -> np.ndarray:
    """Load a ``.npy`` file without ever unpickling."""
    return np.load(path, allow_pickle=False, mmap_mode="r" if mmap else None)


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike, needed: int | None = None) -> Iterator[Path]:
    """Yield a temporary folder beside ``path``; on success it replaces ``path`` in one rename.

    A symlinked ``path`` is written through to its target; anything but a folder there is refused.
    """
    given = path
    path = output_target(path, folder=True)
    with _unwritable_as_error(Path(given)):
        path.parent.mkdir(parents=True, exist_ok=True)
        if needed:
            ensure_free_space(path.parent, needed, path.name)
        sweep_stale(path.parent, path.name)
        tmp = Path(tempfile.mkdtemp(prefix=_temp_prefix(path), suffix=".tmp", dir=path.parent))
    try:
        with _disk_full_as_error(path, needed):
            yield tmp
            _publish_mode(tmp, folder=True)
            path = output_target(given, folder=True)
            if path.exists():
                shutil.rmtree(path)
            os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def output_folder(path: str | os.PathLike, resumable: Callable[[Path], bool]) -> Iterator[Path]:
    """Create a command's output folder ``path`` (through a symlink; anything but a folder there is refused).

    When the command then fails, what it leaves is resumable or removed, and the error says which (a note
    that :func:`promptblend.cli.entry_point` prints on the error line): a folder holding ``resumable``
    work is kept; one this call made that holds none is removed; a folder that was there before stays.
    """
    path = output_target(path, folder=True)
    made = not path.exists()
    with _unwritable_as_error(path):
        path.mkdir(parents=True, exist_ok=True)
    try:
        yield path
    except BaseException as e:
        if resumable(path):
            e.add_note(f"work kept in {path}: run the same command again to resume")
        elif made:
            shutil.rmtree(path, ignore_errors=True)
            e.add_note(f"nothing to resume: {path} removed")
        raise


def sweep_stale(folder: str | os.PathLike, name: str | None = None) -> list[Path]:
    """Remove temporary files and folders in ``folder`` left by dead writers on this host; return them.

    With ``name``, only those of that target (every atomic write sweeps its own target's litter).
    """
    folder = Path(folder)
    removed: list[Path] = []
    try:
        entries = list(os.scandir(folder))
    except (FileNotFoundError, NotADirectoryError):
        return removed
    host = _host_tag()
    for entry in entries:
        m = _TEMP.match(entry.name)
        if not m or m["host"] != host or int(m["pid"]) == os.getpid() or name not in (None, m["name"]):
            continue
        try:
            if pid_alive(int(m["pid"]), seen=entry.stat(follow_symlinks=False).st_mtime):
                continue
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path)
            else:
                os.unlink(entry.path)
        except FileNotFoundError:
            continue
        removed.append(Path(entry.path))
    return removed


@contextlib.contextmanager
def file_lock(path: str | os.PathLike) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path`` (created if needed); waits while another process holds it.

    The lock file is removed on release; a waiter that wakes on a removed file retries on the new one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(path))
            except FileNotFoundError:
                same = False
        except BaseException:
            os.close(fd)
            raise
        if same:
            break
        os.close(fd)
    try:
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        os.close(fd)
