"""A running server whose PostgreSQL goes away and comes back (SPEC §14, §16): the cluster is this
module's own (tests/private_cluster.py), stopped (`pg_ctl stop -m fast`, or `-m immediate`: a crash) while
a run prints, or restarted while the server is idle. Requests answer 503 `unavailable` meanwhile, /healthz
says degraded, the run keeps every line exactly once, and everything resumes by itself."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
import trio

from runsvc.store import postgres as pg_store
from tests.agents.test_agent_storage_faults import paced_printer
from tests.conftest import make_settings
from tests.helpers import add_user, login, running_server, wait_status, wait_until
from tests.private_cluster import (  # noqa: F401 (cluster_fixture, url_fixture: the `cluster`, `url` fixtures)
    PrivateCluster,
    cluster_fixture,
    in_thread,
    url_fixture,
)
from tests.test_storage_faults import (
    FIRST,
    assert_every_line,
    assert_no_tracebacks,
    stdout_lines,
    wait_for_lines,
    wait_health,
)

# A request that meets the outage waits up to the readers' checkout timeout (5 s) before its 503.
CLIENT_TIMEOUT_S = 30



def assert_unavailable(answer: httpx.Response) -> None:
    assert answer.status_code == 503, answer.text
    assert answer.json()["error"]["code"] == "unavailable"
    assert int(answer.headers["Retry-After"]) > 0


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["fast", "immediate"])
async def test_run_prints_through_a_stopped_and_restarted_cluster(
    tmp_path: Path, cluster: PrivateCluster, url: str, mode: str, caplog
) -> None:
    """PostgreSQL stops (fast shutdown, or a crash) while a run prints 2,100 lines, for several of the
    writer's retries: API requests get 503 `unavailable`, /healthz is degraded; once it is back the run
    succeeds with every line stored once and in order, /healthz is ok and new runs work."""
    gate = tmp_path / "gate"
    settings = make_settings(tmp_path, database_url=url)
    with trio.fail_after(120):
        async with running_server(settings) as server, \
                httpx.AsyncClient(base_url=server.url, timeout=CLIENT_TIMEOUT_S) as client:
            await add_user(server, "olga", "operator")
            csrf = {"X-CSRF-Token": await login(client, "olga")}
            answer = await client.post("/api/v1/runs", json={"command": paced_printer(gate)}, headers=csrf)
            run_id = answer.json()["run"]["id"]
            await wait_for_lines(client, run_id, FIRST)
            gate.touch()
            await wait_for_lines(client, run_id, FIRST + 100)  # printing steadily when the server goes

            store = server.services.store
            await in_thread(cluster.stop, mode)
            try:
                degraded = await wait_health(client, 503)
                assert degraded["status"] == "degraded" and degraded["reason"], degraded
                assert_unavailable(await client.get(f"/api/v1/runs/{run_id}"))
                assert_unavailable(await client.post("/api/v1/runs", json={"command": ["true"]}, headers=csrf))
                # The outage lasts several of the writer's retries (backoff 0.05 s doubling to 2 s).
                faults = store.statistics().write_faults
                await wait_until(lambda: store.statistics().write_faults >= faults + 3)
                assert store.unavailable is not None
            finally:
                await in_thread(cluster.start)

            run = await wait_status(client, run_id)
            assert run["status"] == "succeeded", run
            assert_every_line(await stdout_lines(client, run_id))
            assert (await wait_health(client, 200)) == {"status": "ok"}
            later = await client.post("/api/v1/runs", json={"command": ["true"]}, headers=csrf)
            assert later.status_code == 201, later.text
            assert (await wait_status(client, later.json()["run"]["id"]))["status"] == "succeeded"
    assert_no_tracebacks(caplog)


async def test_requests_after_a_restart_while_idle_all_work(
    tmp_path: Path, cluster: PrivateCluster, url: str, monkeypatch: pytest.MonkeyPatch, caplog
) -> None:
    """`pg_ctl restart -m fast` while the server is idle: not one request fails afterwards, neither a read
    (the pool checks a connection before handing it out) nor a write that does not retry (the writer
    checks a connection it has not used for a while)."""
    monkeypatch.setattr(pg_store, "IDLE_CHECK_S", 0.0)  # whatever time the restart took
    settings = make_settings(tmp_path, database_url=url)
    with trio.fail_after(60):
        async with running_server(settings) as server, \
                httpx.AsyncClient(base_url=server.url, timeout=CLIENT_TIMEOUT_S) as client:
            await add_user(server, "olga", "operator")
            csrf = {"X-CSRF-Token": await login(client, "olga")}
            assert (await client.get("/api/v1/runs")).status_code == 200

            await in_thread(cluster.restart, "fast")

            assert (await client.get("/api/v1/runs")).status_code == 200
            created = await client.post("/api/v1/runs", json={"command": ["true"]}, headers=csrf)
            assert created.status_code == 201, created.text
            assert (await wait_status(client, created.json()["run"]["id"]))["status"] == "succeeded"
            assert (await client.get("/healthz")).json() == {"status": "ok"}
            assert server.services.store.statistics().write_faults == 0
    assert_no_tracebacks(caplog)
