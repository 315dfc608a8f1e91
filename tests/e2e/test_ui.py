"""The web UI in headless Chromium against `python -m runsvc serve` (SPEC §9, issue 11).

One server and one browser serve the whole module (each test gets a fresh browser context, so fresh
cookies); every test fails on an uncaught error in the page. Runs that must be caught mid-way wait for
a gate file the test creates, so nothing depends on timing.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from playwright.sync_api import expect

from tests.e2e.browser import (
    USER_PASSWORD,
    CuttingProxy,
    gate,
    in_viewport,
    line,
    log_in,
    serve,
    shown_lines,
)
from tests.helpers import ADMIN_PASSWORD

expect.set_options(timeout=20_000)  # a shared 2-core machine; these are deadlines, not timings


@pytest.fixture(scope="module", name="server")
def _server(tmp_path_factory):
    with serve(tmp_path_factory.mktemp("ui") / "data") as server:
        yield server


# ---- tests ------------------------------------------------------------------------------------------


def test_login_and_watch_a_live_run_succeed(page, server, api, tmp_path):
    """A visitor is sent to the login page; a wrong password shows an alert; after login the user lands
    where they were going, sees a running run's lines arrive live and its success."""
    go, wait_for_go = gate(tmp_path, "go")
    run = api.submit(f"echo first; {wait_for_go}; echo second; echo third", name="live one")
    api.wait(run["id"], {"running"})

    page.goto(server.url + f"/runs/{run['id']}")
    expect(page).to_have_url(re.compile(rf"/login\?next=%2Fruns%2F{run['id']}$"))
    page.get_by_label("Username").fill("olga")
    page.get_by_label("Password").fill("wrong-password")
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("alert")).to_have_text("Wrong username or password.")
    page.get_by_label("Password").fill(USER_PASSWORD)
    page.get_by_role("button", name="Log in").click()

    expect(page).to_have_url(server.url + f"/runs/{run['id']}")
    expect(page.get_by_role("heading", name=f"#{run['id']}")).to_be_visible()
    expect(page.get_by_text("olga", exact=True).first).to_be_visible()
    expect(page.get_by_role("status", name="Connection")).to_have_text("live")
    expect(page.get_by_role("status", name="Run status")).to_have_text("running")
    expect(page.get_by_role("log", name="Output")).to_contain_text("first")
    expect(page.get_by_role("log", name="Output")).not_to_contain_text("second")

    go.touch()
    expect(page.get_by_role("log", name="Output")).to_contain_text("third")
    expect(page.get_by_role("status", name="Run status")).to_have_text("succeeded")
    expect(page.get_by_role("status", name="Connection")).to_have_text("ended")
    last = api.get(f"/runs/{run['id']}")["run"]["last_seq"]
    assert in_viewport(page, line(page, last))  # the view followed the end
    texts = [text for _, text in shown_lines(page)]
    assert [t for t in texts if t in ("first", "second", "third")] == ["first", "second", "third"]
    first_line = line(page, 3)
    expect(first_line).to_have_text(re.compile(r"^3\s*first$"))  # a line's text begins with its seq
    expect(first_line.get_by_role("link", name="3")).to_have_attribute("href", "#L3")


