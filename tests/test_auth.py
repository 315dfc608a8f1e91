"""The accounts service on a real SQLite store: passwords, sessions, the throttle, user changes."""

from __future__ import annotations

import datetime as dt
import hashlib

import argon2
import pytest
import trio

from runsvc.accounts import Passwords
from runsvc.accounts.service import (
    Auth,
    InvalidAccountInput,
    LastAdmin,
    LoginFailed,
    LoginLocked,
    UsernameTaken,
    UserNotFound,
    csrf_token_for,
)
from runsvc.store import sessions as session_store
from runsvc.store import throttle as throttle_store
from runsvc.store.maintenance import delete_expired
from runsvc.timeutil import format_ts, utcnow
from tests.helpers import FAST_HASHER, PASSWORD

CLIENT = "192.0.2.1"


class CountingHasher(argon2.PasswordHasher):
    """argon2id with cheap parameters that counts its hash and verify calls."""

    def __init__(self, **params):
        super().__init__(**{"time_cost": 1, "memory_cost": 8, "parallelism": 1, **params})
        self.calls: list[str] = []

    def hash(self, password, *, salt=None):
        self.calls.append("hash")
        return super().hash(password, salt=salt)

    def verify(self, hash, password):
        self.calls.append("verify")
        return super().verify(hash, password)


class Clock:
    def __init__(self):
        self.now = utcnow()

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += dt.timedelta(seconds=seconds)


@pytest.fixture(name="clock")
def _clock():
    return Clock()


@pytest.fixture(name="auth")
def _auth(store, clock):
    return Auth(store=store, passwords=Passwords(FAST_HASHER), session_ttl_s=3600, clock=clock)


async def test_login_creates_a_session_that_authenticates(auth):
    """login() answers a session and a token; authenticate(token) finds the same user and CSRF token."""
    with trio.fail_after(10):
        alice = await auth.create_user("alice", PASSWORD, "operator")
        session, token = await auth.login("alice", PASSWORD, CLIENT)
        found = await auth.authenticate(token)
    assert session.user == alice == found.user
    assert session.csrf_token == found.csrf_token == csrf_token_for(token)
    # The CSRF token cannot be computed from what the database holds.
    assert csrf_token_for(token) != hashlib.sha256(b"csrf:" + hashlib.sha256(token.encode()).digest()).hexdigest()


async def test_sessions_expire_after_their_ttl(auth, clock):
    """A session works until session_ttl_s has passed, then authenticate() answers None."""
    with trio.fail_after(10):
        await auth.create_user("alice", PASSWORD, "viewer")
        _, token = await auth.login("alice", PASSWORD, CLIENT)
        clock.advance(3599)
        assert await auth.authenticate(token) is not None
        clock.advance(1)
        assert await auth.authenticate(token) is None


async def test_authenticate_refuses_junk(auth):
    """None, empty, unknown and absurdly long tokens authenticate nobody."""
    with trio.fail_after(10):
        for token in (None, "", "x" * 43, "x" * 10_000):
            assert await auth.authenticate(token) is None


async def test_login_rehashes_when_parameters_change(store):
    """A hash made with old parameters is replaced on the next good login; sessions survive it."""
    with trio.fail_after(10):
        old = Auth(store=store, passwords=Passwords(CountingHasher(time_cost=1)), session_ttl_s=60)
        await old.create_user("alice", PASSWORD, "viewer")
        _, old_token = await old.login("alice", PASSWORD, CLIENT)
        new_hasher = CountingHasher(time_cost=2)
        new = Auth(store=store, passwords=Passwords(new_hasher), session_ttl_s=60)
        await new.login("alice", PASSWORD, CLIENT)
        stored = await store.read(lambda c: c.execute("SELECT password_hash FROM users").fetchone()[0])
        assert stored.startswith("$argon2id$") and ",t=2," in stored
        assert not new_hasher.check_needs_rehash(stored)
        assert new_hasher.calls == ["verify", "hash"]
        assert await new.authenticate(old_token) is not None
        new_hasher.calls.clear()
        await new.login("alice", PASSWORD, CLIENT)
        assert new_hasher.calls == ["verify"]  # no second rehash


async def test_every_refused_login_costs_one_argon2_computation(store):
    """Unknown user, wrong password, disabled user: each spends one hash or verify (so a name that could
    exist is not told apart by time); an impossible name spends none (issue 20 #6)."""
    with trio.fail_after(10):
        hasher = CountingHasher()
        auth = Auth(store=store, passwords=Passwords(hasher), session_ttl_s=60)
        await auth.create_user("alice", PASSWORD, "viewer")
        bob = await auth.create_user("bob", PASSWORD, "viewer")
        await auth.update_user(bob.id, disabled=True)
        hasher.calls.clear()
        for username, password in [("nobody", PASSWORD), ("nobody", PASSWORD), ("alice", "wrong-pass"),
                                   ("bob", PASSWORD), ("bad name", PASSWORD)]:
            before = len(hasher.calls)
            with pytest.raises(LoginFailed, match="^invalid username or password$"):
                await auth.login(username, password, CLIENT)
            assert len(hasher.calls) == before + (username != "bad name"), (username, hasher.calls)
    # The very first unknown-user login makes the dummy hash (as costly as a verify), later ones verify.
    assert hasher.calls == ["hash", "verify", "verify", "verify"]


