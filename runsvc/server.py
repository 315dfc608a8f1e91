"""The root of the process: one nursery owning the store, Hypercorn and every background task."""

from __future__ import annotations

import gc
import logging
import math
import os
import resource
import signal
from functools import partial
from pathlib import Path

import argon2
import attrs
import hypercorn.config
import trio

from .accounts import Auth, Passwords, create_initial_admin
from .config import Settings, prepare_data_dir, prepare_work_dir
from .http import front
from .http.app import create_app
from .isolation import (
    DataDirLock,
    make_non_dumpable,
    resolve_run_as,
    take_admin_password,
    warn_if_runs_are_root,
)
from .jobs.ticker import WallClock
from .log import get_logger
from .maintenance import run_maintenance, run_pruner
from .recovery import recover_crashed_runs
from .secrets.keyfile import load_key
from .services import Services, build_services
from .store import open_store
from .store.secrets import count_sealed

log = get_logger(__name__)


# Time Hypercorn gives requests still in flight after it stops accepting. Our own long-lived handlers
# (WebSockets) end themselves on shutdown, so this only bounds ordinary requests.
HTTP_GRACE_S = 5.0


@attrs.define(eq=False)
class Server:
    """Handle on a running server: its URL and its services; `request_shutdown()` starts the exit."""

    url: str
    services: Services
    _shutdown: trio.Event = attrs.field(factory=trio.Event, alias="_shutdown")

    @property
    def shutdown_requested(self) -> bool:
        return self._shutdown.is_set()

    def request_shutdown(self) -> None:
        self._shutdown.set()


def _hypercorn_config(settings: Settings) -> hypercorn.config.Config:
    config = hypercorn.config.Config()
    host = f"[{settings.host}]" if ":" in settings.host else settings.host
    config.bind = [f"{host}:{settings.port}"]
    config.accesslog = None
    config.errorlog = logging.getLogger("hypercorn.error")
    config.graceful_timeout = HTTP_GRACE_S  # see _serve_http: longer while agents hold runs
    # WebSocket keepalive: Hypercorn pings every interval, and a connection from which nothing at all
    # (not even a pong) arrives for interval + timeout is closed by its read timeout. ASGI gives the
    # app no view of pongs, so this pair of settings is how a silent peer gets dropped.
    config.websocket_ping_interval = settings.ws_ping_interval_s
    config.read_timeout = int(math.ceil(settings.ws_ping_interval_s + settings.ws_ping_timeout_s))
    config.max_app_queue_size = 10
    return config


async def serve(  # noqa: ASYNC128 (_serve_http calls task_status.started())
    settings: Settings,
    *,
    password_hasher: argon2.PasswordHasher | None = None,
    clock: WallClock | None = None,
    task_status: trio.TaskStatus[Server] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run the server until `request_shutdown()`; report the Server once it is listening.

    Shutdown order: stop accepting connections, stop claiming runs and give running ones the drain
    window (then stop them as interrupted), cancel the background tasks, let Hypercorn finish the
    requests in flight, close the database.

    `password_hasher` defaults to argon2id with argon2-cffi's defaults (tests pass cheaper parameters);
    `clock` is the schedule ticker's wall clock, time.time() by default (tests pass one that follows a
    MockClock).

    The secret key is read from `secret_key_file`, or made there on a first start (secrets/keyfile.py).

    Before anything touches the data dir, the server takes its lock (a second server exits here,
    having changed nothing), makes itself non-dumpable and takes $RUNSVC_ADMIN_PASSWORD out of its
    environment. Raises StartupError / SettingsError (one line each) when it cannot start.
    """
    make_non_dumpable()
    raise_open_file_limit()
    admin_password = take_admin_password()
    prepare_data_dir(settings)
    lock = DataDirLock(settings.data_dir)
    lock.acquire()
    try:
        run_as = resolve_run_as(settings)
        work_dir = prepare_work_dir(settings)
        async with open_store(
            settings.database_path, database_url=settings.database_url, readers=settings.db_readers,
            busy_timeout_ms=int(settings.db_busy_timeout_s * 1000), read_timeout_s=settings.db_read_timeout_s,
            exclusive=True,
        ) as store:
            auth = Auth(
                store=store, passwords=Passwords(password_hasher, max_waiting=settings.login_queue),
                session_ttl_s=settings.session_ttl_s, max_logins_per_client=settings.logins_per_client,
            )
            await create_initial_admin(settings, auth, admin_password)
            # The key file, or a new one on a first start (never while sealed values exist: keyfile.py).
            sealed = await store.read(count_sealed)
            secret_key = await trio.to_thread.run_sync(load_key, settings.secret_key_path, sealed)
            services = build_services(settings, store, auth, run_as, clock, secret_key)
            warn_if_runs_are_root(run_as)
            async with trio.open_nursery() as sockets:
                # WebSocket senders outlive every request (see http/sockets.py); cancelled once Hypercorn is done.
                await sockets.start(services.sockets.run_senders)
                await _serve_http(services, task_status)
                sockets.cancel_scope.cancel()
            log.info("http server stopped; closing the database")
        _remove_if_empty(work_dir)
    finally:
        lock.release()
    log.info("shutdown complete")


def raise_open_file_limit() -> None:
    """Raise the soft limit on open files to the hard one: the common soft 1,024 is a few hundred
    WebSockets away from a server that can no longer accept a login or spawn a run. The WebSocket cap
    (http/sockets.py) is derived from the limit in force afterwards."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == hard:
        return
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ValueError, OSError) as exc:  # e.g. an unlimited hard limit the kernel will not grant
        log.warning("could not raise the open-file limit", soft=soft, hard=hard, error=str(exc))


