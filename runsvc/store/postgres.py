"""PostgreSQL connections as the store's functions see them: sqlite3's interface over psycopg 3.

`PgConnection` wraps a psycopg connection (autocommit, so the store's own BEGIN/COMMIT delimit
transactions exactly as on SQLite) and offers what store functions use of sqlite3: execute/executemany
with `?` and `:name` placeholders (translated once per statement to psycopg's `%s`/`%(name)s`; a
PostgreSQL `Variants` spelling is psycopg's already), rows readable by position and by name
(`PgRow`), `in_transaction`. Python booleans are sent as integers, as SQLite stores them.

Opening: `connect()` makes one connection and turns psycopg's failures into the two errors `serve`
reports in one line — a bad setting (malformed URL, wrong password, no such database or role, a server
older than 13: exit 2) or an unreachable server (exit 1). Faults while serving are classified by
`is_transient` like SQLite's (faults.py): a lost connection, a server shutting down or restarting, a
cancelled (timed out) statement, no free connection slot.
"""

from __future__ import annotations

import functools
import re
import time
from collections.abc import Sequence
from typing import Any, ClassVar

import psycopg
from psycopg import adapt, pq
from psycopg.conninfo import conninfo_to_dict

from .connections import StatementCounter
from .database import Database
from .dialect import POSTGRESQL, Connection, Variants
from .errors import DatabaseInUse, DatabaseSettingError, DatabaseUnreachable
from .migrations_pg import migrate

MIN_SERVER_VERSION = 130000  # PostgreSQL 13 (SPEC §16)
CONNECT_TIMEOUT_S = 10


class PgRow(tuple):
    """A row by position and by column name, like sqlite3.Row. One subclass per column list (cached),
    holding the name → position map, so a row is a bare tuple."""

    __slots__ = ()
    _index: ClassVar[dict[str, int]] = {}

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, str):
            return tuple.__getitem__(self, self._index[key])
        return tuple.__getitem__(self, key)

    def keys(self) -> list[str]:
        return list(self._index)


@functools.lru_cache(maxsize=1024)
def _row_class(names: tuple[str, ...]) -> type[PgRow]:
    return type("PgRow", (PgRow,), {"__slots__": (), "_index": {name: i for i, name in enumerate(names)}})


def _row_factory(cursor: Any) -> Any:
    """psycopg row factory (its documented protocol): the row maker of this result's columns."""
    description = cursor.description
    if description is None:
        return tuple
    return _row_class(tuple(column.name for column in description))


class _BoolAsInteger(adapt.Dumper):
    """SQLite has no boolean; flags are INTEGER 0/1 on both, so True is sent as 1 (psycopg would send a
    boolean, which PostgreSQL refuses to compare with an integer)."""

    oid = psycopg.postgres.types["int4"].oid

    def dump(self, obj: Any) -> bytes:
        return b"1" if obj else b"0"


# Outside string literals: `?` → `%s`, `:name` → `%(name)s`, `%` → `%%`; inside them only `%` doubles.
_TOKENS = re.compile(r"'(?:[^']|'')*'|\?|(?<![:\w]):([A-Za-z_]\w*)|%")


def _token(match: re.Match[str]) -> str:
    text = match.group(0)
    if text[0] == "'":
        return text.replace("%", "%%")
    if text == "?":
        return "%s"
    if text == "%":
        return "%%"
    return f"%({match.group(1)})s"


@functools.lru_cache(maxsize=2048)
def translate(sql: str) -> str:
    """SQL written once in SQLite's placeholder style, in psycopg's."""
    return _TOKENS.sub(_token, sql)


def _sql(sql: str | Variants) -> str:
    return sql.postgresql if isinstance(sql, Variants) else translate(sql)


# Statements that only mark a transaction's shape and return nothing: BEGIN, SAVEPOINT x, RELEASE x. They
# are held and sent with the next statement in one pipeline (one round trip for all), see PgConnection.
_DEFERRABLE = re.compile(r"(BEGIN|SAVEPOINT [A-Za-z_]\w*|RELEASE [A-Za-z_]\w*)")


