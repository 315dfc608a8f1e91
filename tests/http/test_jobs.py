"""The jobs API over real HTTP (SPEC §15): create, list, read, edit, delete — normalised answers, every
refusal naming its field, and who may do what."""

from __future__ import annotations

import sys

import httpx
import pytest
import trio

from runsvc.http.routes import ROUTES
from tests.helpers import add_user, assert_error, login

JOBS = "/api/v1/jobs"
PY = sys.executable
JOB_KEYS = {"id", "name", "description", "command", "env", "timeout_s", "labels", "params", "retries",
            "concurrency", "schedule", "secrets", "created_at", "created_by", "updated_at", "next_fires", "last_run"}


@pytest.fixture(name="operator")
async def _operator(server, client):
    """`client` logged in as an operator; yields its CSRF token."""
    await add_user(server, "olga", "operator")
    return await login(client, "olga")


async def create(client, csrf, body, status=201):
    response = await client.post(JOBS, json=body, headers={"X-CSRF-Token": csrf})
    assert response.status_code == status, response.text
    return response.json()["job"] if status == 201 else response


async def patch(client, csrf, job_id, body, status=200):
    response = await client.patch(f"{JOBS}/{job_id}", json=body, headers={"X-CSRF-Token": csrf})
    assert response.status_code == status, response.text
    return response.json()["job"] if status == 200 else response


async def test_create_echoes_the_job_normalised(client, operator):
    """A minimal job is answered with every default; nested objects come back with theirs filled in."""
    with trio.fail_after(10):
        job = await create(client, operator, {"name": "backup", "command": ["true"]})
        full = await create(client, operator, {
            "name": "deploy", "description": "ship it", "command": ["deploy.sh"], "env": {"A": "1"},
            "timeout_s": 60, "labels": ["linux", "linux"],
            "params": [{"name": "target", "choices": ["prod", "staging", "prod"], "default": "staging"},
                       {"name": "ref", "required": True, "description": "git ref"}],
            "retries": {"max": 2}, "concurrency": {},
        })
    assert set(job) == JOB_KEYS
    assert job["description"] == "" and job["env"] == {} and job["timeout_s"] == 3600 and job["labels"] == []
    assert job["params"] == [] and job["retries"] is None and job["concurrency"] is None
    assert job["schedule"] is None and job["next_fires"] == [] and job["last_run"] is None
    assert job["created_by"] == "olga" and job["created_at"] == job["updated_at"]
    assert full["labels"] == ["linux"] and full["timeout_s"] == 60 and full["env"] == {"A": "1"}
    assert full["params"] == [
        {"name": "target", "description": "", "default": "staging", "required": False, "choices": ["prod", "staging"]},
        {"name": "ref", "description": "git ref", "default": None, "required": True, "choices": None},
    ]
    assert full["retries"] == {"max": 2, "delay_s": 10, "backoff": "exponential", "on": ["failed", "timed_out"]}
    assert full["concurrency"] == {"key": None, "limit": 1}


async def test_a_schedule_gets_its_defaults_and_next_fires(client, operator):
    """A schedule is echoed with timezone, overlap, enabled and missed filled in, and the job answers its
    next 5 fire times; a disabled schedule has none."""
    with trio.fail_after(10):
        job = await create(client, operator, {"name": "hourly", "command": ["true"],
                                              "schedule": {"cron": "@hourly"}})
        berlin = await create(client, operator, {
            "name": "morning", "command": ["true"],
            "schedule": {"cron": "0 9 * * *", "timezone": "Europe/Berlin", "enabled": False},
        })
        enabled = await patch(client, operator, berlin["id"],
                              {"schedule": {"cron": "0 9 * * *", "timezone": "Europe/Berlin"}})
    assert job["schedule"] == {"cron": "@hourly", "timezone": "UTC", "overlap": "skip", "enabled": True,
                               "missed": "run_once"}
    fires = job["next_fires"]
    assert len(fires) == 5 and fires == sorted(fires) and len(set(fires)) == 5
    assert all(fire.endswith(":00:00.000000Z") for fire in fires)
    assert berlin["next_fires"] == []
    # 09:00 in Berlin is 08:00 UTC in winter and 07:00 UTC in summer.
    assert all(fire[11:13] in ("07", "08") and fire[13:] == ":00:00.000000Z" for fire in enabled["next_fires"])
    assert len(enabled["next_fires"]) == 5


