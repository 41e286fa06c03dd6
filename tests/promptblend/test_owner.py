"""The one "owner alive" rule: a live process, a dead one, a zombie, a reused pid, another host."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

from promptblend.owner import owner_alive, owner_tag, pid_alive, start_ticks


def test_this_process_is_alive_by_tag_and_by_pid():
    assert owner_alive(owner_tag())
    assert pid_alive(os.getpid(), start_ticks(os.getpid()), seen=time.time())


def test_a_dead_process_and_a_zombie_are_not():
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    tag = owner_tag(child.pid)
    deadline = time.time() + 30
    while start_ticks(child.pid) is not None and time.time() < deadline:  # exited, not reaped: a zombie
        time.sleep(0.05)
    assert not owner_alive(tag) and not pid_alive(child.pid)
    child.wait()
    assert not owner_alive(tag)


def test_a_reused_pid_is_another_process():
    host, start, pid = owner_tag().rsplit(":", 2)
    assert not owner_alive(f"{host}:{int(start) - 1}:{pid}")  # same pid, another start: not the owner
    assert not pid_alive(os.getpid(), seen=time.time() - 3600)  # started after the owner was last seen


def test_an_owner_on_another_host_is_assumed_alive():
    assert owner_alive(f"not-{socket.gethostname()}:1:1")