def test_cut_websocket_mid_run_shows_every_line_once(new_page, server, api, tmp_path):
    """The connection is dropped twice from outside the page while the run prints; after reconnecting,
    every seq appears exactly once and in order, with the right text."""
    proxy = CuttingProxy(server.url)
    try:
        page = new_page(viewport={"width": 1280, "height": 4200})  # the whole log fits on screen
        sockets = []
        page.on("websocket", lambda ws: sockets.append(ws.url) if "/events/ws" in ws.url else None)
        first, wait_first = gate(tmp_path, "first")
        second, wait_second = gate(tmp_path, "second")
        script = (f"for i in $(seq 1 40); do echo a$i; done; {wait_first}; "
                  f"for i in $(seq 1 40); do echo b$i; done; {wait_second}; "
                  f"for i in $(seq 1 40); do echo c$i; done")
        run = api.submit(script, name="cut me")
        log_in(page, proxy.url, "olga", path=f"/runs/{run['id']}")
        expect(page.get_by_role("log", name="Output")).to_contain_text("a40")
        expect(page.get_by_role("status", name="Connection")).to_have_text("live")

        assert proxy.cut() >= 1
        first.touch()  # the b lines are printed while the page is disconnected or reconnecting
        api.wait(run["id"], {"running"})
        expect(page.get_by_role("log", name="Output")).to_contain_text("b40")
        expect(page.get_by_role("status", name="Connection")).to_have_text("live")
        assert proxy.cut() >= 1
        second.touch()
        finished = api.wait(run["id"])
        expect(page.get_by_role("status", name="Connection")).to_have_text("ended")
        expect(page.get_by_role("log", name="Output")).to_contain_text("c40")
    finally:
        proxy.close()

    rows = shown_lines(page)
    assert [seq for seq, _ in rows] == list(range(1, finished["last_seq"] + 1))
    stdout = [text for _, text in rows if re.fullmatch(r"[abc]\d+", text)]
    assert stdout == [f"{p}{i}" for p in "abc" for i in range(1, 41)]
    assert len(sockets) >= 3  # the first connection and one reconnect after each cut


def test_hostile_output_renders_as_text_in_colour(page, server, api):
    """HTML in output stays text (no script runs), SGR colours render as classes, OSC titles and other
    escapes vanish, and a \\r progress bar shows its final state."""
    script = (r"""printf '<img src=x onerror="document.title=1;window.pwned=1">\n'; """
              r"""printf '\033]0;hijacked title\007plain \033[31mred\033[0m \033[1;4mbold\033[0m """
              r"""\033[38;5;208mpalette\033[0m \033[38;2;1;2;3mtrue\033[0m\033[2K\033[?25l end\n'; """
              r"""printf 'progress 10%%\rprogress 60%%\rprogress 100%%\r\n'""")
    run = api.submit(script)
    api.wait(run["id"])
    log_in(page, server.url, "vic", path=f"/runs/{run['id']}")
    expect(page.get_by_role("status", name="Connection")).to_have_text("ended")

    hostile, coloured, progress = line(page, 3), line(page, 4), line(page, 5)
    expect(hostile.locator(".tx")).to_have_text('<img src=x onerror="document.title=1;window.pwned=1">')
    assert page.get_by_role("log", name="Output").locator("img").count() == 0
    assert page.evaluate("window.pwned") is None
    expect(page).to_have_title("runsvc")
    expect(coloured.locator(".tx")).to_have_text("plain red bold palette true end")
    expect(coloured.locator(".ansi-red-fg")).to_have_text("red")
    expect(coloured.locator(".ansi-bold.ansi-underline")).to_have_text("bold")
    colour = "e => getComputedStyle(e).color"
    assert coloured.locator(".tx span", has_text="palette").evaluate(colour) == "rgb(255, 135, 0)"
    assert coloured.locator(".tx span", has_text="true").evaluate(colour) == "rgb(1, 2, 3)"
    red = coloured.locator(".ansi-red-fg").evaluate("e => getComputedStyle(e).color")
    assert red != coloured.locator(".tx").evaluate("e => getComputedStyle(e).color")
    expect(progress.locator(".tx")).to_have_text("progress 100%")
    for text in [t for _, t in shown_lines(page)]:
        assert "\x1b" not in text and "hijacked" not in text and "\r" not in text and "\x07" not in text


