"""The one "is the owner process still alive" rule, for anything that records which process owns it.

An owner is recorded as a tag ``host:start:pid`` (:func:`owner_tag`); ``start`` is the process's start
time in clock ticks since boot (``/proc/PID/stat``), which tells a reused pid apart. Where only a pid
was recorded (atomic temp names), the time the owner was last seen working (a file's mtime) stands in
for the start: a process that started after it is another one.

The rule (:func:`pid_alive`): the pid exists and is not a zombie, and it is the same process: it
started at the recorded start, or no later than it was last seen. An owner on another host is assumed
alive (nothing here can tell).
"""

from __future__ import annotations

import os
import socket
from functools import lru_cache
from pathlib import Path


def _stat_fields(pid: int) -> list[str] | None:
    """Fields of ``/proc/PID/stat`` after the command name (state first), or None when there is no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()


@lru_cache(maxsize=1)
def _boot_time() -> float | None:
    """Seconds since the epoch at boot (``btime`` of ``/proc/stat``), or None where unknown."""
    try:
        for line in Path("/proc/stat").read_text().splitlines():
            if line.startswith("btime "):
                return float(line.split()[1])
    except OSError:
        pass
    return None


def start_ticks(pid: int) -> int | None:
    """Start of process ``pid`` in clock ticks since boot; None when it is gone, a zombie, or unknown."""
    fields = _stat_fields(pid)
    if fields is None or fields[0] in ("Z", "X"):
        return None
    return int(fields[19])


def _exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: it exists
        pass
    return True


def pid_alive(pid: int, start: int | None = None, seen: float | None = None) -> bool:
    """Whether process ``pid`` runs and is the owner meant: started at ``start`` (ticks, when recorded),
    and no later than ``seen`` (seconds since the epoch when the owner was last seen working, when given)."""
    if not _exists(pid):
        return False
    fields = _stat_fields(pid)
    if fields is None:  # no /proc (not Linux): the pid exists, nothing more to tell
        return True
    if fields[0] in ("Z", "X"):
        return False
    ticks = int(fields[19])
    if start is not None and ticks != start:
        return False
    boot = _boot_time()
    if seen is not None and boot is not None:
        return boot + ticks / os.sysconf("SC_CLK_TCK") <= seen + 1.0
    return True


def owner_tag(pid: int | None = None) -> str:
    """``host:start:pid`` of process ``pid`` (default: this one); ``start`` is ``-`` where unknown."""
    pid = os.getpid() if pid is None else pid
    ticks = start_ticks(pid)
    return f"{socket.gethostname()}:{'-' if ticks is None else ticks}:{pid}"


def owner_alive(tag: str) -> bool:
    """Whether the process of an :func:`owner_tag` still runs (on another host: assumed so)."""
    host, start, pid = tag.rsplit(":", 2)
    if host != socket.gethostname():
        return True
    return pid_alive(int(pid), None if start == "-" else int(start))