async def test_lockout_and_its_persistence_in_sqlite(auth, store, clock):
    """The fifth failure locks out with retry_after_s; the row is in SQLite; success deletes it."""
    with trio.fail_after(10):
        await auth.create_user("alice", PASSWORD, "viewer")
        for _ in range(5):
            with pytest.raises(LoginFailed):
                await auth.login("Alice", "wrong-pass", CLIENT)
        row = await store.read(throttle_store.get_throttle, "alice", CLIENT)
        assert row["failures"] == 5 and row["lockout_s"] == 60
        with pytest.raises(LoginLocked) as info:
            await auth.login("alice", PASSWORD, CLIENT)
        assert info.value.retry_after_s == 60
        assert str(info.value) == "too many failed logins; try again in 60 s"
        # The refusal during the lockout did not count as a failure.
        assert (await store.read(throttle_store.get_throttle, "alice", CLIENT))["failures"] == 5
        await auth.login("alice", PASSWORD, "198.51.100.7")  # another client is not locked out
        clock.advance(60)
        await auth.login("alice", PASSWORD, CLIENT)
        assert await store.read(throttle_store.get_throttle, "alice", CLIENT) is None


async def test_create_user_rules(auth):
    """Names are checked and unique without regard to case; passwords and roles are checked."""
    with trio.fail_after(10):
        await auth.create_user("alice", PASSWORD, "viewer")
        with pytest.raises(UsernameTaken, match="^username ALICE is already taken$"):
            await auth.create_user("ALICE", PASSWORD, "viewer")
        with pytest.raises(InvalidAccountInput, match="^username must be"):
            await auth.create_user("al ice", PASSWORD, "viewer")
        with pytest.raises(InvalidAccountInput, match="^password must be at least 8 characters$"):
            await auth.create_user("bob", "1234567", "viewer")
        with pytest.raises(InvalidAccountInput, match="^password must be at most 1024 characters$"):
            await auth.create_user("bob", "x" * 1025, "viewer")
        with pytest.raises(InvalidAccountInput, match="^role must be one of viewer, operator, admin$"):
            await auth.create_user("bob", PASSWORD, "Admin")
        await auth.create_user("bob", "12345678", "viewer")  # exactly 8 is enough


async def test_first_admin_is_created_only_on_an_empty_database(auth):
    """create_first_admin() creates `admin` once; with any user present it does nothing."""
    with trio.fail_after(10):
        admin = await auth.create_first_admin("first-password")
        assert admin.username == "admin" and admin.role == "admin"
        assert await auth.create_first_admin("other-password") is None
        await auth.login("admin", "first-password", CLIENT)
        with pytest.raises(InvalidAccountInput):
            await auth.create_first_admin("short")


async def test_disabled_admins_do_not_count_as_the_last_admin(auth):
    """With one admin enabled and another disabled, the enabled one is the last and is protected."""
    with trio.fail_after(10):
        one = await auth.create_user("one", PASSWORD, "admin")
        two = await auth.create_user("two", PASSWORD, "admin")
        await auth.update_user(two.id, disabled=True)
        with pytest.raises(LastAdmin):
            await auth.update_user(one.id, role="operator")
        with pytest.raises(LastAdmin):
            await auth.update_user(one.id, disabled=True)
        # The disabled admin may be demoted; re-enabling it frees `one`.
        await auth.update_user(two.id, disabled=False)
        demoted = await auth.update_user(one.id, role="viewer")
        assert demoted.role == "viewer"


async def test_password_change_and_disable_delete_sessions_role_change_does_not(auth, store):
    """Sessions are deleted on a new password or on disable, kept on a role change."""

    async def sessions_of(user_id):
        return await store.read(session_store.count_user_sessions, user_id)

    with trio.fail_after(10):
        alice = await auth.create_user("alice", PASSWORD, "viewer")
        await auth.login("alice", PASSWORD, CLIENT)
        await auth.login("alice", PASSWORD, CLIENT)
        await auth.update_user(alice.id, role="operator")
        assert await sessions_of(alice.id) == 2
        await auth.set_password("ALICE", "another-password")
        assert await sessions_of(alice.id) == 0
        await auth.login("alice", "another-password", CLIENT)
        await auth.update_user(alice.id, disabled=True)
        assert await sessions_of(alice.id) == 0
        with pytest.raises(UserNotFound, match="^no user named nobody$"):
            await auth.set_password("nobody", "another-password")
        with pytest.raises(UserNotFound, match="^no user with id 99$"):
            await auth.update_user(99, role="viewer")


async def test_maintenance_deletes_what_auth_wrote(auth, store, clock):
    """The maintenance SQL deletes the expired sessions and the stale, unlocked throttle rows that
    real logins wrote, and keeps the rest."""
    with trio.fail_after(10):
        await auth.create_user("alice", PASSWORD, "viewer")
        _, token = await auth.login("alice", PASSWORD, CLIENT)
        for client in ("a", "b"):
            for _ in range(5 if client == "a" else 1):
                with pytest.raises(LoginFailed):
                    await auth.login("alice", "wrong-pass", client)
        now = format_ts(clock())
        later = format_ts(clock.now + dt.timedelta(1))
        counts = await store.write(delete_expired, now, later, 100)
        assert (counts.sessions, counts.login_throttle) == (0, 1)  # "a" is locked out, so it stays
        clock.advance(3600)
        counts = await store.write(delete_expired, format_ts(clock()), now, 100)
        assert counts.sessions == 1
        assert await auth.authenticate(token) is None


def test_only_argon2id_is_accepted():
    """A hasher of another argon2 type is refused."""
    with pytest.raises(ValueError, match="argon2id"):
        Passwords(argon2.PasswordHasher(type=argon2.Type.I))


async def test_passwords_handle_garbage_hashes():
    """A stored hash that is not an argon2 hash verifies nothing and needs a rehash."""
    passwords = Passwords(FAST_HASHER)
    with trio.fail_after(10):
        assert await passwords.verify("not-a-hash", "whatever") is False
    assert passwords.needs_rehash("not-a-hash") is True
    assert passwords.needs_rehash(FAST_HASHER.hash("x")) is False
    assert Passwords().hasher.type is argon2.Type.ID
