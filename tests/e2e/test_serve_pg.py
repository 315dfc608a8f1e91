"""`python -m runsvc serve` on PostgreSQL as a subprocess: every way the database setting can fail at start
is one line and an exit status (2: fix the setting; 1: the server is not reachable now), and the URL's
password appears in no output and no log line, at start or while PostgreSQL goes away and comes back.
The cluster is this module's own (tests/private_cluster.py): its roles need passwords, and one test
stops it."""

from __future__ import annotations

import signal
import subprocess
import sys
from urllib.parse import quote

import httpx
import pytest
import trio

from tests.helpers import ADMIN_PASSWORD, child_env, start_server
from tests.private_cluster import PASSWORD, PrivateCluster, free_port, private_cluster

SECRET = "s3cret-Pa55word"  # in URLs that cannot work: it must not come out either


@pytest.fixture(name="cluster", scope="module")
def _cluster():
    yield from private_cluster()


def serve(tmp_path, database_url: str, *, prelude: str = "") -> subprocess.CompletedProcess:
    """`serve` with RUNSVC_DATABASE_URL; `prelude` is Python run in the process before runsvc's main."""
    code = f"import sys\n{prelude}\nfrom runsvc.cli import main\nsys.exit(main(sys.argv[1:]))\n"
    return subprocess.run(
        [sys.executable, "-c", code, "serve", "--port", "0", "--data-dir", str(tmp_path / "data")],
        capture_output=True, text=True, timeout=60, env=child_env(RUNSVC_DATABASE_URL=database_url),
    )


def assert_one_line(result: subprocess.CompletedProcess, status: int, *parts: str) -> str:
    """Exit `status`, exactly one line on stderr naming `parts`, no traceback, no password. (A setting
    refused before anything starts is argparse's error, after its one-line usage reminder.)"""
    lines = [line for line in result.stderr.splitlines() if line.strip() and not line.startswith("usage: ")]
    assert result.returncode == status, result.stderr
    assert len(lines) == 1, result.stderr
    for part in parts:
        assert part in lines[0], lines[0]
    assert "Traceback" not in result.stderr
    assert_no_password(result.stdout + result.stderr)
    return lines[0]


def assert_no_password(text: str) -> None:
    for password in (PASSWORD, SECRET):
        for spelling in {password, quote(password, safe=""), quote(password)}:
            assert spelling not in text


def test_unreachable_server_exits_1(tmp_path) -> None:
    """Nothing listens on the URL's port: `cannot reach PostgreSQL`, status 1 (it may be there later)."""
    result = serve(tmp_path, f"postgresql://runsvc:{SECRET}@127.0.0.1:{free_port()}/runsvc")
    assert_one_line(result, 1, "cannot start: cannot reach PostgreSQL", "Connection refused")


@pytest.mark.parametrize(("url", "message"), [
    (f"postgresql://runsvc:{SECRET}@[127.0.0.1/runsvc", "database_url is malformed"),
    (f"postgresql://runsvc:{SECRET}@127.0.0.1:99999/runsvc", "database_url has an invalid port"),
    (f"postgresql://runsvc:{SECRET}@127.0.0.1/runsvc?no_such_option=1", "database_url is malformed"),
    (f"mysql://runsvc:{SECRET}@127.0.0.1/runsvc", "database_url must start with postgresql://"),
], ids=["bracket", "port", "option", "scheme"])
def test_malformed_url_exits_2(tmp_path, url: str, message: str) -> None:
    """A URL that cannot be a PostgreSQL URL: one line naming the problem, status 2, the URL not echoed
    (libpq quotes a whole URL, password and all, in some of its own messages)."""
    assert_one_line(serve(tmp_path, url), 2, message)


# (The log line is logfmt: the server's quotes come escaped.)
@pytest.mark.parametrize(("which", "message"), [
    ("password", r'password authentication failed for user \"runsvc\"'),
    ("database", r'database \"no_such_db\" does not exist'),
    ("role", r'password authentication failed for user \"no_such_role\"'),  # PostgreSQL does not say which
])
def test_refused_by_the_server_exits_2(tmp_path, cluster: PrivateCluster, which: str, message: str) -> None:
    """The server answers and refuses (wrong password, missing database, missing role): status 2."""
    url = {
        "password": cluster.url("postgres", password=SECRET),
        "database": cluster.url("no_such_db"),
        "role": cluster.url("postgres", user="no_such_role", password=SECRET),
    }[which]
    assert_one_line(serve(tmp_path, url), 2, "cannot start: cannot use database_url:", message)


def test_server_older_than_the_minimum_exits_2(tmp_path, cluster: PrivateCluster) -> None:
    """No PostgreSQL older than 13 can run here, so the seam is the minimum itself: raised in the serve
    process to one major version above the real server's, which the check must then refuse, status 2."""
    version = int(cluster.psql("SHOW server_version_num"))
    minimum = (version // 10000 + 1) * 10000
    prelude = f"from runsvc.store import postgres\npostgres.MIN_SERVER_VERSION = {minimum}\n"
    result = serve(tmp_path, cluster.create_database(), prelude=prelude)
    assert_one_line(result, 2, f"PostgreSQL {version // 10000} is too old; runsvc needs {minimum // 10000} or newer")


async def test_no_password_in_the_log_through_an_outage(tmp_path, cluster: PrivateCluster) -> None:
    """A server on PostgreSQL logs its start, the outage (degraded) and the recovery without ever writing
    the URL's password."""
    cluster.ensure_running()
    url = cluster.create_database()
    with trio.fail_after(90):
        async with trio.open_nursery() as nursery, httpx.AsyncClient(timeout=30) as client:
            server = await start_server(nursery, tmp_path / "data", "--database-url", url,
                                        env=child_env(RUNSVC_ADMIN_PASSWORD=ADMIN_PASSWORD))
            assert (await client.get(server.url + "/healthz")).json() == {"status": "ok"}
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(cluster.stop, "fast")
            try:
                # A login reads its user: it meets the outage, and so the idle server learns of it.
                answer = await client.post(server.url + "/api/v1/auth/login",
                                           json={"username": "admin", "password": ADMIN_PASSWORD})
                assert answer.status_code == 503, answer.text
                while (await client.get(server.url + "/healthz")).status_code != 503:
                    await trio.sleep(0.05)
            finally:
                with trio.CancelScope(shield=True):
                    await trio.to_thread.run_sync(cluster.start)
            while (await client.get(server.url + "/healthz")).status_code != 200:
                await trio.sleep(0.05)
            server.send_signal(signal.SIGTERM)
            assert await server.wait() == 0, server.log_text()
    log = server.log_text()
    assert "database writes failing" in log and "database writable again" in log, log
    assert_no_password(log)
