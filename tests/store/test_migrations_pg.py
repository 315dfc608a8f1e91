"""PostgreSQL's schema: created whole in one transaction, recorded in schema_version, refused when newer
than this runsvc or when the database holds someone else's tables; several servers starting at once
create it exactly once."""

from __future__ import annotations

import threading

import pytest
import trio

from runsvc.store import SCHEMA_VERSION, DatabaseInUse, SchemaError, open_store, postgres
from runsvc.store.migrations_pg import migrate
from tests import pg

pytestmark = pytest.mark.skipif(not pg.ADMIN_URL, reason=pg.SKIP_REASON)


@pytest.fixture(name="url")
def _url():
    url = pg.create_database()
    yield url
    pg.drop_database(url)


def test_a_new_database_gets_the_whole_schema_at_the_current_version(url):
    """The first open creates every table and records SCHEMA_VERSION; opening again changes nothing."""
    with postgres.connect(url) as raw:
        assert migrate(raw) == 0
        assert migrate(raw) == SCHEMA_VERSION
        assert raw.execute("SELECT version FROM schema_version").fetchall() == [(SCHEMA_VERSION,)]
        tables = {row[0] for row in raw.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()")}
    assert {"users", "runs", "run_events", "jobs", "job_fires", "secrets", "webhook_deliveries"} <= tables


async def test_a_newer_schema_is_refused_untouched(url):
    """A database from a newer runsvc is refused with both versions named, and left as it is."""
    with postgres.connect(url) as raw:
        migrate(raw)
        raw.execute("UPDATE schema_version SET version = %s", (SCHEMA_VERSION + 1,))
    with trio.fail_after(20), pytest.raises(SchemaError, match=f"version {SCHEMA_VERSION + 1} is newer"):
        async with open_store(database_url=url):
            pass
    with postgres.connect(url) as raw:
        assert raw.execute("SELECT version FROM schema_version").fetchall() == [(SCHEMA_VERSION + 1,)]


async def test_a_database_with_other_tables_is_not_taken_over(url):
    """Tables but no schema_version: not a runsvc database, refused without creating anything."""
    with postgres.connect(url) as raw:
        raw.execute("CREATE TABLE notes (x integer)")
    with trio.fail_after(20), pytest.raises(SchemaError, match="not a runsvc database"):
        async with open_store(database_url=url):
            pass
    with postgres.connect(url) as raw:
        assert raw.execute("SELECT to_regclass('runs')").fetchone() == (None,)


def test_servers_starting_at_once_create_the_schema_once(url):
    """Four connections migrating the same new database at once: one creates it, the others find it."""
    found: list[int] = []
    errors: list[BaseException] = []

    def start() -> None:
        try:
            with postgres.connect(url) as raw:
                found.append(migrate(raw))
        except BaseException as exc:  # reported below; a thread cannot fail the test itself
            errors.append(exc)

    threads = [threading.Thread(target=start) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    assert sorted(found) == [0, SCHEMA_VERSION, SCHEMA_VERSION, SCHEMA_VERSION]


async def test_a_second_server_on_one_database_is_refused(url):
    """While one server's store holds the database, a second server's is refused; tools (exclusive
    False: `runsvc users`, `db stats`) may still open it, and the lock goes with the first store."""
    with trio.fail_after(30):
        async with open_store(database_url=url, exclusive=True):
            with pytest.raises(DatabaseInUse, match="another runsvc server is using this database"):
                async with open_store(database_url=url, exclusive=True):
                    pass
            async with open_store(database_url=url) as tool:
                assert await tool.read(lambda conn: conn.execute("SELECT count(*) FROM runs").fetchone()[0]) == 0
        async with open_store(database_url=url, exclusive=True):
            pass