async def test_list_is_by_name_ignoring_case_and_names_are_unique_ignoring_case(client, operator):
    """GET /jobs sorts by name ignoring case; a second job named like another but for case is a 409, on
    create and on rename."""
    with trio.fail_after(10):
        for name in ("beta", "Alpha", "gamma"):
            await create(client, operator, {"name": name, "command": ["true"]})
        listed = (await client.get(JOBS)).json()["jobs"]
        taken = await create(client, operator, {"name": "ALPHA", "command": ["true"]}, status=409)
        renamed = await patch(client, operator, listed[2]["id"], {"name": "BETA"}, status=409)
        self_case = await patch(client, operator, listed[1]["id"], {"name": "BETA"})
    assert [job["name"] for job in listed] == ["Alpha", "beta", "gamma"]
    assert_error(taken, 409, "conflict", "a job named 'ALPHA' exists already (names are unique ignoring case)")
    assert_error(renamed, 409, "conflict")
    assert self_case["name"] == "BETA"


async def test_patch_changes_only_what_it_names_and_replaces_nested_objects_whole(client, operator):
    """A PATCH leaves the fields it does not name alone; a nested object given replaces the old one, its
    left-out fields back at their defaults; null removes it."""
    with trio.fail_after(10):
        job = await create(client, operator, {
            "name": "nightly", "command": ["true"], "env": {"A": "1"},
            "schedule": {"cron": "@daily", "overlap": "allow", "missed": "skip"},
            "retries": {"max": 3, "backoff": "fixed"},
        })
        changed = await patch(client, operator, job["id"], {"description": "new", "schedule": {"cron": "@weekly"},
                                                            "retries": {"delay_s": 5}})
        read = (await client.get(f"{JOBS}/{job['id']}")).json()["job"]
        removed = await patch(client, operator, job["id"], {"schedule": None, "retries": None})
    assert changed["description"] == "new" and changed["env"] == {"A": "1"} and changed["name"] == "nightly"
    assert changed["schedule"] == {"cron": "@weekly", "timezone": "UTC", "overlap": "skip", "enabled": True,
                                   "missed": "run_once"}
    assert changed["retries"] == {"max": 0, "delay_s": 5, "backoff": "exponential", "on": ["failed", "timed_out"]}
    assert changed["updated_at"] > job["updated_at"] and changed["created_at"] == job["created_at"]
    assert read == changed
    assert removed["schedule"] is None and removed["retries"] is None and removed["next_fires"] == []


async def test_delete_then_gone(client, operator):
    """DELETE answers 204; the job is then 404 everywhere and no longer listed."""
    with trio.fail_after(10):
        job = await create(client, operator, {"name": "once", "command": ["true"]})
        deleted = await client.delete(f"{JOBS}/{job['id']}", headers={"X-CSRF-Token": operator})
        answers = [
            await client.get(f"{JOBS}/{job['id']}"),
            await client.patch(f"{JOBS}/{job['id']}", json={"description": "x"}, headers={"X-CSRF-Token": operator}),
            await client.delete(f"{JOBS}/{job['id']}", headers={"X-CSRF-Token": operator}),
            await client.post(f"{JOBS}/{job['id']}/runs", json={}, headers={"X-CSRF-Token": operator}),
            await client.get(f"{JOBS}/{job['id']}/fires"),
        ]
        listed = (await client.get(JOBS)).json()["jobs"]
    assert deleted.status_code == 204 and deleted.content == b""
    for answer in answers:
        assert_error(answer, 404, "not_found", f"no job {job['id']}")
    assert listed == []