def test_runs_list_updates_from_the_feed_without_polling(page, server, api, tmp_path):
    """A run created through the API appears in the list, and its status changes, without reload and
    without any request to /api/v1/runs once the list is shown."""
    go, wait_for_go = gate(tmp_path, "go")
    with page.expect_response(lambda r: "/api/v1/runs?" in r.url):
        log_in(page, server.url, "vic")
    table = page.get_by_role("table")
    expect(table).to_be_visible()
    requests = []
    page.on("request", lambda request: requests.append(request.url) if "/api/v1/runs" in request.url else None)

    run = api.submit(f"{wait_for_go}; echo done", name="from the api")
    row = table.get_by_role("row").filter(has=page.get_by_role("link", name=f"#{run['id']}", exact=True))
    expect(row).to_contain_text("from the api")
    expect(row).to_contain_text("running")
    expect(row).to_contain_text("admin")
    go.touch()
    expect(row).to_contain_text("succeeded")
    assert table.get_by_role("row").nth(1).get_by_role("link").text_content() == f"#{run['id']}"  # newest first
    assert requests == []

    page.get_by_label("Status").select_option("failed")
    expect(page).to_have_url(server.url + "/?status=failed")
    expect(page.get_by_role("link", name=f"#{run['id']}", exact=True)).to_have_count(0)


def test_runs_list_pages_with_older(page, server, api):
    """50 rows a page, newest first; `Older` appends the next page until the first run is shown."""
    for i in range(51):
        api.post("/runs", {"command": ["true"], "name": f"bulk {i}"})
    total = len(api.get("/runs", limit=500)["runs"])
    log_in(page, server.url, "vic")
    rows = page.get_by_role("table").get_by_role("row")
    expect(rows).to_have_count(50 + 1)  # and the header row
    ids = [int(t.lstrip("#")) for t in rows.get_by_role("link").all_text_contents()]
    assert ids == sorted(ids, reverse=True)
    while page.get_by_role("button", name="Older").count():
        page.get_by_role("button", name="Older").click()
        expect(rows).not_to_have_count(len(ids) + 1)
        ids = [int(t.lstrip("#")) for t in rows.get_by_role("link").all_text_contents()]
    assert len(ids) == total and ids == sorted(ids, reverse=True) and ids[-1] == 1


def test_runs_list_refetches_after_a_feed_reconnect(page, server, api):
    """The feed is not durable: when its connection drops, the list is fetched again on reconnect, so a run
    created while it was down is shown."""
    proxy = CuttingProxy(server.url)
    try:
        with page.expect_response(lambda r: "/api/v1/runs?" in r.url):
            log_in(page, proxy.url, "vic")
        expect(page.get_by_role("table")).to_be_visible()
        with page.expect_response(lambda r: "/api/v1/runs?" in r.url) as refetch:
            assert proxy.cut() >= 1
            run = api.submit("true", name="made while the feed was down")
        assert refetch.value.ok
        expect(page.get_by_role("link", name=f"#{run['id']}", exact=True)).to_be_visible()
    finally:
        proxy.close()


def test_lockout_shows_the_seconds_left(page, server):
    """After five failures the login page says how long the lockout lasts (429 with Retry-After)."""
    page.goto(server.url + "/login")
    page.get_by_label("Username").fill("mallory")
    page.get_by_label("Password").fill("not-the-password")
    for _ in range(5):
        with page.expect_response(lambda r: r.url.endswith("/api/v1/auth/login")) as answer:
            page.get_by_role("button", name="Log in").click()
        assert answer.value.status == 401
        expect(page.get_by_role("alert")).to_have_text("Wrong username or password.")
        expect(page.get_by_role("button", name="Log in")).to_be_enabled()
    page.get_by_role("button", name="Log in").click()
    lockout = re.compile(r"^Too many failed attempts\. Try again in \d+ seconds\.$")
    expect(page.get_by_role("alert")).to_have_text(lockout)


