"""Processes a crashed server left behind: found by their working directory under the data dir."""

from __future__ import annotations

import os
import signal
from pathlib import Path


def kill_orphans(workdir_root: Path) -> list[int]:
    """SIGKILL the process group of every process whose cwd is inside `workdir_root`.

    A run's process starts in `<data-dir>/work/<run id>`, in its own process group; after a `kill -9`
    of the server nothing else remembers it. Linux only (reads /proc). Returns the groups killed.
    """
    root = os.path.realpath(workdir_root)
    prefix = root + os.sep
    own_group = os.getpgrp()
    groups: set[int] = set()
    try:
        entries = os.listdir("/proc")
    except OSError:
        return []
    for name in entries:
        if not name.isdigit():
            continue
        pid = int(name)
        try:
            cwd = os.readlink(f"/proc/{pid}/cwd")
            if cwd == root or cwd.startswith(prefix):
                groups.add(os.getpgid(pid))
        except OSError:
            continue  # gone meanwhile, or not ours to look at
    groups.discard(own_group)
    killed = []
    for group in sorted(groups):
        try:
            os.killpg(group, signal.SIGKILL)
            killed.append(group)
        except OSError:
            pass
    return killed
