"""Sealing (runsvc/crypto.py) and the key file (secrets/keyfile.py)."""

from __future__ import annotations

import pytest
import trio

from runsvc.config import SettingsError
from runsvc.crypto import KEY_BYTES, SealBroken, new_key, open_sealed, seal
from runsvc.secrets.keyfile import MissingKeyFile, load_key, read_key_file


def test_a_sealed_value_opens_only_with_its_key_and_context() -> None:
    """Round trip; another key, another context, a flipped bit or a cut value do not open."""
    key = new_key()
    sealed = seal(key, "secret:db", "pässword")
    assert open_sealed(key, "secret:db", sealed) == "pässword".encode()
    assert seal(key, "secret:db", "pässword") != sealed  # a fresh nonce each time
    tampered = sealed[:-1] + bytes([sealed[-1] ^ 1])
    for other_key, context, value in [(new_key(), "secret:db", sealed), (key, "secret:other", sealed),
                                      (key, "secret:db", tampered), (key, "secret:db", sealed[:20])]:
        with pytest.raises(SealBroken):
            open_sealed(other_key, context, value)


def test_key_file_is_made_once_0600_and_read_back(tmp_path) -> None:
    """First start makes it; later starts read the same key."""
    path = tmp_path / "secret.key"
    key = load_key(path, sealed_rows=0)
    assert len(key) == KEY_BYTES and path.stat().st_mode & 0o777 == 0o600
    assert load_key(path, sealed_rows=5) == key
    assert list(tmp_path.iterdir()) == [path]  # no temporary file left


def test_key_file_refusals(tmp_path) -> None:
    """A file of another size is a bad setting; a missing one while sealed values exist is refused and
    no key is made."""
    path = tmp_path / "secret.key"
    path.write_bytes(b"k" * 33)
    with pytest.raises(SettingsError, match="must hold exactly 32 bytes, not more than 32"):
        read_key_file(path)
    path.unlink()
    with pytest.raises(MissingKeyFile, match="is missing but the database holds 2 encrypted value"):
        load_key(path, sealed_rows=2)
    assert not path.exists()


async def test_a_value_that_does_not_open_is_an_error_naming_the_secret(store) -> None:
    """Read under another key (a wrong key file), a value is refused for the run, never handed out as
    garbage; the message names the secret and its variable, not the value."""
    from runsvc.secrets.service import SecretService, SecretUnavailable

    with trio.fail_after(10):
        await SecretService(store, new_key()).create("db", "the-value", by="ada")
        with pytest.raises(SecretUnavailable) as refused:
            await SecretService(store, new_key()).values_for({"PGPASSWORD": "db"})
    assert str(refused.value) == "secret 'db' (for PGPASSWORD) cannot be decrypted with this server's secret key"