BAD_BODIES = [
    ({"command": ["true"]}, "name is required"),
    ({"name": "a b", "command": ["true"]}, "name must be 1-100 characters of A-Z a-z 0-9 _ . -"),
    ({"name": "x" * 101, "command": ["true"]}, "name must be 1-100 characters of A-Z a-z 0-9 _ . -"),
    ({"name": "j", "command": ["true"], "colour": "red"}, "unknown field: colour"),
    ({"name": "j", "command": ["true"], "description": "d" * 2001}, "description must be at most 2000 characters"),
    ({"name": "j", "command": []}, "command must not be empty"),
    ({"name": "j", "command": [""]}, "command[0] must not be empty"),
    ({"name": "j", "command": ["true"], "env": {"RUNSVC_RUN_ID": "1"}}, "env cannot set RUNSVC_RUN_ID"),
    ({"name": "j", "command": ["true"], "env": {"A": "x" * 70_000}},
     "env must be at most 65536 bytes of JSON (got 70009)"),
    ({"name": "j", "command": ["true"], "timeout_s": 0}, "timeout_s must be > 0"),
    ({"name": "j", "command": ["true"], "labels": ["a b"]}, "labels must be 1-64 characters of A-Z a-z 0-9 _ . - each"),
    ({"name": "j", "command": ["true"], "params": {}}, "params must be a list of objects"),
    ({"name": "j", "command": ["true"], "params": [{"name": "Env"}]},
     "params[0].name must be a lowercase letter then up to 63 of a-z 0-9 _"),
    ({"name": "j", "command": ["true"], "params": [{"name": "a"}, {"name": "a"}]},
     "params[1].name 'a' is not unique in the job"),
    ({"name": "j", "command": ["true"], "params": [{"name": "a", "type": "int"}]}, "unknown field: params[0].type"),
    ({"name": "j", "command": ["true"], "params": [{"name": "a", "default": "c", "choices": ["x", "y"]}]},
     "params[0].default must be one of its choices"),
    ({"name": "j", "command": ["true"], "params": [{"name": "a", "choices": []}]},
     "params[0].choices must not be empty"),
    ({"name": "j", "command": ["true"], "params": [{"name": "a", "default": "x\u0000"}]},
     "params[0].default must be free of NUL characters"),
    ({"name": "j", "command": ["true"], "params": [{"name": f"p{i}"} for i in range(51)]},
     "params must hold at most 50 parameters"),
    ({"name": "j", "command": ["true"], "schedule": {}}, "schedule.cron is required"),
    ({"name": "j", "command": ["true"], "schedule": {"cron": "61 * * * *"}},
     "schedule.cron is not a valid cron expression: Bad minute"),
    ({"name": "j", "command": ["true"], "schedule": {"cron": "* * * * * *"}},
     "schedule.cron is not a valid cron expression: a cron expression has five fields: minute hour day-of-month "
     "month day-of-week"),
    ({"name": "j", "command": ["true"], "schedule": {"cron": "@reboot"}},
     "schedule.cron is not a valid cron expression: unknown alias '@reboot'; use one of @hourly, @daily, @weekly, "
     "@monthly, @yearly"),
    ({"name": "j", "command": ["true"], "schedule": {"cron": "@daily", "timezone": "Mars/Olympus"}},
     "schedule.timezone: unknown time zone 'Mars/Olympus'"),
    ({"name": "j", "command": ["true"], "schedule": {"cron": "@daily", "overlap": "queue"}},
     "schedule.overlap must be one of skip, allow, cancel_previous"),
    ({"name": "j", "command": ["true"], "schedule": {"cron": "@daily", "missed": "all"}},
     "schedule.missed must be one of run_once, skip"),
    ({"name": "j", "command": ["true"], "schedule": {"cron": "@daily"}, "params": [{"name": "ref", "required": True}]},
     "params[0] (ref) is required without a default, which a job with a schedule cannot have: a scheduled run "
     "gets no values and could never start"),
    ({"name": "j", "command": ["true"], "retries": {"max": 11}}, "retries.max must be <= 10"),
    ({"name": "j", "command": ["true"], "concurrency": {"limit": 0}}, "concurrency.limit must be >= 1"),
    ({"name": "j", "command": ["true"], "concurrency": {"key": ""}}, "concurrency.key must be at least 1 characters"),
]


@pytest.mark.parametrize(("body", "message"), BAD_BODIES)
async def test_bad_job_bodies_are_400_naming_the_field(client, operator, body, message):
    """Each broken rule of a job body is a 400 whose message names the field and the rule; nothing is saved."""
    with trio.fail_after(10):
        response = await create(client, operator, body, status=400)
        listed = (await client.get(JOBS)).json()["jobs"]
    assert_error(response, 400, "invalid_request", message)
    assert listed == []


