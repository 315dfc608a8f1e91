"""Prometheus metrics (SPEC §13), made with prometheus-client from counters the code already keeps.

Nothing here counts on a hot path of its own: a scrape reads the `statistics()` snapshots of the
store, the bus and the scheduler, the accounts' login-failure count and the recorder's finished runs,
plus what the maintenance passes reported, and runs ONE grouped count query (`runs` by status, served
by the `runs_status_id` index) for `runsvc_runs`. The only metric recorded per request is the latency
histogram, labelled by the route's pattern (`/api/v1/runs/{run_id}`), never by the raw path.

Each server has its own `CollectorRegistry` (tests run many servers in one process), never the
process-global default one.
"""

from __future__ import annotations

import collections
import re
from collections.abc import Callable, Iterator, Mapping

import attrs
from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from .model import STATUSES, TERMINAL_STATUSES
from .store import Store
from .store import runs as runs_sql
from .store.fires import OUTCOMES as FIRE_OUTCOMES

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
WEBSOCKET_KINDS = ("run_events", "feed", "agent")
MAINTENANCE_WHATS = (
    "sessions", "enrollment_tokens", "api_tokens", "login_throttle", "job_fires", "runs", "run_events",
    "webhook_deliveries",
)
# runsvc_webhook_deliveries_total: an attempt answered 2xx ("delivered"), or not ("failed": another
# status, a refused connection, a timeout; it is tried again later).
WEBHOOK_OUTCOMES = ("delivered", "failed")
UNMATCHED = "unmatched"  # the route label of a 404 or 405: never the raw path
# Any other request method is labelled "other": a client must not be able to mint label values.
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
# Request latency buckets, in seconds: from a cached read (sub-millisecond) to a slow log download.
DURATION_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

_CONVERTER = re.compile(r"<(?:[a-z_]+:)?([A-Za-z_][A-Za-z0-9_]*)>")


def route_label(rule: str | None) -> str:
    """A URL rule as the route label: `/api/v1/runs/<int:run_id>` -> `/api/v1/runs/{run_id}`."""
    if rule is None:
        return UNMATCHED
    return _CONVERTER.sub(r"{\1}", rule)


@attrs.frozen
class Sources:
    """Where the counters are read at scrape time (each a zero-argument callable, cheap, no I/O)."""

    sql_statements: Callable[[], int]
    event_commits: Callable[[], int]  # write transactions committed (group commit)
    events_appended: Callable[[], int]
    lag_resyncs: Callable[[], int]
    scheduler_wakeups: Callable[[], int]
    login_failures: Callable[[], int]
    runs_finished: Callable[[], Mapping[str, int]]
    runs_retried: Callable[[], int]  # next tries queued by retries (SPEC §15)
    agents_connected: Callable[[], int]
    schedule_fires: Callable[[], Mapping[str, int]]  # fires recorded by outcome (SPEC §15)
    webhook_deliveries: Callable[[], Mapping[str, int]]  # webhook POSTs by outcome (SPEC §17)


