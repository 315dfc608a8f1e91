"""What an agent reports about a run besides its output (SPEC §11): the executor's own words go in
`finished.reason`, never as `system` output lines (the server takes output lines from agents as the
run's output only)."""

from __future__ import annotations

import signal

import trio

from tests.e2e.agent_helpers import admin_client, all_events, enrolled_agent, submit, wait_status
from tests.helpers import TERMINAL, start_server


async def test_a_spawn_failure_is_reported_in_finished_reason_not_as_a_system_line(tmp_path):
    """A command that cannot start on the agent: the run fails with the reason "spawn failed: …" in its
    state event, and the agent sent no `system` line."""
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            server = await start_server(nursery, tmp_path / "data", "--local-executor", "false")
            async with admin_client(server.url) as client:
                agent = await enrolled_agent(nursery, client, server.url, tmp_path / "agent", "reporter")
                run = await submit(client, ["/no/such/command"])
                done = await wait_status(client, run["id"], TERMINAL)
                events = await all_events(client, run["id"])
                assert done["status"] == "failed" and done["exit_code"] is None
                assert [e["data"] for e in events if e["kind"] == "system"] == []
                final = events[-1]["data"]
                assert events[-1]["kind"] == "state"
                assert final["reason"].startswith("spawn failed: No such file or directory"), final
                agent.process.send_signal(signal.SIGTERM)
                assert await agent.process.wait() == 0
            server.send_signal(signal.SIGTERM)
