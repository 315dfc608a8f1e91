"""LocalExecutor against real subprocesses and real signals."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Sequence
from pathlib import Path

import attrs
import pytest
import trio

from runsvc.executors import Outcome, RunSpec, StopRequest
from runsvc.executors.local import LocalExecutor
from runsvc.executors.orphans import PidMark, created_since, fork_count, kill_tagged, last_pid, pid_max
from tests.helpers import alive

DEADLINE_S = 10  # every test finishes well within this


@attrs.define
class Collector:
    """A test OutputSink: keeps every event and every call, and wakes waiters on each call."""

    events: list[tuple[str, str]] = attrs.Factory(list)
    calls: list[int] = attrs.Factory(list)  # number of events per emit call
    _changed: trio.Event = attrs.Factory(trio.Event)

    async def __call__(self, batch: Sequence[tuple[str, str]]) -> None:
        self.events.extend(batch)
        self.calls.append(len(batch))
        self._changed.set()
        self._changed = trio.Event()

    def lines(self, kind: str) -> list[str]:
        return [line for k, line in self.events if k == kind]

    async def wait_for_prefix(self, kind: str, prefix: str) -> str:
        """The first `kind` line starting with `prefix`, once there is one."""
        while True:
            for line in self.lines(kind):
                if line.startswith(prefix):
                    return line
            await self._changed.wait()


def python(code: str) -> tuple[str, ...]:
    return (sys.executable, "-c", textwrap.dedent(code))


@pytest.fixture(name="workdir")
def _workdir(tmp_path: Path) -> Path:
    return tmp_path / "runs" / "7"  # parent does not exist yet: the executor creates it


def spec_for(command: tuple[str, ...], workdir: Path, env: dict[str, str] | None = None) -> RunSpec:
    return RunSpec(id=7, command=command, env=env or {}, timeout_s=60, workdir=workdir)


async def run(
    command: tuple[str, ...], workdir: Path, env: dict[str, str] | None = None, grace: float = 10.0
) -> tuple[Outcome, Collector]:
    sink = Collector()
    with trio.fail_after(DEADLINE_S):
        outcome = await LocalExecutor(kill_grace_s=grace).execute(
            spec_for(command, workdir, env), sink, StopRequest()
        )
    return outcome, sink


async def execute_into(
    result: list[Outcome], executor: LocalExecutor, spec: RunSpec, sink: Collector, stop: StopRequest
) -> None:
    """Run `spec` as a background task; its outcome lands in `result`."""
    result.append(await executor.execute(spec, sink, stop))


async def assert_dies(pid: int) -> None:
    with trio.fail_after(2):
        while alive(pid):
            await trio.sleep(0.01)


SPAWN_GRANDCHILD = """
    import os, subprocess, sys, time
    child = subprocess.Popen(["sleep", "1000"])
    with open(os.environ["PIDFILE"], "w") as f:
        f.write(str(child.pid))
    print("ready", os.getpid(), flush=True)
