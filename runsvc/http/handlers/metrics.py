"""`GET /metrics` (Prometheus text) and the request-latency hooks that feed its histogram."""

from __future__ import annotations

import time

from quart import Response, g, request
from quart_trio import QuartTrio

from ..types import services


async def metrics() -> Response:
    """Prometheus text; who may scrape (loopback, else an admin) is the route table's business."""
    metrics = services().metrics
    return Response(await metrics.scrape(), content_type=metrics.CONTENT_TYPE)


def install(app: QuartTrio) -> None:
    """Time every HTTP request into runsvc_http_request_duration_seconds, labelled by the route's
    pattern (request.url_rule), or `unmatched` for a path no route has (404) or a method it lacks (405)."""

    @app.before_request
    async def _start_timer() -> None:
        g.request_started = time.perf_counter()

    @app.after_request
    async def _observe(response: Response) -> Response:
        started = g.get("request_started")
        if started is not None:
            rule = request.url_rule.rule if request.url_rule is not None else None
            services().metrics.observe_request(
                request.method, rule, response.status_code, time.perf_counter() - started
            )
        return response
