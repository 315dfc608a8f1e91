"""Fixtures shared by every test: a real store in tmp_path, a real in-process server on port 0; the
database backends (SQLite, and PostgreSQL when RUNSVC_TEST_DATABASE_URL names a test cluster); the test
tiers' markers."""

from __future__ import annotations

from collections.abc import Iterator
from functools import partial
from pathlib import Path

import httpx
import pytest
import trio

from runsvc.config import Settings
from runsvc.server import Server, serve
from runsvc.store import open_store
from scripts import pg_cluster
from tests import pg
from tests.helpers import FAST_HASHER

E2E_DIR = Path(__file__).parent / "e2e"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The e2e and browser tiers by where a test is and what it uses, so a new test joins its tier without a
    mark to forget (`slow` is marked on the test itself)."""
    for item in items:
        if item.path.is_relative_to(E2E_DIR):
            item.add_marker(pytest.mark.e2e)
        if "browser" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.browser)
        if _uses_postgresql(item):
            item.add_marker(pytest.mark.postgresql)


def pytest_sessionfinish() -> None:
    pg.close_admin_connection()


def _uses_postgresql(item: pytest.Item) -> bool:
    callspec = getattr(item, "callspec", None)
    if callspec is not None and callspec.params.get("backend") == "postgresql":
        return True
    return bool({"postgresql_url", "pg_cluster"} & set(getattr(item, "fixturenames", ())))


@pytest.fixture(name="postgresql_url")
def _postgresql_url() -> Iterator[str]:
    """The URL of a new empty PostgreSQL database on the test cluster, dropped after the test (its
    connections closed); the test is skipped when RUNSVC_TEST_DATABASE_URL is not set."""
    pg.require_cluster_url()
    with pg.fresh_database() as url:
        yield url


@pytest.fixture(name="backend", params=["sqlite", "postgresql"])
def _backend(request: pytest.FixtureRequest) -> str:
    """The `database_url` setting for each backend in turn: "" (SQLite in the data dir, the default) and
    the URL of a fresh PostgreSQL database (skipped without RUNSVC_TEST_DATABASE_URL). Tests that use
    `store`, `settings` or `server` run on both."""
    if request.param == "sqlite":
        return ""
    return request.getfixturevalue("postgresql_url")


@pytest.fixture(name="pg_cluster")
def _pg_cluster() -> Iterator[pg_cluster.Cluster]:
    """A private throwaway PostgreSQL cluster (scripts/pg_cluster.py) for a test that stops and starts
    PostgreSQL: `.url` (role runsvc, its database runsvc), `.stop()`, `.start()` (same port). Blocking calls:
    from a Trio test, through trio.to_thread.run_sync. Skipped when RUNSVC_TEST_DATABASE_URL is not set or
    there are no PostgreSQL binaries here (a remote test database)."""
    pg.require_cluster_url()
    if pg_cluster.newest_bindir() is None:
        pytest.skip("no PostgreSQL binaries under /usr/lib/postgresql to start a private cluster with")
    with pg_cluster.Cluster() as cluster:
        yield cluster


@pytest.fixture(name="store")
async def _store(tmp_path: Path, backend: str):
    async with open_store(tmp_path / "test.db", database_url=backend) as store:
        yield store


def make_settings(tmp_path: Path, **overrides) -> Settings:
    # Hypercorn keeps a closed WebSocket's connection task until its next ping; a short interval keeps
    # server shutdown in tests from waiting for that (up to the HTTP grace period).
    values = {"host": "127.0.0.1", "port": 0, "data_dir": tmp_path / "data", "work_dir": tmp_path / "work",
              "ws_ping_interval_s": 0.25,
              # Runs left running by a test are stopped at teardown without the 10 s drain.
              "drain_s": 0.5, "kill_grace_s": 1.0}
    values.update(overrides)
    (values["data_dir"]).mkdir(parents=True, exist_ok=True)
    return Settings(**values)


@pytest.fixture(name="settings")
def _settings(tmp_path: Path, backend: str) -> Settings:
    return make_settings(tmp_path, database_url=backend)


@pytest.fixture(name="server")
async def _server(settings: Settings):
    async with trio.open_nursery() as nursery:
        server: Server = await nursery.start(partial(serve, settings, password_hasher=FAST_HASHER))
        yield server
        server.request_shutdown()


@pytest.fixture(name="client")
async def _client(server: Server):
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
        yield client
