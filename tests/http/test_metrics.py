"""GET /metrics: Prometheus text parsed with prometheus-client's own parser, counters that move, labels
that never hold a raw path, loopback-or-admin access."""

from __future__ import annotations

import sqlite3
import sys

import httpx
import trio
from prometheus_client.parser import text_string_to_metric_families

from runsvc.http.app import create_app
from runsvc.store import open_store
from tests.conftest import make_settings
from tests.helpers import PASSWORD, add_user, login, open_websocket, running_server, wait_status

PY = sys.executable
SPEC_METRICS = {
    "runsvc_runs": ("gauge", {"status"}),
    "runsvc_runs_finished": ("counter", {"status"}),
    "runsvc_run_events_appended": ("counter", set()),
    "runsvc_event_commits": ("counter", set()),
    "runsvc_websocket_connections": ("gauge", {"kind"}),
    "runsvc_bus_lag_resyncs": ("counter", set()),
    "runsvc_sql_statements": ("counter", set()),
    "runsvc_scheduler_wakeups": ("counter", set()),
    "runsvc_maintenance_deleted": ("counter", {"what"}),
    "runsvc_login_failures": ("counter", set()),
    "runsvc_agents_connected": ("gauge", set()),
    "runsvc_webhook_deliveries": ("counter", {"outcome"}),
    "runsvc_http_request_duration_seconds": ("histogram", {"method", "route", "status"}),
}


