"""`runsvc agent`: enroll once, then hold a connection to the server and run what it assigns."""

from __future__ import annotations

import argparse
import json
import os
import socket
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import trio

from ..log import configure_logging, get_logger
from .common import CliError, find_exception

log = get_logger("runsvc.agent")

STATE_FILE = "agent.json"


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "agent",
        help="run a remote agent that executes runs for a server",
        description="Run a remote agent. The first start enrolls with --server URL --enroll TOKEN and keeps the "
        "agent's id, secret and server in STATE_DIR/agent.json (mode 0600); later starts reuse it and ignore "
        "--enroll.",
    )
    parser.add_argument("--server", metavar="URL",
                        help="the server, e.g. http://runs.example:8080 (needed on the first start; later "
                        "starts default to the one saved in agent.json)")
    parser.add_argument("--enroll", metavar="TOKEN", help="one-time enrollment token (first start only)")
    parser.add_argument("--name", default=socket.gethostname(), help="agent name (default: the host name)")
    parser.add_argument("--labels", default="", help="comma-separated labels (used if the token has none)")
    parser.add_argument("--state-dir", type=Path, default=Path("./runsvc-agent"), metavar="DIR",
                        help="where agent.json and run directories live (default: ./runsvc-agent)")
    parser.add_argument("--max-runs", type=_positive_int, default=os.cpu_count() or 1, metavar="K",
                        help="runs at once (default: number of CPUs)")
    parser.add_argument("--drain-s", type=float, default=10.0, metavar="SECONDS",
                        help="on SIGTERM, seconds running runs get to finish before they are stopped")
    parser.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))
    parser.set_defaults(run=run)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError("must be an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError("must be >= 1")
    return value


def _post_json(url: str, body: dict[str, Any]) -> tuple[int, Any]:
    request = urllib.request.Request(
        url, json.dumps(body).encode(), {"Content-Type": "application/json", "Accept": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        try:
            return exc.code, json.loads(exc.read())
        except ValueError:
            return exc.code, None
    except (urllib.error.URLError, OSError) as exc:
        raise CliError(f"cannot reach {url}: {getattr(exc, 'reason', exc)}") from None


def _enroll(server: str, token: str, name: str, labels: list[str]) -> dict[str, Any]:
    status, body = _post_json(server.rstrip("/") + "/api/v1/agents/enroll",
                              {"token": token, "name": name, "labels": labels})
    if status != 201:
        message = (body or {}).get("error", {}).get("message", f"HTTP {status}") if isinstance(body, dict) else status
        raise CliError(f"enrollment refused: {message}")
    return {"id": body["agent"]["id"], "name": body["agent"]["name"], "secret": body["secret"], "server": server}


def _write_state(path: Path, state: dict[str, Any]) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        os.fchmod(f.fileno(), 0o600)
        json.dump(state, f)


def load_or_enroll(args: argparse.Namespace) -> dict[str, Any]:
    state_dir: Path = args.state_dir
    try:
        state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise CliError(f"cannot create state dir {state_dir}: {exc.strerror}") from None
    path = state_dir / STATE_FILE
    if path.exists():
        try:
            state = json.loads(path.read_text())
            _ = state["id"], state["secret"], state["name"]
        except (OSError, ValueError, KeyError, TypeError):
            raise CliError(f"{path} is not a valid agent state file; remove it and enroll again") from None
        if not (args.server or state.get("server")):
            raise CliError(f"{path} names no server: give --server URL", status=2)
        return state
    if not args.server:
        raise CliError(f"no {path}: the first start needs --server URL --enroll TOKEN", status=2)
    if not args.enroll:
        raise CliError(f"no {path}: enroll this agent first with --enroll TOKEN")
    labels = [label.strip() for label in args.labels.split(",") if label.strip()]
    state = _enroll(args.server, args.enroll, args.name, labels)
    _write_state(path, state)
    log.info("enrolled", agent=state["name"], id=state["id"], state_file=str(path))
    return state


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from ..agents.client import Agent, AgentRefused

    configure_logging(args.log_level)
    state = load_or_enroll(args)
    # --server wins for this start (a server that moved); agent.json keeps the one it enrolled with.
    agent = Agent(server=args.server or state["server"], secret=state["secret"], state_dir=args.state_dir,
                  max_runs=args.max_runs, drain_s=args.drain_s)
    try:
        trio.run(agent.run)
    except Exception as exc:  # trio.run wraps what the nursery raised in exception groups
        refused = find_exception(exc, AgentRefused)
        if refused is not None:
            raise CliError(str(refused)) from None
        raise
    return 0
