"""Agents with several servers (SPEC §11, §16 "Replicas"): enrollment with the first that answers, the
list kept in agent.json, and a switch to the next server that the agent's runs survive."""

from __future__ import annotations

import json
import os
import signal
import stat

import pytest
import trio

from tests.e2e.agent_helpers import (
    PY,
    admin_client,
    all_events,
    enrolled_agent,
    new_token,
    start_agent,
    submit,
    wait_status,
)
from tests.helpers import TERMINAL, start_server, unused_port

# Every test here runs on SQLite and on PostgreSQL (tests/e2e/conftest.py: server_backend).
pytestmark = pytest.mark.usefixtures("server_backend")


def _saved(state_dir) -> dict:
    path = state_dir / "agent.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    return json.loads(path.read_text())


def _connected_to(agent) -> list[str]:
    """The server of each `connected` line of the agent's log, in order."""
    return [part.removeprefix("server=") for line in agent.lines if "msg=connected" in line
            for part in line.split() if part.startswith("server=")]


async def _stop(agent) -> None:
    agent.process.send_signal(signal.SIGTERM)
    assert await agent.process.wait() == 0, agent.log_text()


async def test_a_dead_server_first_then_a_live_one_enrolls_connects_and_is_kept(tmp_path):
    """An agent given a dead URL and then a live one enrolls with the live one, keeps both in agent.json,
    runs a run, comes back with the saved list; an old agent.json naming one server is rewritten with a
    list (0600); --server flags on a later start replace the saved list and the agent says so."""
    dead = f"http://127.0.0.1:{unused_port()}"
    state_dir = tmp_path / "a"
    with trio.fail_after(90):
        async with trio.open_nursery() as nursery:
            server = await start_server(nursery, tmp_path / "data", "--local-executor", "false")
            async with admin_client(server.url) as client:
                token = await new_token(client)
                agent = await start_agent(nursery, [dead, server.url], state_dir, "--enroll", "-", "--name", "multi",
                                          stdin=f"{token}\n".encode())
                await agent.wait_for("msg=connected")
                assert "cannot enroll with this server" in agent.log_text() and dead in agent.log_text()
                assert _connected_to(agent) == [server.url]
                saved = _saved(state_dir)
                assert set(saved) == {"id", "name", "secret", "servers"}
                assert saved["servers"] == [dead, server.url] and saved["name"] == "multi"
                run = await submit(client, ["echo", "hello"])
                done = await wait_status(client, run["id"], TERMINAL)
                assert (done["status"], done["executor"]) == ("succeeded", "agent:multi")
                await _stop(agent)

                # Again without --server: the saved list, the dead server first.
                again = await start_agent(nursery, None, state_dir)
                await again.wait_for("msg=connected")
                assert "replace" not in again.log_text() and _connected_to(again) == [server.url]
                await _stop(again)
                assert _saved(state_dir) == saved

                # agent.json as earlier versions wrote it (and a file left readable by others).
                old = {"id": saved["id"], "name": "multi", "secret": saved["secret"], "server": server.url}
                (state_dir / "agent.json").write_text(json.dumps(old))
                os.chmod(state_dir / "agent.json", 0o644)
                migrated = await start_agent(nursery, None, state_dir)
                await migrated.wait_for("msg=connected")
                assert "rewritten with a list of servers" in migrated.log_text()
                await _stop(migrated)
                assert _saved(state_dir) == {**saved, "servers": [server.url]}

                # New flags replace the saved list (order kept, duplicates once).
                moved = await start_agent(nursery, [server.url, dead, server.url], state_dir)
                await moved.wait_for("msg=connected")
                assert "the servers given replace those saved in agent.json" in moved.log_text()
                await _stop(moved)
                assert _saved(state_dir)["servers"] == [server.url, dead]
                assert [a["name"] for a in (await client.get("/api/v1/agents")).json()["agents"]] == ["multi"]
            server.send_signal(signal.SIGTERM)
            assert await server.wait() == 0