class PgConnection:
    """The store's view of one psycopg connection (see the module docstring).

    Round trips: the writer wraps every request in a SAVEPOINT and every group in BEGIN … COMMIT, and
    the event log adds a savepoint of its own; on PostgreSQL each statement is a round trip to the
    server (on a loaded machine, a wake-up of its backend each), and these were 5 of a group commit's 9.
    So BEGIN, SAVEPOINT and RELEASE (without parameters) are held here and sent ahead of the next
    statement in one psycopg pipeline, which waits once for all their results. Nothing is reordered,
    and the next statement is never sent without them; an error of a held statement (the server
    refusing a savepoint: only in a transaction already aborted, or on a lost connection) is raised by
    the next statement's execute, which is then what failed. `in_transaction` counts a held BEGIN.
    """

    dialect = POSTGRESQL

    def __init__(self, raw: psycopg.Connection[Any], counter: StatementCounter):
        self.raw = raw
        self._counter = counter
        self._held: list[str] = []  # BEGIN / SAVEPOINT / RELEASE statements not yet sent

    @property
    def in_transaction(self) -> bool:
        return "BEGIN" in self._held or self.raw.info.transaction_status != pq.TransactionStatus.IDLE

    def execute(self, sql: str | Variants, parameters: Any = (), /) -> psycopg.Cursor[Any]:
        self._counter.count()
        text = _sql(sql)
        if not parameters and _DEFERRABLE.fullmatch(text):
            self._held.append(text)
            return self.raw.cursor()  # nothing to read from it, like sqlite3's cursor of a SAVEPOINT
        if not self._held:
            return self.raw.execute(text, parameters)
        held, self._held = self._held, []
        with self.raw.pipeline():
            for statement in held:
                self.raw.execute(statement)
            cursor = self.raw.execute(text, parameters)
        return cursor

    def executemany(self, sql: str | Variants, parameters: Sequence[Any], /) -> psycopg.Cursor[Any]:
        self._counter.count()
        cursor = self.raw.cursor()
        held, self._held = self._held, []
        with self.raw.pipeline():  # executemany pipelines its statements anyway; the held ones go first
            for statement in held:
                self.raw.execute(statement)
            cursor.executemany(_sql(sql), parameters)
        return cursor

    def close(self) -> None:
        self._held.clear()
        self.raw.close()

    def commit(self) -> None:
        """sqlite3's commit(): end the transaction in progress, if any."""
        if self.in_transaction:
            self.execute("COMMIT")

    def rollback_quietly(self) -> None:
        self._held.clear()  # a BEGIN not sent began nothing; savepoints not sent die with the rollback
        if self.raw.closed:
            return
        try:
            if self.raw.info.transaction_status != pq.TransactionStatus.IDLE:
                self.raw.execute("ROLLBACK")
        except psycopg.Error:
            pass  # a broken connection: the server has rolled back already


def configure(raw: psycopg.Connection[Any]) -> None:
    """Every connection the store makes: rows by name, booleans as integers, UTC."""
    raw.row_factory = _row_factory
    raw.adapters.register_dumper(bool, _BoolAsInteger)
    raw.execute("SET TIME ZONE 'UTC'")


def check_url(url: str) -> None:
    """DatabaseSettingError unless `url` is a PostgreSQL URL psycopg can parse, with valid port numbers.
    The message never holds the URL: libpq quotes the whole URL in some of its parse errors, password
    and all."""
    if not url.startswith(("postgresql://", "postgres://")):
        raise DatabaseSettingError("database_url must start with postgresql:// (or be empty for SQLite)")
    try:
        params = conninfo_to_dict(url)
    except psycopg.ProgrammingError as exc:
        raise DatabaseSettingError(f"database_url is malformed: {redact(_first_line(exc), url)}") from None
    # libpq checks ports only when it connects, and says so like an unreachable server ("connection is
    # bad"), which would make a typo look like an outage (exit 1 instead of 2).
    for port in str(params.get("port") or "").split(","):
        if port and not (port.isdigit() and 0 < int(port) < 65536):
            raise DatabaseSettingError(f"database_url has an invalid port: {port[:20]!r}")


