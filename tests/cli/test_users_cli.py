"""`python -m runsvc user add|passwd|list` as real subprocesses on a real data dir."""

from __future__ import annotations

import os
import select
import shlex
import shutil
import subprocess
import sys
import time

import pytest
import trio

from runsvc.accounts import Auth, LoginFailed, Passwords
from runsvc.store import open_store
from runsvc.store.pg_admin import display_url
from tests.helpers import child_env


def runsvc(*args: str, stdin: str | None = None, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "runsvc", *args], input=stdin, capture_output=True, text=True, timeout=30,
        env=child_env(**env),
    )


def assert_one_line_error(result: subprocess.CompletedProcess, status: int, text: str) -> None:
    assert result.returncode == status, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    assert text in result.stderr
    error_lines = [line for line in result.stderr.splitlines() if "error" in line]
    assert len(error_lines) == 1, result.stderr


async def login_works(data_dir, username: str, password: str, database_url: str = "") -> bool:
    async with open_store(data_dir / "runsvc.db", database_url=database_url) as store:
        auth = Auth(store=store, passwords=Passwords(), session_ttl_s=60)
        try:
            await auth.login(username, password, "cli-test")
        except LoginFailed:
            return False
        return True


def test_add_then_list(tmp_path):
    """`user add` creates the data dir and the user; `user list` shows it as a table."""
    data = tmp_path / "data"
    added = runsvc("user", "add", "alice", "--role", "operator", "--password-stdin", "--data-dir", str(data),
                   stdin="alice-password\n")
    assert added.returncode == 0, added.stderr
    assert added.stdout == "created user alice with role operator\n"
    runsvc("user", "add", "bob", "--role", "viewer", "--password-stdin", "--data-dir", str(data),
           stdin="bob-password\n")
    listed = runsvc("user", "list", "--data-dir", str(data))
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert lines[0].split() == ["ID", "USERNAME", "ROLE", "DISABLED", "CREATED"]
    assert lines[1].split()[:4] == ["1", "alice", "operator", "no"]
    assert lines[2].split()[:4] == ["2", "bob", "viewer", "no"]
    assert lines[1].split()[4].endswith("Z")
    assert len(lines) == 3


def test_data_dir_from_environment(tmp_path):
    """RUNSVC_DATA_DIR works like --data-dir, as for every setting."""
    data = tmp_path / "envdata"
    added = runsvc("user", "add", "alice", "--role", "admin", "--password-stdin", stdin="alice-password\n",
                   RUNSVC_DATA_DIR=str(data))
    assert added.returncode == 0, added.stderr
    assert "alice" in runsvc("user", "list", RUNSVC_DATA_DIR=str(data)).stdout


async def test_passwd_changes_the_password_and_ends_sessions(tmp_path):
    """`user passwd` (with a CRLF line) sets the new password; the user's sessions end."""
    data = tmp_path / "data"
    runsvc("user", "add", "alice", "--role", "viewer", "--password-stdin", "--data-dir", str(data),
           stdin="old-password\n")
    with trio.fail_after(20):
        async with open_store(data / "runsvc.db") as store:
            auth = Auth(store=store, passwords=Passwords(), session_ttl_s=60)
            _, token = await auth.login("alice", "old-password", "cli-test")
            result = await trio.to_thread.run_sync(
                lambda: runsvc("user", "passwd", "ALICE", "--password-stdin", "--data-dir", str(data),
                               stdin="new-password\r\n")
            )
            assert result.returncode == 0, result.stderr
            assert result.stdout == "changed the password of alice and ended their sessions\n"
            assert await auth.authenticate(token) is None
        assert await login_works(data, "alice", "new-password")
        assert not await login_works(data, "alice", "old-password")


def in_terminal(args: list[str], answers: list[tuple[str, str]]) -> tuple[int, str]:
    """Run `python -m runsvc ARGS` on a pseudo-terminal (through script(1)), typing each answer once its
    prompt has appeared (getpass discards anything typed earlier); return the status and the output."""
    command = shlex.join([sys.executable, "-m", "runsvc", *args])
    process = subprocess.Popen(["script", "-qec", command, "/dev/null"], stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, env=child_env())
    output = b""
    deadline = time.monotonic() + 20
    try:
        for prompt, answer in answers:
            while prompt.encode() not in output:
                ready, _, _ = select.select([process.stdout], [], [], max(0.0, deadline - time.monotonic()))
                chunk = os.read(process.stdout.fileno(), 4096) if ready else b""
                if not chunk:
                    raise AssertionError(f"no prompt {prompt!r} in {output!r}")
                output += chunk
            output = output.replace(prompt.encode(), b"<" + prompt.encode() + b">", 1)
            process.stdin.write(answer.encode() + b"\r")
            process.stdin.flush()
        rest, _ = process.communicate(timeout=max(0.1, deadline - time.monotonic()))
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    return process.returncode, (output + rest).decode()


