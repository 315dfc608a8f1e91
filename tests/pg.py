"""PostgreSQL for the tests: a fresh, empty database per test on the cluster at RUNSVC_TEST_DATABASE_URL.

`scripts/test` starts a throwaway cluster (scripts/pg-cluster) and sets RUNSVC_TEST_DATABASE_URL to the URL
of its database `runsvc` as the role `runsvc` (CREATEDB, not a superuser). Without that variable the
PostgreSQL tests are skipped, so a bare `pytest` still runs everything else. The fixtures built on this
module are in tests/conftest.py (`backend`, `postgresql_url`, `pg_cluster`).

A database is created from template0 with STRATEGY FILE_COPY (PostgreSQL 15 and later) by one connection
kept per test process, and dropped WITH (FORCE) afterwards, so a server a test left connected cannot keep
it. On the throwaway cluster (in memory, fsync off) that costs 10-25 ms per database (measured; the README's
"Running the tests" has the numbers).
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
SKIP_REASON = (f"{URL_VARIABLE} is not set: scripts/test starts a throwaway PostgreSQL cluster and sets it "
               "(or: scripts/pg-cluster run .venv/bin/python -m pytest ...)")
# Databases made here are named with this prefix, the test process's id and a counter: unique across
# pytest-xdist's workers and across test runs sharing one cluster.
NAME_PREFIX = "runsvc_test"

_names = itertools.count()
_admin: psycopg.Connection | None = None


def cluster_url() -> str:
    """The URL of a database on the test cluster, or "" when PostgreSQL tests are not to run."""
    return os.environ.get(URL_VARIABLE, "")


def require_cluster_url() -> str:
    """The test cluster's URL; skips the calling test (saying how to run it) when there is none."""
    url = cluster_url()
    if not url:
        pytest.skip(SKIP_REASON)
    return url


def with_database(url: str, name: str) -> str:
    """The same URL (role, password, host, port, parameters) naming database `name` instead."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + name))


def _admin_connection(url: str) -> psycopg.Connection:
    """This process's connection to the cluster (its URL's database): connecting costs as much as creating a
    database (scram-sha-256), so it is made once and made again only when it broke (a test that
    restarts a cluster does so on its own cluster, not this one)."""
    global _admin
    if _admin is None or _admin.closed or _admin.broken:
        _admin = psycopg.connect(url, autocommit=True)
    return _admin


def close_admin_connection() -> None:
    """Close this process's connection to the cluster, if it made one (at the end of the session)."""
    global _admin
    if _admin is not None:
        _admin.close()
        _admin = None


def create_database(url: str) -> str:
    """A new empty database on the cluster of `url`; returns its name."""
    name = f"{NAME_PREFIX}_{os.getpid()}_{next(_names)}_{secrets.token_hex(2)}"
    admin = _admin_connection(url)
    statement = sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(sql.Identifier(name))
    # FILE_COPY copies template0's few files and checkpoints; PostgreSQL 15's default WAL_LOG writes every
    # page through the WAL, which measured a little slower here (README). Before 15 FILE_COPY was the only way.
    if admin.info.server_version >= 150000:
        statement += sql.SQL(" STRATEGY FILE_COPY")
    admin.execute(statement)
    return name


def drop_database(url: str, name: str) -> None:
    """Drop database `name`, closing whatever connections are still in it."""
    admin = _admin_connection(url)
    admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@contextmanager
def fresh_database(url: str) -> Iterator[str]:
    """The URL of a new empty database on the cluster of `url`, dropped when the block ends."""
    name = create_database(url)
    try:
        yield with_database(url, name)
    finally:
        drop_database(url, name)
