"""agent.json (runsvc/cli/agent_state.py): the list of servers, the old one-server form, hand-edited
files, private atomic writes, and `--server` URLs."""

from __future__ import annotations

import argparse
import json
import os
import stat

import pytest

from runsvc.cli.agent_state import AgentState, enroll, read_state, server_url, write_state
from runsvc.cli.common import CliError
from tests.helpers import unused_port


def test_the_old_one_server_form_reads_as_a_list_and_is_flagged_for_rewriting(tmp_path):
    """A file naming one "server" reads as a list of it (migrated=True); the new form reads back as written."""
    path = tmp_path / "agent.json"
    path.write_text(json.dumps({"id": 3, "name": "n", "secret": "s", "server": "http://old:8080/"}))
    assert read_state(path) == (AgentState(3, "n", "s", ("http://old:8080",)), True)
    write_state(path, AgentState(3, "n", "s", ("http://a", "https://b:1/prefix")))
    assert json.loads(path.read_text()) == {"id": 3, "name": "n", "secret": "s",
                                            "servers": ["http://a", "https://b:1/prefix"]}
    assert read_state(path) == (AgentState(3, "n", "s", ("http://a", "https://b:1/prefix")), False)


@pytest.mark.parametrize(("content", "why"), [
    ("{", "not JSON"),
    ("[]", "not a JSON object"),
    ('{"id": true, "name": "n", "secret": "s", "servers": []}', "id must be an integer"),
    ('{"id": 1, "name": "", "secret": "s", "servers": []}', "name must be a non-empty string"),
    ('{"id": 1, "name": "n", "secret": 5, "servers": []}', "secret must be a non-empty string"),
    ('{"id": 1, "name": "n", "secret": "s", "servers": "http://a"}', "servers must be a list of URLs"),
    ('{"id": 1, "name": "n", "secret": "s", "servers": ["ftp://a"]}', "'ftp://a' is not a server URL"),
    ('{"id": 1, "name": "n", "secret": "s", "server": 7}', "7 is not a server URL"),
])
def test_a_broken_state_file_is_one_line_naming_the_problem(tmp_path, content, why):
    """A hand-edited or truncated agent.json is refused with one line saying what is wrong, not a traceback."""
    path = tmp_path / "agent.json"
    path.write_text(content)
    with pytest.raises(CliError) as refused:
        read_state(path)
    assert str(refused.value) == f"{path} is not a valid agent state file ({why}); remove it and enroll again"


def test_writes_are_private_and_replace_the_file_whole(tmp_path):
    """Under a permissive umask the file is still 0600, an existing wider file becomes 0600, and no
    temporary file is left beside it."""
    path = tmp_path / "agent.json"
    path.write_text("old")
    os.chmod(path, 0o644)
    old = os.umask(0)
    try:
        write_state(path, AgentState(1, "n", "s", ("http://u",)))
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["agent.json"]
    assert read_state(path)[0].servers == ("http://u",)


@pytest.mark.parametrize(("text", "problem"), [
    ("runs.example:8080", "it must start with http:// or https://"),
    ("http://", "it names no host"),
    ("http://h:99999", "Port out of range 0-65535"),
    ("http://h/?x=1", "it must have no query or fragment"),
    ("http://h/#top", "it must have no query or fragment"),
    ("http://h/a b", "it must have no spaces or control characters"),
])
def test_server_urls_are_checked(text, problem):
    """`--server` takes http(s) URLs with a host (a path prefix is fine); anything else says why."""
    assert server_url("https://runs.example:8443/base/") == "https://runs.example:8443/base"
    with pytest.raises(argparse.ArgumentTypeError) as refused:
        server_url(text)
    assert str(refused.value) == f"{text!r} is not a server URL: {problem}"


def test_enrollment_with_no_server_answering_names_each(tmp_path):
    """Every server unreachable: one error naming each, in order."""
    dead = [f"http://127.0.0.1:{unused_port()}", f"http://127.0.0.1:{unused_port()}/x"]
    with pytest.raises(CliError) as refused:
        enroll(dead, "rse_x", "n", [])
    message = str(refused.value)
    assert message.startswith("cannot enroll: no server answered (cannot reach http://127.0.0.1:")
    assert message.index(dead[0]) < message.index(dead[1])
