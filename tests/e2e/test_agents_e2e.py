"""Remote agents end to end: a real server and real agent processes on 127.0.0.1."""

from __future__ import annotations

import json
import os
import signal
import stat

import pytest
import trio

from tests.e2e.agent_helpers import (
    PY,
    CuttableProxy,
    admin_client,
    all_events,
    enrolled_agent,
    new_token,
    start_agent,
    submit,
    wait_status,
)
from tests.helpers import TERMINAL, alive, assert_error, child_env, server_db_rows, start_server

# Every test here runs on SQLite and on PostgreSQL (tests/e2e/conftest.py: server_backend).
pytestmark = pytest.mark.usefixtures("server_backend")


async def test_enroll_once_route_by_labels_and_restart(tmp_path):
    """The agent enrolls once (agent.json 0600, reused on restart); a used or expired token gets the
    same 401; a labelled run executes on the agent and names it; a run nobody can take waits."""
    with trio.fail_after(90):
        async with trio.open_nursery() as nursery:
            server = await start_server(nursery, tmp_path / "data", "--local-executor", "false")
            async with admin_client(server.url) as client:
                token = await new_token(client, labels=["gpu"])
                agent = await start_agent(nursery, server.url, tmp_path / "a1", "--enroll", token, "--name", "a1")
                await agent.wait_for("msg=connected")
                state_file = tmp_path / "a1" / "agent.json"
                assert stat.S_IMODE(state_file.stat().st_mode) == 0o600
                state = json.loads(state_file.read_text())
                assert set(state) == {"id", "name", "secret", "servers"} and state["name"] == "a1"
                assert state["servers"] == [server.url]

                reused = await client.post("/api/v1/agents/enroll", json={"token": token, "name": "a2"})
                short = await new_token(client, ttl_s=1)
                await trio.sleep(1.2)
                expired = await client.post("/api/v1/agents/enroll", json={"token": short, "name": "a3"})
                unknown = await client.post("/api/v1/agents/enroll", json={"token": "nope", "name": "a4"})
                for answer in (reused, expired, unknown):
                    assert_error(answer, 401, "unauthenticated")
                assert reused.json() == expired.json() == unknown.json()

                tokens = (await client.get("/api/v1/enrollment-tokens")).json()["enrollment_tokens"]
                assert tokens[0]["used_at"] is not None and "token" not in tokens[0]

                run = await submit(client, ["sh", "-c", "echo on $RUNSVC_RUN_ID; echo err >&2"], labels=["gpu"])
                done = await wait_status(client, run["id"], TERMINAL)
                assert done["status"] == "succeeded" and done["executor"] == "agent:a1" and done["attempt"] == 1
                events = await all_events(client, run["id"])
                assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
                # Two pipes: their relative order is the reader's, as for a local run.
                assert sorted((e["kind"], e["data"]) for e in events if e["kind"] in ("stdout", "stderr")) == [
                    ("stderr", "err"), ("stdout", f"on {run['id']}")]

                stuck = await submit(client, ["true"], labels=["tpu"])
                assert stuck["waiting_for"] == "an agent with labels tpu"
                agents = (await client.get("/api/v1/agents")).json()["agents"]
                assert [(a["name"], a["labels"], a["connected"]) for a in agents] == [("a1", ["gpu"], True)]

                agent.process.send_signal(signal.SIGTERM)
                assert await agent.process.wait() == 0
                # Restart without --server: agent.json is reused, its server too; --enroll with a used token
                # is ignored.
                again = await start_agent(nursery, None, tmp_path / "a1", "--enroll", token)
                await again.wait_for("msg=connected")
                assert "enrolled" not in again.log_text()
                second = await submit(client, ["echo", "again"], labels=["gpu"])
                assert (await wait_status(client, second["id"], TERMINAL))["status"] == "succeeded"
                assert (await client.get(f"/api/v1/runs/{stuck['id']}")).json()["run"]["status"] == "queued"
                again.process.send_signal(signal.SIGTERM)
                assert await again.process.wait() == 0
            server.send_signal(signal.SIGTERM)
            assert await server.wait() == 0


