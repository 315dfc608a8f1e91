"""Runs do not get the server's powers (SPEC §14): file modes, the work dir, a non-dumpable server
without its admin password in its environment, run_as_user, escaped processes killed."""

from __future__ import annotations

import ctypes
import logging
import os
import pwd
import stat
import sys
from pathlib import Path

import httpx
import pytest
import trio

from runsvc.config import SettingsError, server_work_dir
from runsvc.server import serve
from tests.conftest import make_settings
from tests.helpers import FAST_HASHER, add_user, alive, daemon_command, login, running_server, wait_status

PR_GET_DUMPABLE = 3
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")


def mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


async def run_to_end(server, command: list[str], **kw) -> tuple[dict, list[tuple[str, str]]]:
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
        await add_user(server, "olga", "operator")
        csrf = {"X-CSRF-Token": await login(client, "olga")}
        answer = await client.post("/api/v1/runs", json={"command": command, **kw}, headers=csrf)
        assert answer.status_code == 201, answer.text
        run = await wait_status(client, answer.json()["run"]["id"])
        events = (await client.get(f"/api/v1/runs/{run['id']}/events")).json()["events"]
    return run, [(e["kind"], e["data"]) for e in events if e["kind"] in ("stdout", "stderr")]


async def test_file_modes_and_work_dir(tmp_path: Path) -> None:
    """Data dir 0700 (narrowed when it existed wider), database files 0600, the work dir and this
    server's directory in it 0711, outside the data dir; run directories 0700."""
    settings = make_settings(tmp_path)
    settings.data_dir.chmod(0o755)
    with trio.fail_after(20):
        async with running_server(settings) as server:
            assert mode(settings.data_dir) == 0o700
            for suffix in ("", "-wal", "-shm"):
                assert mode(Path(f"{settings.database_path}{suffix}")) == 0o600
            assert mode(settings.work_dir) == 0o711
            assert mode(server_work_dir(settings)) == 0o711
            script = "import os; print(oct(os.stat('.').st_mode & 0o777)); print(os.getcwd())"
            run, lines = await run_to_end(server, [sys.executable, "-c", script])
    assert run["status"] == "succeeded"
    assert lines[0] == ("stdout", "0o700")
    assert Path(lines[1][1]).parent == server_work_dir(settings)


async def test_work_dir_owned_by_another_user_is_refused(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to give the directory away")
    settings = make_settings(tmp_path)
    settings.work_dir.mkdir()
    os.chown(settings.work_dir, pwd.getpwnam("nobody").pw_uid, -1)
    with trio.fail_after(20), pytest.raises(SettingsError, match="owned by uid"):
        await serve(settings, password_hasher=FAST_HASHER)


async def test_admin_password_leaves_the_environment_and_the_log(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("RUNSVC_ADMIN_PASSWORD", "admin-password-9")
    settings = make_settings(tmp_path)
    with trio.fail_after(20):
        async with running_server(settings) as server:
            assert "RUNSVC_ADMIN_PASSWORD" not in os.environ
            async with httpx.AsyncClient(base_url=server.url) as client:
                await login(client, "admin", "admin-password-9")
    assert not [r for r in caplog.records if "admin-password-9" in r.getMessage() or
                "admin-password-9" in str(r.__dict__)]


async def test_random_admin_password_never_logged(tmp_path: Path, monkeypatch, caplog) -> None:
    monkeypatch.delenv("RUNSVC_ADMIN_PASSWORD", raising=False)
    settings = make_settings(tmp_path)
    with trio.fail_after(20):
        async with running_server(settings):
            password = (settings.data_dir / "initial-admin-password").read_text().strip()
    assert mode(settings.data_dir / "initial-admin-password") == 0o600
    assert not [r for r in caplog.records if password in str(r.__dict__)]


async def test_server_is_not_dumpable(tmp_path: Path) -> None:
    """prctl(PR_SET_DUMPABLE, 0): /proc/<server>/environ and mem are root's, not the server user's."""
    libc = ctypes.CDLL(None, use_errno=True)
    with trio.fail_after(20):
        async with running_server(make_settings(tmp_path)):
            assert libc.prctl(PR_GET_DUMPABLE, 0, 0, 0, 0) == 0


@needs_root
async def test_root_without_run_as_user_warns(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with trio.fail_after(20):
        async with running_server(make_settings(tmp_path)):
            pass
    assert any("runs run as root" in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records)


@needs_root
async def test_run_as_nobody_cannot_read_the_server(tmp_path: Path, caplog) -> None:
    """Issue 14 #3: a run as `nobody` runs with nobody's ids in a directory it owns, cannot read the
    server's environment and cannot open the database."""
    nobody = pwd.getpwnam("nobody")
    settings = make_settings(tmp_path, run_as_user="nobody")
    script = (
        "id -u; id -g; stat -c %u .; "
        "cat /proc/$PPID/environ >/dev/null 2>&1 && echo environ-readable || echo environ-refused; "
        f"cat {settings.database_path} >/dev/null 2>&1 && echo db-readable || echo db-refused; "
        "touch here && echo can-write-workdir"
    )
    with trio.fail_after(20):
        async with running_server(settings) as server:
            run, lines = await run_to_end(server, ["/bin/sh", "-c", script])
    assert run["status"] == "succeeded", (run, lines)
    assert [line for kind, line in lines if kind == "stdout"] == [
        str(nobody.pw_uid), str(nobody.pw_gid), str(nobody.pw_uid), "environ-refused", "db-refused",
        "can-write-workdir",
    ]
    assert not any("runs run as root" in r.getMessage() for r in caplog.records)


async def test_escaped_daemon_is_killed_when_the_run_ends(tmp_path: Path) -> None:
    """Issue 14 #6: a daemon that double-forks, calls setsid and chdir / is gone soon after its run ends."""
    pid_file = tmp_path / "daemon.pid"
    with trio.fail_after(30):
        async with running_server(make_settings(tmp_path)) as server:
            run, lines = await run_to_end(server, daemon_command(pid_file))
            assert run["status"] == "succeeded" and lines == [("stdout", "daemon started")]
            pid = int(pid_file.read_text())
            while alive(pid):
                await trio.sleep(0.05)


async def test_second_signal_helper_kills_every_running_group(tmp_path: Path) -> None:
    """Scheduler.kill_all_now() (the second signal's last act) leaves no run process alive, escaped
    ones included."""
    pid_file = tmp_path / "daemon.pid"
    with trio.fail_after(30):
        async with running_server(make_settings(tmp_path)) as server:
            async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
                await add_user(server, "olga", "operator")
                csrf = {"X-CSRF-Token": await login(client, "olga")}
                command = daemon_command(pid_file, run_stays=True)
                run = (await client.post("/api/v1/runs", json={"command": command}, headers=csrf)).json()["run"]
                while not pid_file.exists():
                    await trio.sleep(0.05)
                daemon = int(pid_file.read_text())
                server.services.scheduler.kill_all_now()
                while alive(daemon):
                    await trio.sleep(0.05)
                finished = await wait_status(client, run["id"])
    assert finished["status"] == "failed" and finished["exit_code"] == -9


