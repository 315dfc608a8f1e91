"""The local executor: a run is a subprocess of the server, in its own process group (SPEC §4).

With `run_as` (the `run_as_user` setting) the child becomes that user and group (with its
supplementary groups) before exec, and its working directory belongs to it. When the run's process
exits, its group is killed and so is every process that still carries the run's id in its environment
(orphans.kill_tagged), so a daemon that left the group does not outlive the run.
"""

from __future__ import annotations

import math
import os
import shutil
import signal
import stat
import subprocess
from pathlib import Path

import attrs
import trio

from ..log import get_logger
from .base import Outcome, OutputSink, RunSpec, StopRequest
from .lines import LineSplitter
from .orphans import RUN_ID_ENV, SERVER_ID_ENV, PidMark, kill_tagged

log = get_logger(__name__)

READ_CHUNK = 64 * 1024  # 64 KiB per read; every line completed by one read goes to one emit call
INHERITED_ENV = ("PATH", "HOME", "LANG")  # all a child gets of the server's own environment
DRAIN_IDLE_S = 1.0  # after the child exited: stop reading a pipe that stays silent this long…
DRAIN_MAX_S = 5.0  # …or that is still open this long (held by a process that left the group)
CLEANUP_S = 5.0  # shielded cleanup after an outside cancellation gives up after this long


@attrs.frozen
class RunAs:
    """The user local runs execute as (setting `run_as_user`)."""

    name: str
    uid: int
    gid: int
    groups: tuple[int, ...]
    home: str


def child_env(spec: RunSpec, server_id: str = "", run_as: RunAs | None = None) -> dict[str, str]:
    """The whole environment of a run's process: PATH, HOME, LANG of the server (HOME of `run_as`), the
    run's env, its id and its server's id (the tags that find escaped processes)."""
    env = {name: os.environ[name] for name in INHERITED_ENV if name in os.environ}
    if run_as is not None:
        env["HOME"] = run_as.home
    env.update(spec.env)
    env[RUN_ID_ENV] = str(spec.id)
    if server_id:
        env[SERVER_ID_ENV] = server_id
    return env


def _kill_group(pgid: int, signum: int) -> None:
    try:
        os.killpg(pgid, signum)
    except ProcessLookupError:
        pass  # nothing left in the group


