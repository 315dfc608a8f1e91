"""Sealing small values at rest: AES-256-GCM (the `cryptography` library) under one 32-byte key.

    sealed = seal(key, "secret:prod_db", "hunter2")        # bytes: 12-byte nonce + ciphertext + tag
    open_sealed(key, "secret:prod_db", sealed)              # b"hunter2"

`context` is the associated data: authenticated, not encrypted. A sealed value opens only under the
context it was sealed with, so a row copied to another name (or another table) does not open there.
Each caller picks its own context prefix ("secret:<name>", "webhook:<id>"), which keeps the values of
different features apart under one key. Nothing here knows what the values are.

The key comes from the key file (secrets/keyfile.py); a nonce is 96 random bits per seal, which is safe
for far more values than a runsvc database holds (NIST SP 800-38D: up to 2^32 seals per key).
"""

from __future__ import annotations

import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

KEY_BYTES = 32  # AES-256
NONCE_BYTES = 12  # GCM's standard nonce
TAG_BYTES = 16

__all__ = ["KEY_BYTES", "NONCE_BYTES", "SealBroken", "new_key", "open_sealed", "seal"]


class SealBroken(Exception):
    """A sealed value does not open: another key, another context, or altered bytes."""


def new_key() -> bytes:
    """A fresh random key."""
    return AESGCM.generate_key(bit_length=KEY_BYTES * 8)


def _text(value: str | bytes) -> bytes:
    return value.encode() if isinstance(value, str) else value


def seal(key: bytes, context: str | bytes, value: str | bytes) -> bytes:
    """`value` encrypted and authenticated together with `context`: nonce + ciphertext + tag."""
    nonce = os.urandom(NONCE_BYTES)
    return nonce + AESGCM(key).encrypt(nonce, _text(value), _text(context))


def open_sealed(key: bytes, context: str | bytes, sealed: bytes) -> bytes:
    """The value `seal(key, context, value)` sealed. Raises SealBroken when it does not open."""
    if len(sealed) < NONCE_BYTES + TAG_BYTES:
        raise SealBroken("sealed value is too short")
    try:
        return AESGCM(key).decrypt(sealed[:NONCE_BYTES], sealed[NONCE_BYTES:], _text(context))
    except InvalidTag:
        raise SealBroken("sealed value does not open with this key and context") from None
