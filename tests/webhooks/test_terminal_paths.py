"""Every way a run reaches a terminal status is delivered (SPEC §17): a queued run cancelled, a run left
running by a crashed server and interrupted at startup recovery, a run on a remote agent; and deliveries
left pending by a stopped server go out when the next one starts (at least once across restarts)."""

from __future__ import annotations

import json

import httpx
import trio

from runsvc.timeutil import ts_after
from tests.conftest import make_settings
from tests.e2e.agent_helpers import enrolled_agent
from tests.helpers import add_user, database_of, login, running_server, wait_status
from tests.webhooks.helpers import PY, create_webhook, deliveries, wait_deliveries


async def test_a_cancelled_queued_run_is_delivered(server, admin, receiver):
    """A queued run (waiting for its not_before) cancelled by hand is delivered as `cancelled`."""
    with trio.fail_after(20):
        await create_webhook(admin, {"url": f"{receiver.url}/hook", "statuses": ["cancelled"]})
        run = (await admin.post("/api/v1/runs", json={"command": ["true"], "not_before": ts_after(3600)})).json()["run"]
        assert (await admin.post(f"/api/v1/runs/{run['id']}/cancel")).status_code == 202
        [request] = await receiver.wait_for("/hook")
    body = json.loads(request.body)
    assert body["run"]["id"] == run["id"] and body["run"]["status"] == "cancelled" and body["run"]["started_at"] is None


async def test_pending_deliveries_and_recovered_runs_go_out_after_a_restart(tmp_path, receiver):
    """A delivery the first server never sent, and the run a crashed server left running (interrupted by
    the next start's recovery), are both POSTed by the next server without anything else happening."""
    settings = make_settings(tmp_path)
    with trio.fail_after(30):
        async with running_server(settings) as server:
            server.services.webhook_sender.max_in_flight = 0  # this server sends nothing
            await add_user(server, "ada", "admin")
            async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
                client.headers["X-CSRF-Token"] = await login(client, "ada")
                webhook, _ = await create_webhook(client, {"url": f"{receiver.url}/hook"})
                run = (await client.post("/api/v1/runs", json={"command": ["true"]})).json()["run"]
                await wait_status(client, run["id"])
                while not await deliveries(client, webhook["id"]):
                    await trio.sleep(0.02)
        assert receiver.at("/hook") == []
        # As a crashed server leaves it: a run still `running` on the local executor.
        with database_of(settings) as conn:
            conn.execute("UPDATE runs SET status = 'running', ended_at = NULL, exit_code = NULL WHERE id = ?",
                         (run["id"],))
            conn.execute("DELETE FROM run_events WHERE run_id = ? AND seq > 2", (run["id"],))
            conn.execute("UPDATE runs SET last_seq = 2 WHERE id = ?", (run["id"],))
        async with running_server(settings) as server:
            requests = await receiver.wait_for("/hook", 2)
    statuses = sorted(json.loads(request.body)["run"]["status"] for request in requests)
    assert statuses == ["interrupted", "succeeded"]
    assert {json.loads(request.body)["run"]["id"] for request in requests} == {run["id"]}


async def test_a_run_on_a_remote_agent_is_delivered(tmp_path, receiver):
    """A run that ends on an agent (the local executor off) is delivered, naming its executor."""
    settings = make_settings(tmp_path, local_executor=False)
    with trio.fail_after(60):
        async with running_server(settings) as server, trio.open_nursery() as nursery:
            await add_user(server, "ada", "admin")
            async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
                client.headers["X-CSRF-Token"] = await login(client, "ada")
                await create_webhook(client, {"url": f"{receiver.url}/hook"})
                agent = await enrolled_agent(nursery, client, server.url, tmp_path / "agent", "far")
                command = [PY, "-c", "raise SystemExit(2)"]
                run = (await client.post("/api/v1/runs", json={"command": command})).json()["run"]
                [request] = await receiver.wait_for("/hook")
                await wait_deliveries(client, 1, lambda found: found and found[0]["delivered_at"])
            agent.process.terminate()
            await agent.process.wait()
    body = json.loads(request.body)["run"]
    assert body["id"] == run["id"] and body["status"] == "failed" and body["exit_code"] == 2
    assert body["executor"] == "agent:far"
