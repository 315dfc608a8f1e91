"""The first admin: created on a database without users, with a password the operator can find."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

import trio

from ..config import Settings
from ..log import get_logger
from .service import Auth, InvalidAccountInput

log = get_logger(__name__)

ADMIN_PASSWORD_ENV = "RUNSVC_ADMIN_PASSWORD"  # a secret: read here only, never a setting
INITIAL_ADMIN_PASSWORD_FILE = "initial-admin-password"


class StartupError(Exception):
    """The server cannot start; the message is one line for the operator."""


async def create_initial_admin(
    settings: Settings, auth: Auth, given: str | None = None
) -> None:
    """On a database without users, create `admin` with `given` (the server passes what it read from
    $RUNSVC_ADMIN_PASSWORD), or else with a random password written only to
    <data-dir>/initial-admin-password (mode 0600), never to the log."""
    if await auth.has_users():
        return
    generated = given is None
    password = secrets.token_urlsafe(18) if given is None else given
    try:
        user = await auth.create_first_admin(password)
    except InvalidAccountInput as exc:
        raise StartupError(f"{ADMIN_PASSWORD_ENV}: {exc}") from None
    if user is None:  # somebody else (the user CLI) created the first user meanwhile
        return
    if not generated:
        log.info(f"created user admin with the password from {ADMIN_PASSWORD_ENV}", username="admin")
        return
    path = settings.data_dir / INITIAL_ADMIN_PASSWORD_FILE
    try:
        await trio.to_thread.run_sync(_write_secret_file, path, password + "\n")
    except OSError as exc:
        raise StartupError(f"cannot write the initial admin password to {path}: {exc.strerror}") from None
    log.warning(
        f"created user admin with a random password, written to {path}; change it after logging in",
        username="admin", written_to=str(path),
    )


def _write_secret_file(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with open(fd, "w", encoding="utf-8") as f:
        os.fchmod(fd, 0o600)  # also when the file existed with a wider mode
        f.write(text)