"""


async def test_exit_zero_succeeds(workdir: Path) -> None:
    """Exit status 0 is `succeeded` with exit code 0."""
    outcome, sink = await run(python("print('hi')"), workdir)
    assert outcome == Outcome("succeeded", 0, None)
    assert sink.events == [("stdout", "hi")]


async def test_nonzero_exit_fails(workdir: Path) -> None:
    """Exit status 3 is `failed` with exit code 3."""
    outcome, _ = await run(python("import sys; sys.exit(3)"), workdir)
    assert outcome == Outcome("failed", 3, "exited with code 3")


async def test_killed_by_signal_fails_with_negative_code(workdir: Path) -> None:
    """A child that dies of a signal it was not sent by us fails with -N."""
    outcome, _ = await run(python("import os, signal; os.kill(os.getpid(), signal.SIGKILL)"), workdir)
    assert outcome == Outcome("failed", -9, "killed by SIGKILL")


async def stop_after_ready(
    command: tuple[str, ...], workdir: Path, grace: float, env: dict[str, str] | None = None
) -> tuple[Outcome, Collector, float]:
    sink = Collector()
    stop = StopRequest()
    result: list[Outcome] = []
    with trio.fail_after(DEADLINE_S):
        async with trio.open_nursery() as nursery:
            executor = LocalExecutor(kill_grace_s=grace)
            nursery.start_soon(execute_into, result, executor, spec_for(command, workdir, env), sink, stop)
            await sink.wait_for_prefix("stdout", "ready")
            stopped_at = trio.current_time()
            assert stop.request("cancelled", "cancelled by alice")
        return result[0], sink, trio.current_time() - stopped_at


async def test_sigterm_honoured(workdir: Path) -> None:
    """A stop sends SIGTERM to the group; a child that dies of it ends with -15 and the stop's status."""
    command = python("import time; print('ready', flush=True); time.sleep(100)")
    outcome, sink, took = await stop_after_ready(command, workdir, grace=5)
    assert outcome == Outcome("cancelled", -15, "cancelled by alice")
    assert sink.lines("system") == ["sent SIGTERM"]
    assert took < 2


async def test_stop_status_wins_over_clean_exit_on_sigterm(workdir: Path) -> None:
    """A child that exits 0 on SIGTERM still gets the stop's status."""
    command = python(
        """
        import signal, sys, time
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        print('ready', flush=True)
        time.sleep(100)
        """
    )
    outcome, _, _ = await stop_after_ready(command, workdir, grace=5)
    assert outcome == Outcome("cancelled", 0, "cancelled by alice")


async def test_sigterm_ignored_gets_sigkill_after_grace(workdir: Path) -> None:
    """A child that ignores SIGTERM is killed with SIGKILL once the grace is over."""
    command = python(
        """
        import signal, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        print('ready', flush=True)
        time.sleep(100)
        """
    )
    outcome, sink, took = await stop_after_ready(command, workdir, grace=0.5)
    assert outcome == Outcome("cancelled", -9, "cancelled by alice")
    assert sink.lines("system") == ["sent SIGTERM", "sent SIGKILL"]
    assert 0.5 <= took < 3


async def test_grandchild_killed_on_normal_exit(workdir: Path, tmp_path: Path) -> None:
    """When the child exits, what is left of its process group is killed, and the run does not wait
    for the grandchild holding the pipes."""
    pidfile = tmp_path / "grandchild.pid"
    outcome, sink = await run(python(SPAWN_GRANDCHILD), workdir, env={"PIDFILE": str(pidfile)})
    assert outcome.status == "succeeded"
    await assert_dies(int(pidfile.read_text()))


async def test_grandchild_killed_on_stop(workdir: Path, tmp_path: Path) -> None:
    """A stop signals the whole group, so the grandchild dies too."""
    pidfile = tmp_path / "grandchild.pid"
    command = python(SPAWN_GRANDCHILD + "    time.sleep(100)\n")
    outcome, _, _ = await stop_after_ready(command, workdir, grace=5, env={"PIDFILE": str(pidfile)})
    assert outcome == Outcome("cancelled", -15, "cancelled by alice")
    await assert_dies(int(pidfile.read_text()))


async def test_stop_before_any_output(workdir: Path) -> None:
    """A stop right after the start, before the child printed anything, still stops it."""
    sink = Collector()
    stop = StopRequest()
    with trio.fail_after(DEADLINE_S):
        result: list[Outcome] = []
        async with trio.open_nursery() as nursery:
            spec = spec_for(python("import time; time.sleep(100)"), workdir)
            nursery.start_soon(execute_into, result, LocalExecutor(kill_grace_s=5), spec, sink, stop)
            await trio.sleep(0.05)
            stop.request("timed_out", "timed out after 1s")
    assert result[0].status == "timed_out"
    assert result[0].reason == "timed out after 1s"
    assert result[0].exit_code in (-15, -9)
    assert sink.lines("stdout") == []
    assert not workdir.exists()


