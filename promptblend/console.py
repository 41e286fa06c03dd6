"""The console policy of every command, set up once by :func:`promptblend.cli.entry_point`.

- The console shows progress bars (:mod:`promptblend.progress`), results, and warnings and errors of
  promptblend's own packages (plus any library error).
- Library chatter (INFO lines, Python warnings, raw writes to stderr such as a library's own bars) goes
  to a log file: ``<output folder>/<command>.log`` when the command succeeds (the folder of ``--out``,
  or the folder holding the ``--out`` file), else ``<cache>/logs/<command>.log``; each invocation
  appends one section headed by its command line.
- ``-v`` / ``--verbose``: the log is also shown on the console.
- ``--quiet``: no progress bars and no output but errors and the command's final result line.
- Warnings that are wrong in context (:data:`HIDDEN`) are kept out of the console even with ``-v``.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import shlex
import sys
import tempfile
import time
from pathlib import Path
from typing import IO, Iterator

from . import progress

#: Top-level packages (and ``python -m`` scripts) whose warnings reach the console.
OWN = ("promptblend", "predictors", "index", "ensemble", "experiments", "__main__")
VERBOSE_FLAGS, QUIET_FLAGS = ("-v", "--verbose"), ("--quiet",)
#: Messages never shown on the console: open_clip's random-init warning is printed before a checkpoint's
#: weights are loaded into the model (and the run meta says when a model is random); Ray's notice about
#: token authentication concerns clusters, not the local instance a command starts.
HIDDEN = (
    re.compile(r"No pretrained weights loaded for model .* initialized randomly"),
    re.compile(r"token[- ]?auth", re.IGNORECASE),
)
FORMAT = "%(levelname)s %(name)s: %(message)s"
TAIL_CHARS = 8192

_active: list["Session"] = []


class _Redirect(io.TextIOBase):
    """A stream that forwards to a target that can change (handlers created in a session keep working after it)."""

    def __init__(self, target: IO[str]) -> None:
        self.target = target
        self.tail = ""  # the last characters written, echoed to the console when the command exits by SystemExit

    def write(self, text: str) -> int:
        self.target.write(text)
        self.tail = (self.tail + text)[-TAIL_CHARS:]
        return len(text)

    def flush(self) -> None:
        self.target.flush()

    def isatty(self) -> bool:
        return False

    def fileno(self) -> int:
        return self.target.fileno()


class ConsoleFilter(logging.Filter):
    """What a log record may show on the console: own warnings and any error; everything with ``verbose``."""

    def __init__(self, verbose: bool) -> None:
        super().__init__()
        self.verbose = verbose

    def filter(self, record: logging.LogRecord) -> bool:
        if hidden(record.getMessage()):
            return False
        if self.verbose or record.levelno >= logging.ERROR:
            return True
        return record.levelno >= logging.WARNING and record.name.split(".")[0] in OWN


def hidden(message: str) -> bool:
    """Whether ``message`` is one of the warnings that are wrong in context (never on the console)."""
    return any(p.search(message) for p in HIDDEN)


def split_flags(argv: list[str]) -> tuple[list[str], bool, bool]:
    """``(argv without -v/--verbose/--quiet, verbose, quiet)``."""
    rest = [a for a in argv if a not in VERBOSE_FLAGS + QUIET_FLAGS]
    return rest, any(a in VERBOSE_FLAGS for a in argv), any(a in QUIET_FLAGS for a in argv)


def out_argument(argv: list[str]) -> str | None:
    """The value of ``--out`` in ``argv`` (``--out X`` or ``--out=X``), if any."""
    for i, a in enumerate(argv):
        if a == "--out" and i + 1 < len(argv):
            return argv[i + 1]
        if a.startswith("--out="):
            return a.split("=", 1)[1]
    return None


def command_name(module: str) -> str:
    """``predictors.run`` for a main defined in ``predictors/run.py`` or ``predictors/run/__main__.py``."""
    if module == "__main__":
        spec = getattr(sys.modules.get("__main__"), "__spec__", None)
        module = spec.name if spec is not None else Path(sys.argv[0]).stem
    return module.removesuffix(".__main__")


def log_folder(out: str | None) -> Path | None:
    """The output folder of ``--out``: itself when it is a folder, the folder holding it when it is a regular file
    the command wrote, else None (a device such as ``/dev/null``, nothing written: the log stays in the cache)."""
    if not out:
        return None
    path = Path(out)
    if path.is_dir():
        return path
    return path.parent if path.is_file() else None


class Session:
    """One command's console: handlers, redirected streams and the log file, undone by :meth:`close`."""

    def __init__(self, command: str, argv: list[str], verbose: bool, quiet: bool) -> None:
        from .cache import cache_dir

        self.command, self.argv, self.verbose, self.quiet = command, argv, verbose, quiet
        self.out = out_argument(argv)
        self.stdout, self.stderr = sys.stdout, sys.stderr
        self.logs = cache_dir() / "logs"
        name = f".{command}.{os.getpid()}.{time.monotonic_ns()}.log"
        try:
            self.logs.mkdir(parents=True, exist_ok=True)
            self.tmp_log = self.logs / name
            self.log = open(self.tmp_log, "w", encoding="utf-8", errors="replace")
        except OSError:  # an unwritable cache must not stop the command: the system's temp folder holds the log
            self.logs = Path(tempfile.gettempdir())
            self.tmp_log = self.logs / name
            self.log = open(self.tmp_log, "w", encoding="utf-8", errors="replace")
        self.log.write(f"=== {time.strftime('%Y-%m-%d %H:%M:%S')} python -m {command} {shlex.join(argv)}\n")
        root = logging.getLogger()
        self.saved_level = root.level
        self.file_handler = logging.StreamHandler(self.log)
        self.file_handler.setFormatter(logging.Formatter("%(asctime)s " + FORMAT))
        self.console_handler = logging.StreamHandler(self.stderr)
        self.console_handler.setFormatter(logging.Formatter(FORMAT))
        self.console_handler.addFilter(ConsoleFilter(verbose))
        self.console_handler.setLevel(logging.ERROR if quiet else logging.INFO)
        root.addHandler(self.file_handler)
        root.addHandler(self.console_handler)
        root.setLevel(logging.INFO)
        logging.captureWarnings(True)
        progress.configure(self.stderr, enabled=not quiet)
        self.redirect_err = _Redirect(self.stderr if verbose else self.log)
        sys.stderr = self.redirect_err
        self.buffer = io.StringIO() if quiet else None
        if self.buffer is not None:
            sys.stdout = self.buffer

    def close(self, ok: bool) -> Path:
        """Restore the streams and handlers; append this run's log to the output folder's (``ok``) or the cache's."""
        sys.stdout, sys.stderr = self.stdout, self.stderr
        self.redirect_err.target = self.stderr
        root = logging.getLogger()
        root.removeHandler(self.file_handler)
        root.removeHandler(self.console_handler)
        root.setLevel(self.saved_level)
        logging.captureWarnings(False)
        progress.configure(None)
        if self.buffer is not None:
            text = self.buffer.getvalue()
            self.log.write(text)
            last = [ln for ln in text.splitlines() if ln.strip()][-1:]
            if ok and last:
                print(last[0], file=self.stdout, flush=True)
        self.log.close()
        folder = log_folder(self.out) if ok else None
        text = self.tmp_log.read_text(encoding="utf-8")
        for dest in ([folder / f"{self.command}.log"] if folder is not None else []) + [self.logs / f"{self.command}.log"]:
            try:
                with open(dest, "a", encoding="utf-8") as f:
                    f.write(text)
            except OSError:  # an unwritable output folder: the log goes to the cache (or stays where it is)
                continue
            self.tmp_log.unlink(missing_ok=True)
            return dest
        return self.tmp_log


