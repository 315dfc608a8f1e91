"""`runsvc agent`: enroll once, then hold a connection to the server and run what it assigns.

Runs get none of the agent's powers (SPEC §14, as for the server's own runs): the agent makes itself
non-dumpable, keeps its state dir 0700 and agent.json 0600, gives runs directories under the work dir
(never inside the state dir) and, with --run-as-user, runs them as another user. The enrollment token
is read from stdin (`--enroll -`) or a file (`--enroll-token-file`): a token in argv is visible to every
process of the machine (`ps`), so `--enroll TOKEN` still works but warns.

`--server` may be given several times (replicas of one service): the agent enrolls with the first that
answers and connects to the first it reaches, then to the others in turn when a connection is lost
(agents/servers.py). agent.json keeps the list (agent_state.py); a start with `--server` flags replaces it.
"""

from __future__ import annotations

import argparse
import getpass
import hashlib
import os
import socket
import sys
from pathlib import Path

import attrs
import trio

from ..accounts.first_admin import StartupError
from ..config import SettingsError, default_value, prepare_run_root
from ..isolation import make_non_dumpable, resolve_user, warn_if_runs_are_root
from ..log import configure_logging, get_logger
from .agent_state import STATE_FILE, AgentState, enroll, read_state, server_url, write_state
from .common import CliError, find_exception

log = get_logger("runsvc.agent")


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "agent",
        help="run a remote agent that executes runs for a server",
        description="Run a remote agent. The first start enrolls with --server URL and a one-time token read "
        "from stdin (--enroll -) or a file (--enroll-token-file PATH), and keeps the agent's id, secret and "
        "servers in STATE_DIR/agent.json (mode 0600, in a 0700 directory); later starts reuse it and ignore the "
        "token. --server may be given several times (replicas of one service): the agent enrolls with the "
        "first server that answers, connects to the first it reaches and, when a connection is refused or "
        "lost, tries the others in turn. Runs get directories under --work-dir, outside the state dir.",
    )
    parser.add_argument("--server", metavar="URL", action="append", type=server_url,
                        help="a server, e.g. http://runs.example:8080; repeat it for several replicas, tried in "
                        "this order (needed on the first start; later starts default to the servers saved in "
                        "agent.json, and --server flags given replace those saved)")
    token = parser.add_mutually_exclusive_group()
    token.add_argument("--enroll", metavar="-", help="'-': read the one-time enrollment token from stdin (first "
                       "start only). A token written here instead still works but is visible to every process "
                       "of the machine (ps): the agent warns")
    token.add_argument("--enroll-token-file", type=Path, metavar="PATH",
                       help="read the one-time enrollment token from this file (first start only)")
    parser.add_argument("--name", default=socket.gethostname(), help="agent name (default: the host name)")
    parser.add_argument("--labels", default="", help="comma-separated labels (used if the token has none)")
    parser.add_argument("--state-dir", type=Path, default=Path("./runsvc-agent"), metavar="DIR",
                        help="where agent.json lives, mode 0700 (default: ./runsvc-agent)")
    parser.add_argument("--work-dir", type=Path, default=default_value("work_dir"), metavar="DIR",
                        help="runs get their directories under DIR/agent-<id of the state dir>; created 0711, "
                        "refused inside the state dir or when another user owns it (default: "
                        "<system temp dir>/runsvc-work-<uid>)")
    parser.add_argument("--run-as-user", default="", metavar="USER",
                        help="run every run as this user and its groups (the agent must run as root; "
                        "default: runs run as the agent's user)")
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


def _enroll_token(args: argparse.Namespace) -> str | None:
    """The enrollment token from --enroll-token-file, stdin (--enroll -) or argv (warned); None if none."""
    if args.enroll_token_file is not None:
        try:
            token = args.enroll_token_file.read_text().strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise CliError(f"cannot read --enroll-token-file {args.enroll_token_file}: "
                           f"{getattr(exc, 'strerror', None) or exc}") from None
        if not token:
            raise CliError(f"--enroll-token-file {args.enroll_token_file} is empty")
        return token
    if args.enroll == "-":
        token = getpass.getpass("enrollment token: ") if sys.stdin.isatty() else sys.stdin.readline()
        if not token.strip():
            raise CliError("--enroll -: no token on stdin")
        return token.strip()
    if args.enroll:
        log.warning("the enrollment token is on the command line, where every process of this machine can read "
                    "it (ps); use --enroll - (stdin) or --enroll-token-file PATH")
        return str(args.enroll)
    return None


