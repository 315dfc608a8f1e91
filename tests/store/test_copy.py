"""store/copy.py's list of tables against the schema: a table it did not know would be lost by `db copy-to`."""

from __future__ import annotations

import re
import sqlite3
from importlib import resources

from runsvc.store.copy import IDENTITY_TABLES, TABLES
from runsvc.store.migrations import schema_sql


def test_tables_are_every_table_of_the_schema_parents_first():
    """TABLES names every table of schema.sql once, each after the tables its foreign keys point to."""
    conn = sqlite3.connect(":memory:")
    conn.executescript(schema_sql())
    tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_schema WHERE type = 'table' "
                                             "AND name NOT LIKE 'sqlite_%'")}
    assert sorted(TABLES) == sorted(tables)
    for position, table in enumerate(TABLES):
        parents = {row[2] for row in conn.execute(f"PRAGMA foreign_key_list({table})")}
        assert parents <= set(TABLES[:position]), (table, parents)


def test_identity_tables_are_those_with_an_identity_on_postgresql():
    """IDENTITY_TABLES are exactly the tables whose id is an identity in schema_pg.sql (their sequences
    are set after the copy)."""
    text = resources.files("runsvc.store").joinpath("schema_pg.sql").read_text(encoding="utf-8")
    blocks = re.findall(r"CREATE TABLE (\w+) \((.*?)\n\);", text, flags=re.S)
    assert sorted(IDENTITY_TABLES) == sorted(name for name, body in blocks if "AS IDENTITY" in body)
