#!/usr/bin/env python3
"""A throwaway PostgreSQL cluster for the test suite: Debian's binaries, a temporary directory, 127.0.0.1.

    scripts/pg-cluster run COMMAND [ARG...]   start a cluster, run COMMAND with RUNSVC_TEST_DATABASE_URL
                                              set to it, then stop and delete the cluster (exit: COMMAND's)
    scripts/pg-cluster                        start a cluster, print its URL, keep it until Ctrl-C

The cluster is `initdb`'d into a fresh temporary directory (in memory where it can: cluster_parent()) as
the `postgres` user when run as root (PostgreSQL refuses to run as root), listens on a free port of
127.0.0.1 only (its Unix socket is in that directory, not in /run/postgresql), and is tuned for tests, not
for keeping data: fsync, synchronous_commit and full_page_writes off. Over TCP every role needs its
password (scram-sha-256); the URL names the role `runsvc` (LOGIN CREATEDB, not a superuser, like the role
an operator creates) and its database `runsvc`; the password holds characters that must be
percent-encoded in a URL, so the code under test handles such URLs. The Unix socket trusts everyone (only
root and `postgres` can reach the directory).

PostgreSQL's binaries are the newest of /usr/lib/postgresql/*/bin (or $PG_BINDIR). Missing, and running as
root on Debian, they are installed with apt-get, without Debian's own `main` cluster: nothing of this
script's keeps running or stays on disk once it returns, including when it is interrupted (Ctrl-C, SIGTERM),
and the postmaster is told to stop if this script is killed outright.

Standard library only, run by the system python3: it works before and without the project's venv. Tests
import it (tests/pg.py) to start a private cluster they may stop and start.
"""

from __future__ import annotations

import ctypes
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import quote

ROLE = "runsvc"
# The URL's database, owned by the role (since PostgreSQL 15 only a database's owner may create tables in
# its `public` schema), so the URL works as a `database_url` as it is; tests make their own (tests/pg.py).
DATABASE = "runsvc"
# Characters a URL must percent-encode in its password (`@`, `/`, `:`, `%`, `#`, `?`, a space): the role's
# password contains them so that every test handles a URL whose password is encoded.
PASSWORD_PUNCTUATION = "@/:%#? "
# Each test may start several servers, each with a writer, a reader pool and a listener, and two test
# processes run at once (pytest-xdist); the rest is headroom for connections a test's teardown is closing.
MAX_CONNECTIONS = 300
SETTINGS = {
    "listen_addresses": "'127.0.0.1'",
    "max_connections": str(MAX_CONNECTIONS),
    "shared_buffers": "'128MB'",
    # A test cluster is deleted at exit: durability buys nothing and costs every commit a flush.
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    # Fewer checkpoints while tests create and drop databases by the thousand (the WAL is in memory).
    "max_wal_size": "'512MB'",
    "checkpoint_timeout": "'30min'",
    "logging_collector": "off",
    "log_min_messages": "warning",
    "timezone": "'UTC'",
}
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 30.0
PORT_ATTEMPTS = 5
PR_SET_PDEATHSIG = 1


class ClusterError(Exception):
    """The cluster could not be made or started; the message says why in one line (and the log, if any)."""


def newest_bindir() -> Path | None:
    """$PG_BINDIR, else the bin directory of the newest PostgreSQL under /usr/lib/postgresql, else None."""
    if os.environ.get("PG_BINDIR"):
        return Path(os.environ["PG_BINDIR"])
    found = [p for p in Path("/usr/lib/postgresql").glob("*/bin") if (p / "initdb").exists()]
    found.sort(key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else -1)
    return found[-1] if found else None


def install_postgresql() -> None:
    """Debian's `postgresql` package, without the `main` cluster Debian would create (and start) with it.

    Debian creates that cluster in the postinst of postgresql-NN unless /etc/postgresql-common/
    createcluster.conf says `create_main_cluster = false` (postgresql-common's documented switch); that
    file comes with postgresql-common. So: postgresql-common first, the switch set, postgresql, then the
    switch restored to what it was, so the machine's configuration is as Debian left it.
    """
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise ClusterError("PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/initdb) and this is not "
                           "root on Debian: install it (apt-get install postgresql) or set "
                           "RUNSVC_TEST_DATABASE_URL to a database you have")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    apt = ["apt-get", "install", "-y", "-qq", "--no-install-recommends"]
    print("pg-cluster: installing PostgreSQL with apt-get", file=sys.stderr)
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run([*apt, "postgresql-common"], check=True, env=env, stdout=subprocess.DEVNULL)
    conf = Path("/etc/postgresql-common/createcluster.conf")
    # Byte for byte, so that Debian's configuration tracking (ucf) sees the file unchanged.
    original = conf.read_bytes()
    subprocess.run(["pg_conftool", str(conf), "set", "create_main_cluster", "false"], check=True)
    try:
        subprocess.run([*apt, "postgresql"], check=True, env=env, stdout=subprocess.DEVNULL)
    finally:
        conf.write_bytes(original)


