"""Throwaway PostgreSQL databases for the tests, on the cluster at $RUNSVC_TEST_DATABASE_URL: each test that
runs on PostgreSQL gets an empty database of its own, dropped afterwards.

`scripts/test` starts a throwaway cluster (scripts/pg-cluster) and sets RUNSVC_TEST_DATABASE_URL to the URL
of its database `runsvc` as the role `runsvc` (CREATEDB, not a superuser). Without that variable the
PostgreSQL tests are skipped, so a bare `pytest` still runs everything else. The fixtures built on this
module are in tests/conftest.py (`backend`, `postgresql_url`, `pg_cluster`).

A database is created from template0 with STRATEGY FILE_COPY (PostgreSQL 15 and later) by one connection
kept per test process, and dropped WITH (FORCE) afterwards, so a server a test left connected cannot keep
it. On the throwaway cluster (in memory, fsync off) that costs 15-25 ms per database (the README's "Running
the tests" has the measurements).
"""

from __future__ import annotations

import itertools
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
from psycopg import sql

URL_VARIABLE = "RUNSVC_TEST_DATABASE_URL"
# The URL of a database on the test cluster (the one every new database is created from), or "" when the
# PostgreSQL tests are not to run.
ADMIN_URL = os.environ.get(URL_VARIABLE, "")
SKIP_REASON = (f"no PostgreSQL: {URL_VARIABLE} is not set (scripts/test starts a throwaway cluster and sets "
               "it; or: scripts/pg-cluster run .venv/bin/python -m pytest ...)")
# Databases made here are named with this prefix, the test process's id, a counter and a random part:
# unique across pytest-xdist's workers and across test runs sharing one cluster.
NAME_PREFIX = "runsvc_test"

_names = itertools.count()
_admin: psycopg.Connection | None = None


def require_cluster_url() -> str:
    """ADMIN_URL; skips the calling test (saying how to run it) when there is none."""
    if not ADMIN_URL:
        pytest.skip(SKIP_REASON)
    return ADMIN_URL


def database_url(name: str) -> str:
    """ADMIN_URL (role, password, host, port, parameters) naming database `name` instead."""
    parts = urlsplit(ADMIN_URL)
    return urlunsplit(parts._replace(path="/" + name))


def _admin_connection() -> psycopg.Connection:
    """This process's connection to the cluster: connecting costs as much as creating a database
    (scram-sha-256), so it is made once, and again only when it broke."""
    global _admin
    if _admin is None or _admin.closed or _admin.broken:
        _admin = psycopg.connect(require_cluster_url(), autocommit=True)
    return _admin


def close_admin_connection() -> None:
    """Close this process's connection to the cluster, if it made one (at the end of the session)."""
    global _admin
    if _admin is not None:
        _admin.close()
        _admin = None


def create_database() -> str:
    """A new empty database on the test cluster; its URL."""
    name = f"{NAME_PREFIX}_{os.getpid()}_{next(_names)}_{secrets.token_hex(2)}"
    admin = _admin_connection()
    statement = sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(sql.Identifier(name))
    # FILE_COPY copies template0's few files and checkpoints; PostgreSQL 15's default WAL_LOG writes every
    # page through the WAL, which measured a little slower here (README). Before 15 FILE_COPY was the only way.
    if admin.info.server_version >= 150000:
        statement += sql.SQL(" STRATEGY FILE_COPY")
    admin.execute(statement)
    return database_url(name)


def drop_database(url: str) -> None:
    """Drop the database of `url` (made by create_database), closing whatever connections are still in it."""
    name = urlsplit(url).path.lstrip("/")
    _admin_connection().execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@contextmanager
def fresh_database() -> Iterator[str]:
    """The URL of a new empty database on the test cluster, dropped when the block ends."""
    url = create_database()
    try:
        yield url
    finally:
        drop_database(url)