async def test_kill_9_agent_mid_run_is_interrupted_after_the_lease(tmp_path):
    """An agent killed with -9 mid-run: after agent_lease_s the run ends interrupted, "agent lost",
    with gapless seqs."""
    with trio.fail_after(90):
        async with trio.open_nursery() as nursery:
            server = await start_server(nursery, tmp_path / "data", "--local-executor", "false",
                                        "--agent-lease-s", "2")
            async with admin_client(server.url) as client:
                agent = await enrolled_agent(nursery, client, server.url, tmp_path / "a", "victim")
                script = "import time\nprint('started', flush=True)\ntime.sleep(60)"
                run = await submit(client, [PY, "-c", script])
                while not any(e["kind"] == "stdout" for e in await all_events(client, run["id"])):
                    await trio.sleep(0.05)
                agent.process.send_signal(signal.SIGKILL)
                await agent.process.wait()
                done = await wait_status(client, run["id"], TERMINAL)
                events = await all_events(client, run["id"])
            server.send_signal(signal.SIGTERM)
            assert await server.wait() == 0
            # The orphaned child is killed by the next agent start on that state dir (kill_orphans).
    assert done["status"] == "interrupted"
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert ("system", "agent lost") in [(e["kind"], e["data"]) for e in events]
    assert events[-1]["data"]["reason"] == "agent lost"


async def test_connection_cut_three_times_loses_and_repeats_nothing(tmp_path):
    """A TCP proxy between agent and server is cut three times while the run prints 20,000 lines:
    every line is stored exactly once, in order."""
    with trio.fail_after(100):
        async with trio.open_nursery() as nursery:
            server = await start_server(nursery, tmp_path / "data", "--local-executor", "false")
            port = int(server.url.rsplit(":", 1)[1])
            proxy = CuttableProxy(port)
            await nursery.start(proxy.serve)
            async with admin_client(server.url) as client:
                via_proxy = f"http://127.0.0.1:{proxy.port}"
                agent = await enrolled_agent(nursery, client, via_proxy, tmp_path / "a", "flaky")
                # 20,000 lines in ~8 s; the last 1,000 wait for a file, so every cut happens mid-run.
                gate = tmp_path / "gate"
                script = ("import os, sys, time\nfor i in range(20000):\n    print(f'line {i}')\n"
                          "    if i % 500 == 0: sys.stdout.flush(); time.sleep(0.2)\n"
                          f"    if i == 19000:\n        while not os.path.exists({str(gate)!r}): time.sleep(0.05)\n")
                run = await submit(client, [PY, "-c", script])
                for cut in range(1, 4):
                    # Cut only once more output has arrived since the last reconnect.
                    seen = (await client.get(f"/api/v1/runs/{run['id']}")).json()["run"]["last_seq"]
                    while (await client.get(f"/api/v1/runs/{run['id']}")).json()["run"]["last_seq"] < seen + 500:
                        await trio.sleep(0.02)
                    await proxy.cut()
                    await agent.wait_for("msg=connected", cut + 1)
                gate.touch()
                done = await wait_status(client, run["id"], TERMINAL)
                events = await all_events(client, run["id"])
                agent.process.send_signal(signal.SIGTERM)
                assert await agent.process.wait() == 0
            server.send_signal(signal.SIGTERM)
            assert await server.wait() == 0
            nursery.cancel_scope.cancel()  # the proxy serves until cancelled
    assert done["status"] == "succeeded", events[-3:]
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert [e["data"] for e in events if e["kind"] == "stdout"] == [f"line {i}" for i in range(20000)]
    assert proxy.connections >= 5  # enroll + first connection + three reconnects