async def test_enrollment_refused_by_the_first_server_that_answers_is_final(tmp_path):
    """A used token is refused (401) by the first live server: the agent does not try the next one, exits
    1 with one line, and writes no agent.json; no server at all is one line naming each."""
    dead = f"http://127.0.0.1:{unused_port()}"
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            server = await start_server(nursery, tmp_path / "data", "--local-executor", "false")
            async with admin_client(server.url) as client:
                token = await new_token(client)
                used = await client.post("/api/v1/agents/enroll", json={"token": token, "name": "x"})
                assert used.status_code == 201
                refused = await start_agent(nursery, [dead, server.url, dead + "/other"], tmp_path / "r",
                                            "--enroll", "-", stdin=f"{token}\n".encode())
                assert await refused.process.wait() == 1
                nobody = await start_agent(nursery, [dead, dead + "/other"], tmp_path / "n", "--enroll", "-",
                                           stdin=f"{token}\n".encode())
                assert await nobody.process.wait() == 1
            server.send_signal(signal.SIGTERM)
            assert await server.wait() == 0
    assert refused.lines[-1].startswith("runsvc: error: enrollment refused: "), refused.log_text()
    assert refused.log_text().count("cannot enroll with this server") == 1  # the dead one only
    assert nobody.lines[-1].startswith("runsvc: error: cannot enroll: no server answered (cannot reach ")
    assert nobody.lines[-1].count("cannot reach") == 2
    assert not (tmp_path / "r" / "agent.json").exists() and not (tmp_path / "n" / "agent.json").exists()


async def test_a_bad_server_url_is_a_usage_error(tmp_path):
    """`--server` that is not an http(s) URL with a host: exit 2, one line naming it, nothing written."""
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            agent = await start_agent(nursery, ["http://127.0.0.1:9", "ftp://x"], tmp_path / "a", "--enroll", "-",
                                      stdin=b"rse_x\n")
            assert await agent.process.wait() == 2
    assert agent.lines[-1].endswith("argument --server: 'ftp://x' is not a server URL: it must start with "
                                    "http:// or https://"), agent.log_text()
    assert not (tmp_path / "a" / "agent.json").exists()


async def test_the_agent_moves_to_the_next_server_and_its_run_goes_on(tmp_path):
    """Server A is killed mid-run; the agent's second URL is the same data dir restarted on another port
    (the one setup where a second server knows the run without replicas): the agent moves to it, the run
    is still running, completes, and every line is stored once, in order.

    What this proves is the agent's side of a failover: on a lost connection it dials the next URL of its
    list, says hello with the run it holds, and sends again what the dead server never acknowledged, on a
    connection to another address. The server's side (a restarted server adopting agent runs) is the one
    test_server_restart_leaves_agent_runs_running covers; a second live replica taking over from one whose
    lease expired is the replicas' work (SPEC §16) and not exercised here."""
    port_b = unused_port()
    url_b = f"http://127.0.0.1:{port_b}"
    data = tmp_path / "data"
    gate = tmp_path / "gate"
    # Prints all along (50 lines every 50 ms) so that the kill and the switch fall mid-output; waits for the
    # gate at line 3,000 so that the run is still running after the switch.
    script = ("import os, sys, time\nfor i in range(4000):\n    print(f'line {i}')\n"
              "    if i % 50 == 0: sys.stdout.flush(); time.sleep(0.05)\n"
              f"    if i == 3000:\n        sys.stdout.flush()\n"
              f"        while not os.path.exists({str(gate)!r}): time.sleep(0.05)\n")
    lease = ("--local-executor", "false", "--agent-lease-s", "10")
    with trio.fail_after(100):
        async with trio.open_nursery() as nursery:
            server_a = await start_server(nursery, data, *lease)
            async with admin_client(server_a.url) as client:
                agent = await enrolled_agent(nursery, client, [server_a.url, url_b], tmp_path / "a", "mover")
                run = await submit(client, [PY, "-c", script])
                while (await client.get(f"/api/v1/runs/{run['id']}")).json()["run"]["last_seq"] < 300:
                    await trio.sleep(0.05)
            server_a.send_signal(signal.SIGKILL)
            await server_a.wait()

            server_b = await start_server(nursery, data, *lease, "--port", str(port_b))
            assert server_b.url == url_b
            async with admin_client(url_b) as client:
                await agent.wait_for("msg=connected", 2)
                assert _connected_to(agent) == [server_a.url, url_b]
                status = (await client.get(f"/api/v1/runs/{run['id']}")).json()["run"]["status"]
                assert status == "running", agent.log_text() + "\n" + server_b.log_text()
                gate.touch()
                done = await wait_status(client, run["id"], TERMINAL)
                events = await all_events(client, run["id"])
                await _stop(agent)
            server_b.send_signal(signal.SIGTERM)
            assert await server_b.wait() == 0
    assert (done["status"], done["attempt"], done["executor"]) == ("succeeded", 1, "agent:mover")
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert [e["data"] for e in events if e["kind"] == "stdout"] == [f"line {i}" for i in range(4000)]