class Metrics:
    """The registry of one server and the few counts it keeps itself (open sockets, maintenance)."""

    CONTENT_TYPE = CONTENT_TYPE

    def __init__(self, store: Store, sources: Sources):
        self._store = store
        self._sources = sources
        self.registry = CollectorRegistry()
        self.request_duration = Histogram(
            "runsvc_http_request_duration_seconds",
            "HTTP request latency by method, route pattern and status",
            ["method", "route", "status"],
            buckets=DURATION_BUCKETS,
            registry=self.registry,
        )
        self._websockets: collections.Counter[str] = collections.Counter()
        self._deleted: collections.Counter[str] = collections.Counter()
        self._runs_by_status: Mapping[str, int] = {}
        self.registry.register(_Collector(self))

    # ---- what the rest of the server reports -------------------------------------------------------

    def websocket_opened(self, kind: str) -> None:
        self._websockets[kind] += 1

    def websocket_closed(self, kind: str) -> None:
        self._websockets[kind] -= 1

    def maintenance_deleted(self, counts: Mapping[str, int]) -> None:
        """Rows a maintenance or retention pass deleted, by `what` (see MAINTENANCE_WHATS)."""
        for what, count in counts.items():
            if what in MAINTENANCE_WHATS:
                self._deleted[what] += count

    def observe_request(self, method: str, rule: str | None, status: int, seconds: float) -> None:
        method = method if method in METHODS else "other"
        self.request_duration.labels(method, route_label(rule), str(status)).observe(seconds)

    # ---- a scrape ----------------------------------------------------------------------------------

    async def scrape(self) -> bytes:
        """The Prometheus text of everything; one grouped count query for `runsvc_runs`."""
        return self.render(await self._store.read(runs_sql.count_by_status))

    def render(self, runs_by_status: Mapping[str, int]) -> bytes:
        """The Prometheus text of everything, with `runs_by_status` as `runsvc_runs`."""
        self._runs_by_status = runs_by_status
        return generate_latest(self.registry)

    def _families(self) -> Iterator[Metric]:
        src = self._sources
        runs = GaugeMetricFamily("runsvc_runs", "Runs in the database by status", labels=["status"])
        for status in STATUSES:
            runs.add_metric([status], self._runs_by_status.get(status, 0))
        yield runs
        finished = CounterMetricFamily(
            "runsvc_runs_finished", "Runs that reached a terminal status since start", labels=["status"]
        )
        finished_counts = src.runs_finished()
        for status in sorted(TERMINAL_STATUSES, key=STATUSES.index):
            finished.add_metric([status], finished_counts.get(status, 0))
        yield finished
        yield CounterMetricFamily(
            "runsvc_runs_retried", "Next tries queued for runs that failed or timed out (retries)",
            value=src.runs_retried(),
        )
        yield CounterMetricFamily(
            "runsvc_run_events_appended", "Run events committed and published", value=src.events_appended()
        )
        yield CounterMetricFamily(
            "runsvc_event_commits", "Write transactions committed (group commit)", value=src.event_commits()
        )
        sockets = GaugeMetricFamily("runsvc_websocket_connections", "Open WebSockets by kind", labels=["kind"])
        for kind in WEBSOCKET_KINDS:
            sockets.add_metric([kind], self._websockets.get(kind, 0))
        yield sockets
        yield CounterMetricFamily(
            "runsvc_bus_lag_resyncs", "Times a slow subscriber lagged and resynced from SQLite",
            value=src.lag_resyncs(),
        )
        yield CounterMetricFamily(
            "runsvc_sql_statements", "SQL statements executed on every connection", value=src.sql_statements()
        )
        yield CounterMetricFamily(
            "runsvc_scheduler_wakeups", "Times the scheduler's claim loop woke up", value=src.scheduler_wakeups()
        )
        deleted = CounterMetricFamily(
            "runsvc_maintenance_deleted", "Rows deleted by maintenance and retention, by what", labels=["what"]
        )
        for what in MAINTENANCE_WHATS:
            deleted.add_metric([what], self._deleted.get(what, 0))
        yield deleted
        yield CounterMetricFamily(
            "runsvc_login_failures", "Logins refused for bad credentials", value=src.login_failures()
        )
        yield GaugeMetricFamily(
            "runsvc_agents_connected", "Remote agents connected", value=src.agents_connected()
        )
        fires = CounterMetricFamily(
            "runsvc_schedule_fires", "Schedule fire times recorded, by outcome", labels=["outcome"]
        )
        fire_counts = src.schedule_fires()
        for outcome in FIRE_OUTCOMES:
            fires.add_metric([outcome], fire_counts.get(outcome, 0))
        yield fires
        deliveries = CounterMetricFamily(
            "runsvc_webhook_deliveries", "Webhook delivery attempts (POSTs), by outcome", labels=["outcome"]
        )
        delivery_counts = src.webhook_deliveries()
        for outcome in WEBHOOK_OUTCOMES:
            deliveries.add_metric([outcome], delivery_counts.get(outcome, 0))
        yield deliveries


class _Collector:
    def __init__(self, metrics: Metrics):
        self._metrics = metrics

    def collect(self) -> Iterator[Metric]:
        return self._metrics._families()
