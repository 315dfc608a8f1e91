"""A PostgreSQL cluster of a test's own, which the test may stop, kill and start again (the fault tests).

The shared test cluster ($RUNSVC_TEST_DATABASE_URL) is other tests' too, so it is never stopped; a test
that needs PostgreSQL to go away makes one of these: Debian's binaries (the newest of
/usr/lib/postgresql/*/bin, or $PG_BINDIR), `initdb` into a temporary directory (as the `postgres` user when
running as root: PostgreSQL refuses to run as root), a free port of 127.0.0.1, no durability (fsync off),
driven by `pg_ctl`. Over TCP every role needs its password (scram-sha-256), as on a real server; the
superuser `postgres` reaches it through the Unix socket in the cluster's private directory. Skipped (not
failed) where PostgreSQL is not installed.
"""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path
from urllib.parse import quote

import pytest
import trio

ROLE = "runsvc"
# A password with characters a URL must percent-encode, so the code under test meets an encoded one.
PASSWORD = "pw@/:%#? " + secrets.token_hex(4)
PG_CTL_TIMEOUT_S = 60


def bindir() -> Path | None:
    if os.environ.get("PG_BINDIR"):
        return Path(os.environ["PG_BINDIR"])
    found = [p for p in Path("/usr/lib/postgresql").glob("*/bin") if (p / "initdb").exists()]
    found.sort(key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else -1)
    return found[-1] if found else None


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class PrivateCluster:
    """create() (initdb and start), stop(mode), start(), restart(mode), remove(); `url(database)`."""

    def __init__(self, binaries: Path):
        self.bin = binaries
        self.port = free_port()
        self.directory = Path(tempfile.mkdtemp(prefix="runsvc-private-pg-"))
        self._user = "postgres" if os.geteuid() == 0 else None
        if self._user:
            entry = pwd.getpwnam(self._user)
            os.chown(self.directory, entry.pw_uid, entry.pw_gid)

    @property
    def data(self) -> Path:
        return self.directory / "data"

    def _run(self, *args: str, input: str | None = None) -> str:
        """A PostgreSQL program as the cluster's owner; its stdout. Fails the test with its stderr."""
        command = [str(self.bin / args[0]), *args[1:]]
        if self._user:
            command = ["runuser", "-u", self._user, "--", *command]
        done = subprocess.run(command, input=input, capture_output=True, text=True, cwd=self.directory,
                              timeout=PG_CTL_TIMEOUT_S + 10, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"{args[0]} failed: {done.stderr.strip()}")
        return done.stdout

    def create(self) -> None:
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "-E", "UTF8", "--locale", "C",
                  "--auth-local", "trust", "--auth-host", "scram-sha-256", "--no-sync")
        with open(self.data / "postgresql.conf", "a") as conf:
            conf.write(f"listen_addresses = '127.0.0.1'\nport = {self.port}\n"
                       f"unix_socket_directories = '{self.directory}'\n"
                       "fsync = off\nfull_page_writes = off\nlog_min_messages = warning\n")
        self.start()
        self.psql(f"CREATE ROLE {ROLE} LOGIN CREATEDB PASSWORD '{PASSWORD}'")

    def start(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.directory / "log"), "-w",
                  "-t", str(PG_CTL_TIMEOUT_S), "start")

    def ensure_running(self) -> None:
        """Started again if a test that stopped it failed before it could start it."""
        try:
            self._run("pg_ctl", "-D", str(self.data), "status")
        except RuntimeError:
            self.start()

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", str(PG_CTL_TIMEOUT_S), "stop")

    def restart(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.directory / "log"), "-m", mode, "-w",
                  "-t", str(PG_CTL_TIMEOUT_S), "restart")

    def psql(self, sql: str) -> str:
        """`sql` as the superuser over the Unix socket; psql's unaligned output."""
        return self._run("psql", "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h", str(self.directory),
                         "-p", str(self.port), "-U", "postgres", "-d", "postgres", "-c", sql)

    def create_database(self) -> str:
        """A new database owned by the runsvc role; its URL."""
        name = f"runsvc_{secrets.token_hex(6)}"
        self.psql(f"CREATE DATABASE {name} OWNER {ROLE}")
        return self.url(name)

    def url(self, database: str, *, password: str = PASSWORD, user: str = ROLE) -> str:
        return f"postgresql://{user}:{quote(password, safe='')}@127.0.0.1:{self.port}/{database}"

    def remove(self) -> None:
        try:
            self.stop("immediate")
        except RuntimeError:
            pass  # not running
        shutil.rmtree(self.directory, ignore_errors=True)


def private_cluster():
    """Generator for a module-scoped fixture: a started PrivateCluster, removed afterwards."""
    binaries = bindir()
    if binaries is None:
        pytest.skip("PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/initdb)")
    cluster = PrivateCluster(binaries)
    try:
        cluster.create()
        yield cluster
    finally:
        cluster.remove()


# Shared by the modules whose tests stop and start PostgreSQL (import them into the module).
@pytest.fixture(name="cluster", scope="module")
def cluster_fixture():
    yield from private_cluster()


@pytest.fixture(name="url")
def url_fixture(cluster: PrivateCluster) -> str:
    """A new database on the module's private cluster, which is started first if a test left it stopped."""
    cluster.ensure_running()
    return cluster.create_database()


async def in_thread(fn, *args) -> None:
    """A blocking cluster operation (pg_ctl), off the Trio thread; finished even if the test is failing."""
    with trio.CancelScope(shield=True):
        await trio.to_thread.run_sync(fn, *args)
