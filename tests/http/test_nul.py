"""NUL characters: refused in every text a request gives (no process can take one in an argument or
its environment, and PostgreSQL's text cannot hold one), and turned into U+FFFD in a run's output, so
hostile output stores and streams the same on both databases."""

from __future__ import annotations

import sys

import trio

from tests.helpers import assert_error, wait_status
from tests.http.test_runs import RUNS, _operator, submit  # noqa: F401 (_operator is the `operator` fixture)

PY = sys.executable


async def test_a_nul_anywhere_in_a_request_is_a_400_naming_the_field(client, operator):
    """In an argument, a name, a nested object, a list, a login: 400, the field named."""
    headers = {"X-CSRF-Token": operator}
    bodies = {
        "command[1]": {"command": ["echo", "a\x00b"]},
        "name": {"command": ["true"], "name": "x\x00"},
        "env.K": {"command": ["true"], "env": {"K": "v\x00"}},
        "concurrency.key": {"command": ["true"], "concurrency": {"key": "k\x00", "limit": 1}},
    }
    with trio.fail_after(20):
        for field, body in bodies.items():
            response = await client.post(RUNS, json=body, headers=headers)
            assert_error(response, 400, "invalid_request", f"{field} must not contain a NUL character")
        job = {"name": "nightly", "command": ["true"], "description": "a\x00"}
        response = await client.post("/api/v1/jobs", json=job, headers=headers)
        assert_error(response, 400, "invalid_request", "description must not contain a NUL character")
        response = await client.post("/api/v1/auth/login", json={"username": "olga\x00", "password": "x"})
        assert_error(response, 400, "invalid_request", "username must not contain a NUL character")


async def test_nul_in_output_is_stored_and_streamed_as_the_replacement_character(client, operator):
    """A run printing NUL bytes ends normally; its line holds U+FFFD where the NULs were."""
    script = "import sys; sys.stdout.buffer.write(b'a\\x00b\\x00\\n'); print('after')"
    with trio.fail_after(20):
        run = await submit(client, operator, {"command": [PY, "-c", script]})
        finished = await wait_status(client, run["id"])
        events = (await client.get(f"{RUNS}/{run['id']}/events")).json()["events"]
    assert finished["status"] == "succeeded"
    assert [e["data"] for e in events if e["kind"] == "stdout"] == ["a\ufffdb\ufffd", "after"]
