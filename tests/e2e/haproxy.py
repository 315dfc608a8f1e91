"""Debian's haproxy in front of runsvc servers, for end-to-end tests (scripts/test installs it with apt).

`running_haproxy(backend_urls)` writes a configuration to a temporary directory and runs haproxy in the
foreground on 127.0.0.1 (a port nothing else takes, see tests.helpers.unused_port): HTTP mode, round robin
over the backends, WebSockets passed through (`timeout tunnel` keeps a quiet socket open between pings),
health checks `GET /healthz` every 200 ms (a backend is out after 2 failures, back after 1 success).
Its admin socket tells the test what haproxy thinks of each backend (`server_states`). At the end haproxy
is stopped and the directory removed.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import urllib.parse
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

import attrs
import trio

from tests.helpers import unused_port

HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"  # /usr/sbin may be missing from a user's PATH

_CONFIG = """\
global
    maxconn 512
    stats socket {admin} mode 600 level admin

defaults
    mode http
    timeout connect 2s
    timeout http-request 10s
    timeout client 30s
    timeout server 30s
    timeout tunnel 1h  # an upgraded (WebSocket) connection: runsvc and its clients ping far more often
    retries 2

frontend runsvc
    bind 127.0.0.1:{port}
    default_backend servers

backend servers
    balance roundrobin
    option httpchk
    http-check send meth GET uri /healthz ver HTTP/1.1 hdr Host 127.0.0.1
    http-check expect status 200
    default-server inter 200ms fastinter 200ms downinter 200ms fall 2 rise 1
{servers}
"""


@attrs.define
class Haproxy:
    url: str  # what clients use: http://127.0.0.1:<port>
    process: trio.Process
    config: str
    admin_socket: Path
    stderr_lines: list[str]

    async def server_states(self) -> dict[str, tuple[str, str]]:
        """Each backend server (s0, s1, … in the order given) → (status, last check), e.g. ("UP", "L7OK")
        once /healthz answered 200, ("DOWN", "L4CON") while nothing listens."""
        stream = await trio.open_unix_socket(str(self.admin_socket))
        async with stream:
            await stream.send_all(b"show stat\n")
            answer = b""
            async for chunk in stream:
                answer += chunk
        header, *rows = answer.decode().strip().splitlines()
        names = header.lstrip("# ").split(",")
        states = {}
        for row in rows:
            fields = dict(zip(names, row.split(","), strict=False))
            if fields["pxname"] == "servers" and fields["svname"] not in ("BACKEND", "FRONTEND"):
                # "* " marks a check in progress; the status shown is the last one's.
                states[fields["svname"]] = (fields["status"], fields["check_status"].removeprefix("* "))
        return states

    async def wait_server(self, name: str, status: str) -> tuple[str, str]:
        """Until haproxy's health checks have put backend server `name` in `status` ("UP", "DOWN"), after
        at least one check (a server starts UP before its first check, "INI")."""
        while (state := (await self.server_states())[name])[0] != status or state[1] in ("", "INI", "UNK"):
            await trio.sleep(0.05)
        return state

    def log_text(self) -> str:
        return self.config + "\n" + "\n".join(self.stderr_lines)


@asynccontextmanager
async def running_haproxy(backend_urls: Sequence[str]) -> AsyncIterator[Haproxy]:
    """haproxy round robin over `backend_urls` (http://host:port), listening once the block starts."""
    assert Path(HAPROXY).exists(), "haproxy is not installed: scripts/test installs it (apt-get install haproxy)"
    servers = []
    for index, url in enumerate(backend_urls):
        parts = urllib.parse.urlsplit(url)
        servers.append(f"    server s{index} {parts.hostname}:{parts.port} check")
    with tempfile.TemporaryDirectory(prefix="runsvc-haproxy-") as directory:
        port = unused_port()
        admin = Path(directory) / "admin.sock"
        config = _CONFIG.format(admin=admin, port=port, servers="\n".join(servers))
        config_file = Path(directory) / "haproxy.cfg"
        config_file.write_text(config)
        checked = await trio.run_process([HAPROXY, "-c", "-q", "-f", str(config_file)], capture_stdout=True,
                                         capture_stderr=True, check=False)
        assert checked.returncode == 0, config + checked.stdout.decode() + checked.stderr.decode()
        process = await trio.lowlevel.open_process(
            [HAPROXY, "-db", "-f", str(config_file)], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        proxy = Haproxy(f"http://127.0.0.1:{port}", process, config, admin, [])
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_pump, process.stderr, proxy.stderr_lines)
                while not await _accepts(port):
                    assert process.returncode is None and process.poll() is None, proxy.log_text()
                    await trio.sleep(0.05)
                while not admin.exists():
                    await trio.sleep(0.05)
                yield proxy
                process.terminate()
        finally:
            with trio.CancelScope(shield=True):
                if process.returncode is None:
                    process.terminate()
                with trio.move_on_after(5):
                    await process.wait()
                if process.returncode is None:
                    process.kill()
                    await process.wait()


async def _accepts(port: int) -> bool:
    try:
        stream = await trio.open_tcp_stream("127.0.0.1", port)
    except OSError:
        return False
    await stream.aclose()
    return True


async def _pump(stream: trio.abc.ReceiveStream, lines: list[str]) -> None:
    buffer = b""
    async for chunk in stream:
        buffer += chunk
        *complete, buffer = buffer.split(b"\n")
        lines.extend(raw.decode("utf-8", "replace") for raw in complete)
