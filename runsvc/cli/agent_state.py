"""The agent's `agent.json` and its enrollment: who the agent is and which servers it connects to.

The file is `{"id", "name", "secret", "servers": [URL, …]}`, mode 0600 in the 0700 state dir. Files
written before agents took several servers name one `"server"`: they are read as a list of that one
server and rewritten in the new form. Every write goes to a temporary file renamed over agent.json, so a
crash mid-write leaves the old file or the new one, never a torn one: the secret in it cannot be had
again without a new enrollment token.

Enrollment tries the servers in order and enrolls with the first that answers (replicas share one
database, so the token is good on any of them); a server that cannot be reached or answers 5xx is
skipped, any other refusal (401: token used, expired or unknown; 409: name taken) ends the attempt.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import attrs

from ..log import get_logger
from .common import CliError

log = get_logger("runsvc.agent")

STATE_FILE = "agent.json"
ENROLL_TIMEOUT_S = 30.0  # per server tried


@attrs.frozen
class AgentState:
    """What agent.json holds. `servers` may be empty only in a file that named none (then --server is
    needed)."""

    id: int
    name: str
    secret: str
    servers: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "secret": self.secret, "servers": list(self.servers)}


def server_url(text: str) -> str:
    """`--server`'s argument (argparse type): an http:// or https:// URL with a host and neither query
    nor fragment; returned without a trailing slash."""
    problem = _url_problem(text)
    if problem is not None:
        raise argparse.ArgumentTypeError(f"{text!r} is not a server URL: {problem}")
    return text.rstrip("/")


def _url_problem(text: str) -> str | None:
    try:
        parts = urllib.parse.urlsplit(text)
        _ = parts.port  # raises on a port that is not a number in range
    except ValueError as exc:
        return str(exc)
    if parts.scheme not in ("http", "https"):
        return "it must start with http:// or https://"
    if not parts.hostname:
        return "it names no host"
    if parts.query or parts.fragment or "?" in text or "#" in text:
        return "it must have no query or fragment"
    if any(ord(c) <= 32 or ord(c) == 127 for c in text):
        return "it must have no spaces or control characters"
    return None


def read_state(path: Path) -> tuple[AgentState, bool]:
    """agent.json, and whether it was in the old one-server form (then the caller rewrites it)."""
    try:
        raw = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise _invalid(path, getattr(exc, "strerror", None) or "not JSON") from None
    if not isinstance(raw, dict):
        raise _invalid(path, "not a JSON object")
    agent_id, name, secret = raw.get("id"), raw.get("name"), raw.get("secret")
    if not isinstance(agent_id, int) or isinstance(agent_id, bool):
        raise _invalid(path, "id must be an integer")
    if not isinstance(name, str) or not name:
        raise _invalid(path, "name must be a non-empty string")
    if not isinstance(secret, str) or not secret:
        raise _invalid(path, "secret must be a non-empty string")
    migrated = "servers" not in raw
    if migrated:
        old = raw.get("server")
        servers = [old] if old else []  # an old file could lack one: --server then gives it
    else:
        servers = raw["servers"]
        if not isinstance(servers, list):
            raise _invalid(path, "servers must be a list of URLs")
    for server in servers:
        if not isinstance(server, str) or _url_problem(server) is not None:
            raise _invalid(path, f"{server!r} is not a server URL")
    return AgentState(agent_id, name, secret, tuple(s.rstrip("/") for s in servers)), migrated


def _invalid(path: Path, why: str) -> CliError:
    return CliError(f"{path} is not a valid agent state file ({why}); remove it and enroll again")


def write_state(path: Path, state: AgentState) -> None:
    """agent.json, mode 0600 whatever the umask, replaced atomically (fsynced, then renamed over)."""
    fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)  # created 0600
    try:
        with os.fdopen(fd, "w") as f:
            os.fchmod(f.fileno(), 0o600)
            json.dump(state.to_json(), f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, path)
    except BaseException:
        try:
            os.unlink(temporary)
        except OSError:
            pass
        raise


def _post_json(url: str, body: dict[str, Any]) -> tuple[int, Any]:
    request = urllib.request.Request(
        url, json.dumps(body).encode(), {"Content-Type": "application/json", "Accept": "application/json"},
        method="POST",
    )
    try:
        try:
            with urllib.request.urlopen(request, timeout=ENROLL_TIMEOUT_S) as response:
                status, raw = response.status, response.read()
        except urllib.error.HTTPError as exc:
            status, raw = exc.code, exc.read()
    except (urllib.error.URLError, OSError) as exc:
        raise CliError(f"cannot reach {url}: {getattr(exc, 'reason', exc)}") from None
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, None  # not runsvc's answer (a proxy's page): judged by its status alone


def enroll(servers: Sequence[str], token: str, name: str, labels: list[str]) -> AgentState:
    """Enroll with the first of `servers` that answers; the state names all of them."""
    failures = []
    request = {"token": token, "name": name, "labels": labels}
    for server in servers:
        try:
            status, body = _post_json(server + "/api/v1/agents/enroll", request)
        except CliError as exc:
            failures.append(str(exc))
            log.warning("cannot enroll with this server, trying the next", server=server, error=str(exc))
            continue
        message = _error_message(body) or f"HTTP {status}"
        if status >= 500:
            failures.append(f"{server}: {message}")
            log.warning("cannot enroll with this server, trying the next", server=server, error=message)
            continue
        if status != 201:
            raise CliError(f"enrollment refused: {message}")
        try:
            agent, secret = body["agent"], body["secret"]
            return AgentState(int(agent["id"]), str(agent["name"]), str(secret), tuple(servers))
        except (TypeError, KeyError, ValueError):
            raise CliError(f"{server} answered the enrollment with an unexpected body") from None
    raise CliError("cannot enroll: no server answered (" + "; ".join(failures) + ")")


def _error_message(body: Any) -> str | None:
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        message = body["error"].get("message")
        return message if isinstance(message, str) else None
    return None
