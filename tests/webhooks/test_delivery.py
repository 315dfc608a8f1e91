"""Webhook deliveries over real HTTP to a real receiver on 127.0.0.1 (SPEC §17): the request (body,
headers, signature), what it is recorded as, retries, and receivers that fail, redirect or hang."""

from __future__ import annotations

import json

import trio

from tests.helpers import PASSWORD, add_user, login
from tests.webhooks.helpers import (
    create_webhook,
    deliveries,
    finished_run,
    readme_verify,
    wait_deliveries,
)
from tests.webhooks.receiver import Answer


async def test_a_finished_run_is_posted_signed_with_its_summary(server, admin, receiver):
    """The POST carries the run summary (no env) as JSON, the event and delivery headers, and a
    signature that the README's verify() accepts; the delivery is recorded delivered after 1 attempt."""
    verify = readme_verify()
    with trio.fail_after(20):
        webhook, secret = await create_webhook(admin, {"url": f"{receiver.url}/hook"})
        assert secret.startswith("whsec_")
        run = await finished_run(admin, "print('hi')", env={"TOKEN": "not-in-the-body"}, name="greet")
        [request] = await receiver.wait_for("/hook")
        [delivery] = await wait_deliveries(admin, webhook["id"], lambda found: found and found[0]["delivered_at"])
    assert request.headers["content-type"] == "application/json"
    assert request.headers["x-runsvc-event"] == "run.finished"
    assert request.headers["x-runsvc-delivery"] == str(delivery["id"])
    event = verify(secret, request.body, request.headers["x-runsvc-signature"])
    assert event["type"] == "run.finished" and set(event) == {"type", "run"}
    listed = (await admin.get("/api/v1/runs")).json()["runs"][0]
    assert event["run"] == listed  # the summary as GET /runs shows it, last_seq included
    assert "env" not in event["run"] and b"not-in-the-body" not in request.body
    assert event["run"]["id"] == run["id"] and event["run"]["status"] == "succeeded"
    assert delivery["run_id"] == run["id"] and delivery["event"] == "run.finished"
    assert delivery["attempts"] == 1 and delivery["last_status_code"] == 200
    assert delivery["last_error"] is None and delivery["next_try_at"] is None
    try:
        verify("whsec_wrong", request.body, request.headers["x-runsvc-signature"])
    except ValueError:
        pass
    else:
        raise AssertionError("a wrong secret verified")
    try:
        verify(secret, request.body + b" ", request.headers["x-runsvc-signature"])
    except ValueError:
        pass
    else:
        raise AssertionError("a changed body verified")


async def test_a_given_secret_signs_and_webhooks_match_job_and_status(server, admin, receiver):
    """A secret given at creation signs; a webhook for other statuses or another job gets nothing, and
    one for the run's job and status gets it."""
    verify = readme_verify()
    with trio.fail_after(20):
        job = (await admin.post("/api/v1/jobs", json={"name": "nightly", "command": ["true"]})).json()["job"]
        everything, secret = await create_webhook(admin, {"url": f"{receiver.url}/all", "secret": "s3cret ✓"})
        assert secret == "s3cret ✓"
        failures, _ = await create_webhook(admin, {"url": f"{receiver.url}/failed", "statuses": ["failed"]})
        other_job, _ = await create_webhook(admin, {"url": f"{receiver.url}/other", "job": "weekly"})
        this_job, _ = await create_webhook(
            admin, {"url": f"{receiver.url}/nightly", "job": "nightly", "statuses": ["succeeded"]}
        )
        started = await admin.post(f"/api/v1/jobs/{job['id']}/runs", json={})
        assert started.status_code == 201, started.text
        [for_job] = await receiver.wait_for("/nightly")
        [for_all] = await receiver.wait_for("/all")
    assert verify("s3cret ✓", for_all.body, for_all.headers["x-runsvc-signature"])["run"]["job_name"] == "nightly"
    assert json.loads(for_job.body)["run"]["id"] == started.json()["run"]["id"]
    # The outbox was written in the run's end transaction, before these deliveries were sent.
    assert await deliveries(admin, failures["id"]) == [] and await deliveries(admin, other_job["id"]) == []
    assert receiver.at("/failed") == [] and receiver.at("/other") == []
    assert len(await deliveries(admin, this_job["id"])) == 1 and len(await deliveries(admin, everything["id"])) == 1


