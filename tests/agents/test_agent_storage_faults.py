"""An agent's runs through a storage outage (SPEC §14, issue 19 #2): the database stops taking writes
while a real agent's run prints, for longer than `agent_lease_s`; the agent even reconnects meanwhile.
The run is not "agent lost": it finishes normally with every line stored once."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest
import trio

from tests.agents.fake_agent import admin_server
from tests.e2e.agent_helpers import CuttableProxy, new_token, start_agent
from tests.helpers import wait_status
from tests.test_storage_faults import (
    FIRST,
    PY,
    SECOND,
    assert_every_line,
    assert_no_tracebacks,
    fill,
    small_tmpfs,
    stdout_lines,
    wait_for_lines,
    wait_health,
)

LEASE_S = 1.0


def paced_printer(gate: Path) -> list[str]:
    """tests.test_storage_faults.gated_printer's lines, paced so that each reaches the agent in a read of
    its own: many output frames, more than a run's inbox on the server holds."""
    code = (
        "import os, sys, time\n"
        f"for i in range({FIRST}): print(f'line {{i}}', flush=True)\n"
        f"while not os.path.exists({str(gate)!r}): time.sleep(0.01)\n"
        f"for i in range({FIRST}, {FIRST + SECOND}):\n"
        "    print(f'line {i} ' + 'x' * 100, flush=True)\n"
        "    time.sleep(0.001)\n"
    )
    return [PY, "-c", code]


async def _wait_parked(server) -> None:
    """Until the agent's connection stops reading: the run's inbox is full behind the failing appends."""
    while server.services.agents.hub.statistics().parked_readers == 0:
        await trio.sleep(0.02)


async def _agent_run_through_a_fault(tmp_path: Path, caplog, make_fault, clear_fault, reason: str, **overrides):
    gate = tmp_path / "gate"
    with trio.fail_after(90):
        async with admin_server(tmp_path, agent_lease_s=LEASE_S, **overrides) as (server, client), \
                trio.open_nursery() as nursery:
            proxy = CuttableProxy(int(server.url.rsplit(":", 1)[1]))
            await nursery.start(proxy.serve)
            via_proxy = f"http://127.0.0.1:{proxy.port}"
            token = await new_token(client)
            agent = await start_agent(nursery, via_proxy, tmp_path / "agent", "--enroll", token, "--name", "a1")
            await agent.wait_for("msg=connected")
            run_id = (await client.post("/api/v1/runs", json={"command": paced_printer(gate)})).json()["run"]["id"]
            await wait_for_lines(client, run_id, FIRST)

            make_fault(server)
            gate.touch()
            degraded = await wait_health(client, 503)
            assert reason in degraded["reason"], degraded
            await _wait_parked(server)
            # The agent reconnects while nothing can be written, and its new connection fills up again.
            await proxy.cut()
            await agent.wait_for("msg=connected", 2)
            await _wait_parked(server)
            await trio.sleep(3 * LEASE_S)  # the outage outlasts the lease (the fault, not a wait for a result)
            assert (await client.get(f"/api/v1/runs/{run_id}")).json()["run"]["status"] == "running"

            clear_fault(server)
            run = await wait_status(client, run_id)
            lines = await stdout_lines(client, run_id)
            assert (await wait_health(client, 200)) == {"status": "ok"}
            agents = (await client.get("/api/v1/agents")).json()["agents"]
            agent.process.terminate()
            await agent.process.wait()
            nursery.cancel_scope.cancel()  # the proxy serves until cancelled
    assert (run["status"], run["executor"]) == ("succeeded", "agent:a1"), run
    assert_every_line(lines)
    assert agents[0]["connected"] and agents[0]["running"] == []
    assert_no_tracebacks(caplog)


async def test_agent_run_survives_a_write_lock_held_past_the_lease(tmp_path: Path, caplog) -> None:
    """Another connection holds the write lock for longer than the agent's lease while the agent's run
    prints 2,000 lines and the agent reconnects: the run succeeds with every line once."""
    database: dict[str, sqlite3.Connection] = {}

    def hold(server) -> None:
        conn = sqlite3.connect(server.services.agents.hub.settings.database_path, isolation_level=None)
        conn.execute("BEGIN IMMEDIATE")
        database["conn"] = conn

    def release(server) -> None:
        database["conn"].execute("ROLLBACK")
        database["conn"].close()

    await _agent_run_through_a_fault(tmp_path, caplog, hold, release, "locked", db_busy_timeout_s=0.1,
                                     scheduler_safety_net_s=0.2)


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")
async def test_agent_run_survives_a_full_disk_past_the_lease(tmp_path: Path, caplog) -> None:
    """The data dir on a small tmpfs, filled while the agent's run prints, freed after more than the
    lease: the run succeeds with every line once."""
    with small_tmpfs(tmp_path / "mnt") as mount:
        filler = mount / "filler"
        await _agent_run_through_a_fault(tmp_path, caplog, lambda server: fill(filler),
                                         lambda server: filler.unlink(), "full", data_dir=mount / "data")