_USERINFO = re.compile(r"(://[^:/@\s]*):[^@\s]*@")


def redact(message: str, url: str) -> str:
    """`message` without the URL or its password (user:password@ → user:***@)."""
    return _USERINFO.sub(r"\1:***@", message.replace(url, "<database_url>"))


def connect(url: str, *, timeout_s: float = CONNECT_TIMEOUT_S) -> psycopg.Connection[Any]:
    """One configured connection (autocommit), or DatabaseSettingError / DatabaseUnreachable."""
    check_url(url)
    try:
        raw = psycopg.connect(url, autocommit=True, connect_timeout=max(1, int(timeout_s)))
    except psycopg.OperationalError as exc:
        message = redact(_first_line(exc), url)
        if refused_by_server(exc):
            raise DatabaseSettingError(f"cannot use database_url: {message}") from None
        raise DatabaseUnreachable(f"cannot reach PostgreSQL: {message}") from None
    try:
        if raw.info.server_version < MIN_SERVER_VERSION:
            raise DatabaseSettingError(
                f"PostgreSQL {raw.info.server_version // 10000} is too old; runsvc needs "
                f"{MIN_SERVER_VERSION // 10000} or newer"
            )
        configure(raw)
    except BaseException:
        raw.close()
        raise
    return raw


# FATAL answers of a server that is there but cannot take connections yet or now (starting, shutting down,
# in recovery, out of connection slots). psycopg gives connection errors no SQLSTATE, so they are told apart
# by PostgreSQL's own (untranslated: lc_messages defaults to C in a cluster made for a service) messages.
_NOT_NOW = ("the database system is", "too many clients", "connection slots are reserved")


def refused_by_server(exc: BaseException) -> bool:
    """The server answered and refused (wrong password, no such database or role): a setting to fix.
    Anything else (refused, timed out, no route, name not resolved, a server starting or shutting down
    or full) is a server not reachable now."""
    text = str(exc)
    return "FATAL:" in text and not any(marker in text for marker in _NOT_NOW)


def _first_line(exc: BaseException) -> str:
    """The line of psycopg's message that says what failed: the server's FATAL line if it answered."""
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    fatal = [line for line in lines if "FATAL:" in line]
    if fatal:
        return fatal[-1].split("FATAL:", 1)[1].strip()
    if not lines:
        return type(exc).__name__
    return lines[0].removeprefix("connection failed: ")


# SQLSTATE classes of conditions outside the request (https://www.postgresql.org/docs/current/errcodes-appendix.html):
# 08 connection exception, 40 transaction rollback (serialization, deadlock), 53 insufficient resources
# (disk full, too many connections), 57 operator intervention (shutdown, cancelled), 58 system error.
_TRANSIENT_CLASSES = frozenset({"08", "40", "53", "57", "58"})


def is_transient(exc: BaseException) -> bool:
    if not isinstance(exc, psycopg.Error):
        return False
    if isinstance(exc, psycopg.OperationalError):  # lost connection, pool timeout, shutdown, cancel
        return True
    state = exc.sqlstate or ""
    return state[:2] in _TRANSIENT_CLASSES


def describe(exc: BaseException) -> str:
    state = getattr(exc, "sqlstate", None)
    line = _first_line(exc)
    return f"{line} ({state})" if state else line


def reconnect(url: str) -> psycopg.Connection[Any]:
    """A fresh configured connection while serving; psycopg's error (transient) if the server is down."""
    raw = psycopg.connect(url, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S)
    try:
        configure(raw)
    except BaseException:
        raw.close()
        raise
    return raw


IDLE_CHECK_S = 1.0  # the writer checks a connection unused for this long before a batch uses it


