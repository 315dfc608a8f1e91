"""Fixtures shared by every test: a real store in tmp_path, a real in-process server on port 0; the test
tiers' markers."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import httpx
import pytest
import trio

from runsvc.config import Settings
from runsvc.server import Server, serve
from runsvc.store import open_store
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


@pytest.fixture(name="backend", params=["sqlite", "postgresql"])
def _backend(request: pytest.FixtureRequest):
    """The database a test runs on, as the setting `database_url`: "" (SQLite in the data dir) or a fresh
    PostgreSQL database of its own. Tests that use `store`, `settings` or `server` run on both."""
    if request.param == "sqlite":
        yield ""
        return
    if not pg.ADMIN_URL:
        pytest.skip(pg.SKIP_REASON)
    url = pg.create_database()
    yield url
    pg.drop_database(url)


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
