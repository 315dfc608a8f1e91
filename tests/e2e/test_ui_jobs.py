"""The jobs pages of the web UI (SPEC §15) in headless Chromium against `python -m runsvc serve`: the
jobs list, the job form with the server's cron explanation, a job's page (Run job with parameters, Edit,
Delete with the browser's confirm, its runs live, its fires), the run page's job fields and Re-run, and
what a viewer does not get. Every test fails on an uncaught error in the page.

Pages run in the America/New_York time zone, so "local time" is checked against a zone that is not the
server's UTC.
"""

from __future__ import annotations

import re
import sqlite3
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from playwright.sync_api import expect

from tests.e2e.browser import log_in, serve

expect.set_options(timeout=20_000)  # a shared 2-core machine; these are deadlines, not timings

ZONE = "America/New_York"


@pytest.fixture(scope="module", name="server")
def _server(tmp_path_factory):
    with serve(tmp_path_factory.mktemp("ui-jobs") / "data") as server:
        yield server


def local(iso: str) -> str:
    """An API timestamp as the page shows it in ZONE."""
    moment = datetime.fromisoformat(iso.replace("Z", "+00:00")).astimezone(ZoneInfo(ZONE))
    return moment.strftime("%Y-%m-%d %H:%M:%S")


def make_job(api, name: str, **fields) -> dict:
    body = {"name": name, "command": ["sh", "-c", 'echo "deploying to $PARAM_TARGET"']} | fields
    return api.post("/jobs", body)["job"]


def server_data_dir(server) -> Path:
    """The data dir the module's server was started with (from its command line)."""
    args = server.process.args
    return Path(args[args.index("--data-dir") + 1])


def fact(page, term: str):
    """The value (dd) of a fact (dt) on a run or job page."""
    return page.locator("dl.facts > div").filter(has=page.locator("dt", has_text=re.compile(f"^{term}$"))).locator("dd")


# ---- the form ---------------------------------------------------------------------------------------


