"""The Agents page (SPEC §9, §11) in headless Chromium against `python -m runsvc serve`, with a real
`python -m runsvc agent` started from the very command the page shows: enroll, see it connected, run a
labelled run from the new-run form on it, revoke it; runs show their executor, labels and what a queued
run waits for; non-admins have no way in.

One server and one browser for the module; every test gets fresh browser contexts and fails on any
uncaught page error, dialog or unexpected console error.
"""

from __future__ import annotations

import datetime as dt
import re

import pytest
from playwright.sync_api import Page, expect

from tests.e2e.browser import (
    ADMIN_PASSWORD,
    SyncAgent,
    checked_pages,
    gate,
    log_in,
    serve,
)

expect.set_options(timeout=30_000)  # a shared 2-core machine; these are deadlines, not timings
# The token goes in on stdin, through the shell's built-in echo: never in a process's argv.
COMMAND = re.compile(r"^echo (rse_[A-Za-z0-9_-]+) \| python -m runsvc agent --server (\S+) --enroll -$")


@pytest.fixture(scope="module", name="server")
def _server(tmp_path_factory):
    with serve(tmp_path_factory.mktemp("ui-agents") / "data", "--agent-lease-s", "30") as server:
        yield server


@pytest.fixture(name="agents")
def _agents():
    """Agent processes a test starts; stopped at its end whatever happened."""
    started: list[SyncAgent] = []
    yield started
    for agent in started:
        agent.stop()


def fact(page: Page, name: str):
    """The value of one of the run page's facts (Executor, Labels, …)."""
    return page.locator(".facts > div").filter(has=page.locator("dt", has_text=name)).locator("dd")


def row_with(page: Page, table: str, text: str):
    return page.get_by_role("table", name=table).get_by_role("row").filter(has_text=text)


