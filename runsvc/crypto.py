"""Sealing small secrets at rest: AES-256-GCM (the `cryptography` library) under one key file.

A sealed value is the 12-byte random nonce followed by the ciphertext and its 16-byte tag. The
`associated` text (e.g. "webhook:7") is authenticated but not stored: a sealed value copied into
another row, or another kind of row, does not open there.

The key is 32 random bytes in `secret_key_file` (default `<data-dir>/secret.key`), created with mode
0600 on the first start; replicas share one key file. A missing key file is created only where nothing
sealed exists yet; a key file of the wrong length is refused with one line (KeyFileError).
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

KEY_BYTES = 32  # AES-256
NONCE_BYTES = 12  # GCM's standard nonce; random per seal (2^-32 collision bound far beyond our volumes)


class KeyFileError(Exception):
    """The key file cannot be used (unreadable, wrong size). The message is one line for the user."""


class CannotUnseal(Exception):
    """A sealed value does not open under this key (another key, tampered, or another row's value)."""


def seal(key: bytes, associated: str, plaintext: bytes) -> bytes:
    """Nonce + AES-256-GCM ciphertext and tag of `plaintext`, bound to `associated`."""
    nonce = secrets.token_bytes(NONCE_BYTES)
    return nonce + AESGCM(key).encrypt(nonce, plaintext, associated.encode())


def unseal(key: bytes, associated: str, sealed: bytes) -> bytes:
    """The plaintext of `seal(key, associated, plaintext)`. Raises CannotUnseal."""
    if len(sealed) < NONCE_BYTES + 16:
        raise CannotUnseal("sealed value is too short")
    try:
        return AESGCM(key).decrypt(sealed[:NONCE_BYTES], sealed[NONCE_BYTES:], associated.encode())
    except InvalidTag:
        raise CannotUnseal("sealed value does not open with this key") from None


def load_or_create_key(path: Path) -> bytes:
    """The key in `path`, created (32 random bytes, mode 0600) if the file does not exist.
    Raises KeyFileError (one line) when it exists but cannot be used."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass
    except OSError as exc:
        raise KeyFileError(f"cannot create the secret key file {path}: {exc.strerror}") from None
    else:
        with os.fdopen(fd, "wb") as file:
            file.write(secrets.token_bytes(KEY_BYTES))
            file.flush()
            os.fsync(file.fileno())
    try:
        key = path.read_bytes()
    except OSError as exc:
        raise KeyFileError(f"cannot read the secret key file {path}: {exc.strerror}") from None
    if len(key) != KEY_BYTES:
        raise KeyFileError(f"the secret key file {path} must hold exactly {KEY_BYTES} bytes, not {len(key)}")
    return key