async def test_unacknowledged_output_is_bounded_and_backpressure_reaches_the_child(tmp_path):
    """While the server's acks cannot reach the agent (a proxy holds everything server→agent), the agent
    keeps at most UNACKED_BYTES (8 MiB) of a run's output: it stops reading the child's pipes and the child
    blocks in its writes, far from the end of its 24 MiB. Once the acks flow again, every line arrives
    exactly once, in order."""
    from runsvc.agents.client import UNACKED_BYTES

    line_bytes, lines = 1024, 24 * 1024  # 24 MiB of output: three times the agent's buffer
    assert lines * line_bytes == 3 * UNACKED_BYTES
    started, go, wrote_all = tmp_path / "started", tmp_path / "go", tmp_path / "wrote-all"
    script = (
        "import os, sys, time\n"
        f"open({str(started)!r}, 'w').close()\n"
        f"while not os.path.exists({str(go)!r}): time.sleep(0.01)\n"
        f"pad = 'x' * {line_bytes - 9}\n"
        f"for i in range({lines}): sys.stdout.write(f'{{i:08d}} {{pad}}\\n')\n"
        "sys.stdout.flush()\n"
        f"open({str(wrote_all)!r}, 'w').close()\n"
    )
    with trio.fail_after(100):
        async with trio.open_nursery() as nursery:
            server = await start_server(nursery, tmp_path / "data", "--local-executor", "false")
            proxy = CuttableProxy(int(server.url.rsplit(":", 1)[1]))
            await nursery.start(proxy.serve)
            async with admin_client(server.url) as client:
                via_proxy = f"http://127.0.0.1:{proxy.port}"
                agent = await enrolled_agent(nursery, client, via_proxy, tmp_path / "a", "slow-acks")
                run = await submit(client, [PY, "-c", script])
                while not started.exists():  # the assignment has reached the agent: now hold the acks
                    await trio.sleep(0.02)
                proxy.hold_replies()
                go.touch()

                # The agent sends until its buffer is full; the server stores all of that and acks in vain.
                full = UNACKED_BYTES // (line_bytes + 64)
                while (await client.get(f"/api/v1/runs/{run['id']}")).json()["run"]["last_seq"] < full:
                    await trio.sleep(0.05)
                await trio.sleep(1.0)  # time enough for the child to finish if nothing held it back
                held = (await client.get(f"/api/v1/runs/{run['id']}")).json()["run"]
                assert held["status"] == "running"
                assert not wrote_all.exists(), "the child wrote everything while no ack reached the agent"
                # What the agent read is what reached the server: the buffer plus a chunk or two, not more.
                assert held["last_seq"] < (UNACKED_BYTES + 2 * 1024 * 1024) // line_bytes, held["last_seq"]

                proxy.release_replies()
                done = await wait_status(client, run["id"], TERMINAL)
                events = await all_events(client, run["id"])
                assert wrote_all.exists()
                agent.process.send_signal(signal.SIGTERM)
                assert await agent.process.wait() == 0
            server.send_signal(signal.SIGTERM)
            assert await server.wait() == 0
            nursery.cancel_scope.cancel()  # the proxy serves until cancelled
    assert done["status"] == "succeeded", events[-3:]
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    stdout = [e["data"] for e in events if e["kind"] == "stdout"]
    assert [int(text[:8]) for text in stdout] == list(range(lines))
    assert {len(text) for text in stdout} == {line_bytes}
    assert proxy.connections == 2  # enroll + one connection: nothing was cut or resent


async def test_revoke_disconnects_ends_runs_and_refuses_the_secret(tmp_path):
    """Revoking an agent ends its run "agent revoked", disconnects it, and its secret is refused: the
    agent exits 1 with one line."""
    with trio.fail_after(90):
        async with trio.open_nursery() as nursery:
            server = await start_server(nursery, tmp_path / "data", "--local-executor", "false")
            async with admin_client(server.url) as client:
                agent = await enrolled_agent(nursery, client, server.url, tmp_path / "a", "doomed")
                run = await submit(client, [PY, "-c", "import time; print('x', flush=True); time.sleep(60)"])
                await wait_status(client, run["id"], {"running"})
                agent_id = (await client.get("/api/v1/agents")).json()["agents"][0]["id"]
                assert (await client.delete(f"/api/v1/agents/{agent_id}")).status_code == 204
                assert await agent.process.wait() == 1
                done = await wait_status(client, run["id"], TERMINAL)
                events = await all_events(client, run["id"])
                assert (await client.get("/api/v1/agents")).json()["agents"] == []
                assert_error(await client.delete(f"/api/v1/agents/{agent_id}"), 404, "not_found")
            server.send_signal(signal.SIGTERM)
            assert await server.wait() == 0
    assert done["status"] == "interrupted"
    assert "refused this agent's secret" in agent.lines[-1]
    assert events[-1]["data"]["reason"] == "agent revoked"
    assert ("system", "agent revoked") in [(e["kind"], e["data"]) for e in events]


