"""Password hashing with argon2id, off the Trio thread.

Hashing and verifying take tens of milliseconds of CPU and (with the defaults) 64 MiB of memory each, so
they run in worker threads under their own CapacityLimiter: a burst of logins cannot take every thread
or every megabyte. The line in front of that limiter is bounded too (`max_waiting`): past it a login's
check is refused at once (HashingBusy, a 503) instead of making every later login, the admin's
included, wait behind the burst.
"""

from __future__ import annotations

import os

import argon2
import attrs
import trio
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError


class HashingBusy(Exception):
    """Too many password checks are waiting already; the caller should try again shortly."""


@attrs.frozen
class PasswordStatistics:
    checks_waiting: int  # login password checks hashing now or waiting for the limiter
    checks_refused: int  # refused with HashingBusy since start


class Passwords:
    """Hash, verify and check for rehash with one argon2id `PasswordHasher`."""

    def __init__(
        self,
        hasher: argon2.PasswordHasher | None = None,
        *,
        concurrency: int | None = None,
        max_waiting: int = 64,
    ):
        # The argon2-cffi default is RFC 9106's low-memory profile: argon2id, t=3, m=64 MiB, p=4.
        self.hasher = hasher or argon2.PasswordHasher()
        if self.hasher.type is not argon2.Type.ID:
            raise ValueError("passwords must be hashed with argon2id")
        self._limiter = trio.CapacityLimiter(concurrency or max(2, os.cpu_count() or 1))
        self._dummy_hash: str | None = None
        self._max_waiting = max_waiting
        self._waiting = 0
        self._refused = 0

    def statistics(self) -> PasswordStatistics:
        return PasswordStatistics(self._waiting, self._refused)

    async def hash(self, password: str) -> str:
        """Not bounded by `max_waiting`: an admin creating a user or setting a password is not a login."""
        return await trio.to_thread.run_sync(self.hasher.hash, password, limiter=self._limiter)

    async def verify(self, password_hash: str, password: str) -> bool:
        """Whether `password` matches; HashingBusy when `max_waiting` checks are waiting already."""
        if self._waiting >= self._max_waiting:
            self._refused += 1
            raise HashingBusy("too many logins in progress; try again later")
        self._waiting += 1
        try:
            return await trio.to_thread.run_sync(self._verify, password_hash, password, limiter=self._limiter)
        finally:
            self._waiting -= 1

    async def verify_dummy(self, password: str) -> None:
        """Spend the time of a verification on a hash no password matches (for unknown users).

        The first call makes that hash instead, which costs the same as verifying against it.
        """
        if self._dummy_hash is None:
            self._dummy_hash = await self.hash(os.urandom(16).hex())
            return
        await self.verify(self._dummy_hash, password)

    def needs_rehash(self, password_hash: str) -> bool:
        """Was `password_hash` made with other parameters than ours? (Cheap: parses the hash.)"""
        try:
            return self.hasher.check_needs_rehash(password_hash)
        except (InvalidHashError, ValueError):
            return True

    def _verify(self, password_hash: str, password: str) -> bool:
        try:
            return self.hasher.verify(password_hash, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False
