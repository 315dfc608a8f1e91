"""Startup recovery: what a crashed (or `kill -9`ed) server left behind, cleaned up before any run is claimed.

Runs it left `running` on the local executor become `interrupted` with a `system` event; their processes
that are still alive (found by their working directory under this server's work dir, and by the tags in
their environment, which a daemon that left its directory still carries) are killed; their working
directories are removed. Runs on agents are not touched here: the scheduler adopts them, and their
agents carry on or they end "agent lost".

The database may be unavailable at start (locked by another process, full): the read waits with backoff
until it answers, and the terminal statuses are event-log appends, which wait in the store.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import trio

from .config import Settings, server_id, server_work_dir
from .executors.orphans import kill_orphans, kill_tagged
from .log import get_logger
from .model import RunNotFound, StatusConflict
from .recorder import RunRecorder
from .store import Store, StoreUnavailable
from .store import runs as sql

log = get_logger(__name__)

RETRY_MAX_S = 2.0  # backoff cap while the database does not answer the read of left-over runs


async def recover_crashed_runs(settings: Settings, store: Store, recorder: RunRecorder) -> None:
    """Kill the left-over processes, record the left-over local runs `interrupted`, remove their
    working directories."""
    workdirs = server_work_dir(settings)
    killed = await trio.to_thread.run_sync(_kill_leftovers, server_id(settings), workdirs)
    if killed:
        log.warning("killed processes of runs a crashed server left behind", processes=killed)
    backoff = 0.05
    while True:
        try:
            running = await store.read(sql.running_run_ids)
            break
        except StoreUnavailable as exc:
            log.warning("startup recovery waiting for the database", error=str(exc))
            await trio.sleep(backoff)
            backoff = min(backoff * 2, RETRY_MAX_S)
    for run_id in running:
        try:
            await recorder.finish(
                run_id, from_status="running", status="interrupted",
                reason="server stopped while the run was running",
                messages=["runsvc restarted; the run was interrupted by a server crash or kill"],
            )
            log.warning("run interrupted by an earlier crash", run_id=run_id)
        except (StatusConflict, RunNotFound):
            pass
    await trio.to_thread.run_sync(_remove_leftover_dirs, workdirs)


def _kill_leftovers(server: str, workdirs: Path) -> int:
    killed = len(kill_tagged(server))
    if workdirs.exists():
        killed += len(kill_orphans(workdirs))
    return killed


def _remove_leftover_dirs(workdirs: Path) -> None:
    for child in workdirs.iterdir() if workdirs.exists() else ():
        shutil.rmtree(child, ignore_errors=True)