async def test_cancel_reaches_the_agents_process_group(tmp_path):
    """Cancelling an agent's run kills its process group on the agent's machine."""
    with trio.fail_after(90):
        async with trio.open_nursery() as nursery:
            server = await start_server(nursery, tmp_path / "data", "--local-executor", "false",
                                        "--kill-grace-s", "2")
            async with admin_client(server.url) as client:
                agent = await enrolled_agent(nursery, client, server.url, tmp_path / "a", "c1")
                script = "sleep 60 & echo $!; wait"
                run = await submit(client, ["sh", "-c", script])
                while not (out := [e for e in await all_events(client, run["id"]) if e["kind"] == "stdout"]):
                    await trio.sleep(0.05)
                grandchild = int(out[0]["data"])
                assert alive(grandchild)
                assert (await client.post(f"/api/v1/runs/{run['id']}/cancel")).status_code == 202
                done = await wait_status(client, run["id"], TERMINAL)
                agent.process.send_signal(signal.SIGTERM)
                assert await agent.process.wait() == 0
            server.send_signal(signal.SIGTERM)
            assert await server.wait() == 0
    assert done["status"] == "cancelled" and done["exit_code"] is not None
    assert not alive(grandchild)


async def test_two_agents_share_four_runs(tmp_path):
    """Two agents with --max-runs 2 take two runs each of four that run at the same time."""
    with trio.fail_after(90):
        async with trio.open_nursery() as nursery:
            server = await start_server(nursery, tmp_path / "data", "--local-executor", "false")
            async with admin_client(server.url) as client:
                agents = []
                for name in ("left", "right"):
                    agent = await enrolled_agent(nursery, client, server.url, tmp_path / name, name, "--max-runs", "2")
                    agents.append(agent)
                gate = tmp_path / "gate"
                script = f"import os, time\nwhile not os.path.exists({str(gate)!r}): time.sleep(0.05)"
                runs = [await submit(client, [PY, "-c", script]) for _ in range(4)]
                placed = [await wait_status(client, run["id"], {"running"}) for run in runs]
                gate.touch()
                done = [await wait_status(client, run["id"], TERMINAL) for run in runs]
                for agent in agents:
                    agent.process.send_signal(signal.SIGTERM)
                    assert await agent.process.wait() == 0
            server.send_signal(signal.SIGTERM)
            assert await server.wait() == 0
    assert sorted(run["executor"] for run in placed) == ["agent:left"] * 2 + ["agent:right"] * 2
    assert {run["status"] for run in done} == {"succeeded"}


async def test_state_dir_file_is_private(tmp_path):
    """agent.json is created 0600 even under a permissive umask."""
    old = os.umask(0)
    try:
        from runsvc.cli.agent_state import AgentState, write_state

        write_state(tmp_path / "agent.json", AgentState(1, "n", "s", ("http://u",)))
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "agent.json").stat().st_mode) == 0o600


async def test_first_start_without_server_is_a_usage_error(tmp_path):
    """No agent.json and no --server: one line on stderr, exit 2, no agent.json written."""
    with trio.fail_after(30):
        result = await trio.run_process(
            [PY, "-m", "runsvc", "agent", "--state-dir", str(tmp_path / "a"), "--enroll", "rse_x"],
            capture_stdout=True, capture_stderr=True, check=False, env=child_env(),
        )
    err = result.stderr.decode()
    assert result.returncode == 2, err
    assert err.count("\n") == 1 and err.startswith("runsvc: error: ") and "--server" in err, err
    assert not (tmp_path / "a" / "agent.json").exists()