def test_admin_enrolls_an_agent_runs_a_labelled_run_on_it_and_revokes_it(new_page, server, api, agents, tmp_path):
    """The whole story of issue 12's 'done when': a labelled run submitted from the form waits (and says
    for what); the admin creates an enrollment token, copies the command the page shows, and that exact
    command started on 'another machine' enrolls an agent that Refresh shows connected, running the
    run, whose log shows its lines; Revoke disconnects the agent, which exits 1."""
    page = new_page()
    page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=server.url)
    log_in(page, server.url, "admin", password=ADMIN_PASSWORD)

    # A run for a gpu machine, from the form: nobody can take it yet.
    released, wait_line = gate(tmp_path, "release")
    page.get_by_role("link", name="New run").click()
    page.get_by_label("Command").fill(f"echo on-the-agent; echo to-stderr >&2; {wait_line}; echo released")
    page.get_by_label("Name").fill("gpu job")
    page.get_by_label("Labels").fill(" gpu , ")
    page.get_by_role("button", name="Submit run").click()
    expect(page).to_have_url(re.compile(r"/runs/\d+$"))
    run_id = int(page.url.rsplit("/", 1)[1])
    assert api.get(f"/runs/{run_id}")["run"]["labels"] == ["gpu"]
    expect(page.get_by_text("Waiting for an agent with labels gpu.")).to_be_visible()
    expect(fact(page, "Executor")).to_have_text("not yet chosen")
    expect(fact(page, "Labels")).to_have_text("gpu")
    page.get_by_role("link", name="Runs").click()
    run_row = page.get_by_role("row").filter(has=page.get_by_role("link", name=f"#{run_id}", exact=True))
    expect(run_row).to_contain_text("waiting for an agent with labels gpu")
    expect(run_row.get_by_label("labels gpu")).to_be_visible()

    # The Agents page: nothing enrolled yet; create a token for gpu machines.
    page.get_by_role("link", name="Agents").click()
    expect(page).to_have_url(server.url + "/agents")
    expect(page.get_by_role("heading", name="Agents", exact=True)).to_be_visible()
    expect(page.get_by_role("table", name="Agents")).to_contain_text("No agents yet.")
    expect(page.get_by_label("Expires in (s)")).to_have_value("3600")
    page.get_by_label("Labels").fill("gpu, linux")
    page.get_by_role("button", name="Create enrollment token").click()
    command_box = page.get_by_label("Agent command")
    expect(command_box).to_have_value(COMMAND)
    command = command_box.input_value()
    token, origin = COMMAND.match(command).groups()
    assert origin == server.url
    expect(command_box).to_be_focused()
    expect(page.get_by_text("The agent gets the labels gpu, linux.")).to_be_visible()
    page.get_by_role("button", name="Copy command").click()
    expect(page.get_by_role("status").filter(has_text="Copied")).to_be_visible()
    assert page.evaluate("navigator.clipboard.readText()") == command
    [listed] = api.get("/enrollment-tokens")["enrollment_tokens"]
    assert listed["labels"] == ["gpu", "linux"] and listed["used_at"] is None
    token_row = row_with(page, "Enrollment tokens", f"#{listed['id']}")
    expect(token_row).to_contain_text("gpu")
    expect(token_row).to_contain_text("not yet")
    assert token not in page.get_by_role("table", name="Enrollment tokens").inner_text()

    # Someone watches the waiting run while the agent comes up.
    watcher = new_page()
    log_in(watcher, server.url, "admin", password=ADMIN_PASSWORD, path=f"/runs/{run_id}")
    expect(watcher.get_by_text("Waiting for an agent with labels gpu.")).to_be_visible()
    expect(watcher.get_by_role("status", name="Connection")).to_have_text("live")

    # The pasted command, verbatim, in a directory of its own (the agent's state lands there).
    agent_dir = tmp_path / "agent-machine"
    agent_dir.mkdir()
    agent = SyncAgent(["/bin/sh", "-c", command], cwd=agent_dir)
    agents.append(agent)
    agent.wait_for("msg=connected")
    assert (agent_dir / "runsvc-agent" / "agent.json").exists()
    [enrolled] = api.get("/agents")["agents"]
    name = enrolled["name"]
    page.get_by_role("button", name="Refresh").click()
    agent_row = row_with(page, "Agents", name)
    expect(agent_row.get_by_role("cell").nth(2)).to_have_text("yes")
    expect(agent_row).to_contain_text("gpu")
    expect(agent_row).to_contain_text("linux")
    expect(agent_row.get_by_role("link", name=f"#{run_id}")).to_be_visible()  # it took the waiting run
    expect(token_row).to_contain_text("used ")
    # The watcher saw the run start: its executor is asked for once, and the waiting note is gone.
    expect(watcher.get_by_role("status", name="Run status")).to_have_text("running")
    expect(fact(watcher, "Executor")).to_have_text(f"agent:{name}")
    expect(watcher.get_by_text("Waiting for")).to_have_count(0)
    expect(watcher.get_by_role("log", name="Output")).to_contain_text("on-the-agent")
    watcher.close()

    # The run, opened from the agents table: on the agent, its output in the log.
    agent_row.get_by_role("link", name=f"#{run_id}").click()
    expect(page).to_have_url(f"{server.url}/runs/{run_id}")
    expect(fact(page, "Executor")).to_have_text(f"agent:{name}")
    expect(page.get_by_text("Waiting for")).to_have_count(0)
    output = page.get_by_role("log", name="Output")
    expect(output).to_contain_text("on-the-agent")
    expect(output).to_contain_text("to-stderr")
    released.touch()
    expect(page.get_by_role("status", name="Run status")).to_have_text("succeeded")
    expect(output).to_contain_text("released")
    expect(page.get_by_role("status", name="Connection")).to_have_text("ended")
    stdout = [e["data"] for e in api.get(f"/runs/{run_id}/events")["events"] if e["kind"] == "stdout"]
    assert stdout == ["on-the-agent", "released"]
    page.get_by_role("link", name="Runs").click()
    expect(run_row.get_by_role("cell", name=f"agent:{name}")).to_be_visible()

    # A second labelled run from the form goes straight to the connected agent.
    page.get_by_role("link", name="New run").click()
    page.get_by_label("Command").fill("for i in 1 2 3; do echo agent-says-$i; done")
    page.get_by_label("Labels").fill("linux,gpu")
    page.get_by_role("button", name="Submit run").click()
    expect(page.get_by_role("status", name="Run status")).to_have_text("succeeded")
    expect(fact(page, "Executor")).to_have_text(f"agent:{name}")
    for n in (1, 2, 3):
        expect(page.get_by_role("log", name="Output")).to_contain_text(f"agent-says-{n}")

    # Revoke: the agent leaves the list, is disconnected and exits with status 1.
    page.get_by_role("link", name="Agents").click()
    revoke = row_with(page, "Agents", name).get_by_role("button", name=f"Revoke {name}")
    expect(revoke).to_have_text("Revoke")
    revoke.click()
    expect(page.get_by_role("status")).to_have_text(f"Revoked {name}.")
    expect(row_with(page, "Agents", name)).to_have_count(0)
    expect(page.get_by_role("table", name="Agents")).to_contain_text("No agents yet.")
    assert agent.wait_exit() == 1
    assert api.get("/agents")["agents"] == []


