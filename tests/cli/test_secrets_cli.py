"""`runsvc secrets list|set|delete` (SPEC §17) as a subprocess against an in-process server: the value
comes from stdin and is never printed; refusals are one clear line and a non-zero exit."""

from __future__ import annotations

import subprocess
import sys

import trio

from tests.conftest import make_settings
from tests.helpers import PASSWORD, add_user, child_env, running_server

VALUE = "cli-Secret-value-42"


async def cli(server, *args: str, user: str = "ada", stdin: bytes = b"") -> subprocess.CompletedProcess:
    env = child_env(RUNSVC_SERVER=server.url, RUNSVC_USERNAME=user, RUNSVC_PASSWORD=PASSWORD)
    return await trio.run_process([sys.executable, "-m", "runsvc", *args], capture_stdout=True,
                                  capture_stderr=True, env=env, check=False, stdin=stdin)


async def test_set_list_replace_delete(tmp_path):
    """`set` creates then replaces (value from stdin, one line end dropped), `list` prints names, `delete`
    removes; the value is in no output, and the server holds what was piped in."""
    with trio.fail_after(60):
        async with running_server(make_settings(tmp_path)) as server:
            await add_user(server, "ada", "admin")
            created = await cli(server, "secrets", "set", "DB_PASS", stdin=VALUE.encode() + b"\n")
            assert created.returncode == 0, created.stderr
            assert created.stderr.decode().strip() == "secret DB_PASS created"
            stored = await server.services.secrets.values_for({"X": "DB_PASS"})
            assert stored == {"X": VALUE}
            replaced = await cli(server, "secrets", "set", "DB_PASS", stdin=b"two\r\nlines\r\n")
            assert replaced.returncode == 0 and b"secret DB_PASS replaced" in replaced.stderr
            assert await server.services.secrets.values_for({"X": "DB_PASS"}) == {"X": "two\r\nlines"}
            listed = await cli(server, "secrets", "list")
            assert listed.returncode == 0
            lines = listed.stdout.decode().splitlines()
            assert lines[0].split() == ["NAME", "UPDATED", "BY", "CREATED"] and lines[1].split()[0] == "DB_PASS"
            deleted = await cli(server, "secrets", "delete", "DB_PASS")
            assert deleted.returncode == 0 and b"secret DB_PASS deleted" in deleted.stderr
            assert (await cli(server, "secrets", "list")).stdout.decode().splitlines() == ["NAME  UPDATED  BY  CREATED"]
            for result in (created, replaced, listed, deleted):
                assert VALUE.encode() not in result.stdout + result.stderr


async def test_refusals_are_one_line_and_non_zero(tmp_path):
    """No value on stdin, an unknown secret, a bad name, an operator setting: one line each, exit 1."""
    with trio.fail_after(60):
        async with running_server(make_settings(tmp_path)) as server:
            await add_user(server, "ada", "admin")
            await add_user(server, "olga", "operator")
            for args, stdin, user, message in [
                (("secrets", "set", "A"), b"", "ada", "runsvc: error: no value on stdin"),
                (("secrets", "delete", "nope"), b"", "ada", "runsvc: error: DELETE /api/v1/secrets/nope: 404 no "
                                                            "secret named 'nope'"),
                (("secrets", "set", "1bad"), b"v", "ada", "runsvc: error: POST /api/v1/secrets: 400 name must be"),
                (("secrets", "set", "A"), b"v", "olga", "runsvc: error: POST /api/v1/secrets: 403"),
            ]:
                result = await cli(server, *args, user=user, stdin=stdin)
                lines = result.stderr.decode().splitlines()
                assert result.returncode == 1 and len(lines) == 1 and lines[0].startswith(message), lines