def test_cancel_from_the_ui_and_what_a_viewer_cannot_do(new_page, server, api):
    """An operator cancels a running run with `Cancel run`; a viewer sees neither `Cancel run` nor
    `New run` (nor `Users`)."""
    run = api.submit("echo sleeping; sleep 60", name="long")
    api.wait(run["id"], {"running"})

    viewer = new_page()
    log_in(viewer, server.url, "vic", path=f"/runs/{run['id']}")
    expect(viewer.get_by_role("log", name="Output")).to_contain_text("sleeping")
    expect(viewer.get_by_role("status", name="Run status")).to_have_text("running")
    expect(viewer.get_by_role("button", name="Cancel run")).to_have_count(0)
    expect(viewer.get_by_role("link", name="New run")).to_have_count(0)
    expect(viewer.get_by_role("link", name="Users")).to_have_count(0)
    expect(viewer.get_by_role("link", name="Runs")).to_be_visible()

    operator = new_page()
    log_in(operator, server.url, "olga", path=f"/runs/{run['id']}")
    expect(operator.get_by_role("link", name="New run")).to_be_visible()
    expect(operator.get_by_role("link", name="Users")).to_have_count(0)
    operator.get_by_role("button", name="Cancel run").click()
    expect(operator.get_by_role("status", name="Run status")).to_have_text("cancelled")
    expect(operator.get_by_role("button", name="Cancel run")).to_have_count(0)
    expect(viewer.get_by_role("status", name="Run status")).to_have_text("cancelled")  # live, elsewhere
    assert api.get(f"/runs/{run['id']}")["run"]["status"] == "cancelled"


def test_new_run_form_with_environment(page, server, api):
    """The form submits a shell line with its environment and opens the new run; an API error shows in
    an alert."""
    log_in(page, server.url, "olga")
    page.get_by_role("link", name="New run").click()
    expect(page).to_have_url(server.url + "/runs/new")
    page.get_by_label("Command").fill('echo "$GREETING, $TARGET"')
    page.get_by_label("Name").fill("greeting")
    page.get_by_label("Timeout (s)").fill("120")
    page.get_by_label("Environment").fill("RUNSVC_RUN_ID=5")
    page.get_by_role("button", name="Submit run").click()
    expect(page.get_by_role("alert")).to_have_text("env cannot set RUNSVC_RUN_ID")

    page.get_by_label("Environment").fill("GREETING=hello\nTARGET=a b c")
    page.get_by_role("button", name="Submit run").click()
    expect(page).to_have_url(re.compile(r"/runs/\d+$"))
    expect(page.get_by_role("log", name="Output")).to_contain_text("hello, a b c")
    expect(page.get_by_role("status", name="Run status")).to_have_text("succeeded")
    run_id = int(page.url.rsplit("/", 1)[1])
    run = api.get(f"/runs/{run_id}")["run"]
    assert run["env"] == {"GREETING": "hello", "TARGET": "a b c"}
    assert run["command"] == ["sh", "-c", 'echo "$GREETING, $TARGET"']
    assert run["name"] == "greeting" and run["timeout_s"] == 120 and run["created_by"] == "olga"


def test_users_page_creates_and_disables_a_user(page, server, api):
    """An admin creates a user from the Users page, then disables and enables them."""
    log_in(page, server.url, "admin", password=ADMIN_PASSWORD)
    page.get_by_role("link", name="Users").click()
    page.get_by_label("Username").fill("alice")
    page.get_by_label("Password").fill("a-long-password")
    page.get_by_label("Role").select_option("viewer")
    page.get_by_role("button", name="Create user").click()
    row = page.get_by_role("row", name=re.compile(r"^alice "))
    expect(row).to_contain_text("viewer")
    users = {u["username"]: u for u in api.get("/users")["users"]}
    assert users["alice"]["role"] == "viewer" and not users["alice"]["disabled"]

    page.get_by_role("button", name="Disable alice").click()
    expect(page.get_by_role("button", name="Enable alice")).to_be_visible()
    assert {u["username"]: u for u in api.get("/users")["users"]}["alice"]["disabled"] is True
    page.get_by_role("button", name="Enable alice").click()
    page.get_by_role("button", name="Edit alice").click()
    page.get_by_label("Role of alice").select_option("operator")
    page.get_by_role("button", name="Save").click()
    expect(row).to_contain_text("operator")
    expect(page.get_by_label("Role of alice")).to_have_count(0)  # the editor closed
    page.get_by_role("button", name="Disable admin").click()  # the last admin: the API refuses (409)
    expect(page.get_by_role("alert")).to_be_visible()