class PgWriter:
    """The writer's one connection (see writer.py's WriterConnection). A connection that broke (the
    server restarted, a proxy cut it) is replaced on the writer's next attempt; while the server is down
    that attempt fails as a transient fault, and the writer backs off and probes like on SQLite.

    psycopg learns that a connection broke only when it next uses it, so a server restarted while the
    writer was idle would fail the next batch, and a write that does not retry (creating a run) would
    answer 503 although the server is back. So a connection idle for IDLE_CHECK_S is checked with an
    empty query first (as the readers' pool checks each connection it hands out, and as HikariCP does
    past its 500 ms alive-bypass window); a busy writer never pays for it."""

    errors: tuple[type[BaseException], ...] = (psycopg.Error,)

    def __init__(self, url: str, raw: psycopg.Connection[Any], counter: StatementCounter, *, exclusive: bool):
        self._url = url
        self._counter = counter
        self._exclusive = exclusive
        self._conn: PgConnection | None = PgConnection(raw, counter)
        self._used_at = time.monotonic()

    def connection(self) -> PgConnection:
        conn = self._conn
        now = time.monotonic()
        if conn is not None and not (conn.raw.closed or conn.raw.broken) and now - self._used_at > IDLE_CHECK_S:
            try:
                conn.raw.execute("")
            except psycopg.Error:
                pass  # broken now: replaced below
        self._used_at = now
        if conn is None or conn.raw.closed or conn.raw.broken:
            if conn is not None:
                conn.raw.close()
            self._conn = None
            raw = reconnect(self._url)
            if self._exclusive and not take_server_lock(raw):
                raw.close()
                # Transient: the writer stays unavailable and keeps trying, rather than share the database.
                raise psycopg.OperationalError("another runsvc server took this database while it was unreachable")
            conn = self._conn = PgConnection(raw, self._counter)
        return conn

    def rollback_quietly(self) -> None:
        if self._conn is not None:
            self._conn.rollback_quietly()

    def probe(self) -> None:
        self.connection().execute("SELECT 1").fetchone()

    def is_transient(self, exc: BaseException) -> bool:
        return is_transient(exc)

    def describe(self, exc: BaseException) -> str:
        return describe(exc)

    def commit_token(self, conn: Connection) -> str | None:
        """The transaction's id, to ask about it if its COMMIT gets no answer (writer.py); None if it wrote
        nothing (PostgreSQL gives an id only to a transaction that writes, and running such a one again
        changes nothing)."""
        token: str | None = conn.execute("SELECT pg_current_xact_id_if_assigned()::text").fetchone()[0]
        return token

    def committed(self, token: str) -> bool:
        """Whether the transaction `token` committed, asked on a working connection (a new one if the
        old broke); psycopg's error, transient, while the server cannot answer."""
        try:
            row = self.connection().execute("SELECT pg_xact_status(?::xid8)", (token,)).fetchone()
        except psycopg.errors.InvalidParameterValue:
            # "transaction ID … is in the future": the server restarted from a log that never got as far
            # as this transaction (killed before its first record was flushed), so it did not commit.
            return False
        status = row[0] if row is not None else None
        if status == "in progress":
            # Its COMMIT is still running in the old backend (a proxy cut the connection, not a restart).
            raise psycopg.OperationalError("an interrupted COMMIT is still in progress")
        # "aborted", or None for a transaction too old to know, which one asked about at once never is.
        return bool(status == "committed")

    def interrupt(self) -> None:
        if self._conn is not None and not self._conn.raw.closed:
            self._conn.raw.cancel_safe(timeout=2.0)

    def close(self) -> None:
        if self._conn is not None:
            self._conn.raw.close()


