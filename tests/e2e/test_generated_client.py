"""A client generated from the served OpenAPI document works (issue 15's "done when").

openapi-python-client (a generator no one here wrote; a test dependency only) turns the document of a
real `python -m runsvc serve` into an httpx package in tmp_path, with warnings made fatal. The test then
imports that package and drives the server through the generated code only: log in (session cookie and
CSRF header), make an API token, and with the token as a Bearer submit a run, list runs, read the run and
its events page, and cancel a run that stays queued (202, then 409). Every answer is parsed by the
generated models, so a document that lies about a status code or a body shape fails here.
"""

from __future__ import annotations

import importlib
import sys
from http.cookies import SimpleCookie
from pathlib import Path

import httpx
import trio

from tests.helpers import ADMIN_PASSWORD, start_server

GENERATOR = str(Path(sys.executable).with_name("openapi-python-client"))
PACKAGE = "runsvc_generated_client"
ADMIN = {"username": "admin", "password": ADMIN_PASSWORD}


async def generate_client(url: str, where: Path) -> None:
    document = where / "openapi.json"
    async with httpx.AsyncClient(base_url=url, timeout=10) as http:
        response = await http.get("/api/v1/openapi.json")
    assert response.status_code == 200, response.text
    document.write_bytes(response.content)
    config = where / "generator.yaml"
    config.write_text("post_hooks: []\n")  # no ruff formatting pass: it is not what is being tested
    result = await trio.run_process(
        [GENERATOR, "generate", "--path", str(document), "--output-path", str(where / PACKAGE), "--meta", "none",
         "--config", str(config), "--fail-on-warning"],
        capture_stdout=True, capture_stderr=True, check=False, cwd=where,
    )
    output = result.stdout.decode() + result.stderr.decode()
    assert result.returncode == 0, output
    assert "Warning" not in output, output


def import_generated(where: Path, monkeypatch):
    monkeypatch.syspath_prepend(str(where))
    modules = [f"{PACKAGE}.{name}" for name in (
        "client", "api.auth.post_api_v1_auth_login", "api.tokens.post_api_v1_tokens", "api.runs.post_api_v1_runs",
        "api.runs.get_api_v1_runs", "api.runs.get_api_v1_runs_run_id", "api.runs.get_api_v1_runs_run_id_events",
        "api.runs.post_api_v1_runs_run_id_cancel", "models",
    )]
    return [importlib.import_module(name) for name in modules]


async def wait_terminal(get_run, client, run_id: int):
    while True:
        answer = await get_run.asyncio_detailed(run_id, client=client)
        assert answer.status_code == 200, answer.content
        if answer.parsed.run.status.value in ("succeeded", "failed", "timed_out", "cancelled", "interrupted"):
            return answer.parsed.run
        await trio.sleep(0.05)


async def test_generated_client_drives_the_api(tmp_path, monkeypatch):
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            server = await start_server(nursery, tmp_path / "data")
            await generate_client(server.url, tmp_path)
            try:
                (client_module, login, create_token, submit, list_runs, get_run, get_events, cancel,
                 models) = import_generated(tmp_path, monkeypatch)

                # A session through the generated code: log in, then send its cookie and CSRF header.
                async with client_module.Client(base_url=server.url) as anonymous:
                    logged_in = await login.asyncio_detailed(
                        client=anonymous, body=models.PostApiV1AuthLoginBody(**ADMIN)
                    )
                assert logged_in.status_code == 200, logged_in.content
                assert logged_in.parsed.user.username == "admin"
                cookies = SimpleCookie()
                for header in logged_in.headers.get_list("set-cookie"):
                    cookies.load(header)
                async with client_module.Client(
                    base_url=server.url, cookies={"runsvc_session": cookies["runsvc_session"].value},
                    headers={"X-CSRF-Token": logged_in.parsed.csrf_token},
                ) as session:
                    made = await create_token.asyncio_detailed(
                        client=session, body=models.PostApiV1TokensBody(name="generated-client")
                    )
                assert made.status_code == 201, made.content
                secret = made.parsed.secret
                assert secret.startswith("rsv_")

                async with client_module.AuthenticatedClient(base_url=server.url, token=secret) as api:
                    command = [sys.executable, "-c", "print('hello from a generated client')"]
                    submitted = await submit.asyncio_detailed(
                        client=api, body=models.PostApiV1RunsBody(command=command, name="generated")
                    )
                    assert submitted.status_code == 201, submitted.content
                    run_id = submitted.parsed.run.id
                    assert submitted.parsed.run.command == command

                    # No executor has the label `gpu`: this run stays queued until it is cancelled.
                    parked = await submit.asyncio_detailed(
                        client=api, body=models.PostApiV1RunsBody(command=["true"], labels=["gpu"])
                    )
                    assert parked.status_code == 201, parked.content
                    parked_id = parked.parsed.run.id

                    finished = await wait_terminal(get_run, api, run_id)
                    assert finished.status.value == "succeeded" and finished.exit_code == 0
                    assert finished.created_by == "admin"

                    listed = await list_runs.asyncio_detailed(client=api, limit=10)
                    assert listed.status_code == 200, listed.content
                    assert [run.id for run in listed.parsed.runs] == [parked_id, run_id]
                    assert listed.parsed.runs[0].status.value == "queued"
                    assert listed.parsed.runs[0].waiting_for

                    page = await get_events.asyncio_detailed(run_id, client=api, after_seq=0, limit=1000)
                    assert page.status_code == 200, page.content
                    assert page.parsed.complete is True
                    assert [event.seq for event in page.parsed.events] == list(range(1, page.parsed.last_seq + 1))
                    assert [event.data for event in page.parsed.events if event.kind.value == "stdout"] == [
                        "hello from a generated client"
                    ]

                    cancelled = await cancel.asyncio_detailed(parked_id, client=api)
                    assert cancelled.status_code == 202, cancelled.content
                    assert cancelled.parsed.run.status.value == "cancelled"
                    again = await cancel.asyncio_detailed(parked_id, client=api)
                    assert again.status_code == 409, again.content
                    assert isinstance(again.parsed, models.Error) and again.parsed.error.code

                    missing = await get_run.asyncio_detailed(10**9, client=api)
                    assert missing.status_code == 404 and isinstance(missing.parsed, models.Error)
            finally:
                for name in [name for name in sys.modules if name.split(".")[0] == PACKAGE]:
                    del sys.modules[name]
            server.send_signal()
            await server.wait()
    log = server.log_text()
    assert "Traceback" not in log and "unhandled error" not in log, log