async def scrape(client) -> dict[str, dict]:
    """{family name: {"type": ..., "samples": [(name, labels, value)]}} of a scrape."""
    response = await client.get("/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    families = {}
    for family in text_string_to_metric_families(response.text):
        families[family.name] = {"type": family.type, "samples": [(s.name, s.labels, s.value) for s in family.samples]}
    return families


def value(families, name: str, sample: str | None = None, **labels) -> float:
    for sample_name, sample_labels, sample_value in families[name]["samples"]:
        if sample_name == (sample or name + ("_total" if families[name]["type"] == "counter" else "")) and all(
            sample_labels.get(k) == v for k, v in labels.items()
        ):
            return sample_value
    raise AssertionError(f"no sample {name} {labels}")


async def test_every_spec_metric_is_present_with_its_type_and_labels(client):
    """Every metric of SPEC §13 is there, of its type, with exactly its labels."""
    with trio.fail_after(10):
        families = await scrape(client)
    for name, (kind, labels) in SPEC_METRICS.items():
        assert name in families, name
        assert families[name]["type"] == kind, name
        if kind != "histogram":
            for _, sample_labels, _ in families[name]["samples"]:
                assert set(sample_labels) == labels, (name, sample_labels)
    kinds = {s[1]["kind"] for s in families["runsvc_websocket_connections"]["samples"]}
    assert kinds == {"run_events", "feed", "agent"}
    whats = {s[1]["what"] for s in families["runsvc_maintenance_deleted"]["samples"]}
    assert whats == {"sessions", "enrollment_tokens", "api_tokens", "login_throttle", "job_fires", "runs", "run_events",
                     "webhook_deliveries"}
    outcomes = {s[1]["outcome"] for s in families["runsvc_webhook_deliveries"]["samples"]}
    assert outcomes == {"delivered", "failed"}
    assert value(families, "runsvc_agents_connected") == 0


async def test_counters_move_when_runs_run_and_logins_fail(server, client):
    """A run and a failed login move their counters; the histogram labels routes by pattern."""
    with trio.fail_after(30):
        before = await scrape(client)
        await add_user(server, "alice", "operator")
        bad = await client.post("/api/v1/auth/login", json={"username": "alice", "password": "wrong-password"})
        assert bad.status_code == 401
        csrf = await login(client, "alice")
        response = await client.post("/api/v1/runs", json={"command": [PY, "-c", "print(1)"]},
                                     headers={"X-CSRF-Token": csrf})
        run_id = response.json()["run"]["id"]
        await wait_status(client, run_id)
        assert (await client.get("/no/such/path")).status_code == 404
        assert (await client.delete("/healthz")).status_code == 405
        after = await scrape(client)
    assert value(after, "runsvc_runs", status="succeeded") == 1
    assert value(after, "runsvc_runs", status="queued") == 0
    assert value(after, "runsvc_runs_finished", status="succeeded") == 1
    assert value(after, "runsvc_login_failures") == value(before, "runsvc_login_failures") + 1
    for name in ("runsvc_run_events_appended", "runsvc_event_commits", "runsvc_sql_statements",
                 "runsvc_scheduler_wakeups"):
        assert value(after, name) > value(before, name), name
    assert value(after, "runsvc_run_events_appended") >= 4  # queued, running, stdout, succeeded
    routes = {s[1]["route"] for s in after["runsvc_http_request_duration_seconds"]["samples"] if "route" in s[1]}
    assert {"/api/v1/runs/{run_id}", "/api/v1/runs", "/api/v1/auth/login", "unmatched", "/metrics"} <= routes
    count = value(after, "runsvc_http_request_duration_seconds", "runsvc_http_request_duration_seconds_count",
                  method="GET", route="/api/v1/runs/{run_id}", status="200")
    assert count >= 1
    for family in after.values():
        for _, labels, _ in family["samples"]:
            for label in labels.values():
                assert str(run_id) not in label.split("/"), labels
                assert "/no/such/path" not in label


async def test_websocket_gauge_counts_open_sockets(server, client):
    """runsvc_websocket_connections{kind="feed"} is 1 while a feed socket is open, 0 after."""
    with trio.fail_after(20):
        await add_user(server, "alice", "viewer")
        await login(client, "alice")
        cookie = client.cookies["runsvc_session"]
        url = server.url.replace("http://", "ws://") + "/api/v1/runs/feed/ws"
        async with open_websocket(
            url, extra_headers=[(b"Cookie", f"runsvc_session={cookie}".encode())]
        ):
            while value(await scrape(client), "runsvc_websocket_connections", kind="feed") != 1:
                await trio.sleep(0.02)
        while value(await scrape(client), "runsvc_websocket_connections", kind="feed") != 0:
            await trio.sleep(0.02)


async def test_maintenance_deletions_are_counted(tmp_path):
    """The maintenance pass at start deletes an expired API token and session; the counter shows it."""
    settings = make_settings(tmp_path)
    with trio.fail_after(30):
        async with open_store(settings.database_path):
            pass
        conn = sqlite3.connect(settings.database_path)
        conn.execute("INSERT INTO users (username, password_hash, role, created_at) "
                     "VALUES ('old', 'x', 'viewer', '2020-01-01T00:00:00.000000Z')")
        conn.execute("INSERT INTO api_tokens (token_hash, user_id, name, role, created_at, expires_at) "
                     "VALUES (x'00', 1, 'old', 'viewer', '2020-01-01T00:00:00.000000Z', '2020-02-01T00:00:00.000000Z')")
        conn.execute("INSERT INTO sessions (token_hash, user_id, created_at, expires_at) "
                     "VALUES (x'01', 1, '2020-01-01T00:00:00.000000Z', '2020-02-01T00:00:00.000000Z')")
        conn.commit()
        conn.close()
        async with running_server(settings) as server:
            async with httpx.AsyncClient(base_url=server.url) as client:
                while value(await scrape(client), "runsvc_maintenance_deleted", what="api_tokens") != 1:
                    await trio.sleep(0.02)
                families = await scrape(client)
    assert value(families, "runsvc_maintenance_deleted", what="sessions") == 1


async def test_metrics_from_elsewhere_need_an_admin(server):
    """From a non-loopback address: 401 without credentials, 403 for an operator, 200 for an admin
    (session or token). Quart's test client sets the peer address, which a real socket here cannot."""
    app = create_app(server.services)
    await add_user(server, "root", "admin")
    await add_user(server, "alice", "operator")
    remote = {"client": ("192.0.2.7", 40000)}
    with trio.fail_after(20):
        test_client = app.test_client()
        anonymous = await test_client.get("/metrics", scope_base=remote)
        async with httpx.AsyncClient(base_url=server.url) as http:
            await login(http, "alice")
            operator_cookie = http.cookies["runsvc_session"]
            csrf = await login(http, "root", PASSWORD)
            admin_cookie = http.cookies["runsvc_session"]
            made = await http.post("/api/v1/tokens", json={"name": "prom", "role": "admin"},
                                   headers={"X-CSRF-Token": csrf})
            secret = made.json()["secret"]
        operator = await test_client.get("/metrics", scope_base=remote,
                                         headers={"Cookie": f"runsvc_session={operator_cookie}"})
        admin = await test_client.get("/metrics", scope_base=remote,
                                      headers={"Cookie": f"runsvc_session={admin_cookie}"})
        token = await test_client.get("/metrics", scope_base=remote, headers={"Authorization": f"Bearer {secret}"})
    assert anonymous.status_code == 401 and (await anonymous.get_json())["error"]["code"] == "unauthenticated"
    assert operator.status_code == 403 and (await operator.get_json())["error"]["code"] == "forbidden"
    assert admin.status_code == 200 and token.status_code == 200
    assert "runsvc_runs" in (await token.get_data(as_text=True))


async def test_unknown_methods_do_not_become_label_values(client):
    """A made-up request method is counted under method="other", so clients cannot mint labels."""
    with trio.fail_after(10):
        assert (await client.request("BREW", "/api/v1/runs")).status_code == 405
        families = await scrape(client)
    methods = {s[1].get("method") for s in families["runsvc_http_request_duration_seconds"]["samples"]}
    assert "BREW" not in methods and "other" in methods
