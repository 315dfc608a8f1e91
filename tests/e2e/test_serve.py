"""`python -m runsvc serve` as a subprocess: start, answer, stop cleanly on a signal."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys

import httpx
import pytest
import trio

from tests.helpers import child_env, start_server


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
async def test_serve_answers_and_exits_zero_on_signal(tmp_path, signum):
    """The server logs its URL, answers /healthz, and exits 0 on the signal with an intact database."""
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            server = await start_server(nursery, tmp_path / "data")
            assert server.url.startswith("http://127.0.0.1:")
            async with httpx.AsyncClient() as client:
                response = await client.get(server.url + "/healthz")
            assert response.json() == {"status": "ok"}
            server.send_signal(signum)
            assert await server.wait() == 0, server.log_text()
    assert "shutdown complete" in server.log_text()
    conn = sqlite3.connect(tmp_path / "data" / "runsvc.db")
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    conn.close()


async def test_log_lines_are_structured(tmp_path):
    """Every line on stderr is logfmt with ts, level, logger and msg."""
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            server = await start_server(nursery, tmp_path / "data")
            server.send_signal(signal.SIGTERM)
            await server.wait()
    for line in server.stderr_lines:
        if line:
            assert line.startswith("ts=") and " level=" in line and " logger=" in line and " msg=" in line


def _run_cli(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "runsvc", *args], capture_output=True, text=True, timeout=30,
        env=child_env(**env),
    )


def test_bad_port_is_usage_error(tmp_path):
    """--port 70000 is one clear line and exit status 2, no traceback."""
    result = _run_cli("serve", "--port", "70000", "--data-dir", str(tmp_path))
    assert result.returncode == 2
    assert "port must be between 0 and 65535, got 70000" in result.stderr
    assert "Traceback" not in result.stderr


def test_unknown_toml_key_is_usage_error(tmp_path):
    """An unknown key in --config exits 2 naming the key."""
    config = tmp_path / "c.toml"
    config.write_text("bogus = 1\n")
    result = _run_cli("serve", "--config", str(config), "--data-dir", str(tmp_path))
    assert result.returncode == 2
    assert "unknown setting 'bogus'" in result.stderr
    assert "Traceback" not in result.stderr


def test_unusable_data_dir_is_usage_error(tmp_path):
    """A data dir that cannot be created exits 2 with the path in the message."""
    blocker = tmp_path / "file"
    blocker.write_text("")
    result = _run_cli("serve", "--data-dir", str(blocker / "data"))
    assert result.returncode == 2
    assert "cannot create data dir" in result.stderr
    assert "Traceback" not in result.stderr


def test_newer_database_refused_cleanly(tmp_path):
    """A database from a newer runsvc stops the server with one clear line and status 1."""
    conn = sqlite3.connect(tmp_path / "runsvc.db")
    conn.execute("PRAGMA user_version = 999")
    conn.close()
    result = _run_cli("serve", "--port", "0", "--data-dir", str(tmp_path))
    assert result.returncode == 1
    assert "newer than this runsvc supports" in result.stderr
    assert "Traceback" not in result.stderr


def test_serve_help_lists_every_setting():
    """serve --help names each setting's flag, default and environment variable."""
    from runsvc.config import SETTINGS_FIELDS, env_name, flag_name

    result = _run_cli("serve", "--help")
    assert result.returncode == 0
    text = " ".join(result.stdout.split())
    for field in SETTINGS_FIELDS:
        assert flag_name(field.name) in text
        assert env_name(field.name) in text