needs_script = pytest.mark.skipif(shutil.which("script") is None, reason="needs script(1) for a terminal")


@needs_script
async def test_interactive_prompt(tmp_path):
    """Without --password-stdin the password is asked twice on the terminal, not echoed."""
    data = tmp_path / "data"
    args = ["user", "add", "carol", "--role", "admin", "--data-dir", str(data)]
    answers = [("Password for carol: ", "carol-password"), ("Repeat the password: ", "carol-password")]
    status, output = await trio.to_thread.run_sync(in_terminal, args, answers)
    assert status == 0, output
    assert "carol-password" not in output
    assert "created user carol with role admin" in output
    with trio.fail_after(20):
        assert await login_works(data, "carol", "carol-password")


@needs_script
def test_interactive_prompt_mismatch(tmp_path):
    """Two different answers to the prompt: error, status 1, nothing created."""
    args = ["user", "add", "carol", "--role", "admin", "--data-dir", str(tmp_path / "data")]
    answers = [("Password for carol: ", "carol-password"), ("Repeat the password: ", "other-password")]
    status, output = in_terminal(args, answers)
    assert status == 1, output
    assert "runsvc: error: the passwords do not match" in output
    assert "Traceback" not in output
    assert not (tmp_path / "data" / "runsvc.db").exists()


@pytest.mark.slow
def test_add_errors(tmp_path):
    """Duplicates, bad names, bad roles, short or missing passwords: one line, status 2 or 1."""
    data = str(tmp_path / "data")
    runsvc("user", "add", "alice", "--role", "viewer", "--password-stdin", "--data-dir", data,
           stdin="alice-password\n")
    assert_one_line_error(
        runsvc("user", "add", "ALICE", "--role", "viewer", "--password-stdin", "--data-dir", data,
               stdin="other-password\n"), 1, "runsvc: error: username ALICE is already taken")
    assert_one_line_error(
        runsvc("user", "add", "bad/name", "--role", "viewer", "--password-stdin", "--data-dir", data,
               stdin="other-password\n"), 2, "username must be 1-64 characters of A-Z a-z 0-9 _ . -")
    assert_one_line_error(
        runsvc("user", "add", "bob", "--role", "root", "--password-stdin", "--data-dir", data,
               stdin="other-password\n"), 2, "invalid choice: 'root'")
    assert_one_line_error(
        runsvc("user", "add", "bob", "--password-stdin", "--data-dir", data, stdin="other-password\n"),
        2, "the following arguments are required: --role")
    assert_one_line_error(
        runsvc("user", "add", "bob", "--role", "viewer", "--password-stdin", "--data-dir", data,
               stdin="short\n"), 1, "runsvc: error: password must be at least 8 characters")
    assert_one_line_error(
        runsvc("user", "add", "bob", "--role", "viewer", "--password-stdin", "--data-dir", data, stdin=""),
        1, "runsvc: error: no password on standard input")
    assert_one_line_error(
        runsvc("user", "add", "bob", "--role", "viewer", "--data-dir", data, stdin="other-password\n"),
        2, "runsvc: error: standard input is not a terminal: use --password-stdin")
    listed = runsvc("user", "list", "--data-dir", data)
    assert [line.split()[1] for line in listed.stdout.splitlines()[1:]] == ["alice"]


@pytest.mark.slow
def test_passwd_and_list_errors(tmp_path):
    """An unknown user, a missing database, a data dir that is a file: one line, non-zero status."""
    data = tmp_path / "data"
    assert_one_line_error(runsvc("user", "list", "--data-dir", str(data)), 1,
                          f"runsvc: error: no database at {data / 'runsvc.db'}")
    assert_one_line_error(
        runsvc("user", "passwd", "alice", "--password-stdin", "--data-dir", str(data), stdin="new-password\n"),
        1, "no database at")
    runsvc("user", "add", "alice", "--role", "viewer", "--password-stdin", "--data-dir", str(data),
           stdin="alice-password\n")
    assert_one_line_error(
        runsvc("user", "passwd", "bob", "--password-stdin", "--data-dir", str(data), stdin="new-password\n"),
        1, "runsvc: error: no user named bob")
    assert_one_line_error(
        runsvc("user", "passwd", "alice", "--password-stdin", "--data-dir", str(data), stdin="short\n"),
        1, "runsvc: error: password must be at least 8 characters")
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert_one_line_error(
        runsvc("user", "add", "bob", "--role", "viewer", "--password-stdin", "--data-dir", str(blocker),
               stdin="bob-password\n"), 2, "is not a directory")
    assert_one_line_error(runsvc("user"), 2, "the following arguments are required: ACTION")


