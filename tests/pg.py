"""Throwaway PostgreSQL databases for the tests, on the cluster at $RUNSVC_TEST_DATABASE_URL (scripts/test
starts one). Each test that runs on PostgreSQL gets a database of its own, dropped afterwards."""

from __future__ import annotations

import os
import uuid
from urllib.parse import urlsplit, urlunsplit

ADMIN_URL = os.environ.get("RUNSVC_TEST_DATABASE_URL", "")
SKIP_REASON = "no PostgreSQL: RUNSVC_TEST_DATABASE_URL is not set (scripts/test sets it)"


def database_url(name: str) -> str:
    """The admin URL with its database replaced by `name`."""
    parts = urlsplit(ADMIN_URL)
    return urlunsplit(parts._replace(path=f"/{name}"))


def create_database() -> str:
    """A new empty database; its URL."""
    import psycopg

    name = f"runsvc_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return database_url(name)


def drop_database(url: str) -> None:
    import psycopg

    name = urlsplit(url).path.lstrip("/")
    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
