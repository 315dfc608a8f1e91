"""Runs on an agent do not get the agent's powers (SPEC §11, §14; issue 20 item 3): a real server and a
real `python -m runsvc agent`; a run tries to read the agent's secret."""

from __future__ import annotations

import json
import os
import pwd
import signal
import stat
from pathlib import Path

import pytest
import trio

from tests.e2e.agent_helpers import admin_client, new_token, start_agent, submit, wait_status
from tests.helpers import TERMINAL, start_server

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (--run-as-user)")


def mode(path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


async def _run_output(client, command: list[str]) -> tuple[dict, str]:
    run = await submit(client, command)
    done = await wait_status(client, run["id"], TERMINAL)
    events = (await client.get(f"/api/v1/runs/{run['id']}/events")).json()["events"]
    return done, "\n".join(f"{e['kind']}: {e['data']}" for e in events)


async def test_a_run_cannot_read_agent_json_through_its_relative_path(tmp_path):
    """A run's work dir is outside the agent's state dir (under the work dir, 0711), so `../../agent.json`
    from it reads nothing; the state dir is 0700 (narrowed when it existed wider), agent.json 0600, and
    the enrollment token comes from stdin (`--enroll -`), not from argv."""
    state_dir = tmp_path / "agent"
    state_dir.mkdir(mode=0o755)
    work_dir = tmp_path / "agent-work"
    with trio.fail_after(90):
        async with trio.open_nursery() as nursery:
            server = await start_server(nursery, tmp_path / "data", "--local-executor", "false")
            async with admin_client(server.url) as client:
                token = await new_token(client)
                agent = await start_agent(nursery, server.url, state_dir, "--work-dir", str(work_dir),
                                          "--enroll", "-", "--name", "iso", stdin=f"{token}\n".encode())
                assert token.encode() not in Path(f"/proc/{agent.process.pid}/cmdline").read_bytes()
                await agent.wait_for("msg=connected")
                assert "command line" not in agent.log_text()  # no warning about a token in argv
                secret = json.loads((state_dir / "agent.json").read_text())["secret"]
                assert mode(state_dir) == 0o700 and mode(state_dir / "agent.json") == 0o600
                done, output = await _run_output(client, [
                    "sh", "-c", "pwd; cat ../../agent.json ../agent.json; echo done"])
                assert secret not in output
                cwd = next(line for line in output.splitlines() if line.startswith("stdout: ")).split(" ", 1)[1]
                assert not cwd.startswith(str(state_dir) + os.sep), cwd
                assert cwd.startswith(str(work_dir) + os.sep), cwd
                assert mode(work_dir) == 0o711
                assert "stdout: done" in output
                agent.process.send_signal(signal.SIGTERM)
                assert await agent.process.wait() == 0
            server.send_signal(signal.SIGTERM)


@needs_root
async def test_a_run_as_another_user_cannot_read_the_agent_secret(tmp_path):
    """With `--run-as-user nobody` a run reads neither agent.json (by its relative path from the work dir
    or the state dir's absolute path) nor the agent's /proc environ; it runs as nobody in a directory
    it owns. The token comes from a file (`--enroll-token-file`)."""
    nobody = pwd.getpwnam("nobody")
    state_dir = tmp_path / "agent"
    token_file = tmp_path / "token"
    with trio.fail_after(90):
        async with trio.open_nursery() as nursery:
            server = await start_server(nursery, tmp_path / "data", "--local-executor", "false")
            async with admin_client(server.url) as client:
                token_file.write_text(await new_token(client) + "\n")
                agent = await start_agent(nursery, server.url, state_dir, "--enroll-token-file", str(token_file),
                                          "--work-dir", str(tmp_path / "agent-work"), "--run-as-user", "nobody")
                await agent.wait_for("msg=connected")
                secret = json.loads((state_dir / "agent.json").read_text())["secret"]
                script = (
                    "id -u; stat -c %u .; "
                    f"cat ../../agent.json ../agent.json {state_dir}/agent.json 2>&1; "
                    "cat /proc/$PPID/environ 2>&1; echo done"
                )
                done, output = await _run_output(client, ["/bin/sh", "-c", script])
                assert secret not in output
                assert done["status"] == "succeeded", output
                stdout = [line.removeprefix("stdout: ") for line in output.splitlines() if line.startswith("stdout")]
                assert stdout[:2] == [str(nobody.pw_uid), str(nobody.pw_uid)]
                assert stdout[-1] == "done"
                assert "runs run as root" not in agent.log_text()
                agent.process.send_signal(signal.SIGTERM)
                assert await agent.process.wait() == 0
            server.send_signal(signal.SIGTERM)