async def test_failures_are_retried_with_backoff_until_delivered(server, admin, receiver):
    """A 500, then a refused redirect (not followed), then a 204: three POSTs of the same delivery, the
    last one delivering it; each failure recorded with its code, counted in the metric."""
    sender = server.services.webhook_sender
    sender.first_wait_s = 0.05  # 0.05 s, then 0.1 s: backoff without waiting 10 s and 20 s
    receiver.answers["/flaky"] = [Answer(500), Answer(302, location=f"{receiver.url}/elsewhere"), Answer(204)]
    with trio.fail_after(20):
        webhook, _ = await create_webhook(admin, {"url": f"{receiver.url}/flaky"})
        await finished_run(admin, "raise SystemExit(3)")
        requests = await receiver.wait_for("/flaky", 3)
        [delivery] = await wait_deliveries(admin, webhook["id"], lambda found: found and found[0]["delivered_at"])
    assert len({request.headers["x-runsvc-delivery"] for request in requests}) == 1
    assert len({request.body for request in requests}) == 1
    assert json.loads(requests[0].body)["run"]["status"] == "failed"
    assert receiver.at("/elsewhere") == []  # the redirect was not followed
    assert delivery["attempts"] == 3 and delivery["last_status_code"] == 204 and delivery["last_error"] is None
    assert sender.outcomes == {"failed": 2, "delivered": 1}
    metrics = (await admin.get("/metrics")).text
    assert 'runsvc_webhook_deliveries_total{outcome="failed"} 2.0' in metrics
    assert 'runsvc_webhook_deliveries_total{outcome="delivered"} 1.0' in metrics


async def test_a_failed_attempt_is_recorded_with_its_next_try(server, admin, receiver):
    """After a 503 the delivery shows 1 attempt, the code, the error and a next_try_at about
    first_wait_s later; a redirect's error says it was not followed."""
    sender = server.services.webhook_sender
    sender.first_wait_s = 3600.0
    receiver.answers["/down"] = [Answer(503)]
    receiver.answers["/moved"] = [Answer(301, location="https://example.com/")]
    with trio.fail_after(20):
        down, _ = await create_webhook(admin, {"url": f"{receiver.url}/down"})
        moved, _ = await create_webhook(admin, {"url": f"{receiver.url}/moved"})
        await finished_run(admin)
        [failed] = await wait_deliveries(admin, down["id"], lambda found: found and found[0]["attempts"] == 1)
        [redirected] = await wait_deliveries(admin, moved["id"], lambda found: found and found[0]["attempts"] == 1)
    assert failed["last_status_code"] == 503 and failed["last_error"] == "HTTP 503"
    assert failed["delivered_at"] is None and failed["next_try_at"] is not None
    assert redirected["last_status_code"] == 301 and "not followed" in redirected["last_error"]
    from runsvc.timeutil import parse_ts, utcnow

    wait = (parse_ts(failed["next_try_at"]) - utcnow()).total_seconds()
    assert 3500 < wait <= 3600


async def test_a_hanging_receiver_blocks_neither_other_webhooks_nor_runs(server, admin, receiver):
    """While one receiver never answers (and another is slow), runs keep ending and the other webhook
    gets every delivery; the hanging attempt ends at the timeout as a failure."""
    sender = server.services.webhook_sender
    sender.timeout_s = 2.0
    sender.first_wait_s = 3600.0
    receiver.answers["/hang"] = [Answer(hang=True)]
    receiver.answers["/slow"] = [Answer(delay_s=0.5)]
    with trio.fail_after(30):
        hanging, _ = await create_webhook(admin, {"url": f"{receiver.url}/hang"})
        await create_webhook(admin, {"url": f"{receiver.url}/slow"})
        await create_webhook(admin, {"url": f"{receiver.url}/ok"})
        await finished_run(admin)
        await receiver.wait_for("/hang")
        for _ in range(3):  # runs end and are delivered elsewhere while /hang holds its attempt
            await finished_run(admin)
        await receiver.wait_for("/ok", 4)
        assert len(receiver.at("/hang")) <= 4
        [*_, first] = await wait_deliveries(
            admin, hanging["id"], lambda found: len(found) == 4 and found[-1]["attempts"] == 1
        )
        await receiver.wait_for("/slow", 4)
    assert first["last_error"] == "no answer within 2 s" and first["last_status_code"] is None


async def test_viewers_and_operators_cannot_see_deliveries(server, admin, client, receiver):
    """The deliveries of a webhook are an admin's: viewers and operators get 403."""
    with trio.fail_after(10):
        webhook, _ = await create_webhook(admin, {"url": f"{receiver.url}/x"})
        for username, role in (("vic", "viewer"), ("otto", "operator")):
            await add_user(server, username, role)
            client.cookies.clear()
            await login(client, username, PASSWORD)
            response = await client.get(f"/api/v1/webhooks/{webhook['id']}/deliveries")
            assert response.status_code == 403, response.text


async def test_the_sender_looks_only_when_deliveries_were_written(server, admin, receiver):
    """Runs that no webhook matches do not wake the sender (no SQL of its own); a run that one matches
    wakes it at once (no polling in between)."""
    sender = server.services.webhook_sender
    with trio.fail_after(20):
        await create_webhook(admin, {"url": f"{receiver.url}/failures", "statuses": ["failed"]})
        looks = sender.looks
        for _ in range(3):
            await finished_run(admin)  # succeeded: no match
        assert sender.looks == looks
        await finished_run(admin, "raise SystemExit(1)")
        await receiver.wait_for("/failures")
    assert sender.looks > looks
