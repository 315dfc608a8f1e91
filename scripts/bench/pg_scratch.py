"""PostgreSQL for the benchmarks: a scratch database per measurement on the server a `--database-url` names.

The URL's role must be allowed to create databases (CREATEDB). Each measurement gets a database of its own
(`runsvc_bench_<random>`), created empty and dropped afterwards with whatever it holds, so a run starts
from the same state on PostgreSQL as on SQLite (a fresh file) and leaves nothing behind. The database the
URL names is only connected to, never changed.

The SPEC's PostgreSQL figures (§10) are for a durable server: `fsync` and `synchronous_commit` on.
`describe_server` prints both (and warns when either is off), so every printed figure says what it is.
A durable cluster of one's own, as used for BENCHMARKS.md (as root: PostgreSQL refuses to run as root):

    D=/tmp/pgbench-cluster; mkdir -p $D && chown postgres $D
    su postgres -c "/usr/lib/postgresql/15/bin/initdb -D $D/data -U postgres -A trust"
    printf "listen_addresses = '127.0.0.1'\\nport = 55499\\nunix_socket_directories = '$D'\\n" \\
        >> $D/data/postgresql.conf
    su postgres -c "/usr/lib/postgresql/15/bin/pg_ctl -D $D/data -l $D/log -w start"
    ... --database-url postgresql://postgres@127.0.0.1:55499/postgres
    su postgres -c "/usr/lib/postgresql/15/bin/pg_ctl -D $D/data -w stop" && rm -rf $D
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit, urlunsplit


def describe_server(url: str) -> str:
    """One line: the server's version and durability settings, with a warning if they are not durable."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        version = conn.execute("SHOW server_version").fetchone()[0]
        fsync = conn.execute("SHOW fsync").fetchone()[0]
        synchronous_commit = conn.execute("SHOW synchronous_commit").fetchone()[0]
    line = f"PostgreSQL {version}: fsync={fsync} synchronous_commit={synchronous_commit}"
    if fsync != "on" or synchronous_commit != "on":
        line += "  (NOT durable: these figures are not the SPEC's, which need both on)"
    return line


@contextmanager
def scratch_database(url: str) -> Iterator[str]:
    """A new empty database on the server of `url`, dropped on exit; yields its URL."""
    import psycopg

    name = f"runsvc_bench_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield urlunsplit(urlsplit(url)._replace(path=f"/{name}"))
    finally:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