def test_deep_link_lands_in_the_viewport_also_after_reload(page, server, api):
    """Opening #L<seq> scrolls to that line and highlights it; a reload does it again."""
    run = api.submit("seq 1 3000", name="numbers")
    finished = api.wait(run["id"])
    target = 1502  # prints "1500" (seq 1 and 2 are the queued and running states)
    log_in(page, server.url, "vic", path=f"/runs/{run['id']}#L{target}")
    expect(page).to_have_url(server.url + f"/runs/{run['id']}#L{target}")
    expect(line(page, target)).to_have_class(re.compile(r"\bhighlight\b"))
    expect(line(page, target).locator(".tx")).to_have_text("1500")
    assert in_viewport(page, line(page, target))
    expect(page.get_by_role("button", name="Jump to end")).to_be_visible()

    page.reload()
    expect(line(page, target)).to_have_class(re.compile(r"\bhighlight\b"))
    assert in_viewport(page, line(page, target))
    page.get_by_role("button", name="Jump to end").click()
    expect(line(page, finished["last_seq"])).to_be_visible()
    line(page, finished["last_seq"] - 5).get_by_role("link").click()
    expect(page).to_have_url(re.compile(rf"#L{finished['last_seq'] - 5}$"))
    expect(line(page, finished["last_seq"] - 5)).to_have_class(re.compile(r"\bhighlight\b"))


def test_200000_line_run(page, server, api):
    """A 200,000-line log opens at its end with at most 5,000 line elements in the DOM, and search finds a
    line far above and scrolls to it."""
    script = "echo needle-far-above; seq 1 200000"
    run = api.submit(script, name="big")
    finished = api.wait(run["id"], timeout=120)
    assert finished["status"] == "succeeded" and finished["last_seq"] == 200_004
    log_in(page, server.url, "vic", path=f"/runs/{run['id']}")
    last = line(page, finished["last_seq"])
    expect(last).to_contain_text("status: succeeded")
    assert in_viewport(page, last)
    assert page.locator(".line").count() <= 5000
    expect(line(page, 200_002)).to_contain_text("199999")

    search = page.get_by_label("Search log")
    search.fill("needle-far")
    expect(page.get_by_text("1 of 1")).to_be_visible()
    expect(line(page, 3)).to_be_visible()
    assert in_viewport(page, line(page, 3))
    expect(line(page, 3)).to_have_class(re.compile(r"\bcurrent\b"))
    expect(line(page, 3).locator("mark")).to_have_text("needle-far")  # the matching text is marked
    assert page.locator(".line").count() <= 5000

    # Wait for the older lines to finish loading: until then the match count grows as pages arrive, and
    # "m of m" after wrapping would race the last page.
    expect(page.get_by_role("log", name="Output")).to_have_attribute("aria-busy", "false", timeout=60_000)
    search.fill("19999")  # 19999 and 119999..199999-ish: many matches; Enter steps through them
    expect(page.get_by_text(re.compile(r"^1 of \d+$"))).to_be_visible()
    search.press("Enter")
    expect(page.get_by_text(re.compile(r"^2 of \d+$"))).to_be_visible()
    search.press("Shift+Enter")
    search.press("Shift+Enter")
    expect(page.get_by_text(re.compile(r"^(\d+) of \1$"))).to_be_visible()  # wrapped to the last