def cluster_parent() -> str | None:
    """Where the cluster's directory goes: /dev/shm (memory) where it is writable with room, else the temp
    dir.

    On a disk, every CREATE and DROP DATABASE creates and deletes a database's files, which on this
    project's ext4 (mounted with `discard`) takes 100-300 ms each; in memory, 10-20 ms. A test cluster's
    data is small (every test database is dropped again) and is deleted at exit.
    """
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK) and os.statvfs(shm).f_bavail * os.statvfs(shm).f_frsize > 2**30:
        return str(shm)
    return None


def free_port() -> int:
    """A port of 127.0.0.1 that nothing listens on now (the postmaster binds it a moment later; a port
    taken in between makes it exit at start, and start() tries another)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _die_with_parent() -> None:
    """In the postmaster's child process before exec: a fast shutdown (SIGINT) when this script dies,
    even by SIGKILL, so no cluster outlives its owner."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGINT, 0, 0, 0)


class Cluster:
    """One throwaway cluster: create() (initdb), start(), stop() (and start() again), remove().

    Use it as a context manager: `with Cluster() as cluster: cluster.url` — created, started, and on exit
    stopped and deleted whatever happened inside.
    """

    def __init__(self) -> None:
        bindir = newest_bindir()
        if bindir is None:
            install_postgresql()
            bindir = newest_bindir()
            if bindir is None:
                raise ClusterError("apt-get installed postgresql but no /usr/lib/postgresql/*/bin/initdb exists")
        self.bindir = bindir
        self.version = bindir.parent.name
        self.password = secrets.token_urlsafe(12) + PASSWORD_PUNCTUATION
        self.port = 0
        self.directory: Path | None = None
        self.process: subprocess.Popen[bytes] | None = None
        # PostgreSQL refuses to run as root: then its processes run as Debian's `postgres` user.
        self._user = "postgres" if os.geteuid() == 0 else None

    @property
    def data_dir(self) -> Path:
        assert self.directory is not None
        return self.directory / "data"

    @property
    def socket_dir(self) -> Path:
        assert self.directory is not None
        return self.directory

    @property
    def log_path(self) -> Path:
        assert self.directory is not None
        return self.directory / "postgres.log"

    @property
    def url(self) -> str:
        """The `runsvc` role's URL of its database, the password percent-encoded."""
        return f"postgresql://{ROLE}:{quote(self.password, safe='')}@127.0.0.1:{self.port}/{DATABASE}"

    def __enter__(self) -> Cluster:
        try:
            self.create()
            self.start()
            self.create_role()
        except BaseException:
            self.remove()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.remove()

    def _run_as_owner(self, args: list[str], **kwargs) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(args, user=self._user, group=self._user, extra_groups=[] if self._user else None,
                              cwd=self.directory, **kwargs)

    def create(self) -> None:
        """initdb into a new temporary directory, with the test settings and client authentication."""
        self.directory = Path(tempfile.mkdtemp(prefix="runsvc-pg-", dir=cluster_parent()))
        if self._user:
            try:
                entry = pwd.getpwnam(self._user)
            except KeyError:
                raise ClusterError("running as root needs the user 'postgres' to run PostgreSQL as (Debian's "
                                   "postgresql-common creates it)") from None
            os.chown(self.directory, entry.pw_uid, entry.pw_gid)
        done = self._run_as_owner(
            [str(self.bindir / "initdb"), "--pgdata", str(self.data_dir), "--username", "postgres",
             "--encoding", "UTF8", "--locale", "C", "--auth-local", "trust", "--auth-host", "scram-sha-256",
             "--no-sync"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        if done.returncode != 0:
            raise ClusterError(f"initdb failed: {done.stderr.decode(errors='replace').strip()}")
        with open(self.data_dir / "postgresql.conf", "a") as conf:
            conf.write("\n# scripts/pg-cluster: a throwaway test cluster\n")
            conf.write(f"unix_socket_directories = '{self.socket_dir}'\n")
            for name, value in SETTINGS.items():
                conf.write(f"{name} = {value}\n")
        # Only these two ways in: the Unix socket in the private directory, and passwords over 127.0.0.1.
        (self.data_dir / "pg_hba.conf").write_text(
            "local all all trust\nhost all all 127.0.0.1/32 scram-sha-256\n")

    def start(self) -> None:
        """Start the postmaster on a free port (the same port again after a stop) and wait until it
        accepts connections."""
        assert self.directory is not None and self.process is None
        attempts = 1 if self.port else PORT_ATTEMPTS
        for attempt in range(attempts):
            if not self.port or attempt:
                self.port = free_port()
            with open(self.log_path, "ab") as log:
                self.process = subprocess.Popen(
                    [str(self.bindir / "postgres"), "-D", str(self.data_dir), "-p", str(self.port)],
                    user=self._user, group=self._user, extra_groups=[] if self._user else None,
                    cwd=self.directory, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                    # Its own session: a Ctrl-C at the terminal reaches the tests, which still need the
                    # database while they tear down; this script stops the cluster after them.
                    start_new_session=True, preexec_fn=_die_with_parent)
            if self._wait_ready():
                return
            self.process = None
        raise ClusterError(f"PostgreSQL did not start; its log {self.log_path}:\n{self.log_tail()}")

    def _wait_ready(self) -> bool:
        assert self.process is not None
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                return False
            ready = subprocess.run([str(self.bindir / "pg_isready"), "-q", "-h", str(self.socket_dir),
                                    "-p", str(self.port), "-U", "postgres"])
            if ready.returncode == 0:
                return True
            time.sleep(0.05)
        self.stop()
        return False

    def log_tail(self) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-20:])
        except OSError:
            return "(no log)"

    def create_role(self) -> None:
        """The `runsvc` role, with its password, and its database, over the Unix socket as the superuser."""
        sql = (f"CREATE ROLE {ROLE} LOGIN CREATEDB PASSWORD :'password';\n"
               f"CREATE DATABASE {DATABASE} OWNER {ROLE};\n")
        done = self._run_as_owner(
            [str(self.bindir / "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-v", f"password={self.password}",
             "-h", str(self.socket_dir), "-p", str(self.port), "-U", "postgres", "-d", "postgres", "-f", "-"],
            input=sql.encode(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        if done.returncode != 0:
            raise ClusterError(f"creating role {ROLE} failed: {done.stderr.decode(errors='replace').strip()}")

    def stop(self) -> None:
        """Fast shutdown (connections are closed, nothing waits for clients); immediate if that hangs."""
        process, self.process = self.process, None
        if process is None:
            return
        for signum in (signal.SIGINT, signal.SIGQUIT, signal.SIGKILL):
            if process.poll() is not None:
                break
            process.send_signal(signum)
            try:
                process.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                continue

    def remove(self) -> None:
        """Stop the cluster and delete its directory."""
        self.stop()
        if self.directory is not None:
            shutil.rmtree(self.directory, ignore_errors=True)
            self.directory = None


def run(command: list[str]) -> int:
    """COMMAND with RUNSVC_TEST_DATABASE_URL set to a new cluster; the cluster is gone when this returns."""
    with Cluster() as cluster:
        print(f"pg-cluster: PostgreSQL {cluster.version} on 127.0.0.1:{cluster.port} in {cluster.directory}",
              file=sys.stderr)
        children: list[subprocess.Popen[bytes]] = []

        # A Ctrl-C at the terminal reaches the command itself (same process group), which stops as it
        # will; this script waits for it and then removes the cluster. A SIGTERM or SIGHUP sent to this
        # script alone is passed on to the command, with the same end. (Handlers, not SIG_IGN: an ignored
        # signal would stay ignored in the command.)
        def forward(signum: int, _frame: object) -> None:
            for child in children:
                child.send_signal(signum)

        signal.signal(signal.SIGTERM, forward)
        signal.signal(signal.SIGHUP, forward)
        signal.signal(signal.SIGINT, lambda _signum, _frame: None)
        children.append(subprocess.Popen(command, env={**os.environ, "RUNSVC_TEST_DATABASE_URL": cluster.url}))
        status = children[0].wait()
    return status if status >= 0 else 128 - status


def hold() -> int:
    """Start a cluster, print its URL, and keep it until Ctrl-C or SIGTERM."""
    stop = False

    def request_stop(_signum: int, _frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    with Cluster() as cluster:
        print(f"pg-cluster: PostgreSQL {cluster.version} on 127.0.0.1:{cluster.port} in {cluster.directory}; "
              "Ctrl-C stops and deletes it", file=sys.stderr)
        print(f"export RUNSVC_TEST_DATABASE_URL='{cluster.url}'", flush=True)
        while not stop and cluster.process is not None and cluster.process.poll() is None:
            time.sleep(0.2)
        if not stop:
            print(f"pg-cluster: PostgreSQL exited by itself; its log:\n{cluster.log_tail()}", file=sys.stderr)
            return 1
    return 0


def main(argv: list[str]) -> int:
    try:
        if not argv:
            return hold()
        if argv[0] == "run" and len(argv) > 1:
            return run(argv[1:])
        print(__doc__.split("\n\n")[1], file=sys.stderr)
        return 2
    except (ClusterError, subprocess.CalledProcessError) as error:
        print(f"pg-cluster: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
