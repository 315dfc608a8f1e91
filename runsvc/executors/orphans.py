"""Processes of runs that outlive them: left behind by a crashed server, or escaped from their group.

A run's process starts in its own process group and working directory, but a daemon can leave both
(double fork, `setsid`, `chdir /`). What it cannot shed by accident is its environment: every process
of a run carries RUNSVC_RUN_ID and RUNSVC_SERVER_ID (which data dir's server started it), as GitHub's
runner tags job processes with RUNNER_TRACKING_ID. Linux only: both finders read /proc.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Iterable
from pathlib import Path

RUN_ID_ENV = "RUNSVC_RUN_ID"
SERVER_ID_ENV = "RUNSVC_SERVER_ID"
_SCAN_PASSES = 3  # a process forking while we scan is caught by the next pass


def kill_orphans(workdir_root: Path) -> list[int]:
    """SIGKILL the process group of every process whose cwd is inside `workdir_root`.

    After a `kill -9` of the server nothing else remembers its runs' processes. Returns the groups
    killed.
    """
    root = os.path.realpath(workdir_root)
    prefix = root + os.sep
    own_group = os.getpgrp()
    groups: set[int] = set()
    for pid in _pids():
        try:
            cwd = os.readlink(f"/proc/{pid}/cwd")
            if cwd == root or cwd.startswith(prefix):
                groups.add(os.getpgid(pid))
        except OSError:
            continue  # gone meanwhile, or not ours to look at
    groups.discard(own_group)
    return _sigkill_each(os.killpg, sorted(groups))


def kill_tagged(server_id: str, run_id: int | None = None) -> list[int]:
    """SIGKILL every process whose environment says it belongs to this server (and to run `run_id`,
    if given), wherever it went. Returns the pids killed."""
    wanted = {f"{SERVER_ID_ENV}={server_id}".encode()}
    if run_id is not None:
        wanted.add(f"{RUN_ID_ENV}={run_id}".encode())
    own = os.getpid()
    killed: list[int] = []
    for _ in range(_SCAN_PASSES):
        found = [pid for pid in _pids() if pid != own and wanted <= _environ(pid)]
        if not found:
            break
        killed += _sigkill_each(os.kill, found)
    return killed


def _sigkill_each(kill: Callable[[int, int], None], ids: Iterable[int]) -> list[int]:
    """SIGKILL each process (or group) with `kill`; the ids it reached (one gone meanwhile is skipped)."""
    reached = []
    for id_ in ids:
        try:
            kill(id_, signal.SIGKILL)
            reached.append(id_)
        except OSError:
            pass
    return reached


def _pids() -> list[int]:
    try:
        return [int(name) for name in os.listdir("/proc") if name.isdigit()]
    except OSError:
        return []


def _environ(pid: int) -> set[bytes]:
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            return set(f.read().split(b"\0"))
    except OSError:
        return set()  # gone, a kernel thread, or not ours to read