class PgReader:
    """One of the store's read slots: a connection from the readers' pool (psycopg_pool), checked on the
    way out of the pool so a connection broken by a restart is replaced, not used. A read's time limit is
    the server's statement_timeout, set on every reader connection."""

    errors: tuple[type[BaseException], ...] = (psycopg.Error,)

    def __init__(self, pool: Any, counter: StatementCounter, checkout_timeout_s: float):
        self._pool = pool
        self._counter = counter
        self._checkout_timeout_s = checkout_timeout_s
        self._raw: psycopg.Connection[Any] | None = None

    def run(self, fn: Any, args: tuple[Any, ...], timeout_s: float) -> Any:
        with self._pool.connection(timeout=self._checkout_timeout_s) as raw:
            conn = PgConnection(raw, self._counter)
            self._raw = raw
            try:
                return fn(conn, *args)
            finally:
                self._raw = None
                conn.rollback_quietly()

    def timed_out(self, exc: BaseException) -> bool:
        return isinstance(exc, psycopg.errors.QueryCanceled)

    def is_transient(self, exc: BaseException) -> bool:
        return is_transient(exc)

    def describe(self, exc: BaseException) -> str:
        return describe(exc)

    def interrupt(self) -> None:
        raw = self._raw
        if raw is not None and not raw.closed:
            raw.cancel_safe(timeout=2.0)

    def close(self) -> None:
        """The pool is closed once for all readers (PostgresDatabase.close)."""


READER_CHECKOUT_TIMEOUT_S = 5.0  # a read waits this long for a working reader connection, then 503s
# How long the pool keeps trying to replace a connection before it gives up until the next read asks
# (see open_database).
READER_RECONNECT_S = READER_CHECKOUT_TIMEOUT_S


# Held by a server's writer connection (a session-level advisory lock, released when the connection
# ends, a killed server's too): one server per database, until replicas coordinate through the database.
SERVER_LOCK = 0x72756E737672  # "runsvr"


def take_server_lock(raw: psycopg.Connection[Any]) -> bool:
    row = raw.execute("SELECT pg_try_advisory_lock(%s)", (SERVER_LOCK,)).fetchone()
    return bool(row and row[0])


def open_database(url: str, readers: int, read_timeout_s: float, trio_thread: int, exclusive: bool) -> Database:
    """Worker thread: connect (one-line errors, see connect()), create or upgrade the schema, then the
    writer's connection and the readers' pool. `exclusive` (a server): refuse a database another server
    holds, with DatabaseInUse."""
    from psycopg_pool import ConnectionPool, PoolTimeout

    raw = connect(url)
    try:
        migrate(raw)
        if exclusive and not take_server_lock(raw):
            raise DatabaseInUse("another runsvc server is using this database; run one server per database")
        counters = [StatementCounter(trio_thread) for _ in range(readers + 1)]
        statement_timeout_ms = max(1, int(read_timeout_s * 1000))

        def configure_reader(conn: psycopg.Connection[Any]) -> None:
            configure(conn)
            conn.execute(f"SET statement_timeout = {statement_timeout_ms}")

        pool: ConnectionPool[psycopg.Connection[Any]] = ConnectionPool(
            url, min_size=1, max_size=readers, open=False, name="runsvc-readers",
            kwargs={"autocommit": True, "connect_timeout": CONNECT_TIMEOUT_S},
            configure=configure_reader, check=ConnectionPool.check_connection,
            # The pool waits between its attempts to replace a lost connection 1 s, then 2, 4, 8, …
            # without a limit, until reconnect_timeout: with a long timeout, an outage of a few minutes
            # left reads failing for minutes more after the server was back. So it gives up soon, and
            # the next read that finds no connection starts again at once (the pool grows on demand):
            # reads work again within about a second of the server's return, whatever the outage's length.
            reconnect_timeout=READER_RECONNECT_S,
        )
        try:
            pool.open(wait=True, timeout=CONNECT_TIMEOUT_S)
        except PoolTimeout:
            pool.close()
            raise DatabaseUnreachable("cannot open reader connections to PostgreSQL") from None
    except BaseException:
        raw.close()
        raise
    checkout_s = min(read_timeout_s, READER_CHECKOUT_TIMEOUT_S)
    return Database(
        POSTGRESQL, PgWriter(url, raw, counters[0], exclusive=exclusive),
        [PgReader(pool, c, checkout_s) for c in counters[1:]],
        counters, url=url, close_rest=pool.close,
        connect=lambda: PgConnection(reconnect(url), StatementCounter(trio_thread=-1)),
    )
