"""SQL for run events: assigning seqs and inserting, reading pages back."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from ..model import TERMINAL_STATUSES, Event, EventBatch, RunNotFound
from .dialect import SQLITE, Connection, Variants


def encode_data(kind: str, data: Any) -> str:
    """`state` data is an object, stored as JSON; every other kind is one line of text."""
    return json.dumps(data, separators=(",", ":")) if kind == "state" else data


def last_seq(conn: Connection, run_id: int) -> int:
    row = conn.execute("SELECT last_seq FROM runs WHERE id = ?", (run_id,)).fetchone()
    if row is None:
        raise RunNotFound(f"no run {run_id}")
    return row[0]


def set_last_seq(conn: Connection, run_id: int, seq: int) -> None:
    conn.execute("UPDATE runs SET last_seq = ? WHERE id = ?", (seq, run_id))


# A group commit reads and writes the last_seq of every run in its buffer: one statement each way, not one
# per run. On SQLite a statement is a function call; on PostgreSQL each is a round trip to the server,
# and 10 runs' SELECT and UPDATE were 20 of a group commit's 26 round trips.
_LAST_SEQS = Variants(
    sqlite="SELECT id, last_seq FROM runs WHERE id IN (SELECT value FROM json_each(?))",
    postgresql="SELECT id, last_seq FROM runs WHERE id = ANY(%b::bigint[])",
)
_SET_LAST_SEQS = Variants(
    sqlite="UPDATE runs SET last_seq = ? WHERE id = ?",
    postgresql="UPDATE runs SET last_seq = v.seq FROM unnest(%b::bigint[], %b::bigint[]) AS v(seq, id) "
    "WHERE runs.id = v.id",
)


def last_seqs(conn: Connection, run_ids: Sequence[int]) -> dict[int, int]:
    """The last_seq of each of `run_ids` that exists (a run deleted meanwhile is missing)."""
    if not run_ids:
        return {}
    ids: Any = json.dumps(list(run_ids)) if conn.dialect == SQLITE else list(run_ids)
    return {row[0]: row[1] for row in conn.execute(_LAST_SEQS, (ids,)).fetchall()}


def set_last_seqs(conn: Connection, seqs: dict[int, int]) -> None:
    """Set runs' last_seq, {run_id: seq}."""
    if not seqs:
        return
    if conn.dialect == SQLITE:
        conn.executemany(_SET_LAST_SEQS, [(seq, run_id) for run_id, seq in seqs.items()])
    else:
        conn.execute(_SET_LAST_SEQS, (list(seqs.values()), list(seqs)))


Row = tuple[int, int, str, str, str]  # (run_id, seq, ts, kind, encoded data)


def number(
    run_id: int, last_seq: int, items: Sequence[tuple[str, Any]], ts: str, rows: list[Row]
) -> list[Event]:
    """Give `items` ((kind, data) pairs) the seqs after `last_seq`: return them as events and add
    their rows to `rows`. The hot loop of ingest: comprehensions, no per-event function calls."""
    numbered = list(zip(range(last_seq + 1, last_seq + 1 + len(items)), items, strict=True))
    rows.extend(
        (run_id, seq, ts, kind, data if kind != "state" else encode_data(kind, data))
        for seq, (kind, data) in numbered
    )
    return [{"seq": seq, "ts": ts, "kind": kind, "data": data} for seq, (kind, data) in numbered]


def append_now(
    conn: Connection, run_id: int, items: Sequence[tuple[str, Any]], ts: str
) -> list[Event]:
    """Append events inside the caller's transaction, for writes that change a run and append its
    events together outside the EventLog's buffer (creating, claiming). Safe next to the EventLog:
    every write runs on the one writer, one after the other."""
    rows: list[Row] = []
    events = number(run_id, last_seq(conn, run_id), items, ts, rows)
    insert_rows(conn, rows)
    set_last_seq(conn, run_id, events[-1]["seq"])
    return events


# SQLite: executemany, one prepared statement stepped per row, in process. PostgreSQL: one statement for
# all rows, each column one array parameter, unnested back into rows (`unnest` of several arrays zips
# them): executemany there costs a statement per row (sent pipelined, but each parsed, bound and executed
# alone), and a group commit of 1,000 events spent most of its time in it.
_INSERT = Variants(
    sqlite="INSERT INTO run_events (run_id, seq, ts, kind, data) VALUES (?, ?, ?, ?, ?)",
    postgresql="INSERT INTO run_events (run_id, seq, ts, kind, data) "
    "SELECT * FROM unnest(%b::bigint[], %b::bigint[], %b::text[], %b::text[], %b::text[])",
)


