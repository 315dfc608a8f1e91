"""The web UI: one HTML page for every UI path (it routes in the browser), and its files under /ui/.

The files ship inside the package (runsvc/web/). Third-party files live under /ui/vendor/<name>-<version>/,
so a new version is a new URL and they may be cached for a year; everything else is revalidated on each
load so an upgraded server never runs against a stale page.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath

import trio
from quart import Response

from ..errors import NotFound

WEB_ROOT = Path(__file__).resolve().parent.parent.parent / "web"

CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".json": "application/json",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
    "": "text/plain; charset=utf-8",  # LICENSE files
}

# Every path the browser-side router knows; each answers the same page.
PAGE_PATHS = (
    "/", "/login", "/runs/new", "/runs/<int:run_id>", "/users", "/tokens", "/agents", "/secrets", "/webhooks",
    "/jobs", "/jobs/new", "/jobs/<int:job_id>", "/jobs/<int:job_id>/edit",
)

VENDOR_CACHE = "public, max-age=31536000, immutable"
OWN_CACHE = "no-cache"  # revalidate: the page and our own modules change with the server


async def index_page(**_path_params: object) -> Response:
    """The single page of the UI, whatever the UI path (`/`, `/runs/7`, `/users`, …)."""
    body = await trio.Path(WEB_ROOT / "index.html").read_bytes()
    response = Response(body, content_type=CONTENT_TYPES[".html"])
    response.headers["Cache-Control"] = "no-store"
    return response


async def static_file(path: str) -> Response:
    """A file under runsvc/web/, by its path below /ui/."""
    target = _resolve(path)
    try:
        body = await trio.Path(target).read_bytes()
    except OSError:
        # Missing, a directory, a name too long for the file system (ENAMETOOLONG): all "no such file".
        raise NotFound(f"no UI file {path}") from None
    response = Response(body, content_type=CONTENT_TYPES.get(target.suffix, "application/octet-stream"))
    response.headers["Cache-Control"] = VENDOR_CACHE if path.startswith("vendor/") else OWN_CACHE
    return response


def _resolve(path: str) -> Path:
    """`path` under WEB_ROOT, refusing anything that would leave it (.., absolute, hidden files) and
    names no file can have (a NUL byte, which the OS calls would refuse with a ValueError)."""
    parts = PurePosixPath(path).parts
    if "\0" in path or not parts or any(
        part in ("..", ".") or part.startswith(".") or "\\" in part for part in parts
    ):
        raise NotFound(f"no UI file {path}")
    if parts[0] == "/":
        raise NotFound(f"no UI file {path}")
    return WEB_ROOT.joinpath(*parts)