def error_stream() -> IO[str]:
    """Where ``error:`` lines go: the console stderr of the running command."""
    return _active[0].stderr if _active else sys.stderr


HELP_NOTE = ("console (every command): -v/--verbose also shows library logging, which always goes to "
             "<output folder>/<command>.log; --quiet prints nothing but errors and the final result line")


@contextlib.contextmanager
def session(command: str, argv: list[str]) -> Iterator[dict]:
    """Apply the console policy around one command. Yields ``{"argv": argv without the console flags,
    "ok": True}``; the caller sets ``ok`` False when the command failed (its log then stays in the cache).

    An argparse exit (usage error, ``--help``) reaches the console as argparse wrote it. Nested commands
    (a main calling another) share the outer session.
    """
    rest, verbose, quiet = split_flags(argv)
    state = {"argv": rest, "ok": True}
    if _active:
        yield state
        return
    s = Session(command, rest, verbose, quiet)
    _active.append(s)
    try:
        yield state
    except SystemExit as e:
        state["ok"] = False
        usage = s.redirect_err.tail.rfind("usage:")
        if not verbose and usage >= 0:  # argparse's usage and error lines
            s.stderr.write(s.redirect_err.tail[usage:])
        if s.buffer is not None:
            s.stdout.write(s.buffer.getvalue())
        if e.code == 0 and any(a in ("-h", "--help") for a in rest):
            print("\n" + HELP_NOTE, file=s.stdout)
        raise
    except BaseException:
        state["ok"] = False
        raise
    finally:
        _active.pop()
        s.close(state["ok"])
