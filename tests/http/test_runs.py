"""The runs API over real HTTP: submit, list, read, cancel, events, log — and every refusal."""

from __future__ import annotations

import sys

import pytest
import trio

from runsvc.http.routes import ROUTES, Access
from tests.helpers import add_user, assert_error, login, wait_status

RUNS = "/api/v1/runs"
PY = sys.executable


@pytest.fixture(name="operator")
async def _operator(server, client):
    """`client` logged in as an operator; yields its CSRF token."""
    await add_user(server, "olga", "operator")
    return await login(client, "olga")


async def submit(client, csrf, body, status=201):
    response = await client.post(RUNS, json=body, headers={"X-CSRF-Token": csrf})
    assert response.status_code == status, response.text
    return response.json()["run"] if status == 201 else response


async def test_submit_run_and_read_everything_back(client, operator):
    """A submitted run runs; /runs/{id}, /events and /log give back its status and every line."""
    script = "import sys\nfor i in (1, 2, 3): print(i, flush=True)\nprint('warn', file=sys.stderr)"
    with trio.fail_after(20):
        run = await submit(client, operator, {"command": [PY, "-c", script], "name": "count"})
        assert run["status"] == "queued" and run["created_by"] == "olga" and run["name"] == "count"
        assert run["timeout_s"] == 3600 and run["env"] == {} and run["last_seq"] == 1
        assert set(run) == {"id", "name", "command", "env", "status", "exit_code", "created_at",
                            "started_at", "ended_at", "created_by", "last_seq", "timeout_s",
                            "labels", "executor", "attempt", "job_id", "job_name", "trigger", "retry_of",
                            "try", "not_before", "scheduled_for", "params", "retries", "concurrency",
                            "secrets", "waiting_for"}
        assert run["trigger"] == "api" and run["try"] == 1 and run["params"] == {}
        finished = await wait_status(client, run["id"])
        assert finished["status"] == "succeeded" and finished["exit_code"] == 0
        events = (await client.get(f"{RUNS}/{run['id']}/events")).json()
        log = await client.get(f"{RUNS}/{run['id']}/log")
    assert events["complete"] is True
    assert [e["seq"] for e in events["events"]] == list(range(1, finished["last_seq"] + 1))
    assert events["last_seq"] == finished["last_seq"]
    stdout = [e["data"] for e in events["events"] if e["kind"] == "stdout"]
    assert stdout == ["1", "2", "3"]
    assert log.status_code == 200 and log.headers["content-type"].startswith("text/plain")
    assert sorted(log.text.splitlines()) == ["1", "2", "3", "warn"]


async def test_events_paging(client, operator):
    """after_seq and limit page through events; complete only once the terminal event is included."""
    with trio.fail_after(20):
        run = await submit(client, operator, {"command": [PY, "-c", "print('a'); print('b')"]})
        finished = await wait_status(client, run["id"])
        first = (await client.get(f"{RUNS}/{run['id']}/events", params={"limit": 2})).json()
        rest = (await client.get(f"{RUNS}/{run['id']}/events", params={"after_seq": 2})).json()
        past = (await client.get(f"{RUNS}/{run['id']}/events", params={"after_seq": 99})).json()
    assert [e["seq"] for e in first["events"]] == [1, 2] and first["complete"] is False
    assert first["last_seq"] == 2
    assert rest["events"][0]["seq"] == 3 and rest["complete"] is True
    assert rest["last_seq"] == finished["last_seq"]
    assert past == {"events": [], "last_seq": 99, "complete": True}


async def test_list_newest_first_with_filter_and_pages(client, operator):
    """GET /runs is newest first, filters by status, and pages with before/next."""
    with trio.fail_after(20):
        ids = [(await submit(client, operator, {"command": [PY, "-c", "pass"]}))["id"] for _ in range(5)]
        for run_id in ids:
            await wait_status(client, run_id)
        page1 = (await client.get(RUNS, params={"limit": 2})).json()
        page2 = (await client.get(RUNS, params={"limit": 2, "before": page1["next"]})).json()
        page3 = (await client.get(RUNS, params={"limit": 2, "before": page2["next"]})).json()
        succeeded = (await client.get(RUNS, params={"status": "succeeded,failed"})).json()
        queued = (await client.get(RUNS, params={"status": "queued"})).json()
    assert [r["id"] for r in page1["runs"] + page2["runs"] + page3["runs"]] == ids[::-1]
    assert page3["next"] is None
    assert len(succeeded["runs"]) == 5 and queued["runs"] == []