def prepare_state_dir(state_dir: Path) -> None:
    """The state dir, 0700 (narrowed if it existed wider): agent.json in it is out of reach of runs of
    another user (--run-as-user)."""
    try:
        state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(state_dir, 0o700)
    except OSError as exc:
        raise CliError(f"cannot create state dir {state_dir}: {exc.strerror}") from None


def prepare_workdirs(work_dir: Path, state_dir: Path) -> Path:
    """This agent's directory under the work dir (the server's rules: 0711, not inside the state dir, not
    owned by another user), named after its state dir so that agents sharing a work dir stay apart."""
    own = work_dir / f"agent-{hashlib.sha256(os.fsencode(os.path.realpath(state_dir))).hexdigest()[:16]}"
    try:
        return prepare_run_root(work_dir, own, state_dir, private_name="state dir", owner_name="the agent's user")
    except SettingsError as exc:
        raise CliError(str(exc)) from None


def load_or_enroll(args: argparse.Namespace) -> AgentState:
    """agent.json (rewritten when it is in the old one-server form or --server flags change the list),
    or a new enrollment with the servers given."""
    state_dir: Path = args.state_dir
    prepare_state_dir(state_dir)
    path = state_dir / STATE_FILE
    given = tuple(dict.fromkeys(args.server or ()))  # in the order given, each once
    if path.exists():
        if args.enroll not in (None, "-"):
            _enroll_token(args)  # ignored, but the token in argv still deserves the warning
        try:
            os.chmod(path, 0o600)
        except OSError as exc:
            raise CliError(f"cannot make {path} private: {exc.strerror}") from None
        state, migrated = read_state(path)
        replaced = bool(given) and given != state.servers
        if replaced:
            log.info("the servers given replace those saved in agent.json", saved=",".join(state.servers) or "none",
                     servers=",".join(given), state_file=str(path))
            state = attrs.evolve(state, servers=given)
        if not state.servers:
            raise CliError(f"{path} names no server: give --server URL", status=2)
        if migrated or replaced:
            write_state(path, state)
        if migrated:
            log.info("agent.json named one server (an earlier version's form): rewritten with a list of servers",
                     state_file=str(path))
        return state
    if not given:
        raise CliError(f"no {path}: the first start needs --server URL --enroll -", status=2)
    token = _enroll_token(args)
    if token is None:
        raise CliError(f"no {path}: enroll this agent first with --enroll - (the token on stdin) or "
                       "--enroll-token-file PATH")
    labels = [label.strip() for label in args.labels.split(",") if label.strip()]
    state = enroll(given, token, args.name, labels)
    write_state(path, state)
    log.info("enrolled", agent=state.name, id=state.id, state_file=str(path))
    return state


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from ..agents.client import Agent, AgentRefused

    configure_logging(args.log_level)
    make_non_dumpable()  # before the secret is read: a run of this user cannot read it from /proc
    try:
        run_as = resolve_user(args.run_as_user, setting="--run-as-user", process="the agent")
    except StartupError as exc:
        raise CliError(str(exc)) from None
    prepare_state_dir(args.state_dir)
    workdirs = prepare_workdirs(args.work_dir, args.state_dir)  # refused before a token is used up
    try:
        state = load_or_enroll(args)
        warn_if_runs_are_root(run_as, setting="--run-as-user", process="agent")
        agent = Agent(servers=state.servers, secret=state.secret, workdirs=workdirs,
                      max_runs=args.max_runs, drain_s=args.drain_s, run_as=run_as,
                      legacy_workdirs=args.state_dir / "work")
        trio.run(agent.run)
    except Exception as exc:  # trio.run wraps what the nursery raised in exception groups
        refused = find_exception(exc, AgentRefused)
        if refused is not None:
            raise CliError(str(refused)) from None
        raise
    finally:
        _remove_if_empty(workdirs)
    return 0


def _remove_if_empty(path: Path) -> None:
    """This agent's directory under the shared work dir goes when no run directory is left in it."""
    try:
        path.rmdir()
    except OSError:
        pass  # not empty (a run directory that could not be removed) or already gone
