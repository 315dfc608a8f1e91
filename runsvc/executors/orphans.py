"""Processes of runs that outlive them: left behind by a crashed server, or escaped from their group.

A run's process starts in its own process group and working directory, but a daemon can leave both
(double fork, `setsid`, `chdir /`). What it cannot shed by accident is its environment: every process
of a run carries RUNSVC_RUN_ID and RUNSVC_SERVER_ID (which data dir's server started it), as GitHub's
runner tags job processes with RUNNER_TRACKING_ID. Linux only: both finders read /proc.

Reading every process's environment after every run costs a few milliseconds on a busy machine, which
short runs cannot afford (issue 22). So a run's sweep reads only processes created since the run
started: Linux hands out pids in increasing order within a pid namespace, wrapping at pid_max (the
kernel's idr_alloc_cyclic), so every process of a run has a pid above the run's first, up to the
namespace's last pid (/proc/sys/kernel/ns_last_pid), unless the counter wrapped meanwhile. A wrap is
handled by also taking the pids below the last one; a whole cycle (pid_max / 2 forks during the run,
counted by /proc/stat's `processes`) or anything unreadable falls back to reading every process.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Iterable
from pathlib import Path

import attrs

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


@attrs.frozen
class PidMark:
    """Where the pid counter stood when a run started: its first process's pid, and the forks the
    system had made before it (/proc/stat `processes`, None if unreadable)."""

    first_pid: int
    forks: int | None

    @classmethod
    def before_spawn(cls) -> int | None:
        """The fork count to pass as `forks` once the run's first process exists."""
        return fork_count()


def created_since(
    mark: PidMark, pids: list[int], last_pid: int | None, forks: int | None, pid_max: int | None
) -> list[int]:
    """The pids of `pids` (listed before `last_pid` and `forks` were read) that may have been created
    since `mark`; all of them when that cannot be told."""
    if last_pid is None or forks is None or mark.forks is None or pid_max is None:
        return pids
    if forks - mark.forks >= pid_max // 2:  # the counter may have come round past first_pid again
        return pids
    if last_pid >= mark.first_pid:
        return [pid for pid in pids if mark.first_pid <= pid <= last_pid]
    return [pid for pid in pids if pid >= mark.first_pid or pid <= last_pid]  # wrapped once


def kill_tagged(server_id: str, run_id: int | None = None, since: PidMark | None = None) -> list[int]:
    """SIGKILL every process whose environment says it belongs to this server (and to run `run_id`,
    if given), wherever it went; with `since` (the run's start), only processes created after it are
    read. Returns the pids killed."""
    wanted = {f"{SERVER_ID_ENV}={server_id}".encode()}
    if run_id is not None:
        wanted.add(f"{RUN_ID_ENV}={run_id}".encode())
    own = os.getpid()
    killed: list[int] = []
    for _ in range(_SCAN_PASSES):
        pids = _pids()
        if since is not None:  # read after listing: every listed pid is at most the last one
            pids = created_since(since, pids, last_pid(), fork_count(), pid_max())
        found = [pid for pid in pids if pid != own and wanted <= _environ(pid)]
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


def _read_int(path: str) -> int | None:
    try:
        with open(path, "rb") as f:
            return int(f.read())
    except (OSError, ValueError):
        return None


def last_pid() -> int | None:
    """The pid this pid namespace handed out last, or None if unreadable."""
    return _read_int("/proc/sys/kernel/ns_last_pid")


def pid_max() -> int | None:
    return _read_int("/proc/sys/kernel/pid_max")


def fork_count() -> int | None:
    """Processes created since boot (/proc/stat `processes`), or None if unreadable."""
    try:
        with open("/proc/stat", "rb") as f:
            for line in f:
                if line.startswith(b"processes "):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def _environ(pid: int) -> set[bytes]:
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            return set(f.read().split(b"\0"))
    except OSError:
        return set()  # gone, a kernel thread, or not ours to read