def test_operator_creates_a_job_with_a_parameter_through_the_form(new_page, server, api):
    """Jobs → New job; every field of the form; the cron text is explained while typing (next fire
    times, or the library's error); Save job opens the job's page and the job is saved as typed."""
    page = new_page(timezone_id=ZONE)
    log_in(page, server.url, "olga")
    page.get_by_role("link", name="Jobs", exact=True).click()
    expect(page.get_by_role("heading", name="Jobs")).to_be_visible()
    page.get_by_role("link", name="New job").click()
    expect(page).to_have_url(server.url + "/jobs/new")

    page.get_by_label("Name", exact=True).fill("deploy-web")
    page.get_by_label("Description", exact=True).fill("Ships the web tier.")
    page.get_by_label("Command", exact=True).fill('echo "deploying $PARAM_TARGET"')
    page.get_by_label("Environment", exact=True).fill("REGION=eu-west\nDRY=no")
    page.get_by_label("Timeout (s)", exact=True).fill("120")
    explanation = page.get_by_role("status", name="Schedule explanation")
    expect(explanation).to_have_text("No schedule: the job runs only when started.")

    cron = page.get_by_label("Schedule (cron)", exact=True)
    cron.fill("0 3 * * *")
    expect(explanation).to_contain_text("At 03:00 every day")
    expect(explanation.locator("time")).to_have_count(3)
    cron.fill("61 * * * *")
    expect(explanation).to_contain_text("Bad minute")
    expect(explanation.locator("time")).to_have_count(0)
    cron.fill("30 6 * * 1")
    page.get_by_label("Time zone", exact=True).fill("Europe/Paris")
    expect(explanation).to_contain_text("At 06:30 on Monday")
    preview = api.get("/schedule/preview", cron="30 6 * * 1", timezone="Europe/Paris")
    expect(explanation.locator("time").first).to_have_text(local(preview["next_fires"][0]))  # local time
    page.get_by_label("Overlap", exact=True).select_option("allow")
    page.get_by_label("Schedule enabled", exact=True).uncheck()
    page.get_by_label("Retries", exact=True).fill("2")
    page.get_by_label("Retry delay (s)", exact=True).fill("5")
    page.get_by_label("Concurrency limit", exact=True).fill("1")

    page.get_by_role("button", name="Add parameter").click()
    expect(page.get_by_label("Parameter name", exact=True)).to_be_focused()
    page.get_by_label("Parameter name", exact=True).fill("target")
    page.get_by_label("Default", exact=True).fill("staging")
    page.get_by_label("Choices", exact=True).fill("staging, production")
    page.get_by_label("Required", exact=True).check()
    page.get_by_role("button", name="Add parameter").click()
    page.get_by_label("Parameter name", exact=True).nth(1).fill("note")
    page.get_by_role("button", name="Save job").click()

    expect(page.get_by_role("heading", name="deploy-web")).to_be_visible()
    job = next(j for j in api.get("/jobs")["jobs"] if j["name"] == "deploy-web")
    expect(page).to_have_url(f"{server.url}/jobs/{job['id']}")
    assert job["description"] == "Ships the web tier."
    assert job["command"] == ["sh", "-c", 'echo "deploying $PARAM_TARGET"']
    assert (job["env"], job["timeout_s"], job["created_by"]) == ({"REGION": "eu-west", "DRY": "no"}, 120, "olga")
    assert {k: job["schedule"][k] for k in ("cron", "timezone", "overlap", "enabled")} == {
        "cron": "30 6 * * 1", "timezone": "Europe/Paris", "overlap": "allow", "enabled": False}
    assert (job["retries"]["max"], job["retries"]["delay_s"], job["concurrency"]["limit"]) == (2, 5, 1)
    assert [{k: p[k] for k in ("name", "default", "choices", "required")} for p in job["params"]] == [
        {"name": "target", "default": "staging", "choices": ["staging", "production"], "required": True},
        {"name": "note", "default": None, "choices": None, "required": False},
    ]
    expect(page.get_by_text("The schedule is paused.")).to_be_visible()


def test_form_shows_the_api_error_naming_the_field(new_page, server, api):
    """A value the API refuses (an unknown time zone; a name already taken) is shown in an alert with
    the server's message naming it, and nothing is saved; the form keeps what was typed."""
    make_job(api, "taken")
    page = new_page()
    log_in(page, server.url, "olga", path="/jobs/new")
    page.get_by_label("Name", exact=True).fill("tz-job")
    page.get_by_label("Command", exact=True).fill("true")
    page.get_by_label("Schedule (cron)", exact=True).fill("@daily")
    page.get_by_label("Time zone", exact=True).fill("Mars/Olympus_Mons")
    expect(page.get_by_role("status", name="Schedule explanation")).to_contain_text("Mars/Olympus_Mons")
    page.get_by_role("button", name="Save job").click()
    expect(page.get_by_role("alert")).to_contain_text("timezone")
    page.get_by_label("Time zone", exact=True).fill("UTC")
    page.get_by_label("Name", exact=True).fill("TAKEN")
    page.get_by_role("button", name="Save job").click()
    expect(page.get_by_role("alert")).to_contain_text("name")
    expect(page).to_have_url(server.url + "/jobs/new")
    expect(page.get_by_label("Command", exact=True)).to_have_value("true")
    assert [j["name"] for j in api.get("/jobs")["jobs"] if j["name"].lower() in ("tz-job", "taken")] == ["taken"]