def _remove_if_empty(path: Path) -> None:
    """This server's directory under the shared work dir goes when no run directory is left in it."""
    try:
        path.rmdir()
    except OSError:
        pass  # not empty (a run directory that could not be removed) or already gone


async def _serve_http(services: Services, task_status: trio.TaskStatus[Server]) -> None:
    """Hypercorn and the background tasks until shutdown is requested; returns when Hypercorn is done."""
    settings = services.settings
    http_stop = trio.Event()
    async with trio.open_nursery() as root:
        async with trio.open_nursery() as background:
            # The webhooks before any run can end (their outbox is written with the end), then startup
            # recovery, then adopting agent runs, before the first connection is accepted. The webhook
            # sender first looks for deliveries an earlier process left pending.
            await services.webhooks.load()
            await recover_crashed_runs(settings, services.store, services.recorder)
            await background.start(services.webhook_sender.run)
            await background.start(services.scheduler.run)
            await background.start(services.ticker.run)
            background.start_soon(services.bus.serve)
            metrics = services.metrics
            background.start_soon(partial(
                run_maintenance, services.store, settings,
                on_pass=lambda counts: metrics.maintenance_deleted(attrs.asdict(counts)),
            ))
            background.start_soon(partial(
                run_pruner, services.store, settings, on_runs_deleted=services.runs.runs_deleted,
                on_fence=services.runs.fence,
                on_pass=lambda pruned: metrics.maintenance_deleted({"runs": pruned.runs, "run_events": pruned.events}),
            ))
            config = _hypercorn_config(settings)
            # Hypercorn's serving, with run-event WebSockets on our own transport (see http/front.py).
            hypercorn_serve = partial(
                front.serve, create_app(services), config, shutdown_trigger=http_stop.wait,
            )
            binds = await root.start(hypercorn_serve)
            server = Server(url=binds[0], services=services)
            log.info(f"listening on {server.url}", url=server.url, data_dir=str(settings.data_dir))
            task_status.started(server)
            await server._shutdown.wait()
            log.info("shutting down: no longer accepting connections")
            if services.agents.hub.holds_runs():
                # Agent sockets stay open through the drain (their runs are cancelled over them);
                # Hypercorn reads this when the trigger fires.
                config.graceful_timeout = HTTP_GRACE_S + settings.drain_s + settings.kill_grace_s
            http_stop.set()
            services.sockets.close_all()
            await services.scheduler.shutdown(settings.drain_s)
            services.agents.hub.close_all()
            background.cancel_scope.cancel()


async def run_until_signalled(settings: Settings) -> None:
    """`serve`, stopping gracefully on the first SIGINT/SIGTERM and at once on the second."""
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:

            # serve() calls task_status.started() once it listens.
            async def serve_then_stop_watching(  # noqa: ASYNC128
                task_status: trio.TaskStatus[Server],
            ) -> None:
                await serve(settings, task_status=task_status)
                nursery.cancel_scope.cancel()

            server: Server = await nursery.start(serve_then_stop_watching)
            # What exists once the server listens (imported modules, the app, the services) lives as long
            # as the process: moved out of the cyclic collector's sight, its full collections stop walking
            # it again and again under load (BENCHMARKS.md, "Issue 19, round 2").
            gc.freeze()
            async for signum in signals:
                name = signal.Signals(signum).name
                if server.shutdown_requested:
                    # No waiting any more, but no run outlives the server either: kill their process
                    # groups (and escaped processes) first. The next start marks them interrupted.
                    log.warning("second signal: killing running runs and exiting now", signal=name)
                    server.services.scheduler.kill_all_now()
                    os._exit(128 + signum)
                log.info("signal received: shutting down gracefully", signal=name)
                server.request_shutdown()
