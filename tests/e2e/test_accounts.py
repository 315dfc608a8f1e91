"""Accounts in a real `python -m runsvc serve`: the first admin, with real argon2id parameters."""

from __future__ import annotations

import signal
import stat
import subprocess
import sys

import httpx
import pytest
import trio

from tests.helpers import ADMIN_PASSWORD, child_env, start_server

# Every test here runs on SQLite and on PostgreSQL (tests/e2e/conftest.py: server_backend).
pytestmark = pytest.mark.usefixtures("server_backend")

LOGIN = "/api/v1/auth/login"


async def _login(url: str, username: str, password: str) -> httpx.Response:
    async with httpx.AsyncClient(base_url=url, timeout=10) as client:
        return await client.post(LOGIN, json={"username": username, "password": password})


async def test_first_start_without_env_password_writes_a_0600_file(tmp_path):
    """No RUNSVC_ADMIN_PASSWORD: a random password is written to a 0600 file, never to the log (one
    warning names the file); it works. A restart creates nothing."""
    data = tmp_path / "data"
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            server = await start_server(nursery, data, env=child_env())
            secret_file = data / "initial-admin-password"
            password = secret_file.read_text().strip()
            assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600
            assert len(password) >= 16
            assert not [line for line in server.stderr_lines if password in line]
            warnings = [line for line in server.stderr_lines if "created user admin" in line]
            assert len(warnings) == 1 and "level=warning" in warnings[0] and str(secret_file) in warnings[0]
            response = await _login(server.url, "admin", password)
            assert response.status_code == 200, response.text
            assert response.json()["user"]["role"] == "admin"
            server.send_signal(signal.SIGTERM)
            assert await server.wait() == 0

            before = secret_file.stat().st_mtime_ns
            again = await start_server(nursery, data, env=child_env())
            assert not any("created user admin" in line for line in again.stderr_lines)
            assert secret_file.stat().st_mtime_ns == before
            again.send_signal(signal.SIGTERM)
            assert await again.wait() == 0


async def test_first_start_with_env_password(tmp_path):
    """RUNSVC_ADMIN_PASSWORD sets the first admin's password; no file; the password is never logged."""
    data = tmp_path / "data"
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            server = await start_server(nursery, data, env=child_env(RUNSVC_ADMIN_PASSWORD=ADMIN_PASSWORD))
            assert (await _login(server.url, "admin", ADMIN_PASSWORD)).status_code == 200
            assert (await _login(server.url, "admin", "wrong-password")).status_code == 401
            server.send_signal(signal.SIGTERM)
            assert await server.wait() == 0
    assert not (data / "initial-admin-password").exists()
    assert ADMIN_PASSWORD not in server.log_text()
    assert "created user admin with the password from RUNSVC_ADMIN_PASSWORD" in server.log_text()


def test_too_short_env_password_stops_the_server_cleanly(tmp_path):
    """A RUNSVC_ADMIN_PASSWORD under 8 characters: one line naming the rule, status 1, no traceback."""
    result = subprocess.run(
        [sys.executable, "-m", "runsvc", "serve", "--port", "0", "--data-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=30, env=child_env(RUNSVC_ADMIN_PASSWORD="short"),
    )
    assert result.returncode == 1
    assert "cannot start: RUNSVC_ADMIN_PASSWORD: password must be at least 8 characters" in result.stderr
    assert "Traceback" not in result.stderr
