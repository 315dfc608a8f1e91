"""Support for the browser tests: `python -m runsvc serve` (and `python -m runsvc agent`) as subprocesses
for synchronous tests, a logged-in API client, Debian's Chromium driven by Playwright, and a TCP proxy
that can cut connections.

Playwright's sync API cannot run inside Trio, so these tests are plain `def` functions and this module
uses threads where tests/helpers.py uses Trio tasks.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

import attrs
import httpx
from playwright.sync_api import Dialog, Page, expect

from tests.helpers import ADMIN_PASSWORD, LISTENING, TERMINAL, child_env

USER_PASSWORD = "correct-horse-1"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
# Chromium logs every 4xx answer and every dropped WebSocket; most UI tests cause those on purpose.
EXPECTED_CONSOLE_ERRORS = ("Failed to load resource: the server responded with a status of 4",
                           "WebSocket connection to")


@attrs.define
class SyncServer:
    process: subprocess.Popen
    url: str
    lines: list[str]


@contextmanager
def serve(data_dir: Path, *args: str):
    """The server as a subprocess on 127.0.0.1 port 0 for the duration of the block."""
    command = [sys.executable, "-m", "runsvc", "serve", "--host", "127.0.0.1", "--port", "0",
               "--data-dir", str(data_dir), "--drain-s", "0.5", "--kill-grace-s", "1",
               "--max-concurrent-runs", "8",
               # Hypercorn keeps a closed WebSocket's task until its next ping: a short interval keeps
               # shutdown from waiting out its 5 s grace after the browser has gone.
               "--ws-ping-interval-s", "0.5", *args]
    process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, env=child_env(RUNSVC_ADMIN_PASSWORD=ADMIN_PASSWORD))
    lines: list[str] = []
    found = threading.Event()
    url: list[str] = []

    def pump() -> None:
        for raw in process.stderr:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            lines.append(line)
            match = LISTENING.search(line)
            if match and not url:
                url.append(match.group(1))
                found.set()
        found.set()

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    try:
        assert found.wait(30), "server did not start"
        assert url, "server exited before listening:\n" + "\n".join(lines)
        yield SyncServer(process, url[0], lines)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        reader.join(5)
        process.stderr.close()


class SyncAgent:
    """A `python -m runsvc agent …` subprocess (the synchronous twin of agent_helpers.start_agent, which
    needs Trio): its stderr log lines are collected by a thread."""

    def __init__(self, argv: list[str], cwd: Path):
        # `python` as the UI prints it is this interpreter: its directory goes first on PATH.
        env = child_env(PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
        # A process group of its own: `argv` may be a shell running the UI's pipeline, and stop() must reach
        # the agent in it, not only the shell.
        self.process = subprocess.Popen(argv, cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.PIPE, env=env, start_new_session=True)
        self.lines: list[str] = []
        self.changed = threading.Condition()
        self.reader = threading.Thread(target=self._pump, daemon=True)
        self.reader.start()

    def _pump(self) -> None:
        for raw in self.process.stderr:
            with self.changed:
                self.lines.append(raw.decode("utf-8", "replace").rstrip("\n"))
                self.changed.notify_all()
        with self.changed:
            self.changed.notify_all()

    def wait_for(self, text: str, timeout: float = 60) -> None:
        """Until a log line contains `text` (fails if the agent exits first or the deadline passes)."""
        with self.changed:
            found = self.changed.wait_for(
                lambda: any(text in line for line in self.lines) or not self.reader.is_alive(), timeout)
            assert found and any(text in line for line in self.lines), \
                f"agent did not log {text!r}:\n" + "\n".join(self.lines)

    def wait_exit(self, timeout: float = 60) -> int:
        return self.process.wait(timeout)

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self.reader.join(5)
        self.process.stderr.close()


class Api:
    """An httpx client logged in as the admin (or another user), with the CSRF header on changes."""

    def __init__(self, url: str, username: str = "admin", password: str = ADMIN_PASSWORD):
        self.client = httpx.Client(base_url=url, timeout=30)
        response = self.client.post("/api/v1/auth/login", json={"username": username, "password": password})
        assert response.status_code == 200, response.text
        self.csrf = {"X-CSRF-Token": response.json()["csrf_token"]}

    def post(self, path: str, body: dict) -> dict:
        response = self.client.post(f"/api/v1{path}", json=body, headers=self.csrf)
        assert response.status_code in (200, 201, 202), response.text
        return response.json()

    def get(self, path: str, **params) -> dict:
        response = self.client.get(f"/api/v1{path}", params=params)
        assert response.status_code == 200, response.text
        return response.json()

    def submit(self, script: str, name: str | None = None) -> dict:
        return self.post("/runs", {"command": ["sh", "-c", script], "name": name})["run"]

    def wait(self, run_id: int, statuses=TERMINAL, timeout: float = 60) -> dict:
        """Wait (with a deadline) for the run to reach one of `statuses`."""
        deadline = time.monotonic() + timeout
        while True:
            run = self.get(f"/runs/{run_id}")["run"]
            if run["status"] in statuses:
                return run
            assert time.monotonic() < deadline, f"run {run_id} still {run['status']}"
            time.sleep(0.05)

    def close(self) -> None:
        self.client.close()


class CuttingProxy:
    """A TCP proxy to the server on 127.0.0.1 that can drop every open connection on demand (the
    browser's WebSocket breaks as a network failure would, from outside the page). A real network
    cannot be told to fail at a chosen moment, hence the proxy."""

    def __init__(self, target_url: str):
        host, port = target_url.removeprefix("http://").rsplit(":", 1)
        self.target = (host, int(port))
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.lock = threading.Lock()
        self.open: list[socket.socket] = []
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            with self.lock:
                self.open += [client, upstream]
            threading.Thread(target=self._pipe, args=(client, upstream), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client), daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        for sock in (source, sink):
            _shut(sock)

    def cut(self) -> int:
        """Drop every connection open now; return how many were dropped."""
        with self.lock:
            victims, self.open = self.open, []
        for sock in victims:
            _shut(sock)
        return len(victims) // 2

    def close(self) -> None:
        self.listener.close()
        self.cut()


def _shut(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()


def launch_chromium(playwright):
    assert os.path.exists(CHROMIUM), f"{CHROMIUM} is missing (scripts/test installs it with apt)"
    return playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)


@contextmanager
def checked_pages(browser, expected_console_errors: tuple[str, ...] = EXPECTED_CONSOLE_ERRORS):
    """A factory of pages in fresh browser contexts (fresh cookies). Leaving the block fails on any
    uncaught page error, dialog, or console error (a CSP violation is one) that does not start with one
    of `expected_console_errors`; pass () to allow none at all."""
    contexts, errors = [], []

    def console(message) -> None:
        if message.type == "error" and not (expected_console_errors and
                                            message.text.startswith(expected_console_errors)):
            errors.append(f"console: {message.text}")

    def make(*, on_dialog: Callable[[Dialog], None] | None = None, **options) -> Page:
        """A page in a new context made with `options`; a page that expects dialogs (a confirm) passes
        `on_dialog`, which then answers each one instead of it failing the test."""
        context = browser.new_context(accept_downloads=True, **options)
        contexts.append(context)
        page = context.new_page()
        page.on("pageerror", lambda error: errors.append(f"page error: {error}"))
        page.on("console", console)
        page.on("dialog", on_dialog or (lambda dialog: (errors.append(f"dialog: {dialog.message}"), dialog.dismiss())))
        return page

    yield make
    for context in contexts:
        context.close()
    assert not errors, errors


# ---- page helpers ---------------------------------------------------------------------------------

def gate(tmp_path: Path, name: str) -> tuple[Path, str]:
    """A file the test creates to let a run continue, and the shell line that waits for it."""
    path = tmp_path / name
    return path, f"while [ ! -e '{path}' ]; do sleep 0.02; done"


def log_in(page: Page, url: str, username: str, password: str = USER_PASSWORD, path: str = "/") -> None:
    page.goto(url + path)
    expect(page).to_have_url(re.compile(r"/login\?next="))
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("button", name="Log out")).to_be_visible()


def line(page: Page, seq: int):
    return page.get_by_role("log", name="Output").locator(f'[data-seq="{seq}"]')


def shown_lines(page: Page) -> list[tuple[int, str]]:
    """(seq, text) of every line element in the log, in DOM order; text without the number."""
    rows = page.get_by_role("log", name="Output").locator(".line").evaluate_all(
        "rows => rows.map(r => [Number(r.dataset.seq), r.querySelector('.tx').textContent])")
    return [(seq, text) for seq, text in rows]


def in_viewport(page: Page, locator) -> bool:
    box = locator.bounding_box()
    log_box = page.get_by_role("log", name="Output").bounding_box()
    slack = 1  # layout uses fractional pixels
    return (box is not None and log_box["y"] - slack <= box["y"]
            and box["y"] + box["height"] <= log_box["y"] + log_box["height"] + slack)
