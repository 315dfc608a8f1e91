"""Issue 20 item 4: `GET /runs/{id}/events` answers are bounded in size, whatever the run printed, and
paging by `last_seq` until `complete` still reads the whole run once."""

from __future__ import annotations

import trio

from runsvc.store.events import PAGE_MAX_CHARS
from tests.helpers import add_user, login
from tests.http.test_live import running_run

HOSTILE = "\x01" * 16384  # 16 KiB of control characters: ~96 Ki characters of JSON per event
ANSWER_OVERHEAD = 200  # `{"events":[`, `],"last_seq":…,"complete":…}`


async def test_events_page_is_bounded_and_pages_to_the_end(server, client):
    """300 such lines asked for with limit=10,000: each answer is at most PAGE_MAX_CHARS characters of
    events (before: one ~29 MB answer), `complete` is false until the page that reaches the terminal
    event, and paging from each answer's `last_seq` reads every event once, in order."""
    services = server.services
    await add_user(server, "vera", "viewer")
    await login(client, "vera")
    with trio.fail_after(120):
        run_id = await running_run(services)
        for _ in range(6):
            await services.eventlog.append(run_id, [("stdout", HOSTILE)] * 50)
        await services.runs.cancel(run_id, by="t")
        while (await services.runs.get(run_id)).status == "running":
            await trio.sleep(0.01)
        last = (await services.runs.get(run_id)).last_seq
        seqs: list[int] = []
        after, pages, complete = 0, 0, False
        while not complete:
            response = await client.get(f"/api/v1/runs/{run_id}/events", params={"after_seq": after, "limit": 10_000})
            assert response.status_code == 200
            assert len(response.content) <= PAGE_MAX_CHARS + ANSWER_OVERHEAD
            page = response.json()
            seqs.extend(event["seq"] for event in page["events"])
            complete = page["complete"]
            assert page["last_seq"] == (seqs[-1] if page["events"] else after)
            assert complete == (page["last_seq"] == last)
            after = page["last_seq"]
            pages += 1
    assert seqs == list(range(1, last + 1)) and pages > 1