def test_enrollment_tokens_are_deleted_and_api_errors_show_in_an_alert(page, server, api):
    """A malformed label is refused by the API and the refusal shows in role alert (no command appears);
    a token without labels says how to give the agent some; Delete removes a token from the list."""
    log_in(page, server.url, "admin", password=ADMIN_PASSWORD, path="/agents")
    page.get_by_label("Labels").fill("gpu, not a label!")
    page.get_by_role("button", name="Create enrollment token").click()
    expect(page.get_by_role("alert")).to_have_text("labels must be 1-64 characters of A-Z a-z 0-9 _ . - each")
    expect(page.get_by_label("Agent command")).to_have_count(0)

    page.get_by_label("Labels").fill("")
    page.get_by_label("Expires in (s)").fill("120")
    page.get_by_role("button", name="Create enrollment token").click()
    expect(page.get_by_label("Agent command")).to_have_value(COMMAND)
    expect(page.get_by_role("alert")).to_have_count(0)
    expect(page.get_by_text("The token has no labels")).to_be_visible()
    made = max(api.get("/enrollment-tokens")["enrollment_tokens"], key=lambda t: t["id"])
    assert made["labels"] == []
    assert _seconds(made["expires_at"]) - _seconds(made["created_at"]) == pytest.approx(120, abs=1)
    page.get_by_role("button", name="Done").click()
    expect(page.get_by_label("Agent command")).to_have_count(0)

    page.get_by_role("button", name=f"Delete enrollment token #{made['id']}").click()
    expect(page.get_by_role("status")).to_have_text(f"Deleted enrollment token #{made['id']}.")
    expect(row_with(page, "Enrollment tokens", f"#{made['id']}")).to_have_count(0)
    assert made["id"] not in [t["id"] for t in api.get("/enrollment-tokens")["enrollment_tokens"]]


def test_a_non_admin_has_no_agents_link_and_is_turned_away(browser, server, api):
    """An operator's header has no Agents (nor Users) link; opening /agents says it is for admins, makes
    no API call that would be refused, and logs no console error at all."""
    with checked_pages(browser, expected_console_errors=()) as new_page:
        page = new_page()
        refused: list[str] = []
        page.on("response", lambda r: refused.append(r.url) if r.status >= 400 else None)
        log_in(page, server.url, "olga", path="/agents")
        expect(page.get_by_role("heading", name="Admins only")).to_be_visible()
        expect(page.get_by_text("Agents are managed by admins")).to_be_visible()
        nav = page.get_by_role("navigation", name="Main")
        expect(nav.get_by_role("link", name="Runs")).to_be_visible()
        expect(nav.get_by_role("link", name="Agents")).to_have_count(0)
        expect(nav.get_by_role("link", name="Users")).to_have_count(0)
        expect(page.get_by_role("button", name="Create enrollment token")).to_have_count(0)
        assert refused == []


def _seconds(iso: str) -> float:
    return dt.datetime.fromisoformat(iso).timestamp()
