"""The outbox side of webhooks, in the store (SPEC §17): every path that ends a run writes its delivery in
the same transaction (a deleted job's queued runs, a schedule's cancel_previous, a fire that cannot start,
the run recorder), and a run that no webhook matches costs no SQL."""

from __future__ import annotations

import datetime as dt
import json
from functools import partial

import pytest

from runsvc.http.run_json import run_json
from runsvc.jobs.fire import FirePlan, fire
from runsvc.model import Webhook
from runsvc.store import runs as run_sql
from runsvc.store import webhooks as sql
from runsvc.store.connections import connect
from runsvc.store.jobs import delete_job, get_job
from runsvc.store.migrations import migrate
from runsvc.timeutil import format_ts
from runsvc.webhooks import Outbox
from tests.jobs.ticker_helpers import insert_job

TS = "2026-01-05T12:00:00.000000Z"


@pytest.fixture(name="conn")
def _conn(tmp_path):
    conn = connect(tmp_path / "t.db")  # as the store's: foreign keys on, Variants resolved
    migrate(conn)
    yield conn
    conn.close()


def add_webhook(conn, outbox: Outbox, **fields) -> Webhook:
    values = {"url": "http://x/", "events": ["run.finished"], "job": None,
              "statuses": ["succeeded", "failed", "cancelled", "timed_out", "interrupted"], **fields}
    webhook, every = sql.create_webhook(conn, **values, seal=lambda _id: b"sealed", created_by="t", ts=TS)
    outbox.replace(every)
    return webhook


def queued_run(conn, **fields) -> int:
    run, _ = run_sql.create_run(
        conn, command=["true"], env={}, timeout_s=60, name=None, created_by="t", ts=TS, **fields
    )
    return run.id


def bodies(conn) -> list[tuple[int, dict]]:
    rows = conn.execute("SELECT webhook_id, body FROM webhook_deliveries ORDER BY id")
    return [(row[0], json.loads(row[1])) for row in rows]


def test_deleting_a_job_writes_deliveries_for_its_cancelled_queued_runs(conn):
    """The queued runs a job's deletion cancels are delivered, with their final last_seq."""
    outbox = Outbox(partial(run_json, summary=True))
    webhook = add_webhook(conn, outbox, statuses=["cancelled"])
    job_id = insert_job(conn, "doomed", None)
    run_id = queued_run(conn, job_id=job_id, job_name="doomed")
    delete_job(conn, job_id, ts=TS, reason="job deleted", outbox=outbox)
    [(webhook_id, body)] = bodies(conn)
    assert webhook_id == webhook.id and body["run"]["id"] == run_id
    assert body["run"]["status"] == "cancelled" and body["run"]["last_seq"] == 2 and "env" not in body["run"]
    assert outbox.deliveries_written == 1


def test_a_fire_that_cancels_previous_runs_and_one_that_cannot_start_write_deliveries(conn):
    """cancel_previous ends a queued run `cancelled`; a fire whose job has a required parameter ends its
    run `failed` at once: both are delivered to a webhook for the job."""
    outbox = Outbox(partial(run_json, summary=True))
    add_webhook(conn, outbox, job="nightly")
    job_id = insert_job(conn, "nightly", "* * * * *", overlap="cancel_previous")
    previous = queued_run(conn, job_id=job_id, job_name="nightly")
    job = get_job(conn, job_id)
    plan = FirePlan(job_id, dt.datetime(2026, 1, 5, 12, tzinfo=dt.UTC), job.schedule, job.schedule_from, missed=False)
    result = fire(conn, plan, TS, outbox=outbox)
    assert result.outcome == "cancelled_previous"
    [(_, cancelled)] = bodies(conn)
    assert cancelled["run"]["id"] == previous and cancelled["run"]["status"] == "cancelled"

    broken = insert_job(conn, "nightly-broken", "* * * * *", params=({"name": "ref", "required": True},))
    add_webhook(conn, outbox, job="nightly-broken", statuses=["failed"])
    job = get_job(conn, broken)
    plan = FirePlan(broken, dt.datetime(2026, 1, 5, 12, tzinfo=dt.UTC), job.schedule, job.schedule_from, missed=False)
    result = fire(conn, plan, TS, outbox=outbox)
    [_, (_, failed)] = bodies(conn)
    assert failed["run"]["id"] == result.started[0].id and failed["run"]["status"] == "failed"
    assert failed["run"]["last_seq"] == 3  # queued, the system message, failed


def test_a_run_no_webhook_matches_costs_no_sql(conn):
    """Ending a run runs the same statements whether there is no webhook or only webhooks that do not
    match it; a matching one adds exactly one."""
    outbox = Outbox(partial(run_json, summary=True))
    statements: list[str] = []
    conn.set_trace_callback(statements.append)

    def end(run_id: int) -> int:
        statements.clear()
        run_sql.finish(conn, run_id, from_status="queued", status="cancelled", exit_code=None, ts=TS, outbox=outbox,
                       appending=1)
        return len(statements)

    alone = end(queued_run(conn))
    add_webhook(conn, outbox, statuses=["failed"])
    add_webhook(conn, outbox, job="other")
    assert end(queued_run(conn)) == alone
    add_webhook(conn, outbox, statuses=["cancelled"])
    assert end(queued_run(conn)) == alone + 1
    assert len(bodies(conn)) == 1


def test_a_webhook_deleted_in_the_same_batch_never_fails_the_run_s_end(conn):
    """An outbox that still lists a webhook deleted in this transaction skips it: the run ends."""
    outbox = Outbox(partial(run_json, summary=True))
    webhook = add_webhook(conn, outbox)
    sql.delete_webhook(conn, webhook.id)  # the outbox's set is replaced only after the commit
    run_id = queued_run(conn)
    run_sql.finish(conn, run_id, from_status="queued", status="cancelled", exit_code=None, ts=TS, outbox=outbox,
                   appending=1)
    assert run_sql.get_run(conn, run_id).status == "cancelled" and bodies(conn) == []


def test_claims_lease_each_due_delivery_once(conn):
    """A claim takes due deliveries oldest first up to its limit and moves them to the lease, so a second
    claim (another sender) does not take them; the next due time left is reported."""
    outbox = Outbox(partial(run_json, summary=True))
    add_webhook(conn, outbox)
    for _ in range(3):
        run_sql.finish(conn, queued_run(conn), from_status="queued", status="cancelled", exit_code=None, ts=TS,
                       outbox=outbox, appending=1)
    lease = "2026-01-05T12:01:00.000000Z"
    first, next_due = sql.claim_due(conn, TS, lease, 2)
    second, _ = sql.claim_due(conn, TS, lease, 2)
    third, _ = sql.claim_due(conn, TS, lease, 2)
    assert [d.id for d in first] == [1, 2] and [d.id for d in second] == [3] and third == []
    assert next_due == TS  # the third was still due when the first claim looked
    assert first[0].url == "http://x/" and first[0].secret == b"sealed" and first[0].attempts == 0
    assert sql.claim_due(conn, lease, format_ts(dt.datetime(2026, 1, 6, tzinfo=dt.UTC)), 5)[0] != []

