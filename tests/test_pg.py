"""The PostgreSQL test infrastructure itself: scripts/pg-cluster's cluster, the fresh databases of
tests/pg.py and the `backend`, `postgresql_url` and `pg_cluster` fixtures of tests/conftest.py."""

from __future__ import annotations

import socket
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest

from scripts import pg_cluster
from tests import pg

CONNECT_TIMEOUT_S = 10


def connect(url: str) -> psycopg.Connection:
    return psycopg.connect(url, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S)


def user_tables(url: str) -> list[str]:
    with connect(url) as conn:
        rows = conn.execute("SELECT table_schema || '.' || table_name FROM information_schema.tables "
                            "WHERE table_schema NOT IN ('pg_catalog', 'information_schema')").fetchall()
    return [row[0] for row in rows]


def database_exists(name: str) -> bool:
    with connect(pg.ADMIN_URL) as conn:
        return conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone() is not None


def test_fresh_databases_are_empty_distinct_and_dropped(postgresql_url: str) -> None:
    """Each fresh database starts without a table, is not another test's, and is gone after its block."""
    assert user_tables(postgresql_url) == []
    with connect(postgresql_url) as conn:
        conn.execute("CREATE TABLE kept_apart (id integer)")
    with pg.fresh_database() as other_url:
        other = urlsplit(other_url).path.lstrip("/")
        assert other != urlsplit(postgresql_url).path.lstrip("/")
        assert user_tables(other_url) == []
        assert user_tables(postgresql_url) == ["public.kept_apart"]
        # A connection left open (as a server a test forgot would leave it) does not keep the database.
        leftover = connect(other_url)
    try:
        assert not database_exists(other)
    finally:
        leftover.close()


def test_url_carries_an_encoded_password_of_a_plain_role(postgresql_url: str) -> None:
    """The URL's password is percent-encoded and required; the role may create databases but is no
    superuser, like the role an operator makes for runsvc."""
    parts = urlsplit(postgresql_url)
    assert parts.scheme == "postgresql" and parts.hostname == "127.0.0.1"
    assert "%" in (parts.password or "")
    with connect(postgresql_url) as conn:
        user, database = conn.execute("SELECT current_user, current_database()").fetchone()
        superuser, createdb = conn.execute(
            "SELECT rolsuper, rolcreatedb FROM pg_roles WHERE rolname = current_user").fetchone()
    assert (user, database) == ("runsvc", parts.path.lstrip("/"))
    assert (superuser, createdb) == (False, True)
    wrong = urlunsplit(parts._replace(netloc=f"runsvc:wrong@127.0.0.1:{parts.port}"))
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        connect(wrong)


def test_cluster_listens_on_127_0_0_1_only(pg_cluster: pg_cluster.Cluster) -> None:
    """The cluster accepts connections on 127.0.0.1 and nowhere else (another loopback address is
    refused, so it is not bound to every address)."""
    with connect(pg_cluster.url) as conn:
        assert conn.execute("SHOW listen_addresses").fetchone() == ("127.0.0.1",)
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.2", pg_cluster.port), timeout=CONNECT_TIMEOUT_S).close()
    socket.create_connection(("127.0.0.1", pg_cluster.port), timeout=CONNECT_TIMEOUT_S).close()


def test_private_cluster_stops_and_starts_on_its_port(pg_cluster: pg_cluster.Cluster) -> None:
    """A stopped private cluster refuses connections; started again it serves the same URL and data."""
    with connect(pg_cluster.url) as conn:
        conn.execute("CREATE TABLE survives (id integer)")
    pg_cluster.stop()
    with pytest.raises(psycopg.OperationalError):
        connect(pg_cluster.url)
    pg_cluster.start()
    assert user_tables(pg_cluster.url) == ["public.survives"]


def test_backend_gives_each_backend_its_database_url(backend: str, request: pytest.FixtureRequest) -> None:
    """`backend` is "" for SQLite and a fresh PostgreSQL database's URL, marked `postgresql`, for PostgreSQL."""
    marked = request.node.get_closest_marker("postgresql") is not None
    if request.node.callspec.params["backend"] == "sqlite":
        assert backend == "" and not marked
    else:
        assert marked
        assert user_tables(backend) == []


def test_postgresql_tests_are_skipped_without_a_cluster_url(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without RUNSVC_TEST_DATABASE_URL a PostgreSQL test is skipped with a reason that says how to run it."""
    monkeypatch.setattr(pg, "ADMIN_URL", "")
    with pytest.raises(pytest.skip.Exception, match="scripts/test starts a throwaway cluster"):
        pg.require_cluster_url()
