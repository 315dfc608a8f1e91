"""Secrets with real processes (SPEC §17): an agent's run gets the values and its output is masked like a
local run's; `serve` refuses a bad or missing key file with one line and an exit status."""

from __future__ import annotations

import signal
import subprocess
import sys

import trio

from tests.e2e.agent_helpers import admin_client, all_events, enrolled_agent, submit, wait_status
from tests.helpers import ADMIN_PASSWORD, TERMINAL, child_env, start_server
from tests.secrets import leaky


async def test_agent_run_gets_the_values_and_the_server_stores_only_masked_output(tmp_path):
    """On an agent: the child has the values, every leak of them is `***` in what the server stored, and
    neither the server's log nor its database holds a value in clear."""
    data = tmp_path / "data"
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            server = await start_server(nursery, data, "--local-executor", "false")
            async with admin_client(server.url) as client:
                for name, value in (("db", leaky.VALUE), ("tls", leaky.MULTI)):
                    answer = await client.post("/api/v1/secrets", json={"name": name, "value": value})
                    assert answer.status_code == 201, answer.text
                agent = await enrolled_agent(nursery, client, server.url, tmp_path / "agent", "vault")
                run = await submit(client, leaky.COMMAND, secrets=leaky.SECRETS)
                done = await wait_status(client, run["id"], TERMINAL)
                assert done["status"] == "succeeded" and done["executor"] == "agent:vault", done
                events = await all_events(client, run["id"])
                assert leaky.output_by_stream(events) == leaky.expected_by_stream()
                agent.process.send_signal(signal.SIGTERM)
                assert await agent.process.wait() == 0
            server.send_signal(signal.SIGTERM)
            assert await server.wait() == 0
    raw = b"".join(path.read_bytes() for path in data.glob("runsvc.db*"))
    assert leaky.VALUE.encode() not in raw and leaky.VALUE not in server.log_text()


def _serve(data_dir, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """`serve` expected to refuse to start (it would otherwise run until the timeout)."""
    return subprocess.run(
        [sys.executable, "-m", "runsvc", "serve", "--port", "0", "--data-dir", str(data_dir), *args],
        env=child_env(RUNSVC_ADMIN_PASSWORD=ADMIN_PASSWORD, **env), capture_output=True, text=True, timeout=30,
    )


def _one_line(result: subprocess.CompletedProcess[str]) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    return lines[0]


def test_a_key_file_of_the_wrong_size_or_unreadable_is_a_bad_setting(tmp_path):
    """Exit status 2 and one line naming the file, for a short key (flag) and a directory (environment
    variable); the database is never opened."""
    short = tmp_path / "short.key"
    short.write_bytes(b"x" * 31)
    result = _serve(tmp_path / "a", "--secret-key-file", str(short))
    assert result.returncode == 2
    assert f"secret key file {short} must hold exactly 32 bytes, not 31" in _one_line(result)
    result = _serve(tmp_path / "b", RUNSVC_SECRET_KEY_FILE=str(tmp_path))
    assert result.returncode == 2 and f"secret key file {tmp_path} is a directory" in _one_line(result)
    assert not (tmp_path / "a" / "runsvc.db").exists()  # refused before the database is opened


async def test_a_missing_key_file_with_encrypted_secrets_stored_is_refused(tmp_path):
    """Sealed values in the database and no key file: exit 1 with one line, and no new key is made (it
    would never open them)."""
    data = tmp_path / "data"
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            server = await start_server(nursery, data)
            async with admin_client(server.url) as client:
                assert (await client.post("/api/v1/secrets", json={"name": "db", "value": "v"})).status_code == 201
            server.send_signal(signal.SIGTERM)
            assert await server.wait() == 0
    assert (data / "secret.key").stat().st_mode & 0o777 == 0o600
    (data / "secret.key").unlink()
    result = await trio.to_thread.run_sync(_serve, data)
    assert result.returncode == 1
    assert (f"secret key file {data / 'secret.key'} is missing but the database holds 1 encrypted value(s)"
            in _one_line(result))
    assert not (data / "secret.key").exists()
