"""A run's JSON is made from the `Run` type in one place: every answer and feed frame has its fields in
its order, the OpenAPI document names them, and the CLI reads them back."""

from __future__ import annotations

import json

import attrs
import pytest
import trio

from runsvc.http.api_schemas import SCHEMAS
from runsvc.http.run_json import run_from_json, run_json
from runsvc.model import Run
from tests.helpers import add_user, login
from tests.http.test_live import open_ws

RUNS = "/api/v1/runs"
KEYS = ["id", "name", "command", "env", "status", "exit_code", "created_at", "started_at", "ended_at",
        "created_by", "last_seq", "timeout_s", "labels", "executor", "attempt", "job_id", "job_name", "trigger",
        "retry_of", "try", "not_before", "scheduled_for", "params", "retries", "concurrency", "secrets",
        "waiting_for"]
SUMMARY_KEYS = [key for key in KEYS if key != "env"]

RUN = Run(
    id=7, name="nightly", command=("make", "test"), env={"MODE": "ci"}, status="queued", exit_code=None,
    created_at="2026-12-03T10:00:00.000Z", started_at=None, ended_at=None, created_by="olga", last_seq=1,
    timeout_s=3600.0, labels=("gpu",), executor=None, attempt=0, waiting_for="an agent with labels gpu",
)


async def test_every_answer_and_feed_frame_carries_the_run_fields_in_order(server, client):
    """Submit, read and cancel answer the whole run; the list and the runs feed its summary (no env):
    the same keys in the same order everywhere."""
    await add_user(server, "olga", "operator")
    csrf = {"X-CSRF-Token": await login(client, "olga")}
    with trio.fail_after(20):
        async with open_ws(server, "/api/v1/runs/feed/ws", cookie=client.cookies["runsvc_session"],
                           queue=64) as feed:
            while server.services.runs.feed.statistics().watchers < 1:
                await trio.sleep(0.01)
            submitted = await client.post(RUNS, json={"command": ["true"], "labels": ["gpu"]}, headers=csrf)
            run_id = submitted.json()["run"]["id"]
            read = await client.get(f"{RUNS}/{run_id}")
            listed = await client.get(RUNS)
            cancelled = await client.post(f"{RUNS}/{run_id}/cancel", headers=csrf)
            frames = [json.loads(await feed.get_message()) for _ in range(2)]
    for answer in (submitted, read, cancelled):
        assert list(answer.json()["run"]) == KEYS, answer.text
    assert list(listed.json()["runs"][0]) == SUMMARY_KEYS
    assert [list(frame["run"]) for frame in frames] == [SUMMARY_KEYS, SUMMARY_KEYS]
    assert frames[0]["run"] == listed.json()["runs"][0]
    assert cancelled.json()["run"]["status"] == frames[1]["run"]["status"] == "cancelled"


def test_run_json_is_the_fields_of_run_and_openapi_names_them():
    """run_json has one key per Run field (env left out of a summary), JSON types only; the OpenAPI Run
    and RunSummary schemas name exactly those keys, so a new field cannot go undocumented."""
    assert [field.metadata.get("json", field.name) for field in attrs.fields(Run)] == KEYS
    assert list(run_json(RUN)) == KEYS and list(run_json(RUN, summary=True)) == SUMMARY_KEYS
    assert run_json(RUN)["command"] == ["make", "test"] and run_json(RUN)["labels"] == ["gpu"]
    assert json.loads(json.dumps(run_json(RUN))) == run_json(RUN)
    assert set(SCHEMAS["Run"]["properties"]) == set(KEYS)
    assert set(SCHEMAS["RunSummary"]["properties"]) == set(SUMMARY_KEYS)


def test_run_from_json_reads_back_what_run_json_made():
    """The CLI's reading of a run object gives back the Run (a summary without env); keys it does not
    know are ignored, a missing field is a KeyError naming it."""
    assert run_from_json(json.loads(json.dumps(run_json(RUN)))) == RUN
    assert run_from_json(run_json(RUN, summary=True)) == attrs.evolve(RUN, env=None)
    assert run_from_json({**run_json(RUN), "a_later_field": 3}) == RUN
    without_status = {key: value for key, value in run_json(RUN).items() if key != "status"}
    with pytest.raises(KeyError, match="status"):
        run_from_json(without_status)
