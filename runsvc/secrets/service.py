"""The secrets service (SPEC §17): create, replace, delete, list — what handlers call — and the values of
a run's secrets when it starts (what the scheduler calls). Values are sealed here, before they reach the
store, and opened only for a run that starts; no answer, log line or error message holds one.

The sealing context is `secret:<name>`, so a sealed value copied to another name does not open.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from functools import partial

from ..crypto import SealBroken, open_sealed, seal
from ..model import Secret
from ..store import Store
from ..store import secrets as sql
from ..timeutil import now_ts

NAME_PATTERN = r"[A-Za-z_][A-Za-z0-9_]{0,63}"
NAME_RULE = "a letter or _ then up to 63 of A-Z a-z 0-9 _"
MAX_VALUE_BYTES = 64 * 1024  # 64 KiB of UTF-8
_NAME = re.compile(NAME_PATTERN)

__all__ = [
    "MAX_VALUE_BYTES", "NAME_PATTERN", "NAME_RULE", "InvalidSecretInput", "SecretError", "SecretExists",
    "SecretNotFound", "SecretService", "SecretUnavailable", "is_secret_name",
]


class SecretError(Exception):
    """Base of the secrets service's errors (mapped to HTTP answers in http/errors.py)."""


class SecretNotFound(SecretError):
    """404: no secret of that name."""


class SecretExists(SecretError):
    """409: a secret of that name exists already."""


class InvalidSecretInput(SecretError):
    """400: a value that breaks a rule; the message names the field, never the value."""


class SecretUnavailable(Exception):
    """A run's secret cannot be given to it (deleted since, or it does not open under this server's
    key): the run fails with a `system` event holding this message, which names the secret only."""


def is_secret_name(name: str) -> bool:
    return _NAME.fullmatch(name) is not None


def check_value(value: str) -> None:
    size = len(value.encode("utf-8"))
    if size == 0:
        raise InvalidSecretInput("value must not be empty")
    if size > MAX_VALUE_BYTES:
        raise InvalidSecretInput(f"value must be at most {MAX_VALUE_BYTES} bytes of UTF-8 (got {size})")
    if "\0" in value:
        raise InvalidSecretInput("value must not contain a NUL character (it goes into an environment)")


def _context(name: str) -> str:
    return f"secret:{name}"


class SecretService:
    def __init__(self, store: Store, key: bytes):
        self._store = store
        self._key = key

    async def create(self, name: str, value: str, *, by: str | None) -> Secret:
        """Raises InvalidSecretInput, SecretExists."""
        check_value(value)
        sealed = seal(self._key, _context(name), value)
        secret = await self._store.write(partial(sql.insert_secret, by=by, ts=now_ts()), name, sealed)
        if secret is None:
            raise SecretExists(f"a secret named {name!r} exists already")
        return secret

    async def replace(self, name: str, value: str, *, by: str | None) -> Secret:
        """Raises InvalidSecretInput, SecretNotFound (replacing never creates)."""
        check_value(value)
        sealed = seal(self._key, _context(name), value)
        secret = await self._store.write(partial(sql.replace_secret, by=by, ts=now_ts()), name, sealed)
        if secret is None:
            raise SecretNotFound(f"no secret named {name!r}")
        return secret

    async def delete(self, name: str) -> None:
        """Raises SecretNotFound. Runs already started keep the value they got; later ones fail."""
        if not await self._store.write(sql.delete_secret, name):
            raise SecretNotFound(f"no secret named {name!r}")

    async def values_for(self, mapping: Mapping[str, str]) -> dict[str, str]:
        """Environment variable -> value for a run's `secrets` (environment variable -> secret name),
        read now. Raises SecretUnavailable naming the first secret that is gone or does not open."""
        if not mapping:
            return {}
        sealed = await self._store.read(sql.sealed_values, mapping.values())
        values: dict[str, str] = {}
        for variable, name in sorted(mapping.items()):
            if name not in sealed:
                raise SecretUnavailable(f"secret {name!r} (for {variable}) does not exist any more")
            try:
                values[variable] = open_sealed(self._key, _context(name), sealed[name]).decode("utf-8")
            except (SealBroken, UnicodeDecodeError):
                raise SecretUnavailable(
                    f"secret {name!r} (for {variable}) cannot be decrypted with this server's secret key"
                ) from None
        return values

    # Last: within the class body below it, `list` would name this method, not the type.
    async def list(self) -> list[Secret]:
        """Every secret, by name; without values."""
        return await self._store.read(sql.list_secrets)