async def test_cancel_running_and_finished(client, operator):
    """Cancelling a running run answers 202 and it ends cancelled; cancelling it again is 409."""
    with trio.fail_after(30):
        run = await submit(client, operator, {"command": [PY, "-c", "import time; time.sleep(60)"]})
        await wait_status(client, run["id"], {"running"})
        response = await client.post(f"{RUNS}/{run['id']}/cancel", headers={"X-CSRF-Token": operator})
        assert response.status_code == 202, response.text
        finished = await wait_status(client, run["id"])
        again = await client.post(f"{RUNS}/{run['id']}/cancel", headers={"X-CSRF-Token": operator})
    assert finished["status"] == "cancelled" and finished["exit_code"] == -15
    assert_error(again, 409, "conflict")


async def test_unknown_run_is_404(client, operator):
    """Every per-run route answers 404 for an id that does not exist."""
    with trio.fail_after(10):
        for path in ("", "/events", "/log"):
            assert_error(await client.get(f"{RUNS}/424242{path}"), 404, "not_found")
        response = await client.post(f"{RUNS}/424242/cancel", headers={"X-CSRF-Token": operator})
    assert_error(response, 404, "not_found")


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({}, "command is required"),
        ({"command": []}, "command must not be empty"),
        ({"command": "ls"}, "command must be a list of strings"),
        ({"command": ["ls", 3]}, "command[1] must be a string"),
        ({"command": ["ls"], "env": {"A": 1}}, "env.A must be a string"),
        ({"command": ["ls"], "env": {"RUNSVC_RUN_ID": "9"}}, "env cannot set RUNSVC_RUN_ID"),
        ({"command": ["ls"], "timeout_s": 0}, "timeout_s must be > 0"),
        ({"command": ["ls"], "timeout_s": 8 * 86400}, "timeout_s must be <= 604800"),
        ({"command": ["ls"], "timeout_s": "5"}, "timeout_s must be a number"),
        ({"command": ["ls"], "name": "x" * 201}, "name must be at most 200 characters"),
        ({"command": ["ls"], "colour": "red"}, "unknown field: colour"),
    ],
)
async def test_submit_validation(client, operator, body, message):
    """Each invalid submission is a 400 naming the field."""
    with trio.fail_after(10):
        response = await submit(client, operator, body, status=400)
    assert_error(response, 400, "invalid_request")
    assert message in response.json()["error"]["message"]


@pytest.mark.parametrize(
    "params",
    [{"limit": "0"}, {"limit": "501"}, {"limit": "x"}, {"before": "-1"}, {"status": "sleeping"}, {"sort": "id"}],
)
async def test_list_validation(client, operator, params):
    """Bad list parameters are a 400, not a 500."""
    with trio.fail_after(10):
        response = await client.get(RUNS, params=params)
    assert_error(response, 400, "invalid_request")


@pytest.mark.parametrize("params", [{"after_seq": "-1"}, {"limit": "10001"}, {"after_seq": "x"}])
async def test_events_validation(client, operator, params):
    """Bad events parameters are a 400."""
    with trio.fail_after(10):
        run = await submit(client, operator, {"command": [PY, "-c", "pass"]})
        response = await client.get(f"{RUNS}/{run['id']}/events", params=params)
    assert_error(response, 400, "invalid_request")


async def test_viewer_reads_but_cannot_submit_or_cancel(server, client, operator):
    """A viewer may read runs but gets 403 on submit and cancel; no CSRF token is 403 csrf first."""
    with trio.fail_after(10):
        run = await submit(client, operator, {"command": [PY, "-c", "pass"]})
        await add_user(server, "vera", "viewer")
        csrf = await login(client, "vera")
        assert (await client.get(f"{RUNS}/{run['id']}")).status_code == 200
        assert (await client.get(RUNS)).status_code == 200
        submit_answer = await client.post(RUNS, json={"command": ["ls"]}, headers={"X-CSRF-Token": csrf})
        cancel_answer = await client.post(f"{RUNS}/{run['id']}/cancel", headers={"X-CSRF-Token": csrf})
        no_csrf = await client.post(RUNS, json={"command": ["ls"]})
    assert_error(submit_answer, 403, "forbidden")
    assert_error(cancel_answer, 403, "forbidden")
    assert_error(no_csrf, 403, "csrf")


async def test_no_session_is_401_on_every_runs_route(client):
    """Without a session every runs route answers 401."""
    with trio.fail_after(10):
        for route in ROUTES:
            if not route.path.startswith(RUNS):
                continue
            assert route.access in (Access.VIEWER, Access.OPERATOR)
            path = route.path.replace("<int:run_id>", "1")
            response = await client.request(route.method, path, json={} if route.method == "POST" else None)
            assert_error(response, 401, "unauthenticated")
