"""`waiting_for` on the runs feed: a frame carries it as GET /runs would list the run at that moment."""

from __future__ import annotations

import json

import trio

from tests.helpers import add_user, login
from tests.http.test_live import open_ws

RUNS = "/api/v1/runs"


async def test_feed_frames_carry_waiting_for(server, client):
    """A queued run no connected executor can take says why in its feed frame, exactly as the list does;
    its cancellation frame (no longer queued) carries null; a run the local executor takes carries null
    in every frame."""
    await add_user(server, "olga", "operator")
    csrf = {"X-CSRF-Token": await login(client, "olga")}
    with trio.fail_after(20):
        async with open_ws(server, "/api/v1/runs/feed/ws", cookie=client.cookies["runsvc_session"],
                           queue=64) as feed:
            # The handshake ends before the server's handler subscribes; a run created before that
            # would have no frame.
            while server.services.runs.feed.statistics().watchers < 1:
                await trio.sleep(0.01)
            parked = (await client.post(RUNS, json={"command": ["true"], "labels": ["gpu"]}, headers=csrf)).json()
            frame = json.loads(await feed.get_message())
            assert frame["run"]["id"] == parked["run"]["id"]
            assert frame["run"]["waiting_for"] == "an agent with labels gpu"
            listed = (await client.get(RUNS)).json()["runs"]
            assert frame["run"] == listed[0]

            cancelled = await client.post(f"{RUNS}/{parked['run']['id']}/cancel", headers=csrf)
            assert cancelled.status_code == 202, cancelled.text
            frame = json.loads(await feed.get_message())
            assert (frame["run"]["status"], frame["run"]["waiting_for"]) == ("cancelled", None)

            local = (await client.post(RUNS, json={"command": ["true"]}, headers=csrf)).json()["run"]
            statuses = []
            while not statuses or statuses[-1] not in ("succeeded", "failed"):
                frame = json.loads(await feed.get_message())
                assert frame["run"]["id"] == local["id"]
                assert "waiting_for" in frame["run"] and frame["run"]["waiting_for"] is None
                statuses.append(frame["run"]["status"])
            assert statuses == ["queued", "running", "succeeded"]