def test_edit_job_keeps_what_the_form_does_not_show(new_page, server, api):
    """Edit job opens the form filled with the job (also on a reload of its address); saving changes
    what was edited and keeps the rest: an argv that is not a shell line, a parameter's description,
    the schedule's `missed`."""
    job = make_job(api, "report", command=["python3", "-c", "print('it works')"], description="Weekly report",
                   params=[{"name": "week", "description": "ISO week", "default": "1"}],
                   schedule={"cron": "@weekly", "timezone": "UTC", "missed": "skip"})
    page = new_page()
    log_in(page, server.url, "olga", path=f"/jobs/{job['id']}")
    page.get_by_role("link", name="Edit job").click()
    expect(page).to_have_url(f"{server.url}/jobs/{job['id']}/edit")
    page.reload()  # the edit page is a page of its own
    expect(page.get_by_label("Name", exact=True)).to_have_value("report")
    expect(page.get_by_label("Command", exact=True)).to_have_value("python3 -c 'print('\\''it works'\\'')'")
    expect(page.get_by_label("Schedule (cron)", exact=True)).to_have_value("@weekly")
    expect(page.get_by_label("Parameter name", exact=True)).to_have_value("week")
    expect(page.get_by_role("status", name="Schedule explanation")).to_contain_text("Next")

    page.get_by_label("Description", exact=True).fill("Weekly report, now on Mondays")
    page.get_by_label("Schedule (cron)", exact=True).fill("0 8 * * 1")
    page.get_by_label("Default", exact=True).fill("2")
    page.get_by_role("button", name="Save job").click()
    expect(page).to_have_url(f"{server.url}/jobs/{job['id']}")
    expect(page.get_by_text("Weekly report, now on Mondays")).to_be_visible()
    saved = api.get(f"/jobs/{job['id']}")["job"]
    assert saved["command"] == ["python3", "-c", "print('it works')"]
    assert (saved["schedule"]["cron"], saved["schedule"]["missed"]) == ("0 8 * * 1", "skip")
    assert (saved["params"][0]["default"], saved["params"][0]["description"]) == ("2", "ISO week")

    page.get_by_role("link", name="Edit job").click()
    page.get_by_label("Schedule (cron)", exact=True).fill("")
    page.get_by_role("button", name="Remove parameter week").click()
    page.get_by_role("button", name="Save job").click()
    expect(page.get_by_text("No schedule.")).to_be_visible()
    saved = api.get(f"/jobs/{job['id']}")["job"]
    assert (saved["schedule"], saved["params"], saved["next_fires"]) == (None, [], [])


# ---- the job's page -----------------------------------------------------------------------------------


def test_run_job_with_a_parameter_lands_on_the_run_page(new_page, server, api):
    """Run job shows one input per parameter labelled with its name (a select for choices, defaults
    filled in); Start run opens the new run, which got the values; the run page names the job."""
    job = make_job(api, "deploy-api", command=["sh", "-c", 'echo "to $PARAM_TARGET ($PARAM_NOTE)"'],
                   params=[{"name": "target", "choices": ["staging", "production"], "default": "staging"},
                           {"name": "note", "required": True}])
    page = new_page()
    log_in(page, server.url, "olga", path=f"/jobs/{job['id']}")
    expect(page.get_by_role("heading", name="deploy-api")).to_be_visible()
    page.get_by_role("button", name="Run job").click()
    target = page.get_by_label("target", exact=True)
    expect(target).to_have_value("staging")
    assert target.evaluate("e => e.tagName") == "SELECT"
    target.select_option("production")
    page.get_by_label("note").fill("hotfix 42")
    page.get_by_role("button", name="Start run").click()

    expect(page).to_have_url(re.compile(rf"{server.url}/runs/\d+$"))
    run_id = int(page.url.rsplit("/", 1)[1])
    expect(page.get_by_role("log", name="Output")).to_contain_text("to production (hotfix 42)")
    run = api.get(f"/runs/{run_id}")["run"]
    assert (run["job_id"], run["trigger"]) == (job["id"], "job")
    assert run["params"] == {"target": "production", "note": "hotfix 42"}
    expect(fact(page, "Job").get_by_role("link", name="deploy-api")).to_have_attribute("href", f"/jobs/{job['id']}")
    expect(fact(page, "Trigger")).to_have_text("job")
    expect(fact(page, "Try")).to_have_text("1")


