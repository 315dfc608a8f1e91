"""SQL for runs: create, read, list, claim, status transitions, startup recovery.

Status changes that produce a `state` event go through EventLog.append(..., transition=...) with the
transition functions below, so the status and its event commit together.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

import attrs

from ..model import TERMINAL_STATUSES, Event, EventBatch, Run, StatusConflict, state_data
from . import events as event_sql
from .dialect import BEGIN_SNAPSHOT, POSTGRESQL, Connection, Row, Variants

# Run fields that are not columns: computed when a run is read or published.
_COMPUTED_FIELDS = frozenset({"waiting_for"})
# Columns stored as JSON text, with what the decoded value becomes in a Run.
_JSON_COLUMNS: dict[str, Callable[[Any], Any]] = {
    "command": tuple, "env": dict, "labels": tuple, "params": dict, "retries": dict, "concurrency": dict,
    "secrets": dict,
}

# The columns a Run is read from, in the order of its fields.
RUN_COLUMNS = ", ".join(field.name for field in attrs.fields(Run) if field.name not in _COMPUTED_FIELDS)
# What lists carry (SPEC §14): the run without `env`, which can be 64 KiB a run.
SUMMARY_COLUMNS = RUN_COLUMNS.replace(" env,", "")

# Claim: the oldest claimable queued run that one of the free executors can take (it has all the run's
# labels), handed to the first such executor in the order given (json_each walks an array in order);
# one statement, so two claims never race, and the rules below are decided in the transaction that
# claims. :executors is a JSON array of {"name": …, "labels": […]}. A run is claimable when
# - its not_before (if any) has passed (:ts), and
# - its concurrency group (if any) has fewer than the run's own `limit` runs running (SPEC §15).
#
# Its cost must not grow with queued runs nobody can take (issue 20: 100k runs for a label no executor
# has made every claim walk them all, 104 ms inside the one writer), nor with runs waiting for their
# not_before or for a full concurrency group. So it works on claim groups, (label set, concurrency key)
# pairs: the partial index runs_queued_claim holds only queued runs, by (labels, key, queued since, id).
# - queues: the distinct (labels, key) pairs of queued runs, one index seek each (each step asks for
#   the next key of the same label set, or after the last one (a NULL key row) for the next label set
#   and its first key: a loose index scan), however many runs share a pair;
# - heads: each pair's first run in queued-since, id order (one more seek). Only the head can go: the
#   runs behind it share its group (full for one means full for all of them, unless their own `limit`
#   differs, see below) and became due no sooner (a head not yet due means none behind it is);
# - ready: the heads that are due and whose group has room: the group's running runs are counted
#   through runs_running_concurrency (at most the limit, 1,000, index entries);
# - takers: for each ready head, the first executor that has all its labels, or NULL (json_each over
#   the small label lists only);
# - pick: of the heads some executor takes, the one queued longest (then lowest id); min() with bare
#   columns takes `chosen` from that same row (SQLite's documented min/max rule).
# Two expressions are written exactly as in that index (so SQLite reads them from it):
# - ifnull(concurrency_key, ''): the run's group, '' for none (a real key is never empty);
# - max(created_at, ifnull(not_before, '')), "queued since": a delayed run or a retry queues from its
#   not_before, behind the runs that were waiting when it became due, and never ahead of runs created
#   before it (a not_before in the past changes nothing).
# A group's runs are taken in order: a run whose group is full for its own `limit` holds the ones
# behind it even if one of those has a higher limit (a group is a queue; its runs normally share one
# limit, a job's). INDEXED BY: without statistics the planner prefers runs_status_id's `status = ?`
# plus a sort, which visits every queued run again; INDEXED BY makes a schema change that loses the
# index an error, not a slow claim. Ids only grow (AUTOINCREMENT), so among runs queued at the same
# moment the lowest id is the oldest. Cost: about two seeks per claim group of queued runs plus the
# running runs of the ready heads' groups, not one per queued run.
CLAIM_NEXT_SQLITE = """
WITH RECURSIVE
    queues(labels, gkey) AS (
        SELECT first.labels, (
            SELECT min(ifnull(r.concurrency_key, '')) FROM runs AS r INDEXED BY runs_queued_claim
            WHERE r.status = 'queued' AND r.labels = first.labels
        )
        FROM (SELECT min(labels) AS labels FROM runs INDEXED BY runs_queued_claim WHERE status = 'queued') AS first
        UNION ALL
        SELECT
            iif(q.gkey IS NULL, (
                SELECT min(r.labels) FROM runs AS r INDEXED BY runs_queued_claim
                WHERE r.status = 'queued' AND r.labels > q.labels
            ), q.labels),
            iif(q.gkey IS NULL, (
                SELECT min(ifnull(r.concurrency_key, '')) FROM runs AS r INDEXED BY runs_queued_claim
                WHERE r.status = 'queued' AND r.labels = (
                    SELECT min(n.labels) FROM runs AS n INDEXED BY runs_queued_claim
                    WHERE n.status = 'queued' AND n.labels > q.labels
                )
            ), (
                SELECT min(ifnull(r.concurrency_key, '')) FROM runs AS r INDEXED BY runs_queued_claim
                WHERE r.status = 'queued' AND r.labels = q.labels AND ifnull(r.concurrency_key, '') > q.gkey
            ))
        FROM queues AS q WHERE q.labels IS NOT NULL
    ),
    heads(run_id) AS (
        SELECT (
            SELECT r.id FROM runs AS r INDEXED BY runs_queued_claim
            WHERE r.status = 'queued' AND r.labels = q.labels AND ifnull(r.concurrency_key, '') = q.gkey
            ORDER BY max(r.created_at, ifnull(r.not_before, '')), r.id LIMIT 1
        )
        FROM queues AS q WHERE q.gkey IS NOT NULL
    ),
    ready(run_id, labels, queued_since) AS (
        SELECT h.id, h.labels, max(h.created_at, ifnull(h.not_before, ''))
        FROM heads JOIN runs AS h ON h.id = heads.run_id
        WHERE (h.not_before IS NULL OR h.not_before <= :ts)
          AND (h.concurrency_key IS NULL OR (
                SELECT count(*) FROM runs AS c INDEXED BY runs_running_concurrency
                WHERE c.status = 'running' AND c.concurrency_key = h.concurrency_key
              ) < json_extract(h.concurrency, '$.limit'))
    ),
    takers(run_id, queued_since, chosen) AS (
        SELECT s.run_id, s.queued_since, (
            SELECT json_extract(c.value, '$.name') FROM json_each(:executors) AS c
            WHERE NOT EXISTS (
                SELECT 1 FROM json_each(s.labels) AS l
                WHERE l.value NOT IN (SELECT value FROM json_each(json_extract(c.value, '$.labels')))
            )
            LIMIT 1
        )
        FROM ready AS s
    ),
    pick(rank, run_id, chosen) AS (
        SELECT min(printf('%s %020d', t.queued_since, t.run_id)), t.run_id, t.chosen
        FROM takers AS t WHERE t.chosen IS NOT NULL
    )
    UPDATE runs SET status = 'running', started_at = :ts, attempt = attempt + 1, executor = pick.chosen,
                    agent_chunk = 0, last_seq = last_seq + 1
    FROM pick
    WHERE runs.id = pick.run_id
    RETURNING """ + ", ".join(f"runs.{column.strip()}" for column in RUN_COLUMNS.split(","))

# The same claim on PostgreSQL: the queued runs in the order of runs_queued_claim ("queued since", id),
# the first one that is due, whose group has room, that is the first in its (labels, concurrency key)
# claim group (the rule above: a group is a queue) and that one of the executors can take (its labels
# contain the run's: jsonb @>), locked with SKIP LOCKED so a second claimer passes over it rather than
# waiting or taking it too. Unlike SQLite's, its cost grows with the queued runs ahead of the first
# claimable one (PostgreSQL has no loose index scan to skip a claim group at once).
CLAIM_NEXT_POSTGRESQL = """
WITH offers AS (
    SELECT o.offer ->> 'name' AS name, o.offer -> 'labels' AS labels, o.preference
    FROM jsonb_array_elements(%(executors)s::jsonb) WITH ORDINALITY AS o(offer, preference)
),
pick AS (
    SELECT r.id, taker.name AS chosen
    FROM runs AS r
    CROSS JOIN LATERAL (
        SELECT o.name FROM offers AS o WHERE o.labels @> r.labels::jsonb ORDER BY o.preference LIMIT 1
    ) AS taker
    WHERE r.status = 'queued'
      AND (r.not_before IS NULL OR r.not_before <= %(ts)s)
      AND (r.concurrency_key IS NULL OR (
            (SELECT count(*) FROM runs AS c WHERE c.status = 'running' AND c.concurrency_key = r.concurrency_key)
              < (r.concurrency::jsonb ->> 'limit')::bigint
            AND NOT EXISTS (
                SELECT 1 FROM runs AS e
                WHERE e.status = 'queued' AND e.concurrency_key = r.concurrency_key AND e.labels = r.labels
                  AND (greatest(e.created_at, coalesce(e.not_before, '')), e.id)
                      < (greatest(r.created_at, coalesce(r.not_before, '')), r.id)
            )))
    ORDER BY greatest(r.created_at, coalesce(r.not_before, '')), r.id
    LIMIT 1
    FOR UPDATE OF r SKIP LOCKED
)
UPDATE runs SET status = 'running', started_at = %(ts)s, attempt = attempt + 1, executor = pick.chosen,
                agent_chunk = 0, last_seq = last_seq + 1