async def test_server_restart_leaves_agent_runs_running(tmp_path):
    """After kill -9 of the server, a run on an agent is not interrupted: the restarted server adopts it,
    the agent reconnects within the lease and the run completes with every line exactly once."""
    with trio.fail_after(100):
        async with trio.open_nursery() as nursery:
            data = tmp_path / "data"
            server = await start_server(nursery, data, "--local-executor", "false", "--agent-lease-s", "10")
            proxy = CuttableProxy(int(server.url.rsplit(":", 1)[1]))
            await nursery.start(proxy.serve)
            gate = tmp_path / "gate"
            script = ("import os, time\nfor i in range(3000):\n    print(f'line {i}', flush=i % 100 == 0)\n"
                      f"    if i == 1000:\n        while not os.path.exists({str(gate)!r}): time.sleep(0.05)\n")
            async with admin_client(server.url) as client:
                via_proxy = f"http://127.0.0.1:{proxy.port}"
                agent = await enrolled_agent(nursery, client, via_proxy, tmp_path / "a", "steady")
                run = await submit(client, [PY, "-c", script])
                while (await client.get(f"/api/v1/runs/{run['id']}")).json()["run"]["last_seq"] < 1000:
                    await trio.sleep(0.05)
            server.send_signal(signal.SIGKILL)
            await server.wait()

            server = await start_server(nursery, data, "--local-executor", "false", "--agent-lease-s", "10")
            proxy.target_port = int(server.url.rsplit(":", 1)[1])
            async with admin_client(server.url) as client:
                await agent.wait_for("msg=connected", 2)
                status = (await client.get(f"/api/v1/runs/{run['id']}")).json()["run"]["status"]
                assert status == "running", agent.log_text() + "\n" + server.log_text()
                gate.touch()
                done = await wait_status(client, run["id"], TERMINAL)
                events = await all_events(client, run["id"])
                agent.process.send_signal(signal.SIGTERM)
                assert await agent.process.wait() == 0
            server.send_signal(signal.SIGTERM)
            assert await server.wait() == 0
            nursery.cancel_scope.cancel()
    assert (done["status"], done["attempt"], done["executor"]) == ("succeeded", 1, "agent:steady")
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert [e["data"] for e in events if e["kind"] == "stdout"] == [f"line {i}" for i in range(3000)]


async def test_server_shutdown_stops_agent_runs_after_the_drain(tmp_path):
    """SIGTERM of the server: after the drain window an agent's run is cancelled over its socket and
    recorded interrupted; the agent's process is gone and the server exits 0."""
    with trio.fail_after(90):
        async with trio.open_nursery() as nursery:
            data = tmp_path / "data"
            server = await start_server(nursery, data, "--local-executor", "false", "--drain-s", "1",
                                        "--kill-grace-s", "1")
            async with admin_client(server.url) as client:
                agent = await enrolled_agent(nursery, client, server.url, tmp_path / "a", "late")
                run = await submit(client, ["sh", "-c", "echo $$; exec sleep 60"])
                while not (out := [e for e in await all_events(client, run["id"]) if e["kind"] == "stdout"]):
                    await trio.sleep(0.05)
                pid = int(out[0]["data"])
            server.send_signal(signal.SIGTERM)
            assert await server.wait() == 0
            await agent.wait_for('msg="run finished"')
            assert not alive(pid)
            agent.process.send_signal(signal.SIGTERM)
            assert await agent.process.wait() == 0
    [(status, data)] = server_db_rows(
        data, "SELECT status, data FROM runs JOIN run_events ON run_id = id WHERE seq = last_seq"
    )
    assert (status, json.loads(data)["reason"]) == ("interrupted", "server shutting down")


async def test_connecting_agent_wakes_a_waiting_run_and_sigterm_drains(tmp_path):
    """A run waiting for a label is handed out when a fitting agent connects (a wakeup: the safety net is
    an hour); SIGTERM of the agent lets it run for --drain-s, then stops it as interrupted, exit 0."""
    with trio.fail_after(90):
        async with trio.open_nursery() as nursery:
            server = await start_server(nursery, tmp_path / "data", "--local-executor", "false",
                                        "--scheduler-safety-net-s", "3600")
            async with admin_client(server.url) as client:
                run = await submit(client, ["sh", "-c", "echo $$; exec sleep 60"], labels=["arm"])
                assert run["waiting_for"] == "an agent with labels arm"
                agent = await start_agent(nursery, server.url, tmp_path / "a", "--enroll",
                                          await new_token(client, labels=["arm"]), "--drain-s", "1")
                running = await wait_status(client, run["id"], {"running"})
                assert running["waiting_for"] is None and running["executor"].startswith("agent:")
                while not (out := [e for e in await all_events(client, run["id"]) if e["kind"] == "stdout"]):
                    await trio.sleep(0.05)
                agent.process.send_signal(signal.SIGTERM)
                assert await agent.process.wait() == 0
                done = await wait_status(client, run["id"], TERMINAL)
                events = await all_events(client, run["id"])
            server.send_signal(signal.SIGTERM)
            assert await server.wait() == 0
    assert (done["status"], done["exit_code"]) == ("interrupted", -15)
    # What the agent's executor did is in the reason, not a `system` line (the server takes none from agents).
    assert events[-1]["data"]["reason"] == "agent shutting down; sent SIGTERM"
    assert [e["data"] for e in events if e["kind"] == "system"] == []
    assert not alive(int(out[0]["data"]))
