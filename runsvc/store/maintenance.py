"""SQL for maintenance and retention: expiry of sessions, tokens and throttle rows; run pruning; stats.

Plain functions taking a `Connection`; the store runs them on the writer (deletes) or a reader
(counts, stats) in a worker thread. Every delete is bounded by a `limit` so that no single write
transaction grows with the size of the backlog: callers repeat until a call reports nothing left.
Timestamps are the fixed-width RFC 3339 text of `runsvc.timeutil`, so `<` on text is `<` on time.
"""

from __future__ import annotations

import time

import attrs

from ..model import TERMINAL_STATUSES
from .connections import SqliteConnection
from .dialect import BEGIN_WRITE, Connection, Variants
from .tokens import delete_expired_tokens
from .webhooks import delete_old_deliveries

_TERMINAL = "(" + ", ".join(f"'{status}'" for status in sorted(TERMINAL_STATUSES)) + ")"  # SQL list

# ---- hot queries (each one's plan is pinned by tests/store/test_query_plans.py) -------------------

DELETE_EXPIRED_SESSIONS = (
    "DELETE FROM sessions WHERE id IN "
    "(SELECT id FROM sessions WHERE expires_at <= :now LIMIT :limit)"
)
DELETE_EXPIRED_ENROLLMENT_TOKENS = (
    "DELETE FROM enrollment_tokens WHERE id IN "
    "(SELECT id FROM enrollment_tokens WHERE expires_at <= :now LIMIT :limit)"
)
# A row whose lockout is still running is kept however old its last failure: deleting it would end
# the lockout early.
DELETE_STALE_THROTTLE = (
    "DELETE FROM login_throttle WHERE (username, client) IN "
    "(SELECT username, client FROM login_throttle WHERE last_failed_at < :cutoff "
    "AND (locked_until IS NULL OR locked_until <= :now) LIMIT :limit)"
)
# A job's fires recorded before the retention cutoff, except its newest one: the schedule ticker counts
# a job's next fire times from its newest recorded fire, so that one stays however old it is. One seek
# per job (jobs are few; their fires are many), along the primary key.
_EXPIRED_FIRES = (
    "DELETE FROM job_fires WHERE (job_id, scheduled_for) IN ("
    "SELECT f.job_id, f.scheduled_for FROM jobs AS j JOIN job_fires AS f ON f.job_id = j.id "
    "AND f.scheduled_for < {least}(:fires_cutoff, "
    "(SELECT max(n.scheduled_for) FROM job_fires AS n WHERE n.job_id = j.id)) LIMIT :limit)"
)
DELETE_EXPIRED_FIRES = Variants(  # the two-argument min() is least() on PostgreSQL
    sqlite=_EXPIRED_FIRES.format(least="min"),
    postgresql=_EXPIRED_FIRES.format(least="least")
    .replace(":fires_cutoff", "%(fires_cutoff)s").replace(":limit", "%(limit)s"),
)
# Oldest expired runs first. Only terminal runs: a run that is still queued or running is never
# pruned, whatever its timestamps say. The unary `+` keeps the planner off the status indexes: with
# them it would walk every finished run ever kept and sort them; runs_ended_at walks only the expired
# ones, already in order.
# (PostgreSQL has no unary + on text; its planner, with statistics, needs no such hint.)
SELECT_EXPIRED_RUNS = Variants(
    sqlite=f"SELECT id FROM runs WHERE ended_at < :cutoff AND +status IN {_TERMINAL} "
    "ORDER BY ended_at, id LIMIT :limit",
    postgresql=f"SELECT id FROM runs WHERE ended_at < %(cutoff)s AND status IN {_TERMINAL} "
    "ORDER BY ended_at, id LIMIT %(limit)s",
)
# The seq of the `:offset + 1`th remaining event of a run: events up to it fit in the batch.
SELECT_EVENT_BOUND = "SELECT seq FROM run_events WHERE run_id = :run_id ORDER BY seq LIMIT 1 OFFSET :offset"
DELETE_RUN_EVENTS_UPTO = "DELETE FROM run_events WHERE run_id = :run_id AND seq <= :seq"
DELETE_RUN_EVENTS = "DELETE FROM run_events WHERE run_id = :run_id"
DELETE_RUN = f"DELETE FROM runs WHERE id = :run_id AND status IN {_TERMINAL}"
COUNT_EXPIRED_RUNS = Variants(
    sqlite=f"SELECT count(*) FROM runs WHERE ended_at < :cutoff AND +status IN {_TERMINAL}",
    postgresql=f"SELECT count(*) FROM runs WHERE ended_at < %(cutoff)s AND status IN {_TERMINAL}",
)
COUNT_EXPIRED_EVENTS = Variants(
    sqlite="SELECT count(*) FROM run_events WHERE run_id IN "
    f"(SELECT id FROM runs WHERE ended_at < :cutoff AND +status IN {_TERMINAL})",
    postgresql="SELECT count(*) FROM run_events WHERE run_id IN "
    f"(SELECT id FROM runs WHERE ended_at < %(cutoff)s AND status IN {_TERMINAL})",
)


