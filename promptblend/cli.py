"""Shared command-line plumbing: logging set up once, typed errors turned into one clear line."""

from __future__ import annotations

import functools
import logging
import sys
from typing import Callable

from .errors import PromptblendError


def entry_point(main: Callable[..., int | None]) -> Callable[..., int]:
    """Wrap a CLI ``main``: configure logging, print ``error: ...`` and exit 2 on bad input.

    Bad input is a :class:`PromptblendError`, a full disk (ENOSPC/EFBIG) or an OSError naming a path
    the user gave (missing, a folder where a file belongs or the reverse, no permission).
    """

    @functools.wraps(main)
    def wrapper(argv: list[str] | None = None) -> int:
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
        try:
            return int(main(argv) or 0)
        except PromptblendError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        except OSError as e:
            line = os_error_line(e)
            if line is None:
                raise
            print(f"error: {line}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            print("interrupted: finished shards are kept; run the same command again to resume", file=sys.stderr)
            return 130

    return wrapper


_PATH_ERRORS = (FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError, FileExistsError)


def os_error_line(err: OSError) -> str | None:
    """The one-line message for an OSError that is bad input or a full disk, else None (a bug: traceback)."""
    from .atomic import disk_full_error, is_disk_full

    if is_disk_full(err):
        return str(disk_full_error(err, err.filename or "output"))
    if not isinstance(err, _PATH_ERRORS) or err.filename is None:
        return None
    hint = " (a file stands where a folder is needed)" if isinstance(err, (FileExistsError, NotADirectoryError)) else ""
    return f"{err.strerror or err}: {err.filename}{hint}"
