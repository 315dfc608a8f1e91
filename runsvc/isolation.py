"""What keeps the server's powers to itself (SPEC §14): one server per data dir, a process other
processes of its user cannot inspect, no admin password left in its environment, and the user runs run as.
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import pwd
from pathlib import Path

from .accounts.first_admin import ADMIN_PASSWORD_ENV, StartupError
from .config import Settings
from .executors import RunAs
from .log import get_logger

log = get_logger(__name__)

LOCK_FILE = "runsvc.lock"
PR_SET_DUMPABLE = 4


class DataDirLock:
    """An exclusive `flock` on `<data dir>/runsvc.lock`, held for the server's lifetime (the kernel
    drops it when the process dies, however it dies). The file is opened close-on-exec, so runs do not
    inherit it."""

    def __init__(self, data_dir: Path):
        self.path = data_dir / LOCK_FILE
        self._fd: int | None = None

    def acquire(self) -> None:
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise StartupError(f"cannot open lock file {self.path}: {exc.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise StartupError(
                f"data dir {self.path.parent} is in use by another runsvc server (lock {self.path} is held)"
            ) from None
        except OSError as exc:
            os.close(fd)
            raise StartupError(f"cannot lock {self.path}: {exc.strerror}") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = None


def make_non_dumpable() -> bool:
    """prctl(PR_SET_DUMPABLE, 0): /proc/<pid>/environ, mem and friends of the server become root's, so a
    run of the same user cannot read the server's environment or memory. Linux only; False elsewhere.
    Children get the flag reset by execve, so runs stay ordinary processes."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def take_admin_password() -> str | None:
    """$RUNSVC_ADMIN_PASSWORD, removed from the environment so nothing started later inherits it."""
    return os.environ.pop(ADMIN_PASSWORD_ENV, None) or None


def resolve_run_as(settings: Settings) -> RunAs | None:
    """The user of `run_as_user`, or None. Raises StartupError when it cannot be honoured."""
    return resolve_user(settings.run_as_user, setting="run_as_user", process="the server")


def resolve_user(name: str, *, setting: str, process: str) -> RunAs | None:
    """The user named `name` (from `setting`) that runs run as, or None for ""; `process` (the server,
    the agent) must run as root to switch to it. Raises StartupError when it cannot be honoured."""
    if not name:
        return None
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        raise StartupError(f"{setting}: no user named {name!r}") from None
    if os.geteuid() != 0:
        raise StartupError(f"{setting} needs {process} to run as root (it switches user for each run)")
    groups = tuple(sorted(set(os.getgrouplist(name, entry.pw_gid))))  # what initgroups() would set
    return RunAs(name=name, uid=entry.pw_uid, gid=entry.pw_gid, groups=groups, home=entry.pw_dir)


def warn_if_runs_are_root(run_as: RunAs | None, *, setting: str = "run_as_user", process: str = "server") -> None:
    """Logged once the server (or agent) has started (so a startup failure stays one line)."""
    if (run_as.uid if run_as is not None else os.geteuid()) == 0:
        log.warning(f"runs run as root: they can do anything the {process} can; set {setting} to an "
                    "unprivileged user")
