"""Schemathesis (a tool no one here wrote) attacks the API of a real `python -m runsvc serve`, driven
by the served OpenAPI document, logged in as an admin: no 5xx, no answer that breaks the document's
schemas or status codes, no traceback in the server log.

Two passes, so the attack cannot lock itself out: with the admin's session cookie and CSRF header for
everything but logging out and PATCH /users (which could end that session); then with an admin API
token for those two and POST /users (a token is not ended by a password change, and cannot log out:
403).
The server runs with an empty PATH, so the runs the fuzzer submits can only fail to start.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import httpx
import trio

from tests.helpers import ADMIN_PASSWORD, child_env, start_server

SCHEMATHESIS = str(Path(sys.executable).with_name("schemathesis"))
CHECKS = "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance"
EXAMPLES_PER_OPERATION = "10"
ADMIN = {"username": "admin", "password": ADMIN_PASSWORD}


async def attack(url: str, cwd: Path, headers: dict[str, str], *filters: str) -> subprocess.CompletedProcess:
    header_flags = [flag for name, value in headers.items() for flag in ("-H", f"{name}: {value}")]
    return await trio.run_process(
        [SCHEMATHESIS, "run", f"{url}/api/v1/openapi.json", "--checks", CHECKS, "-n", EXAMPLES_PER_OPERATION,
         "--seed", "1", "-w", "1", "--request-timeout", "20", *header_flags, *filters],
        capture_stdout=True, capture_stderr=True, check=False, cwd=cwd,
        env=child_env(NO_COLOR="1", SCHEMATHESIS_TELEMETRY="false"),
    )


async def test_schemathesis_finds_nothing(tmp_path):
    """Both passes pass every check; the server log has no traceback and no unhandled error."""
    empty_path = tmp_path / "empty-path"
    empty_path.mkdir()
    env = child_env(RUNSVC_ADMIN_PASSWORD=ADMIN["password"], PATH=str(empty_path))
    with trio.fail_after(600):
        async with trio.open_nursery() as nursery:
            server = await start_server(nursery, tmp_path / "data", env=env)
            async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
                login = await client.post("/api/v1/auth/login", json=ADMIN)
                csrf = login.json()["csrf_token"]
                cookie = client.cookies["runsvc_session"]
                made = await client.post("/api/v1/tokens", json={"name": "schemathesis"},
                                         headers={"X-CSRF-Token": csrf})
                secret = made.json()["secret"]
            by_session = await attack(
                server.url, tmp_path, {"Cookie": f"runsvc_session={cookie}", "X-CSRF-Token": csrf},
                "--exclude-operation-id", "post_api_v1_auth_logout",
                "--exclude-operation-id", "patch_api_v1_users_user_id",
            )
            by_token = await attack(
                server.url, tmp_path, {"Authorization": f"Bearer {secret}"},
                "--include-operation-id", "post_api_v1_auth_logout",
                "--include-operation-id", "patch_api_v1_users_user_id",
                "--include-operation-id", "post_api_v1_users",
            )
            server.send_signal()
            await server.wait()
    for result in (by_session, by_token):
        output = result.stdout.decode() + result.stderr.decode()
        assert result.returncode == 0, output
        counts = re.search(r"(\d+) generated, (\d+) passed\n", output)
        assert counts and counts.group(1) == counts.group(2) and int(counts.group(1)) > 0, output
    log = server.log_text()
    assert "Traceback" not in log and "unhandled error" not in log, log