def test_sections_collapse_nest_and_open_for_search(page, server, api):
    """Ended ::group:: sections are collapsed, nest, open on click, and open for a search match inside;
    the Timestamps choice survives a reload."""
    script = ("echo '::group::Outer'; echo outer-line; echo '::group::Inner'; echo deep-line; "
              "echo '::endgroup::'; echo '::endgroup::'; echo after")
    run = api.submit(script)
    api.wait(run["id"])
    log_in(page, server.url, "vic", path=f"/runs/{run['id']}")
    output = page.get_by_role("log", name="Output")
    expect(output).to_contain_text("after")
    outer = output.get_by_role("button", name="Outer")
    expect(outer).to_have_attribute("aria-expanded", "false")
    expect(output).not_to_contain_text("outer-line")
    outer.click()
    expect(output).to_contain_text("outer-line")
    expect(output.get_by_role("button", name="Inner")).to_have_attribute("aria-expanded", "false")
    expect(output).not_to_contain_text("deep-line")
    outer.click()
    expect(output).not_to_contain_text("outer-line")

    page.get_by_label("Search log").fill("DEEP-line")  # case-insensitive
    expect(page.get_by_text("1 of 1")).to_be_visible()
    expect(line(page, 6)).to_have_text(re.compile(r"^6\s*deep-line$"))
    expect(output.get_by_role("button", name="Inner")).to_have_attribute("aria-expanded", "true")
    expect(outer).to_have_attribute("aria-expanded", "true")

    page.get_by_label("Timestamps").check()
    expect(line(page, 6).locator(".ts")).to_have_text(re.compile(r"^\d\d:\d\d:\d\d\.\d{3}$"))
    page.reload()
    expect(page.get_by_label("Timestamps")).to_be_checked()
    expect(line(page, 1).locator(".ts")).to_be_visible()


def test_pages_fit_a_360_px_screen(new_page, server, api):
    """At 360 px wide no page scrolls sideways (wide tables and log lines scroll inside their own box)."""
    run = api.submit("echo " + "x" * 300, name="a rather long name for a run on a small phone screen")
    api.wait(run["id"])
    page = new_page(viewport={"width": 360, "height": 740})
    log_in(page, server.url, "admin", password=ADMIN_PASSWORD)
    for path, ready in [("/", "table"), (f"/runs/{run['id']}", "log"), ("/runs/new", "form"), ("/users", "table"),
                        ("/tokens", "table"), ("/agents", "table")]:
        page.goto(server.url + path)
        if ready == "form":
            expect(page.get_by_role("button", name="Submit run")).to_be_visible()
        else:
            expect(page.get_by_role(ready).first).to_be_visible()
        assert page.evaluate("document.documentElement.scrollWidth") <= 360, path
    expect(page.get_by_role("button", name="Log out")).to_be_visible()


def test_download_log(page, server, api):
    """`Download log` saves the raw stdout/stderr text as run-<id>.log."""
    run = api.submit("echo out; echo err >&2; printf 'tab\\there\\n'")
    api.wait(run["id"])
    log_in(page, server.url, "vic", path=f"/runs/{run['id']}")
    with page.expect_download() as info:
        page.get_by_role("link", name="Download log").click()
    download = info.value
    assert download.suggested_filename == f"run-{run['id']}.log"
    text = Path(download.path()).read_text()
    assert text == api.client.get(f"/api/v1/runs/{run['id']}/log").text
    assert sorted(text.splitlines()) == ["err", "out", "tab\there"]  # two pipes: their order may vary


def test_expired_session_goes_to_login_and_back(page, server, api):
    """When the session is gone, the next API call sends the user to the login page, and logging in
    brings them back to the run they were on."""
    run = api.submit("echo waiting; sleep 60", name="still running")
    api.wait(run["id"], {"running"})
    log_in(page, server.url, "olga", path=f"/runs/{run['id']}")
    expect(page.get_by_role("log", name="Output")).to_contain_text("waiting")
    page.context.clear_cookies()  # as if the session had expired
    page.get_by_role("button", name="Cancel run").click()  # answered 401
    expect(page).to_have_url(server.url + f"/login?next=%2Fruns%2F{run['id']}")
    page.get_by_label("Username").fill("olga")
    page.get_by_label("Password").fill(USER_PASSWORD)
    page.get_by_role("button", name="Log in").click()
    expect(page).to_have_url(server.url + f"/runs/{run['id']}")
    page.get_by_role("button", name="Cancel run").click()
    expect(page.get_by_role("status", name="Run status")).to_have_text("cancelled")
