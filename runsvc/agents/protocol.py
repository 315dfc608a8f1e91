"""The agent protocol: JSON text frames on /api/v1/agents/ws (see README, "Remote agents").

Agent → server: `hello`, `output`, `finished`, `drain`, `ping`.
Server → agent: `welcome`, `assign`, `ack`, `cancel`, `ping`.

This module only knows the shapes of the messages; both ends (hub.py, client.py) use it. Frames from an
agent are hostile input (SPEC §14): every integer is bounded to what the schema holds (SQLite's signed
64-bit INTEGER; exit codes to what a process can report), and no string may hold a lone surrogate (it
cannot be encoded as UTF-8, so it could be neither stored nor sent to a watcher). A frame that breaks a
rule is a ProtocolError: the hub closes that agent's socket with 1008 and nothing else is touched.
"""

from __future__ import annotations

import json
from typing import Any

from ..model import TERMINAL_STATUSES

OUTPUT_KINDS = ("stdout", "stderr", "system")  # `system` lines from an agent are dropped (see link.py)
MAX_INT64 = 2**63 - 1  # SQLite's INTEGER: run ids, attempts, chunk numbers, capacity
MIN_EXIT_CODE, MAX_EXIT_CODE = -255, 255  # an exit status 0-255, or -N for death by signal N


class ProtocolError(Exception):
    """A frame that is not a message of the protocol (the receiver closes the connection, 1008)."""


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _int(message: dict[str, Any], key: str, minimum: int = 0, where: str | None = None) -> int:
    value = message.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or not minimum <= value <= MAX_INT64:
        raise ProtocolError(f"{where or message.get('type')}.{key} must be an integer from {minimum} to {MAX_INT64}")
    return value


def _check_output(message: dict[str, Any]) -> None:
    _int(message, "run_id", 1)
    _int(message, "attempt", 1)
    _int(message, "chunk", 1)
    lines = message.get("lines")
    if not isinstance(lines, list):
        raise ProtocolError("output.lines must be a list")
    for line in lines:
        if not (isinstance(line, list) and len(line) == 2 and line[0] in OUTPUT_KINDS and isinstance(line[1], str)):
            raise ProtocolError("output.lines must be [kind, text] pairs")


def _check_finished(message: dict[str, Any]) -> None:
    _int(message, "run_id", 1)
    _int(message, "attempt", 1)
    _int(message, "last_chunk", 0)
    if message.get("status") not in TERMINAL_STATUSES:
        raise ProtocolError("finished.status must be a terminal status")
    exit_code = message.get("exit_code")
    if exit_code is not None and not (_is_int(exit_code) and MIN_EXIT_CODE <= exit_code <= MAX_EXIT_CODE):
        raise ProtocolError(f"finished.exit_code must be an integer from {MIN_EXIT_CODE} to {MAX_EXIT_CODE} or null")
    reason = message.get("reason")
    if reason is not None and not isinstance(reason, str):
        raise ProtocolError("finished.reason must be a string or null")


def _check_hello(message: dict[str, Any]) -> None:
    _int(message, "capacity", 0)
    runs = message.get("runs")
    if not isinstance(runs, list):
        raise ProtocolError("hello.runs must be a list")
    for held in runs:
        if not isinstance(held, dict):
            raise ProtocolError("hello.runs must hold objects")
        _int(held, "run_id", 1, "hello.runs")
        _int(held, "attempt", 1, "hello.runs")
        _int(held, "acked_chunk", 0, "hello.runs")


_CHECKS = {
    "hello": _check_hello,
    "output": _check_output,
    "finished": _check_finished,
    "drain": lambda message: None,
    "ping": lambda message: None,
}


def parse_agent_message(text: str | bytes) -> dict[str, Any]:
    """A frame from an agent, checked; raises ProtocolError."""
    if isinstance(text, bytes):
        raise ProtocolError("binary frames are not part of the protocol")
    try:
        message = json.loads(text)
    except ValueError:
        raise ProtocolError("frame is not JSON") from None
    if not isinstance(message, dict) or message.get("type") not in _CHECKS:
        raise ProtocolError("frame is not a message of the agent protocol")
    # The text itself is valid UTF-8 (a WebSocket text frame); a lone surrogate can only come from a
    # \uXXXX escape, so only a frame holding one needs the (whole-frame, C-speed) encoding check.
    if "\\u" in text:
        try:
            json.dumps(message, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            raise ProtocolError("frame must not contain lone surrogates (\\ud800-\\udfff)") from None
    _CHECKS[message["type"]](message)
    return message


def dumps(message: dict[str, Any]) -> str:
    return json.dumps(message, ensure_ascii=False, separators=(",", ":"))
