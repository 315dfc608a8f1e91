"""Test helpers: a real `python -m runsvc serve` subprocess, and log-line parsing."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import attrs
import trio

LISTENING = re.compile(r'listening on (http://[^\s"]+)')


@attrs.define
class ServerProcess:
    """`python -m runsvc serve` started exactly as a user would, bound to 127.0.0.1 port 0."""

    process: trio.Process
    url: str
    stderr_lines: list[str]

    def send_signal(self, signum: int = signal.SIGTERM) -> None:
        self.process.send_signal(signum)

    async def wait(self) -> int:
        return await self.process.wait()

    def log_text(self) -> str:
        return "\n".join(self.stderr_lines)


def child_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNSVC_")}
    env.update(extra)
    return env


async def _pump_stderr(stream: trio.abc.ReceiveStream, lines: list[str], found: trio.Event) -> None:
    buffer = b""
    async for chunk in stream:
        buffer += chunk
        *complete, buffer = buffer.split(b"\n")
        for raw in complete:
            line = raw.decode("utf-8", "replace")
            lines.append(line)
            if LISTENING.search(line):
                found.set()
    found.set()  # stream closed: the process died before listening


async def start_server(
    nursery: trio.Nursery,
    data_dir: Path,
    *args: str,
    env: dict[str, str] | None = None,
) -> ServerProcess:
    """Start the server in `nursery`; return once it logs its URL (fails if it dies first)."""
    command = [sys.executable, "-m", "runsvc", "serve", "--host", "127.0.0.1", "--port", "0",
               "--data-dir", str(data_dir), *args]
    process = await trio.lowlevel.open_process(
        command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        env=env or child_env(RUNSVC_ADMIN_PASSWORD="admin-password-1"),
    )
    lines: list[str] = []
    found = trio.Event()
    nursery.start_soon(_pump_stderr, process.stderr, lines, found)
    with trio.fail_after(20):
        await found.wait()
    for line in lines:
        match = LISTENING.search(line)
        if match:
            return ServerProcess(process, match.group(1), lines)
    raise AssertionError("server exited before listening:\n" + "\n".join(lines))
