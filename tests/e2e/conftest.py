"""Fixtures the browser tests share: one headless Chromium per test module, and checked pages.

Each test module starts its own server (its `server` fixture, with the settings it needs); `api` here
adds the same two users to it (olga, operator; vic, viewer). The browser and the page checks are the
same everywhere.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from tests.e2e.browser import USER_PASSWORD, Api, checked_pages, launch_chromium
from tests.helpers import SERVER_DATABASE


@pytest.fixture(scope="module", name="api")
def _api(server) -> Iterator[Api]:
    """An admin's API client of the module's server, after creating olga (operator) and vic (viewer)."""
    api = Api(server.url)
    api.post("/users", {"username": "olga", "password": USER_PASSWORD, "role": "operator"})
    api.post("/users", {"username": "vic", "password": USER_PASSWORD, "role": "viewer"})
    yield api
    api.close()


@pytest.fixture(scope="module", name="browser")
def _browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        yield browser
        browser.close()


@pytest.fixture(name="new_page")
def _new_page(browser: Browser) -> Iterator[Callable[..., Page]]:
    """A factory of pages in fresh contexts; fails the test on any uncaught page error, dialog or console
    error (a CSP violation is one) other than the browser's own notes about refused requests."""
    with checked_pages(browser) as make:
        yield make


@pytest.fixture(name="page")
def _page(new_page: Callable[..., Page]) -> Page:
    return new_page()


@pytest.fixture(name="server_backend")
def _server_backend(backend: str) -> Iterator[str]:
    """Servers this test starts (start_server, CLI children) use `backend`'s database: a module that
    runs on both backends says `pytestmark = pytest.mark.usefixtures("server_backend")`."""
    SERVER_DATABASE["url"] = backend
    try:
        yield backend
    finally:
        SERVER_DATABASE["url"] = ""
