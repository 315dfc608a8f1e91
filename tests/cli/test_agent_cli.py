"""`runsvc agent`'s startup (SPEC §11, §14): where the enrollment token comes from, the state dir and the
work dir its runs get."""

from __future__ import annotations

import argparse
import io
import logging
import os
import pwd
import stat
import sys
from pathlib import Path

import pytest
import trio

from runsvc.cli.agent import _enroll_token, prepare_state_dir, prepare_workdirs
from runsvc.cli.common import CliError
from tests.helpers import child_env


def _args(**values) -> argparse.Namespace:
    return argparse.Namespace(**{"enroll": None, "enroll_token_file": None, **values})


def mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def test_token_from_stdin_file_or_argv_with_a_warning(tmp_path, monkeypatch, caplog):
    """`--enroll -` reads the first line of stdin, `--enroll-token-file` the file; a token in argv still
    works but logs a warning that ps shows it; an empty source is one clear error."""
    monkeypatch.setattr(sys, "stdin", io.StringIO("rse_from_stdin\nmore\n"))
    assert _enroll_token(_args(enroll="-")) == "rse_from_stdin"
    token_file = tmp_path / "token"
    token_file.write_text("  rse_from_file\n")
    assert _enroll_token(_args(enroll_token_file=token_file)) == "rse_from_file"
    assert not caplog.records
    with caplog.at_level(logging.WARNING):
        assert _enroll_token(_args(enroll="rse_in_argv")) == "rse_in_argv"
    assert any("(ps)" in record.getMessage() for record in caplog.records)
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    with pytest.raises(CliError, match="^--enroll -: no token on stdin$"):
        _enroll_token(_args(enroll="-"))
    token_file.write_text("\n")
    with pytest.raises(CliError, match="is empty$"):
        _enroll_token(_args(enroll_token_file=token_file))
    with pytest.raises(CliError, match="^cannot read --enroll-token-file .*: No such file or directory$"):
        _enroll_token(_args(enroll_token_file=tmp_path / "missing"))


def test_state_dir_is_0700_and_the_work_dir_outside_it(tmp_path):
    """The state dir is narrowed to 0700; the agent's run directories live in a 0711 directory under the
    work dir, and a work dir inside the state dir is refused."""
    state_dir = tmp_path / "state"
    state_dir.mkdir(mode=0o755)
    prepare_state_dir(state_dir)
    assert mode(state_dir) == 0o700
    own = prepare_workdirs(tmp_path / "work", state_dir)
    assert own.parent == tmp_path / "work" and own.name.startswith("agent-")
    assert mode(tmp_path / "work") == mode(own) == 0o711
    assert prepare_workdirs(tmp_path / "work", state_dir) == own  # stable across starts
    with pytest.raises(CliError, match="must not be inside the state dir"):
        prepare_workdirs(state_dir / "work", state_dir)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root (chown)")
def test_work_dir_owned_by_another_user_is_refused(tmp_path):
    """Another user could swap run directories under the agent: refused, as for the server."""
    (tmp_path / "work").mkdir()
    os.chown(tmp_path / "work", pwd.getpwnam("nobody").pw_uid, -1)
    with pytest.raises(CliError, match="is owned by uid .*, not by the agent's user$"):
        prepare_workdirs(tmp_path / "work", tmp_path / "state")


async def test_unknown_run_as_user_is_one_line(tmp_path):
    """`--run-as-user` naming no user: exit 1 with one line, before anything is enrolled."""
    with trio.fail_after(30):
        result = await trio.run_process(
            [sys.executable, "-m", "runsvc", "agent", "--server", "http://127.0.0.1:9", "--state-dir",
             str(tmp_path / "a"), "--work-dir", str(tmp_path / "w"), "--run-as-user", "no-such-user-x",
             "--enroll", "-"],
            stdin=b"rse_x\n", capture_stdout=True, capture_stderr=True, check=False, env=child_env(),
        )
    err = result.stderr.decode()
    assert result.returncode == 1, err
    assert err == "runsvc: error: --run-as-user: no user named 'no-such-user-x'\n"
    assert not (tmp_path / "a" / "agent.json").exists()


def test_enroll_and_enroll_token_file_are_exclusive(tmp_path, capsys):
    """Two sources for one token is a usage error (exit 2)."""
    from runsvc.cli import build_parser

    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args(["agent", "--enroll", "-", "--enroll-token-file", str(tmp_path / "t")])
    assert exit_.value.code == 2
    assert "not allowed with argument" in capsys.readouterr().err


async def test_an_agent_that_cannot_start_leaves_no_directory_in_the_work_dir(tmp_path):
    """A first start without --server (usage error, exit 2) removes its empty directory again."""
    with trio.fail_after(30):
        result = await trio.run_process(
            [sys.executable, "-m", "runsvc", "agent", "--state-dir", str(tmp_path / "a"), "--work-dir",
             str(tmp_path / "w"), "--enroll", "-"],
            stdin=b"rse_x\n", capture_stdout=True, capture_stderr=True, check=False, env=child_env(),
        )
    assert result.returncode == 2, result.stderr.decode()
    assert list((tmp_path / "w").iterdir()) == []