def test_job_page_lists_runs_live_and_the_fires_with_their_outcome(new_page, server, api):
    """The job's runs appear and change status from the runs feed without a reload (and no run of
    another job does); the recent fires show each outcome, skipped ones too; the next fire times are
    in local time."""
    job = make_job(api, "ticker", schedule={"cron": "0 0 1 1 *", "timezone": "UTC"})
    page = new_page(timezone_id=ZONE)
    log_in(page, server.url, "olga", path=f"/jobs/{job['id']}")
    runs = page.get_by_role("table", name="Runs of ticker")
    expect(runs).to_be_visible()
    expect(page.get_by_text("No fires yet.")).to_be_visible()
    fire_list = page.get_by_role("list", name="Next fire times")
    expect(fire_list.get_by_role("listitem")).to_have_count(5)
    expect(fire_list.get_by_role("listitem").first).to_have_text(local(job["next_fires"][0]))

    other = api.submit("echo another job's business", name="unrelated")
    api.wait(other["id"])  # the feed is ordered: its frames reach the page before the job's run's
    started = api.post(f"/jobs/{job['id']}/runs", {})["run"]
    row = runs.get_by_role("row").filter(has=page.get_by_role("link", name=f"#{started['id']}", exact=True))
    expect(row).to_contain_text("succeeded")
    expect(runs.get_by_role("row")).to_have_count(2)  # the header and the job's one run

    # Fires are recorded by the schedule ticker at their time; this page only shows them: written
    # straight into the server's database, the only way to have a skipped fire without waiting for one.
    db = sqlite3.connect(server_data_dir(server) / "runsvc.db", timeout=10)
    with db:
        db.executemany(
            "INSERT INTO job_fires (job_id, scheduled_for, outcome, run_id, recorded_at) VALUES (?, ?, ?, ?, ?)",
            [(job["id"], "2026-01-01T00:00:00.000000Z", "started", started["id"], "2026-01-01T00:00:00.100000Z"),
             (job["id"], "2026-01-01T00:01:00.000000Z", "skipped_overlap", None, "2026-01-01T00:01:00.100000Z")])
    db.close()
    api.post(f"/jobs/{job['id']}/runs", {})  # a new run of the job: the page fetches the fires again
    fires = page.get_by_role("table", name="Recent fires")
    expect(fires.get_by_role("row")).to_have_count(3)
    expect(fires.get_by_role("row").nth(1)).to_contain_text(local("2026-01-01T00:01:00.000000Z"))
    expect(fires.get_by_role("row").nth(1)).to_contain_text("skipped_overlap")
    expect(fires.get_by_role("row").nth(2)).to_contain_text("started")
    expect(fires.get_by_role("row").nth(2).get_by_role("link", name=f"#{started['id']}")).to_be_visible()


def test_jobs_list_shows_schedule_next_fire_and_last_run(new_page, server, api):
    """The jobs list: a link per job named by its name, its cron text with the next fire time in local
    time, and the status of its last run."""
    job = make_job(api, "backup-db", schedule={"cron": "15 4 * * *", "timezone": "UTC"})
    run = api.post(f"/jobs/{job['id']}/runs", {})["run"]
    api.wait(run["id"])
    page = new_page(timezone_id=ZONE)
    log_in(page, server.url, "vic", path="/jobs")
    row = page.get_by_role("table", name="Jobs").get_by_role("row").filter(
        has=page.get_by_role("link", name="backup-db", exact=True))
    expect(row).to_contain_text("15 4 * * *")
    expect(row).to_contain_text(local(job["next_fires"][0]))
    expect(row).to_contain_text("succeeded")
    row.get_by_role("link", name="backup-db", exact=True).click()
    expect(page).to_have_url(f"{server.url}/jobs/{job['id']}")