def _spawn_error(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        text = exc.strerror
        if exc.filename is not None:
            text += f": {exc.filename!r}" if isinstance(exc.filename, str) else f": {exc.filename}"
        return f"spawn failed: {text}"
    return f"spawn failed: {exc}"


def _exit_reason(returncode: int) -> str:
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return f"killed by {name}"
    return f"exited with code {returncode}"


def _remove_tree(path: Path) -> None:
    """Remove `path` recursively, even where the run took away its own write permissions."""

    def make_writable_and_retry(func, failed_path, _exc_info):
        parent = os.path.dirname(failed_path)
        try:
            os.chmod(parent, stat.S_IRWXU)
            if os.path.isdir(failed_path) and not os.path.islink(failed_path):
                os.chmod(failed_path, stat.S_IRWXU)
        except OSError:
            pass
        func(failed_path)

    if os.path.lexists(path):
        shutil.rmtree(path, onerror=make_writable_and_retry)


def _sweep(server_id: str, spec: RunSpec, mark: PidMark) -> tuple[list[int], OSError | None]:
    """Worker thread, after the run's child exited: (the escaped processes killed, None once the
    working directory is removed or why it could not be)."""
    killed = kill_tagged(server_id, spec.id, mark) if server_id else []
    try:
        _remove_tree(spec.workdir)
    except OSError as exc:
        return killed, exc
    return killed, None


def _report_escaped(run_id: int, killed: list[int]) -> None:
    if killed:
        log.warning("killed processes that escaped the run's process group", run_id=run_id, pids=len(killed))


def _prepare_spawn(path: Path, run_as: RunAs | None) -> int | None:
    """Worker thread, before the spawn: the run's fresh working directory, and the fork count its
    escaped-process sweep starts from (PidMark). Reading /proc/stat costs ~0.1 ms, too long for the Trio
    thread, so it shares this hop."""
    _fresh_dir(path, run_as)
    return PidMark.before_spawn()


def _fresh_dir(path: Path, run_as: RunAs | None) -> None:
    _remove_tree(path)  # leftovers of an earlier attempt with the same directory
    path.parent.mkdir(parents=True, exist_ok=True)
    path.mkdir(mode=0o700)
    if run_as is not None:
        os.chown(path, run_as.uid, run_as.gid)


@attrs.define
class _Drain:
    """Bounds the reading of the pipes once the child has exited.

    Normally the pipes reach EOF as soon as the process group is gone. A process that left the group
    (setsid) can hold them open; then reading stops after a silence of DRAIN_IDLE_S, or DRAIN_MAX_S after
    the exit at the latest.
    """

    _hard_deadline: float = math.inf
    _scopes: set[trio.CancelScope] = attrs.Factory(set)

    def start(self) -> None:
        self._hard_deadline = trio.current_time() + DRAIN_MAX_S
        for scope in self._scopes:
            scope.deadline = self.receive_deadline()

    def receive_deadline(self) -> float:
        if self._hard_deadline == math.inf:
            return math.inf
        return min(trio.current_time() + DRAIN_IDLE_S, self._hard_deadline)

    async def receive(self, stream: trio.abc.ReceiveStream) -> bytes | None:
        """The next chunk; b"" at EOF; None when the drain is over and the pipe still open."""
        with trio.CancelScope(deadline=self.receive_deadline()) as scope:
            self._scopes.add(scope)
            try:
                return bytes(await stream.receive_some(READ_CHUNK))
            finally:
                self._scopes.discard(scope)
        return None


@attrs.define
class LocalExecutor:
    """Runs each run as a local subprocess; see `Executor` for the contract."""

    kill_grace_s: float = 10.0  # between SIGTERM and SIGKILL when a run is stopped
    server_id: str = ""  # tags every run's environment (RUNSVC_SERVER_ID); "" = no escaped-process sweep
    run_as: RunAs | None = None
    _groups: set[int] = attrs.field(factory=set, init=False)  # process groups of runs whose child is not reaped yet
    _removed: set[Path] = attrs.field(factory=set, init=False)  # workdirs the exit's sweep removed already

    def kill_all_now(self) -> None:
        """SIGKILL every run's process group and every tagged process, synchronously: the server is
        about to exit without waiting for its runs (a second signal)."""
        for pgid in list(self._groups):
            _kill_group(pgid, signal.SIGKILL)
        if self.server_id:
            kill_tagged(self.server_id)

    async def execute(self, spec: RunSpec, emit: OutputSink, stop: StopRequest) -> Outcome:
        if stop.requested:
            return Outcome(stop.status or "cancelled", None, stop.reason)
        try:
            try:
                if not spec.command:
                    raise ValueError("empty command")
                forks = await trio.to_thread.run_sync(_prepare_spawn, spec.workdir, self.run_as)
                run_as = self.run_as
                # subprocess does setgroups (initgroups' list), setgid, setuid in the child, in that order.
                process = await trio.lowlevel.open_process(
                    list(spec.command),
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    cwd=spec.workdir,
                    env=child_env(spec, self.server_id, run_as),
                    start_new_session=True,
                    user=None if run_as is None else run_as.uid,
                    group=None if run_as is None else run_as.gid,
                    extra_groups=None if run_as is None else list(run_as.groups),
                )
            except (OSError, ValueError, TypeError) as exc:
                reason = _spawn_error(exc)
                await emit([("system", reason)])
                return Outcome("failed", None, reason)
            self._groups.add(process.pid)
            mark = PidMark(process.pid, forks)
            try:
                return await self._supervise(process, emit, stop, spec, mark)
            finally:
                with trio.CancelScope(shield=True), trio.move_on_after(CLEANUP_S):
                    # Cut short (outside cancellation, a failing emit): kill the group, reap the child.
                    # A child reaped already had its group killed right then; its pid may be reused now.
                    if process.returncode is None:
                        _kill_group(process.pid, signal.SIGKILL)
                        await process.wait()
                        _kill_group(process.pid, signal.SIGKILL)
                        self._groups.discard(process.pid)
                        await self._kill_escaped(spec.id, mark)
                    for stream in (process.stdout, process.stderr):
                        if stream is not None:
                            await stream.aclose()
        finally:
            if spec.workdir not in self._removed:  # the exit's sweep could not remove it (or never ran)
                with trio.CancelScope(shield=True), trio.move_on_after(CLEANUP_S):
                    try:
                        await trio.to_thread.run_sync(_remove_tree, spec.workdir, abandon_on_cancel=True)
                    except OSError as exc:
                        log.warning("could not remove workdir", run_id=spec.id, path=spec.workdir, error=exc)
            self._removed.discard(spec.workdir)

    async def _kill_escaped(self, run_id: int, mark: PidMark) -> None:
        if not self.server_id:
            return
        killed = await trio.to_thread.run_sync(kill_tagged, self.server_id, run_id, mark)
        _report_escaped(run_id, killed)

    async def _sweep_after_exit(self, spec: RunSpec, mark: PidMark) -> None:
        """Once the child is reaped and its group killed: kill the run's escaped processes, then remove
        its working directory, in ONE thread hop (issue 22: each hop costs a short run dearly on a busy
        machine). The directory goes after the escapees, which may have been writing in it; if it
        cannot be removed now (a dying process still held it), execute() tries again at the end."""
        killed, error = await trio.to_thread.run_sync(_sweep, self.server_id, spec, mark)
        _report_escaped(spec.id, killed)
        if error is None:
            self._removed.add(spec.workdir)
        else:
            log.info("workdir not removed yet; trying again after the drain", run_id=spec.id, error=error)

    async def _supervise(
        self, process: trio.Process, emit: OutputSink, stop: StopRequest, spec: RunSpec, mark: PidMark
    ) -> Outcome:
        pgid = process.pid  # start_new_session: the child leads its own session and process group
        drain = _Drain()
        stopping = False

        masker = spec.masker()  # one compiled pattern for both pipes

        async def pump(stream: trio.abc.ReceiveStream, kind: str) -> None:
            splitter = LineSplitter(masker=masker)
            while True:
                data = await drain.receive(stream)
                if not data:
                    break
                lines = splitter.feed(data)
                if lines:
                    await emit([(kind, line) for line in lines])
            tail = [(kind, line) for line in splitter.finish()]
            if data is None:
                tail.append(("system", f"stopped reading {kind}: still open after the process exited"))
            if tail:
                await emit(tail)

        # Only the main flow below reaps the child, and it kills the group in the same step. Once the child
        # is reaped its pid may be reused, so nothing signals the group after `exited` is set.
        exited = trio.Event()
        wait_scope = trio.CancelScope()

        async def enforce_stop() -> None:
            nonlocal stopping
            with wait_scope:
                await stop.event.wait()
            if exited.is_set() or wait_scope.cancelled_caught:
                return  # the stop came too late: the run ended on its own
            # Not cancelled from here on (only outside cancellation can interrupt an emit call).
            stopping = True
            await emit([("system", "sent SIGTERM")])
            if not exited.is_set():
                _kill_group(pgid, signal.SIGTERM)
            with trio.move_on_after(self.kill_grace_s):
                await exited.wait()
                return
            await emit([("system", "sent SIGKILL")])
            if not exited.is_set():
                _kill_group(pgid, signal.SIGKILL)

        assert process.stdout is not None and process.stderr is not None
        async with trio.open_nursery() as nursery:
            nursery.start_soon(pump, process.stdout, "stdout")
            nursery.start_soon(pump, process.stderr, "stderr")
            nursery.start_soon(enforce_stop)
            returncode = await process.wait()
            _kill_group(pgid, signal.SIGKILL)  # whatever is left of the group
            self._groups.discard(pgid)
            exited.set()
            await self._sweep_after_exit(spec, mark)  # before the drain: escapees may hold the pipes open
            wait_scope.cancel()
            drain.start()

        if stopping:
            return Outcome(stop.status or "cancelled", returncode, stop.reason)
        if returncode == 0:
            return Outcome("succeeded", 0)
        return Outcome("failed", returncode, _exit_reason(returncode))
