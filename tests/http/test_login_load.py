"""Logins under load (issue 20 #6): an impossible username costs no password hashing, the line in front
of the hashing limiter is bounded (503), and one client address has few logins in progress at once (429).
Counted with a password hasher that counts (and can hold) its calls, never timed."""

from __future__ import annotations

import threading
from functools import partial

import argon2
import httpx
import pytest
import trio

from runsvc.server import serve
from tests.conftest import make_settings
from tests.helpers import PASSWORD, add_user, assert_error

LOGIN = "/api/v1/auth/login"


class CountingHasher(argon2.PasswordHasher):
    """Cheap argon2id that counts hashes and verifies; while `gate` is clear, each verify waits for it
    in its worker thread."""

    def __init__(self) -> None:
        super().__init__(time_cost=1, memory_cost=8, parallelism=1)
        self.hashes = 0
        self.verifies = 0
        self.gate = threading.Event()
        self.gate.set()

    def hash(self, password, *, salt=None):
        self.hashes += 1
        return super().hash(password, salt=salt)

    def verify(self, hash, password):
        self.verifies += 1
        assert self.gate.wait(20), "the test never opened the gate"
        return super().verify(hash, password)


async def _serve(nursery: trio.Nursery, tmp_path, hasher: CountingHasher, **overrides):
    return await nursery.start(partial(serve, make_settings(tmp_path, **overrides), password_hasher=hasher))


async def test_impossible_username_gets_401_without_hashing(tmp_path):
    """A username no user can have is answered with the usual 401 and no argon2 work at all."""
    hasher = CountingHasher()
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            server = await _serve(nursery, tmp_path, hasher)
            await add_user(server, "vera", "viewer")
            async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
                wrong = await client.post(LOGIN, json={"username": "vera", "password": "wrong-password"})
                before = hasher.hashes + hasher.verifies
                for name in ("no such/name", "", "x" * 65, "névé", "a b"):
                    answer = await client.post(LOGIN, json={"username": name, "password": "whatever-1"})
                    assert_error(answer, 401, "unauthenticated", wrong.json()["error"]["message"])
                assert hasher.hashes + hasher.verifies == before
            server.request_shutdown()


async def _wait(condition) -> None:
    while not condition():
        await trio.sleep(0.01)


def _queue_full(server, hasher) -> bool:
    return server.services.auth.passwords.statistics().checks_waiting == 2


def _client_busy(server, hasher) -> bool:
    return hasher.verifies == 2


@pytest.mark.parametrize(
    ("limits", "held", "status", "code"),
    [
        # login_queue checks in progress: the next login is a 503 with Retry-After at once.
        ({"login_queue": 2, "logins_per_client": 10}, _queue_full, 503, "unavailable"),
        # logins_per_client logins in progress from one address: one more is a 429, with no password check.
        ({"login_queue": 10, "logins_per_client": 2}, _client_busy, 429, "too_many_attempts"),
    ],
)
async def test_logins_in_progress_are_bounded(tmp_path, limits, held, status, code):
    """With two logins held inside their password checks, a third is refused at once (503 when the
    hashing queue is full, 429 when its client address has too many in progress, either with
    Retry-After and no password check of its own); the held ones then succeed and free their places."""
    hasher = CountingHasher()
    answers: list[int] = []
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            server = await _serve(nursery, tmp_path, hasher, **limits)
            for name in ("u1", "u2", "u3"):
                await add_user(server, name, "viewer")
            async with httpx.AsyncClient(base_url=server.url, timeout=20) as client:

                async def log_in(name: str) -> None:
                    answer = await client.post(LOGIN, json={"username": name, "password": PASSWORD})
                    answers.append(answer.status_code)

                hasher.gate.clear()
                try:
                    async with trio.open_nursery() as logins:
                        logins.start_soon(log_in, "u1")
                        logins.start_soon(log_in, "u2")
                        await _wait(lambda: held(server, hasher))
                        third = await client.post(LOGIN, json={"username": "u3", "password": PASSWORD})
                        assert_error(third, status, code)
                        assert int(third.headers["Retry-After"]) >= 1
                        assert hasher.verifies == 2
                        refused = server.services.auth.passwords.statistics().checks_refused
                        assert refused == (1 if status == 503 else 0)
                        hasher.gate.set()
                finally:
                    hasher.gate.set()
                assert answers == [200, 200]
                again = await client.post(LOGIN, json={"username": "u3", "password": PASSWORD})
                assert again.status_code == 200  # the finished logins freed their places
            server.request_shutdown()