def test_delete_job_asks_first(new_page, server, api):
    """Delete job asks with the browser's confirm dialog: dismissed, nothing happens; accepted, the job
    is gone and the page goes back to the jobs list."""
    job = make_job(api, "doomed")
    answers, seen = iter([False, True]), []

    def answer(dialog) -> None:
        seen.append((dialog.type, dialog.message))
        dialog.accept() if next(answers) else dialog.dismiss()

    page = new_page(on_dialog=answer)
    log_in(page, server.url, "olga", path=f"/jobs/{job['id']}")
    page.get_by_role("button", name="Delete job").click()
    expect(page.get_by_role("heading", name="doomed")).to_be_visible()
    assert seen == [("confirm", "Delete job doomed? Its runs are kept; queued ones are cancelled.")]
    assert api.get(f"/jobs/{job['id']}")["job"]["name"] == "doomed"
    page.get_by_role("button", name="Delete job").click()
    expect(page).to_have_url(server.url + "/jobs")
    expect(page.get_by_role("table", name="Jobs")).to_be_visible()
    expect(page.get_by_role("link", name="doomed", exact=True)).to_have_count(0)
    assert len(seen) == 2
    assert api.client.get(f"/api/v1/jobs/{job['id']}").status_code == 404


def test_viewer_sees_no_write_controls(new_page, server, api):
    """A viewer gets the Jobs link and can read a job and a run, but sees no New job, Run job, Edit job,
    Delete job or Re-run, and the form's addresses are not pages for them."""
    job = make_job(api, "read-only", params=[{"name": "target", "default": "x"}])
    run = api.post(f"/jobs/{job['id']}/runs", {})["run"]
    api.wait(run["id"])
    page = new_page()
    log_in(page, server.url, "vic")
    page.get_by_role("link", name="Jobs", exact=True).click()
    expect(page.get_by_role("link", name="read-only", exact=True)).to_be_visible()
    expect(page.get_by_role("link", name="New job")).to_have_count(0)
    page.get_by_role("link", name="read-only", exact=True).click()
    expect(page.get_by_role("heading", name="read-only")).to_be_visible()
    job_runs = page.get_by_role("table", name="Runs of read-only")
    expect(job_runs.get_by_role("link", name=f"#{run['id']}")).to_be_visible()
    for name in ("Run job", "Delete job", "Start run"):
        expect(page.get_by_role("button", name=name)).to_have_count(0)
    expect(page.get_by_role("link", name="Edit job")).to_have_count(0)
    page.goto(f"{server.url}/runs/{run['id']}")
    expect(fact(page, "Job")).to_have_text("read-only")
    expect(page.get_by_role("button", name="Re-run")).to_have_count(0)
    for path in ("/jobs/new", f"/jobs/{job['id']}/edit"):
        page.goto(server.url + path)
        expect(page.get_by_role("heading", name="Page not found")).to_be_visible()
        expect(page.get_by_label("Name", exact=True)).to_have_count(0)


# ---- the run page ---------------------------------------------------------------------------------------


