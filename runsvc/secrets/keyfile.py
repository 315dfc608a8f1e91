"""The secret key file (setting `secret_key_file`, default `<data-dir>/secret.key`): 32 random bytes,
mode 0600, made on the first start. Every value sealed at rest (secrets, webhooks' signing secrets) is
sealed under it, so it is backed up apart from the database, and replicas share one file.

A file that exists but cannot be used (unreadable, another size) is a bad setting: the server refuses
to start with one line. A missing file is created — unless the database already holds sealed values,
which only the lost key opens: then the server refuses to start (StartupError), since a new key would
silently make them garbage.
"""

from __future__ import annotations

import os
import secrets as random_bytes
from pathlib import Path

from ..config import SettingsError
from ..crypto import KEY_BYTES


class MissingKeyFile(Exception):
    """No key file, but sealed values exist: the operator must restore the key file."""


def read_key_file(path: Path) -> bytes | None:
    """The key in `path`, or None if there is no such file. Raises SettingsError for a file that is not
    a readable file of exactly KEY_BYTES bytes."""
    try:
        with open(path, "rb") as f:
            key = f.read(KEY_BYTES + 1)
    except FileNotFoundError:
        return None
    except IsADirectoryError:
        raise SettingsError(f"secret key file {path} is a directory") from None
    except OSError as exc:
        raise SettingsError(f"cannot read secret key file {path}: {exc.strerror}") from None
    if len(key) != KEY_BYTES:
        size = f"{len(key)}" if len(key) <= KEY_BYTES else f"more than {KEY_BYTES}"
        raise SettingsError(f"secret key file {path} must hold exactly {KEY_BYTES} bytes, not {size}")
    return key


def create_key_file(path: Path) -> bytes:
    """Write a new random key to `path` (mode 0600) unless a file appeared there meanwhile (another
    replica starting at the same moment): then that file's key. The key is written to a temporary file
    first and linked into place, so nobody ever reads a half-written key."""
    key = random_bytes.token_bytes(KEY_BYTES)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, key)
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(temporary, path)
        except FileExistsError:
            existing = read_key_file(path)
            if existing is None:
                raise SettingsError(f"secret key file {path} vanished while it was being created") from None
            return existing
        finally:
            temporary.unlink(missing_ok=True)
    except OSError as exc:
        raise SettingsError(f"cannot create secret key file {path}: {exc.strerror}") from None
    return key


def load_key(path: Path, sealed_rows: int) -> bytes:
    """The server's key: read from `path`, or made there on a first start. `sealed_rows` is how many
    values in the database are sealed under a key; with some and no file, raises MissingKeyFile."""
    key = read_key_file(path)
    if key is not None:
        return key
    if sealed_rows:
        raise MissingKeyFile(
            f"secret key file {path} is missing but the database holds {sealed_rows} encrypted value(s); "
            "restore the key file (or point secret_key_file at it)"
        )
    return create_key_file(path)
