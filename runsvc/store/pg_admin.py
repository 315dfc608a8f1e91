"""What the command line asks of a PostgreSQL database outside a store: its name without the password,
and whether runsvc's schema is there (`runsvc db` and `runsvc user` never create one where none is)."""

from __future__ import annotations

from psycopg.conninfo import conninfo_to_dict

from .postgres import check_url, connect


def display_url(url: str) -> str:
    """`postgresql://user@host:port/dbname` of `url`, without its password (safe to print and log)."""
    check_url(url)
    parts = conninfo_to_dict(url)
    user = f"{parts['user']}@" if parts.get("user") else ""
    host = parts.get("host") or "localhost"
    port = f":{parts['port']}" if parts.get("port") else ""
    return f"postgresql://{user}{host}{port}/{parts.get('dbname') or ''}"


def has_schema(url: str) -> bool:
    """Does the database at `url` hold runsvc's schema? DatabaseSettingError or DatabaseUnreachable when
    it cannot be used (postgres.connect)."""
    with connect(url) as raw:
        row = raw.execute("SELECT to_regclass('schema_version')").fetchone()
        return row is not None and row[0] is not None