def test_run_page_shows_the_try_it_retries_and_re_run_opens_a_new_run(new_page, server, api):
    """A retry's page shows Job (a link), Trigger `retry`, Try 2 with a link to the run it retries, Not
    before; Re-run opens a new first try of the same job and parameters."""
    job = make_job(api, "flaky", command=["sh", "-c", 'echo "try $PARAM_TARGET"; exit 3'],
                   params=[{"name": "target", "default": "db"}], retries={"max": 1, "delay_s": 0})
    first = api.post(f"/jobs/{job['id']}/runs", {"params": {"target": "files"}})["run"]
    api.wait(first["id"])
    retry = next(r for r in api.get("/runs", job_id=job["id"])["runs"] if r["retry_of"] == first["id"])
    retry = api.wait(retry["id"])
    page = new_page(timezone_id=ZONE)
    log_in(page, server.url, "olga", path=f"/runs/{retry['id']}")
    expect(page.get_by_role("status", name="Run status")).to_have_text("failed")
    expect(fact(page, "Job").get_by_role("link", name="flaky")).to_have_attribute("href", f"/jobs/{job['id']}")
    expect(fact(page, "Trigger")).to_have_text("retry")
    expect(fact(page, "Try")).to_have_text(f"2 (retries #{first['id']})")
    expect(fact(page, "Not before")).to_have_text(local(retry["not_before"]))
    fact(page, "Try").get_by_role("link", name=f"#{first['id']}").click()
    expect(page).to_have_url(f"{server.url}/runs/{first['id']}")
    expect(fact(page, "Try")).to_have_text("1")

    page.get_by_role("button", name="Re-run").click()
    expect(page).to_have_url(re.compile(rf"{server.url}/runs/(?!{first['id']}$)\d+$"))
    rerun_id = int(page.url.rsplit("/", 1)[1])
    expect(page.get_by_role("heading", name=f"#{rerun_id}")).to_be_visible()
    expect(fact(page, "Trigger")).to_have_text("rerun")
    expect(fact(page, "Try")).to_have_text("1")
    expect(page.get_by_role("log", name="Output")).to_contain_text("try files")
    rerun = api.get(f"/runs/{rerun_id}")["run"]
    assert (rerun["job_id"], rerun["params"], rerun["retry_of"]) == (job["id"], {"target": "files"}, None)



def test_run_page_of_a_delayed_run_shows_not_before(new_page, server, api):
    """A run started with not_before shows it in local time and what it waits for, without the
    sentence about executors connecting; a plain run shows trigger `api` and no Job."""
    job = make_job(api, "later")
    run = api.post(f"/jobs/{job['id']}/runs", {"not_before": "2999-01-01T00:00:00Z"})["run"]
    plain = api.submit("true", name="plain")
    page = new_page(timezone_id=ZONE)
    log_in(page, server.url, "olga", path=f"/runs/{run['id']}")
    expect(fact(page, "Not before")).to_have_text(local("2999-01-01T00:00:00.000000Z"))
    expect(page.locator(".waiting")).to_have_text(re.compile(r"^Waiting for not before 2999-01-01T00:00:00\S*\.$"))
    expect(fact(page, "Trigger")).to_have_text("job")
    api.post(f"/runs/{run['id']}/cancel", {})
    page.goto(f"{server.url}/runs/{plain['id']}")
    expect(fact(page, "Trigger")).to_have_text("api")
    expect(fact(page, "Try")).to_have_text("1")
    expect(fact(page, "Job")).to_have_count(0)
    expect(fact(page, "Not before")).to_have_count(0)


def test_jobs_pages_fit_a_360_px_screen(new_page, server, api):
    """At 360 px wide no jobs page scrolls sideways (wide tables scroll inside their own box)."""
    job = make_job(api, "a-rather-long-job-name-for-a-small-phone-screen", description="x" * 300,
                   params=[{"name": "target", "choices": ["staging", "production"], "default": "staging"}],
                   schedule={"cron": "15 4 * * 1-5", "timezone": "America/Argentina/Buenos_Aires"})
    api.wait(api.post(f"/jobs/{job['id']}/runs", {})["run"]["id"])
    page = new_page(viewport={"width": 360, "height": 740})
    log_in(page, server.url, "olga")
    for path, ready in [("/jobs", "Jobs"), (f"/jobs/{job['id']}", "Recent fires"),
                        (f"/jobs/{job['id']}/edit", "Parameters"), ("/jobs/new", None)]:
        page.goto(server.url + path)
        if ready is None:
            expect(page.get_by_role("button", name="Save job")).to_be_visible()
        else:
            expect(page.get_by_role("table", name=ready).or_(page.get_by_text("No fires yet."))).to_be_visible()
        if path == f"/jobs/{job['id']}":
            page.get_by_role("button", name="Run job").click()
            expect(page.get_by_role("button", name="Start run")).to_be_visible()
        assert page.evaluate("document.documentElement.scrollWidth") <= 360, path