FROM pick
WHERE runs.id = pick.id
RETURNING """ + ", ".join(f"runs.{column.strip()}" for column in RUN_COLUMNS.split(","))

CLAIM_NEXT = Variants(sqlite=CLAIM_NEXT_SQLITE, postgresql=CLAIM_NEXT_POSTGRESQL)
# Claims on PostgreSQL hold this transaction-level advisory lock (lock_claims): several claimers
# (replicas) then count a concurrency group's running runs one after the other, never both below its
# limit at once.
CLAIM_LOCK = 0x636C61696D  # "claim"

# The earliest not_before of a queued run still in the future: when the scheduler must look again
# (it sleeps until then; no polling). One seek in the partial index runs_queued_not_before.
NEXT_NOT_BEFORE = Variants(
    sqlite="SELECT min(not_before) FROM runs INDEXED BY runs_queued_not_before "
    "WHERE status = 'queued' AND not_before IS NOT NULL AND not_before > ?",
    postgresql="SELECT min(not_before) FROM runs "
    "WHERE status = 'queued' AND not_before IS NOT NULL AND not_before > %s",
)


def run_from_row(row: Row) -> Run:
    """A Run from a row of RUN_COLUMNS, or of SUMMARY_COLUMNS (then without `env`)."""
    return _run(dict(zip(row.keys(), row, strict=True)))


def _run(values: dict[str, Any]) -> Run:
    for key, decode in _JSON_COLUMNS.items():
        if values.get(key) is not None:  # NULL stays None (retries, concurrency)
            values[key] = decode(json.loads(values[key]))
    values.setdefault("env", None)
    return Run(**values)


def create_run(
    conn: Connection,
    *,
    command: Sequence[str],
    env: dict[str, str],
    timeout_s: float,
    name: str | None,
    created_by: str | None,
    ts: str,
    labels: Sequence[str] = (),
    job_id: int | None = None,
    job_name: str | None = None,
    trigger: str = "api",
    retry_of: int | None = None,
    try_number: int = 1,
    not_before: str | None = None,
    scheduled_for: str | None = None,
    params: dict[str, str] | None = None,
    retries: dict[str, Any] | None = None,
    concurrency: dict[str, Any] | None = None,
    secrets: dict[str, str] | None = None,
) -> tuple[Run, list[Event]]:
    """Insert a queued run with its first event (seq 1, `state queued`). `env` is what the child gets
    on top of the server's base environment, parameters included (PARAM_<NAME>); `concurrency` must
    have its key resolved (a job's default, its name, is filled in by the caller). `secrets` maps
environment variables to secret names; whether those exist is the caller's check (a run of a job whose
secret was deleted is still created, and fails when it starts).

    Two statements (issue 22: every submit pays them): the run, inserted with `last_seq` 1 and read
    back by RETURNING, and its event."""
    row = conn.execute(
        "INSERT INTO runs (name, command, env, timeout_s, status, created_by, created_at, labels, job_id, "
        "job_name, trigger, retry_of, try_number, not_before, scheduled_for, params, retries, concurrency, "
        "concurrency_key, secrets, last_seq) "
        "VALUES (?, ?, ?, ?, 'queued', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 1) "
        f"RETURNING {RUN_COLUMNS}",
        (
            name, json.dumps(list(command)), json.dumps(env), timeout_s, created_by, ts, json.dumps(list(labels)),
            job_id, job_name, trigger, retry_of, try_number, not_before, scheduled_for, json.dumps(params or {}),
            None if retries is None else json.dumps(retries),
            None if concurrency is None else json.dumps(concurrency),
            None if concurrency is None else concurrency["key"],
            json.dumps(secrets or {}),
        ),
    ).fetchone()
    run = run_from_row(row)
    return run, _insert_events(conn, run, [("state", state_data("queued"))], ts)


def _insert_events(conn: Connection, run: Run, items: Sequence[tuple[str, Any]], ts: str) -> list[Event]:
    """The events of a run whose row this transaction has just written with `last_seq` already counting
    them (inserted, or claimed): numbered up to run.last_seq and inserted, without reading or updating
    the run again."""
    rows: list[event_sql.Row] = []
    events = event_sql.number(run.id, run.last_seq - len(items), items, ts, rows)
    event_sql.insert_rows(conn, rows)
    return events


def rerun(conn: Connection, run_id: int, *, created_by: str | None, ts: str) -> tuple[Run, list[Event]] | None:
    """Queue a new first try of run `run_id` (SPEC §15 re-run): its command, env, timeout, name, labels,
    job, params, retries, concurrency and secrets, `trigger: "rerun"`; None if there is no such run. One
    transaction, so the run read is the run copied."""
    run = get_run(conn, run_id)
    if run is None:
        return None
    return create_run(
        conn, command=run.command, env=dict(run.env or {}), timeout_s=run.timeout_s, name=run.name,
        created_by=created_by, ts=ts, labels=run.labels, job_id=run.job_id, job_name=run.job_name,
        trigger="rerun", params=dict(run.params), retries=run.retries, concurrency=run.concurrency,
        secrets=dict(run.secrets),
    )


def get_run(conn: Connection, run_id: int) -> Run | None:
    row = conn.execute(f"SELECT {RUN_COLUMNS} FROM runs WHERE id = ?", (run_id,)).fetchone()
    return run_from_row(row) if row else None


def list_runs(
    conn: Connection, statuses: Sequence[str], limit: int, before: int | None,
    job_id: int | None = None,
) -> tuple[list[Run], int | None]:
    """Run summaries (no env), newest first, keyset-paginated by id, of one job when `job_id` is given
    (index runs_job_id); returns (runs, the `before` of the next page or None)."""
    where: list[str] = []
    params: list[Any] = []
    if job_id is not None:
        where.append("job_id = ?")
        params.append(job_id)
    if statuses:
        where.append(f"status IN ({', '.join('?' * len(statuses))})")
        params.extend(statuses)
    if before is not None:
        where.append("id < ?")
        params.append(before)
    clause = f"WHERE {' AND '.join(where)}" if where else ""
    rows = conn.execute(
        f"SELECT {SUMMARY_COLUMNS} FROM runs {clause} ORDER BY id DESC LIMIT ?", (*params, limit + 1)
    ).fetchall()
    runs = [run_from_row(row) for row in rows[:limit]]
    next_before = runs[-1].id if len(rows) > limit else None
    return runs, next_before


def claim_next(
    conn: Connection, ts: str, executors: Sequence[tuple[str, Sequence[str]]], *, locked: bool = False
) -> tuple[Run, list[Event]] | None:
    """Atomically move the oldest queued run that one of `executors` ((name, labels), in order of
    preference) can take to running, naming the executor and counting the attempt; append its
    `state running` event. On PostgreSQL it first takes the claim lock (`locked`: this transaction
    holds it already)."""
    if not executors:
        return None
    if conn.dialect == POSTGRESQL and not locked:
        lock_claims(conn)
    offer = json.dumps([{"name": name, "labels": list(labels)} for name, labels in executors])
    row = conn.execute(CLAIM_NEXT, {"ts": ts, "executors": offer}).fetchone()
    if row is None:
        return None
    run = run_from_row(row)  # the claim counted its `state running` event in last_seq
    return run, _insert_events(conn, run, [("state", state_data("running"))], ts)


def claim_batch(
    conn: Connection, ts: str, slots: Sequence[tuple[str, Sequence[str], int]]
) -> tuple[list[tuple[Run, list[Event]]], str | None]:
    """Claim runs for every free slot of `slots` ((name, labels, free slots), in order of preference),
    in the caller's one transaction: claim_next again and again, each time offering the executors that
    still have a free slot, until every slot is taken or nothing more is claimable. Returns the runs
    claimed, in claim order, and, when it stopped because nothing more was claimable, the earliest
    not_before after `ts` of a queued run (when the scheduler must look again), read in the same
    transaction, so no run can slip between them (None when the slots ran out first).

    Each claim_next sees the ones before it (same transaction), so the rules hold among the runs claimed
    together exactly as for runs claimed one per transaction: a concurrency group counts the runs just
    claimed into it, and the order is the same as that of successive single claims. What is shared is
    the transaction: one commit (and one thread hop of the store's writer) for all of them."""
    free = {name: count for name, _, count in slots}
    claimed: list[tuple[Run, list[Event]]] = []
    if conn.dialect == POSTGRESQL:
        lock_claims(conn)
    while True:
        offers = [(name, labels) for name, labels, _ in slots if free[name] > 0]
        if not offers:
            return claimed, None
        one = claim_next(conn, ts, offers, locked=True)
        if one is None:
            return claimed, next_not_before(conn, ts)
        claimed.append(one)
        taker = one[0].executor
        assert taker is not None  # the claim names the executor
        free[taker] -= 1


def lock_claims(conn: Connection) -> None:
    """PostgreSQL: wait for other claimers' transactions (replicas) to end, so that the claim statement
    after this one (READ COMMITTED: a snapshot per statement) sees their claims when it counts a
    concurrency group. A statement of its own: a lock taken inside the claim statement would come
    after that statement's snapshot."""
    conn.execute("SELECT pg_advisory_xact_lock(?)", (CLAIM_LOCK,))


# Told of every run that reaches a terminal status, in the transaction that records it (the webhooks'
# outbox, webhooks/outbox.py): every terminal transition goes through `finish`, so none is missed.
RunEnded = Callable[[Connection, Run], None]


def finish(
    conn: Connection, run_id: int, *, from_status: str, status: str, exit_code: int | None, ts: str,
    outbox: RunEnded, appending: int,
) -> Run:
    """Transition: from_status -> terminal `status`. Raises StatusConflict if the run is elsewhere.

    `appending`: the events the caller appends after this in the same transaction (the terminal `state`
    event and any `system` messages before it); `outbox` is told of the run as it will be committed,
    `last_seq` counting them. The Run returned has the `last_seq` before them."""
    assert status in TERMINAL_STATUSES
    row = conn.execute(
        f"UPDATE runs SET status = ?, exit_code = ?, ended_at = ? WHERE id = ? AND status = ? "
        f"RETURNING {RUN_COLUMNS}",
        (status, exit_code, ts, run_id, from_status),
    ).fetchone()
    if row is None:
        raise StatusConflict(f"run {run_id} is not {from_status}")
    run = run_from_row(row)
    outbox(conn, attrs.evolve(run, last_seq=run.last_seq + appending))
    return run


def next_not_before(conn: Connection, ts: str) -> str | None:
    """The earliest not_before after `ts` of a queued run, or None."""
    return conn.execute(NEXT_NOT_BEFORE, (ts,)).fetchone()[0]


def running_run_ids(conn: Connection) -> list[int]:
    """Runs a previous server process left running on the local executor (startup recovery); runs on
    agents are left to their agents (see agents/hub.py)."""
    return [
        row[0] for row in conn.execute(
            "SELECT id FROM runs WHERE status = 'running' AND coalesce(executor, 'local') NOT LIKE 'agent:%' "
            "ORDER BY id"
        )
    ]


def agent_runs(conn: Connection) -> list[tuple[Run, int]]:
    """Runs a previous server process left running on agents (startup: the scheduler adopts them), each
    with the last output chunk of its current attempt that is stored."""
    rows = conn.execute(
        f"SELECT {RUN_COLUMNS}, agent_chunk FROM runs WHERE status = 'running' AND executor LIKE 'agent:%' "
        "ORDER BY id"
    ).fetchall()
    runs = []
    for row in rows:
        values = dict(zip(row.keys(), row, strict=True))
        chunk = values.pop("agent_chunk")
        runs.append((_run(values), chunk))
    return runs


def events_page(
    conn: Connection, run_id: int, after_seq: int, limit: int
) -> tuple[str, int, EventBatch | None] | None:
    """(status, last_seq, the batch of events after `after_seq` or None) read in one snapshot; None if
    no such run."""
    conn.execute(BEGIN_SNAPSHOT)
    try:
        row = conn.execute("SELECT status, last_seq FROM runs WHERE id = ?", (run_id,)).fetchone()
        if row is None:
            return None
        return row[0], row[1], event_sql.read_page(conn, run_id, after_seq, limit)
    finally:
        conn.execute("COMMIT")


def output_lines(
    conn: Connection, run_id: int, after_seq: int, up_to_seq: int, limit: int
) -> list[tuple[int, str | None]]:
    """(seq, line) for the events in (after_seq, up_to_seq], at most `limit`; line is None for events
    that are not stdout/stderr (their seq still moves the caller's position on)."""
    rows = conn.execute(
        "SELECT seq, kind, data FROM run_events WHERE run_id = ? AND seq > ? AND seq <= ? "
        "ORDER BY seq LIMIT ?",
        (run_id, after_seq, up_to_seq, limit),
    ).fetchall()
    return [(seq, data if kind in ("stdout", "stderr") else None) for seq, kind, data in rows]


# The one statement of a /metrics scrape; the runs_status_id index answers it without reading the table.
COUNT_RUNS_BY_STATUS = "SELECT status, count(*) FROM runs GROUP BY status"


def count_by_status(conn: Connection) -> dict[str, int]:
    return {status: count for status, count in conn.execute(COUNT_RUNS_BY_STATUS)}
