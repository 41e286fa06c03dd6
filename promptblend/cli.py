"""Shared command-line plumbing: logging set up once, typed errors turned into one clear line."""

from __future__ import annotations

import functools
import sys
from typing import Callable

from . import console
from .errors import PromptblendError


def entry_point(main: Callable[..., int | None]) -> Callable[..., int]:
    """Wrap a CLI ``main``: apply the console policy (:mod:`promptblend.console`: library logging to a
    log file, ``-v``, ``--quiet``), print ``error: ...`` and exit 2 on bad input.

    Bad input is a :class:`PromptblendError`, a full disk (ENOSPC/EFBIG) or an OSError naming a path
    the user gave (missing, a folder where a file belongs or the reverse, no permission).
    """

    @functools.wraps(main)
    def wrapper(argv: list[str] | None = None) -> int:
        argv = sys.argv[1:] if argv is None else list(argv)
        with console.session(console.command_name(main.__module__), argv) as state:  # the logging policy
            try:
                return int(main(state["argv"]) or 0)
            except PromptblendError as e:
                state["ok"] = False
                print(f"error: {e}{notes(e)}", file=console.error_stream())
                return 2
            except OSError as e:
                line = os_error_line(e)
                if line is None:
                    raise
                state["ok"] = False
                print(f"error: {line}{notes(e)}", file=console.error_stream())
                return 2
            except KeyboardInterrupt as e:
                state["ok"] = False
                kept = "; ".join(getattr(e, "__notes__", ())) or "finished shards are kept; run the same command again to resume"
                print(f"interrupted: {kept}", file=console.error_stream())
                return 130

    return wrapper


def notes(err: BaseException) -> str:
    """The notes added to ``err`` on its way up (e.g. what a failed command left: kept to resume, or removed),
    each in parentheses, for the one error line."""
    return "".join(f" ({n})" for n in getattr(err, "__notes__", ()))


_PATH_ERRORS = (FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError, FileExistsError)


def os_error_line(err: OSError) -> str | None:
    """The one-line message for an OSError that is bad input, an unwritable output or a full disk, else
    None (a bug: traceback). No permission or a read-only file system is never a bug, named path or not."""
    from .atomic import UNWRITABLE_ERRNOS, describe_path, disk_full_error, is_disk_full

    if is_disk_full(err):
        return str(disk_full_error(err, err.filename or "output"))
    if err.errno in UNWRITABLE_ERRNOS:
        return f"{err.strerror or err}: {err.filename or 'an output or input path'}"
    if not isinstance(err, _PATH_ERRORS) or err.filename is None:
        return None
    hint = ""
    if isinstance(err, (FileExistsError, NotADirectoryError)):
        hint = f" ({describe_path(err.filename) or 'a file'} stands where a folder is needed)"
    return f"{err.strerror or err}: {err.filename}{hint}"