async def test_patch_is_checked_against_the_whole_job(client, operator):
    """An edit that would leave a scheduled job with a required parameter without default is a 400 and
    changes nothing, whichever of the two fields it touches; a PATCH field of the wrong type is a 400."""
    with trio.fail_after(10):
        scheduled = await create(client, operator, {"name": "s", "command": ["true"],
                                                    "schedule": {"cron": "@daily"}})
        with_param = await create(client, operator, {"name": "p", "command": ["true"],
                                                     "params": [{"name": "ref", "required": True}]})
        bad_params = await patch(client, operator, scheduled["id"], {"params": [{"name": "ref", "required": True}]},
                                 status=400)
        bad_schedule = await patch(client, operator, with_param["id"], {"schedule": {"cron": "@daily"}}, status=400)
        bad_type = await patch(client, operator, with_param["id"], {"name": None}, status=400)
        unknown = await patch(client, operator, with_param["id"], {"id": 7}, status=400)
        defaulted = await patch(client, operator, with_param["id"], {
            "schedule": {"cron": "@daily"}, "params": [{"name": "ref", "required": True, "default": "main"}]})
        unchanged = (await client.get(f"{JOBS}/{scheduled['id']}")).json()["job"]
    assert_error(bad_params, 400, "invalid_request")
    assert "params[0] (ref) is required without a default" in bad_params.json()["error"]["message"]
    assert_error(bad_schedule, 400, "invalid_request")
    assert_error(bad_type, 400, "invalid_request", "name must be a string")
    assert_error(unknown, 400, "invalid_request", "unknown field: id")
    assert defaulted["schedule"]["cron"] == "@daily" and defaulted["params"][0]["default"] == "main"
    assert unchanged == scheduled


async def test_viewers_read_and_only_operators_and_admins_write(server, client, operator):
    """A viewer lists and reads jobs, their fires and the cron preview, and gets 403 for every change;
    an anonymous caller gets 401."""
    with trio.fail_after(20):
        job = await create(client, operator, {"name": "j", "command": ["true"]})
        await add_user(server, "vera", "viewer")
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as viewer, \
                httpx.AsyncClient(base_url=server.url, timeout=10) as anonymous:
            csrf = {"X-CSRF-Token": await login(viewer, "vera")}
            reads = [
                await viewer.get(JOBS), await viewer.get(f"{JOBS}/{job['id']}"),
                await viewer.get(f"{JOBS}/{job['id']}/fires"),
                await viewer.get("/api/v1/schedule/preview", params={"cron": "@daily"}),
            ]
            writes = [
                await viewer.post(JOBS, json={"name": "k", "command": ["true"]}, headers=csrf),
                await viewer.patch(f"{JOBS}/{job['id']}", json={"description": "x"}, headers=csrf),
                await viewer.delete(f"{JOBS}/{job['id']}", headers=csrf),
                await viewer.post(f"{JOBS}/{job['id']}/runs", json={}, headers=csrf),
            ]
            anonymous_answers = [await anonymous.get(JOBS),
                                 await anonymous.get("/api/v1/schedule/preview", params={"cron": "@daily"})]
        after = (await client.get(f"{JOBS}/{job['id']}")).json()["job"]
    assert [answer.status_code for answer in reads] == [200, 200, 200, 200]
    for answer in writes:
        assert_error(answer, 403, "forbidden")
    for answer in anonymous_answers:
        assert_error(answer, 401, "unauthenticated")
    assert after == job


async def test_every_jobs_route_needs_a_session_and_changes_need_the_csrf_header(server, client, operator):
    """Without a session every jobs route answers 401; with one, a change without the CSRF header is a
    403 `csrf` and changes nothing."""
    with trio.fail_after(20):
        job = await create(client, operator, {"name": "j", "command": ["true"]})
        routes = [route for route in ROUTES if route.path.startswith((JOBS, "/api/v1/schedule"))]
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as anonymous:
            anonymous_answers = [
                await anonymous.request(route.method, route.path.replace("<int:job_id>", str(job["id"])),
                                        json={} if route.method in ("POST", "PATCH") else None)
                for route in routes
            ]
        no_csrf = [
            await client.post(JOBS, json={"name": "k", "command": ["true"]}),
            await client.patch(f"{JOBS}/{job['id']}", json={"description": "x"}),
            await client.delete(f"{JOBS}/{job['id']}"),
            await client.post(f"{JOBS}/{job['id']}/runs", json={}),
        ]
        after = (await client.get(JOBS)).json()["jobs"]
    assert len(routes) == 8
    for answer in anonymous_answers:
        assert_error(answer, 401, "unauthenticated")
    for answer in no_csrf:
        assert_error(answer, 403, "csrf")
    assert after == [job]