async def test_stop_requested_before_execute_never_starts(workdir: Path) -> None:
    """A run stopped before execute() is called is not started at all."""
    stop = StopRequest()
    stop.request("interrupted", "server shutting down")
    sink = Collector()
    with trio.fail_after(DEADLINE_S):
        outcome = await LocalExecutor().execute(spec_for(python("print(1)"), workdir), sink, stop)
    assert outcome == Outcome("interrupted", None, "server shutting down")
    assert sink.events == []


async def test_outer_cancellation_kills_the_group(workdir: Path, tmp_path: Path) -> None:
    """Cancelling the execute task kills child and grandchild, removes the workdir, and propagates."""
    pidfile = tmp_path / "grandchild.pid"
    sink = Collector()
    command = python(SPAWN_GRANDCHILD + "    time.sleep(100)\n")
    with trio.fail_after(DEADLINE_S):
        with trio.CancelScope() as scope:
            async with trio.open_nursery() as nursery:
                spec = spec_for(command, workdir, {"PIDFILE": str(pidfile)})
                nursery.start_soon(LocalExecutor().execute, spec, sink, StopRequest())
                ready = await sink.wait_for_prefix("stdout", "ready")
                scope.cancel()
        assert scope.cancelled_caught
        child_pid = int(ready.split()[1])
        await assert_dies(child_pid)
        await assert_dies(int(pidfile.read_text()))
    assert not workdir.exists()


async def test_many_lines_in_order_and_batched(workdir: Path) -> None:
    """100,000 lines all arrive, in order, in far fewer emit calls than lines."""
    outcome, sink = await run(
        python("import sys; sys.stdout.write(''.join(f'{i}\\n' for i in range(100000)))"), workdir
    )
    assert outcome.status == "succeeded"
    assert sink.lines("stdout") == [str(i) for i in range(100000)]
    assert len(sink.calls) < 1000


async def test_invalid_utf8_and_split_characters(workdir: Path) -> None:
    """Invalid bytes become U+FFFD; a character split across two writes arrives whole."""
    command = python(
        """
        import sys, time
        out = sys.stdout.buffer
        out.write(b"bad \\xff\\xfe end\\n"); out.flush()
        out.write(b"caf\\xc3"); out.flush()
        time.sleep(0.05)
        out.write(b"\\xa9\\n"); out.flush()
        """
    )
    _, sink = await run(command, workdir)
    assert sink.lines("stdout") == ["bad \ufffd\ufffd end", "caf\u00e9"]


async def test_crlf_and_partial_last_line(workdir: Path) -> None:
    """\\r\\n ends a line like \\n; an unterminated last line is kept."""
    command = python("import sys; sys.stdout.buffer.write(b'one\\r\\ntwo\\n\\r\\nlast')")
    _, sink = await run(command, workdir)
    assert sink.lines("stdout") == ["one", "two", "", "last"]


async def test_long_line_split_into_16k_pieces(workdir: Path) -> None:
    """A 40 KiB line arrives as 16 KiB + 16 KiB + 8 KiB."""
    _, sink = await run(python("print('x' * 40 * 1024)"), workdir)
    assert [len(line) for line in sink.lines("stdout")] == [16384, 16384, 8192]


async def test_stdout_and_stderr_kinds(workdir: Path) -> None:
    """Both streams are captured, each line with its stream as kind."""
    command = python("import sys; print('to out'); print('to err', file=sys.stderr); print('out 2')")
    outcome, sink = await run(command, workdir)
    assert outcome.status == "succeeded"
    assert sink.lines("stdout") == ["to out", "out 2"]
    assert sink.lines("stderr") == ["to err"]


