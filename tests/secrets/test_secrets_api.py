"""The secrets API over real HTTP (SPEC §17): who may do what, every refusal, and no value in any answer
or in the database in clear."""

from __future__ import annotations

import pytest
import trio

from runsvc.crypto import SealBroken, open_sealed
from tests.helpers import add_user, all_rows_as_text, assert_error, database_of, login

SECRETS = "/api/v1/secrets"
VALUE = "s3cr3t-Value-Nobody-Sees"


@pytest.fixture(name="admin")
async def _admin(server, client):
    """`client` logged in as an admin; yields its CSRF token."""
    await add_user(server, "ada", "admin")
    return await login(client, "ada")


async def test_admin_creates_replaces_lists_and_deletes_without_ever_seeing_a_value(server, client, admin):
    """The whole life of a secret: 201, 200, the list by name, 204 — and no answer holds the value."""
    headers = {"X-CSRF-Token": admin}
    with trio.fail_after(10):
        created = await client.post(SECRETS, json={"name": "zeta", "value": VALUE}, headers=headers)
        assert created.status_code == 201, created.text
        secret = created.json()["secret"]
        assert set(secret) == {"name", "created_at", "updated_at", "updated_by"}
        assert secret["name"] == "zeta" and secret["updated_by"] == "ada"
        assert secret["created_at"] == secret["updated_at"]
        await client.post(SECRETS, json={"name": "Alpha_1", "value": "x"}, headers=headers)
        replaced = await client.put(f"{SECRETS}/zeta", json={"value": VALUE + "2"}, headers=headers)
        assert replaced.status_code == 200, replaced.text
        assert replaced.json()["secret"]["updated_at"] > secret["updated_at"]
        assert replaced.json()["secret"]["created_at"] == secret["created_at"]
        listed = await client.get(SECRETS)
        assert [item["name"] for item in listed.json()["secrets"]] == ["Alpha_1", "zeta"]
        for answer in (created, replaced, listed):
            assert VALUE not in answer.text
        deleted = await client.delete(f"{SECRETS}/zeta", headers=headers)
        assert deleted.status_code == 204
        assert [item["name"] for item in (await client.get(SECRETS)).json()["secrets"]] == ["Alpha_1"]


async def test_refusals_name_the_broken_rule(client, admin):
    """Bad names, empty or oversized values (UTF-8 bytes), unknown fields: 400; a taken name 409; PUT
    or DELETE of an unknown name 404 (PUT does not create)."""
    headers = {"X-CSRF-Token": admin}
    with trio.fail_after(10):
        for body, message in [
            ({"name": "1abc", "value": "v"}, "name must be a letter or _ then up to 63 of A-Z a-z 0-9 _"),
            ({"name": "a" * 65, "value": "v"}, "name must be a letter or _ then up to 63 of A-Z a-z 0-9 _"),
            ({"name": "a-b", "value": "v"}, "name must be a letter or _ then up to 63 of A-Z a-z 0-9 _"),
            ({"name": "ok", "value": ""}, "value must be at least 1 characters"),
            ({"name": "ok", "value": "é" * 32769}, "value must be at most 65536 bytes of UTF-8 (got 65538)"),
            ({"name": "ok"}, "value is required"),
            ({"name": "ok", "value": "v", "extra": 1}, "unknown field: extra"),
        ]:
            assert_error(await client.post(SECRETS, json=body, headers=headers), 400, "invalid_request", message)
        ok = await client.post(SECRETS, json={"name": "ok", "value": "é" * 32768}, headers=headers)
        assert ok.status_code == 201, ok.text  # exactly 64 KiB of UTF-8
        assert_error(await client.post(SECRETS, json={"name": "ok", "value": "v"}, headers=headers), 409, "conflict")
        assert_error(await client.put(f"{SECRETS}/nope", json={"value": "v"}, headers=headers), 404, "not_found")
        assert_error(await client.put(f"{SECRETS}/b-ad", json={"value": "v"}, headers=headers), 404, "not_found")
        assert_error(await client.delete(f"{SECRETS}/nope", headers=headers), 404, "not_found")
        assert [item["name"] for item in (await client.get(SECRETS)).json()["secrets"]] == ["ok"]


async def test_roles(server, client, admin):
    """Operators list but cannot change; viewers get 403 for everything; without a session 401."""
    await client.post(SECRETS, json={"name": "db", "value": VALUE}, headers={"X-CSRF-Token": admin})
    await add_user(server, "olga", "operator")
    await add_user(server, "vic", "viewer")
    with trio.fail_after(10):
        client.cookies.clear()
        assert_error(await client.get(SECRETS), 401, "unauthenticated")
        csrf = await login(client, "olga")
        headers = {"X-CSRF-Token": csrf}
        assert [item["name"] for item in (await client.get(SECRETS)).json()["secrets"]] == ["db"]
        assert_error(await client.post(SECRETS, json={"name": "x", "value": "v"}, headers=headers), 403, "forbidden")
        assert_error(await client.put(f"{SECRETS}/db", json={"value": "v"}, headers=headers), 403, "forbidden")
        assert_error(await client.delete(f"{SECRETS}/db", headers=headers), 403, "forbidden")
        client.cookies.clear()
        csrf = await login(client, "vic")
        headers = {"X-CSRF-Token": csrf}
        assert_error(await client.get(SECRETS), 403, "forbidden")
        assert_error(await client.post(SECRETS, json={"name": "x", "value": "v"}, headers=headers), 403, "forbidden")
        assert_error(await client.delete(f"{SECRETS}/db", headers=headers), 403, "forbidden")


async def test_the_database_holds_only_sealed_values_bound_to_their_name(server, settings, client, admin):
    """At rest a value is AES-GCM sealed under the key file: the raw database holds no clear value, the
    value opens under its own name only (a row copied to another name does not open)."""
    with trio.fail_after(10):
        await client.post(SECRETS, json={"name": "db", "value": VALUE}, headers={"X-CSRF-Token": admin})
        await client.post(SECRETS, json={"name": "other", "value": "x"}, headers={"X-CSRF-Token": admin})
    with database_of(settings) as conn:
        sealed = bytes(conn.execute("SELECT value FROM secrets WHERE name = 'db'").fetchone()[0])
        if settings.database_url:  # every row of every table, as PostgreSQL's text of the row
            raw = all_rows_as_text(conn).encode()
        else:
            raw = b"".join(path.read_bytes() for path in settings.data_dir.glob("runsvc.db*"))
    assert VALUE.encode() not in raw and VALUE.encode().hex() not in raw.decode("latin-1")
    key = settings.secret_key_path.read_bytes()
    assert len(key) == 32 and settings.secret_key_path.stat().st_mode & 0o777 == 0o600
    assert open_sealed(key, "secret:db", sealed) == VALUE.encode()
    with pytest.raises(SealBroken):
        open_sealed(key, "secret:other", sealed)