def insert_rows(conn: Connection, rows: list[Row]) -> None:
    """Insert event rows in one call (see _INSERT)."""
    if conn.dialect == SQLITE:
        conn.executemany(_INSERT, rows)
    elif rows:
        conn.execute(_INSERT, [list(column) for column in zip(*rows, strict=True)])


# PostgreSQL: the rows and the new last seqs in one statement (a data-modifying WITH), one round trip.
# SQLite has no such statement and runs the two (in process, no round trip to save).
_INSERT_AND_SET_LAST_SEQS = Variants(
    sqlite="", postgresql=f"WITH inserted AS ({_INSERT.postgresql}) {_SET_LAST_SEQS.postgresql}"
)


def insert_rows_and_set_last_seqs(conn: Connection, rows: list[Row], seqs: dict[int, int]) -> None:
    """insert_rows, then set_last_seqs: a group commit's writes after numbering. On PostgreSQL one
    statement when there are both."""
    if conn.dialect == SQLITE or not rows or not seqs:
        insert_rows(conn, rows)
        set_last_seqs(conn, seqs)
        return
    columns = [list(column) for column in zip(*rows, strict=True)]
    conn.execute(_INSERT_AND_SET_LAST_SEQS, (*columns, list(seqs.values()), list(seqs)))


# A page holds at most this many characters of event JSON (and always at least one event): a run's output
# is hostile input, and a line of control characters is six times its size in JSON (`\u0001`), so 10,000
# long lines would otherwise be a page of about a gigabyte (issue 20). Characters of JSON are bytes but for
# non-ASCII text, which SQLite's JSON keeps as it is.
PAGE_MAX_CHARS = 4 * 2**20  # 4 Mi characters

# SQLite builds each event's JSON itself (in C, on the reader thread): no Python object per field. Key order
# and separators match json.dumps(..., separators=(",", ":")) of the event dicts.
# On PostgreSQL, format() writes the same compact JSON (json_build_object would add spaces); `%%s` is
# format()'s `%s` in psycopg's spelling.
_PAGE_JSON = Variants(
    sqlite="""
        SELECT seq, json_object(
            'seq', seq, 'ts', ts, 'kind', kind,
            'data', CASE kind WHEN 'state' THEN json(data) ELSE data END
        )
        FROM run_events WHERE run_id = ? AND seq > ? ORDER BY seq LIMIT ?
    """,
    postgresql="""
        SELECT seq, format(
            '{"seq":%%s,"ts":%%s,"kind":%%s,"data":%%s}', seq, to_json(ts), to_json(kind),
            CASE kind WHEN 'state' THEN data ELSE to_json(data)::text END
        )
        FROM run_events WHERE run_id = %s AND seq > %s ORDER BY seq LIMIT %s
    """,
)


def read_page(
    conn: Connection, run_id: int, after_seq: int, limit: int, max_chars: int = PAGE_MAX_CHARS
) -> EventBatch | None:
    """Up to `limit` stored events with seq > after_seq, as a batch already serialized (in this thread),
    fewer when the next one would take its JSON past `max_chars` characters (the first one always comes).
    Fewer than `limit` therefore does not mean there are no more: read on from its last seq until None."""
    items: list[str] = []
    size = 0
    first = last = 0
    cursor = conn.execute(_PAGE_JSON, (run_id, after_seq, limit))
    try:
        for seq, event in cursor:
            size += len(event) + 1
            if items and size > max_chars:
                break
            items.append(event)
            last = seq
            if not first:
                first = seq
    finally:
        cursor.close()
    if not items:
        return None
    kind, data = conn.execute(
        "SELECT kind, data FROM run_events WHERE run_id = ? AND seq = ?", (run_id, last)
    ).fetchone()
    terminal = kind == "state" and json.loads(data)["status"] in TERMINAL_STATUSES
    return EventBatch.from_json(run_id, ",".join(items), first, last, terminal)


def run_progress(conn: Connection, run_id: int) -> tuple[str, int]:
    """(status, last_seq) of a run; RunNotFound if there is none."""
    row = conn.execute("SELECT status, last_seq FROM runs WHERE id = ?", (run_id,)).fetchone()
    if row is None:
        raise RunNotFound(f"no run {run_id}")
    return row[0], row[1]