def test_newer_database_is_refused(tmp_path):
    """A database from a newer runsvc: one line, status 1, no traceback."""
    import sqlite3

    conn = sqlite3.connect(tmp_path / "runsvc.db")
    conn.execute("PRAGMA user_version = 999")
    conn.close()
    assert_one_line_error(runsvc("user", "list", "--data-dir", str(tmp_path)), 1,
                          "runsvc: error: cannot open database: database schema version 999 is newer")


@pytest.mark.slow
def test_disable_enable_and_set_role(tmp_path):
    """`user disable|enable|set-role` change the user (any case of the name); the last admin is
    protected and an unknown user is one line, exit 1."""
    data = str(tmp_path / "data")
    for name, role in (("alice", "operator"), ("root", "admin")):
        runsvc("user", "add", name, "--role", role, "--password-stdin", "--data-dir", data, stdin="pass-word-1\n")
    disabled = runsvc("user", "disable", "ALICE", "--data-dir", data)
    assert disabled.returncode == 0 and disabled.stdout == "disabled alice\n", disabled.stderr
    assert trio.run(login_works, tmp_path / "data", "alice", "pass-word-1") is False
    enabled = runsvc("user", "enable", "alice", "--data-dir", data)
    assert enabled.returncode == 0 and enabled.stdout == "enabled alice\n", enabled.stderr
    assert trio.run(login_works, tmp_path / "data", "alice", "pass-word-1") is True
    changed = runsvc("user", "set-role", "alice", "viewer", "--data-dir", data)
    assert changed.stdout == "changed the role of alice (now viewer)\n", changed.stderr
    listed = runsvc("user", "list", "--data-dir", data).stdout.splitlines()
    assert listed[1].split()[:4] == ["1", "alice", "viewer", "no"]
    assert_one_line_error(runsvc("user", "set-role", "root", "viewer", "--data-dir", data), 1, "last enabled admin")
    assert_one_line_error(runsvc("user", "disable", "nobody", "--data-dir", data), 1, "no user named nobody")
    bad_role = runsvc("user", "set-role", "alice", "king", "--data-dir", data)
    assert bad_role.returncode == 2 and "invalid choice" in bad_role.stderr


def test_user_commands_on_either_database(tmp_path, backend):
    """Every user command works the same on the data dir's SQLite file and on PostgreSQL
    (RUNSVC_DATABASE_URL); on PostgreSQL nothing is written to the data dir, and a store on that
    database sees the result."""
    data = tmp_path / "data"
    env = {"RUNSVC_DATA_DIR": str(data), "RUNSVC_DATABASE_URL": backend}
    if backend:
        missing = runsvc("user", "list", **env)
        assert_one_line_error(
            missing, 1, f"runsvc: error: no runsvc database at {display_url(backend)} (is --database-url right?)"
        )
    for name, role in (("alice", "operator"), ("root", "admin")):
        added = runsvc("user", "add", name, "--role", role, "--password-stdin", stdin="pass-word-1\n", **env)
        assert added.returncode == 0, added.stderr
    assert runsvc("user", "passwd", "alice", "--password-stdin", stdin="pass-word-2\n", **env).returncode == 0
    assert runsvc("user", "disable", "alice", **env).stdout == "disabled alice\n"
    assert runsvc("user", "enable", "alice", **env).stdout == "enabled alice\n"
    assert runsvc("user", "set-role", "alice", "viewer", **env).returncode == 0
    listed = runsvc("user", "list", **env).stdout.splitlines()
    assert [line.split()[:4] for line in listed[1:]] == [["1", "alice", "viewer", "no"], ["2", "root", "admin", "no"]]
    assert trio.run(login_works, data, "alice", "pass-word-2", backend) is True
    assert data.exists() is not bool(backend)


def test_unreachable_postgresql_is_one_line(tmp_path):
    """A PostgreSQL server that does not answer: one line, exit 1, for every user command."""
    env = {"RUNSVC_DATABASE_URL": "postgresql://runsvc@127.0.0.1:1/runsvc", "RUNSVC_DATA_DIR": str(tmp_path)}
    assert_one_line_error(runsvc("user", "list", **env), 1, "runsvc: error: cannot reach PostgreSQL: ")
    assert_one_line_error(
        runsvc("user", "add", "alice", "--role", "viewer", "--password-stdin", stdin="pass-word-1\n", **env),
        1, "runsvc: error: cannot reach PostgreSQL: ",
    )
