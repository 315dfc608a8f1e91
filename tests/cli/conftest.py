"""Fixtures of the command-line tests."""

from __future__ import annotations

import pytest

from tests import pg


@pytest.fixture(name="pg_url")
def _pg_url():
    """A fresh, empty PostgreSQL database of its own (skipped without RUNSVC_TEST_DATABASE_URL): for the
    tests that are about PostgreSQL only, like `db copy-to`."""
    if not pg.ADMIN_URL:
        pytest.skip(pg.SKIP_REASON)
    url = pg.create_database()
    yield url
    pg.drop_database(url)