# ---- maintenance: expired sessions, enrollment tokens, throttle rows --------------------------------


@attrs.frozen
class ExpiryCounts:
    """Rows removed by one `delete_expired` call (or, summed, by one maintenance pass)."""

    sessions: int = 0
    enrollment_tokens: int = 0
    login_throttle: int = 0
    api_tokens: int = 0
    job_fires: int = 0
    webhook_deliveries: int = 0

    @property
    def total(self) -> int:
        return sum(attrs.astuple(self))

    @property
    def most(self) -> int:
        """The most rows of one kind: below the batch size, nothing of any kind is left."""
        return max(attrs.astuple(self))

    def __add__(self, other: ExpiryCounts) -> ExpiryCounts:
        return ExpiryCounts(*(a + b for a, b in zip(attrs.astuple(self), attrs.astuple(other), strict=True)))


def delete_expired(
    conn: Connection, now: str, throttle_cutoff: str, limit: int, fires_cutoff: str | None = None,
    deliveries_cutoff: str | None = None,
) -> ExpiryCounts:
    """Delete up to `limit` rows of each kind: sessions, enrollment and API tokens expired at `now`,
    throttle rows whose last failure is before `throttle_cutoff` and that hold no lockout at `now`,
    (with a `fires_cutoff`, the retention cutoff) job fires recorded before it but each job's newest, and
    (with a `deliveries_cutoff`) webhook deliveries created before it, delivered or not.

    Fewer than `limit` of every kind means nothing of that kind is left.
    """
    params = {"now": now, "cutoff": throttle_cutoff, "limit": limit}
    sessions = conn.execute(DELETE_EXPIRED_SESSIONS, params).rowcount
    tokens = conn.execute(DELETE_EXPIRED_ENROLLMENT_TOKENS, params).rowcount
    throttle = conn.execute(DELETE_STALE_THROTTLE, params).rowcount
    api_tokens = delete_expired_tokens(conn, now, limit)
    fires = 0
    if fires_cutoff is not None:
        fires = conn.execute(DELETE_EXPIRED_FIRES, {"fires_cutoff": fires_cutoff, "limit": limit}).rowcount
    deliveries = 0
    if deliveries_cutoff is not None:
        deliveries = delete_old_deliveries(conn, deliveries_cutoff, limit)
    return ExpiryCounts(sessions, tokens, throttle, api_tokens, fires, deliveries)


# ---- retention ---------------------------------------------------------------------------------


@attrs.frozen
class PruneBatch:
    """What one bounded retention transaction deleted."""

    run_ids: tuple[int, ...]  # runs deleted (their events are all gone too)
    events: int  # events deleted, including those of runs only partly emptied
    exhausted: bool  # True when no expired run is left after this batch
    elapsed_s: float  # time the batch took in its thread (prune_batch_alone: BEGIN to COMMIT)