@pytest.mark.parametrize(
    "command",
    [("definitely-not-a-command-runsvc",), ("/nonexistent/bin/tool", "arg"), ()],
    ids=["not-on-path", "missing-path", "empty"],
)
async def test_spawn_failure(workdir: Path, command: tuple[str, ...]) -> None:
    """A command that cannot start fails with no exit code and a system event saying why."""
    outcome, sink = await run(command, workdir)
    assert outcome.status == "failed"
    assert outcome.exit_code is None
    assert outcome.reason is not None and outcome.reason.startswith("spawn failed: ")
    assert sink.events == [("system", outcome.reason)]
    assert not workdir.exists()


async def test_not_executable_is_spawn_failure(workdir: Path, tmp_path: Path) -> None:
    """A file without execute permission is a spawn failure, not a crash."""
    script = tmp_path / "script.sh"
    script.write_text("#!/bin/sh\necho hi\n")
    script.chmod(0o644)
    outcome, sink = await run((str(script),), workdir)
    assert outcome == Outcome("failed", None, f"spawn failed: Permission denied: {str(script)!r}")
    assert sink.lines("system") == [outcome.reason]


async def test_clean_environment(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The child sees PATH, HOME, LANG, the run's env and RUNSVC_RUN_ID, and none of the server's secrets."""
    monkeypatch.setenv("RUNSVC_ADMIN_PASSWORD", "hunter2")
    monkeypatch.setenv("SECRET_TOKEN", "s3cr3t")
    monkeypatch.setenv("HOME", "/home/runsvc-test")
    monkeypatch.setenv("LANG", "C.UTF-8")
    command = python("import json, os; print(json.dumps(dict(os.environ)))")
    outcome, sink = await run(command, workdir, env={"GREETING": "hello", "PATH": os.environ["PATH"]})
    assert outcome.status == "succeeded"
    env = json.loads(sink.lines("stdout")[0])
    assert env == {
        "PATH": os.environ["PATH"],
        "HOME": "/home/runsvc-test",
        "LANG": "C.UTF-8",
        "GREETING": "hello",
        "RUNSVC_RUN_ID": "7",
    }


async def test_unset_server_variables_are_not_invented(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """HOME and LANG are passed only when the server has them; the run's env can override PATH."""
    monkeypatch.delenv("HOME", raising=False)
    monkeypatch.delenv("LANG", raising=False)
    monkeypatch.setenv("LC_ALL", "C.UTF-8")  # keeps the server's Python quiet; must not leak either
    command = python("import json, os; print(json.dumps(sorted(os.environ)))")
    _, sink = await run(command, workdir, env={"PATH": "/usr/bin:/bin"})
    names = json.loads(sink.lines("stdout")[0])
    assert "HOME" not in names and "LANG" not in names and "LC_ALL" not in names
    assert "PATH" in names and "RUNSVC_RUN_ID" in names


async def test_stdin_is_empty(workdir: Path) -> None:
    """Reading stdin gets EOF at once."""
    outcome, sink = await run(python("import sys; print(repr(sys.stdin.read()))"), workdir)
    assert outcome.status == "succeeded"
    assert sink.lines("stdout") == ["''"]


async def test_cwd_is_the_fresh_workdir_and_removed_after(workdir: Path) -> None:
    """The child runs in the workdir (leftovers removed first), which is removed afterwards, even with
    read-only contents."""
    workdir.mkdir(parents=True)
    (workdir / "leftover").write_text("from an earlier attempt")
    command = python(
        """
        import os
        print(os.getcwd())
        print(sorted(os.listdir('.')))
        os.makedirs('sub/deeper')
        open('sub/deeper/file', 'w').write('x')
        os.chmod('sub/deeper', 0o500)
        os.chmod('sub', 0o500)
        """
    )
    outcome, sink = await run(command, workdir)
    assert outcome.status == "succeeded"
    assert sink.lines("stdout") == [os.path.realpath(workdir), "[]"]
    assert not workdir.exists()
    assert workdir.parent.exists()


async def test_workdir_removed_after_failure(workdir: Path) -> None:
    """A failing run's workdir is removed too."""
    outcome, _ = await run(python("open('f', 'w').write('x'); raise SystemExit(1)"), workdir)
    assert outcome.status == "failed"
    assert not workdir.exists()


async def test_a_short_run_costs_two_thread_hops(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 22: besides trio's own spawn, a run of `true` hops to a worker thread twice, to make its
    workdir (and read the fork count, never on the Trio thread) and, after the exit, once to kill escaped
    processes and remove the workdir (each hop costs a short run dearly on a busy machine); the workdir is
    gone all the same."""
    hops: list[str] = []
    run_sync = trio.to_thread.run_sync

    async def counting(fn, *args, **kwargs):
        if getattr(fn, "__module__", None) == "runsvc.executors.local" or fn is kill_tagged:
            hops.append(fn.__name__)
        return await run_sync(fn, *args, **kwargs)

    monkeypatch.setattr(trio.to_thread, "run_sync", counting)
    executor = LocalExecutor(server_id="hops-test")
    with trio.fail_after(DEADLINE_S):
        outcome = await executor.execute(spec_for(("true",), workdir), Collector(), StopRequest())
    assert outcome == Outcome("succeeded", 0, None)
    assert hops == ["_prepare_spawn", "_sweep"]
    assert not workdir.exists()


async def test_escaped_process_holding_pipe_does_not_hang(workdir: Path, tmp_path: Path) -> None:
    """A grandchild that left the process group and keeps stdout open delays the end by at most the
    drain limit, and the run says so."""
    pidfile = tmp_path / "escaped.pid"
    command = python(
        """
        import os, subprocess
        child = subprocess.Popen(["sleep", "1000"], start_new_session=True)
        open(os.environ["PIDFILE"], "w").write(str(child.pid))
        print("done", flush=True)
        """
    )
    try:
        outcome, sink = await run(command, workdir, env={"PIDFILE": str(pidfile)})
        assert outcome.status == "succeeded"
        assert sink.lines("stdout") == ["done"]
        assert any(line.startswith("stopped reading stdout") for line in sink.lines("system"))
    finally:
        os.kill(int(pidfile.read_text()), signal.SIGKILL)


def test_the_sweep_reads_only_processes_created_since_the_run_started() -> None:
    """Issue 22: a run's escaped-process sweep reads the pids between the run's first and the last one
    handed out, also across a wrap of the pid counter, and every pid when that cannot be told."""
    pids = [1, 50, 299, 300, 310, 4000, 4100, 4194000]
    mark = PidMark(first_pid=4000, forks=1000)
    assert created_since(mark, pids, last_pid=4100, forks=1200, pid_max=4194304) == [4000, 4100]
    # wrapped once: from the first pid to pid_max, then from the bottom up to the last pid
    assert created_since(mark, pids, last_pid=305, forks=1500, pid_max=4194304) == [1, 50, 299, 300, 4000,
                                                                                   4100, 4194000]
    assert created_since(mark, pids, last_pid=4100, forks=1000 + 2097152, pid_max=4194304) == pids  # a cycle
    assert created_since(mark, pids, last_pid=None, forks=1200, pid_max=4194304) == pids
    assert created_since(PidMark(4000, None), pids, last_pid=4100, forks=1200, pid_max=4194304) == pids


def test_the_pid_counter_reads_what_the_sweep_relies_on() -> None:
    """/proc gives the fork count and the last pid, and a new process's pid lies between a mark taken
    before it and the last pid after it (else every sweep would fall back to reading all processes)."""
    forks = PidMark.before_spawn()
    child = subprocess.Popen(["true"])
    child.wait()
    mark = PidMark(child.pid, forks)
    forks = fork_count()
    assert mark.forks is not None and forks is not None and forks > mark.forks
    last = last_pid()
    assert last is not None and pid_max()
    assert created_since(mark, [child.pid], last, forks, pid_max()) == [child.pid]