def prune_batch(
    conn: Connection, cutoff: str, budget: int, only: frozenset[int] | None = None
) -> PruneBatch:
    """Delete expired terminal runs (`ended_at < cutoff`), oldest first, with their events.

    At most `budget` rows are deleted, counting each event and each run as one: the events of the
    oldest expired run go first; a run is deleted once none of its events are left. A run with more
    events than the budget is emptied over several batches. Call again until `exhausted`. With `only`,
    runs outside it are left for a later batch (retention fences runs before it deletes them).
    """
    started = time.perf_counter()
    left = budget
    deleted_runs: list[int] = []
    events = 0
    candidates = [row[0] for row in conn.execute(SELECT_EXPIRED_RUNS, {"cutoff": cutoff, "limit": budget + 1})]
    exhausted = True
    for run_id in candidates:
        if only is not None and run_id not in only:
            exhausted = False
            continue
        if left <= 0:
            exhausted = False
            break
        bound = conn.execute(SELECT_EVENT_BOUND, {"run_id": run_id, "offset": left - 1}).fetchone()
        if bound is not None:  # `left` events or more remain: delete exactly `left`, go on next batch
            events += conn.execute(DELETE_RUN_EVENTS_UPTO, {"run_id": run_id, "seq": bound[0]}).rowcount
            exhausted = False
            break
        # Fewer than `left` events remain, so they and the run row all fit.
        deleted = conn.execute(DELETE_RUN_EVENTS, {"run_id": run_id}).rowcount
        conn.execute(DELETE_RUN, {"run_id": run_id})
        deleted_runs.append(run_id)
        events += deleted
        left -= deleted + 1
    return PruneBatch(tuple(deleted_runs), events, exhausted, time.perf_counter() - started)


def expired_run_ids(conn: Connection, cutoff: str, limit: int) -> list[int]:
    """The runs the next `prune_batch` with this cutoff and a budget of `limit - 1` may touch, in its
    order: what retention fences before it deletes anything (SPEC §14)."""
    return [row[0] for row in conn.execute(SELECT_EXPIRED_RUNS, {"cutoff": cutoff, "limit": limit})]


def prune_batch_alone(
    conn: Connection, cutoff: str, budget: int, only: frozenset[int] | None = None
) -> PruneBatch:
    """`prune_batch` in a transaction of its own, for `store.write(..., transaction=False)`.

    Sharing the group-commit transaction would make the event appends queued beside a batch wait for
    the batch's commit too; alone, appends queued before it commit before it starts. `elapsed_s`
    then includes the commit.
    """
    started = time.perf_counter()
    conn.execute(BEGIN_WRITE)
    try:
        batch = prune_batch(conn, cutoff, budget, only)
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return attrs.evolve(batch, elapsed_s=time.perf_counter() - started)


@attrs.frozen
class PrunePreview:
    """What a retention pass with this cutoff would delete right now."""

    runs: int
    events: int


def count_expired(conn: Connection, cutoff: str) -> PrunePreview:
    runs = conn.execute(COUNT_EXPIRED_RUNS, {"cutoff": cutoff}).fetchone()[0]
    events = conn.execute(COUNT_EXPIRED_EVENTS, {"cutoff": cutoff}).fetchone()[0]
    return PrunePreview(runs, events)


# ---- reclaiming space --------------------------------------------------------------------------


def freelist_count(conn: Connection) -> int:
    return conn.execute("PRAGMA freelist_count").fetchone()[0]


def incremental_vacuum(conn: SqliteConnection, max_pages: int) -> int:
    """Give up to `max_pages` free pages back to the file system; return the free pages left.

    Must run outside a transaction (`store.write(..., transaction=False)`): the pragma frees one page
    per step of its statement, and `Connection.execute` steps it only once (one page), whatever is
    fetched afterwards. `executescript` steps it to the end, in its own short transaction, but would
    first commit any transaction in progress.
    """
    conn.executescript(f"PRAGMA incremental_vacuum({int(max_pages)});")
    return freelist_count(conn)


def checkpoint_truncate(conn: Connection, busy_timeout_ms: int) -> bool:
    """Copy the WAL into the database file and truncate the WAL to zero bytes; False if readers held
    it back (then it is simply tried again after the next pass).

    Must run outside a transaction. The busy timeout is lowered meanwhile: a reader holding an old
    snapshot should delay this checkpoint, not stall every writer behind it for seconds.
    """
    previous = conn.execute("PRAGMA busy_timeout").fetchone()[0]
    conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
    try:
        busy, _log_pages, _checkpointed = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
    finally:
        conn.execute(f"PRAGMA busy_timeout = {int(previous)}")
    return busy == 0
