#!/usr/bin/env python3
"""Masking secrets (SPEC §10, §17): a run printing flat out with 10 secrets in use against the same run
without secrets, on a real `runsvc serve` (local executor), stored lines per second and their ratio
(target ≥ 0.8).

Both runs print the very same bytes: log-like lines of ~100 characters, one in 100 holding one of the 10
values. With secrets the values come from `secrets` (so every line is masked on its way in); without,
the same values come from `env` (nothing is masked). Runs alternate, `--rounds` times each; the rate is
lines stored from the run's `running` to its terminal state, every line read back (and, with secrets,
checked to hold no value).

Then, in this process, the CPU cost of the masking alone: the line splitter over the same output in
64 KiB reads without and with the 10 values, and one regex alternation of the values over it (what the
masking does instead of that, see runsvc/secrets/masking.py), in ns per line (best of 5).

    .venv/bin/python scripts/bench/masking.py [--lines 500000] [--rounds 3] [--splitter-only]
"""

from __future__ import annotations

import argparse
import os
import secrets as random_text
import statistics
import subprocess
import sys
import time
from pathlib import Path

import trio

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from runsvc.timeutil import parse_ts  # noqa: E402
from tests.e2e.agent_helpers import admin_client, all_events, submit, wait_status  # noqa: E402
from tests.helpers import TERMINAL, start_server  # noqa: E402

SECRETS = 10

# Prints `lines` lines; every 100th holds the value of $S<k> (k cycling through the 10 variables).
PRINTER = r"""
import os, sys
lines = int(sys.argv[1])
values = [os.environ[f"S{k}"] for k in range(10)]
out = sys.stdout
filler = "INFO worker.pool request handled in 12 ms status=200 path=/api/v1/items/%d bytes=5312 "
for i in range(lines):
    if i % 100 == 0:
        out.write(f"{filler % i}token={values[(i // 100) % 10]}\n")
    else:
        out.write(f"{filler % i}trace={i:08x}\n")
"""


async def one_run(client, lines: int, values: dict[str, str], masked: bool) -> tuple[float, int]:
    """(lines stored per second, lines read back)."""
    body = {"secrets": {name: name.lower() for name in values}} if masked else {"env": values}
    run = await submit(client, [sys.executable, "-c", PRINTER, str(lines)], **body)
    done = await wait_status(client, run["id"], TERMINAL)
    assert done["status"] == "succeeded", done
    events = await all_events(client, run["id"])
    stamps = {e["data"]["status"]: e["ts"] for e in events if e["kind"] == "state"}
    seconds = (parse_ts(stamps["succeeded"]) - parse_ts(stamps["running"])).total_seconds()
    stored = [e["data"] for e in events if e["kind"] == "stdout"]
    if masked:
        leaked = [line for line in stored if any(value in line for value in values.values())]
        assert not leaked and sum("token=***" in line for line in stored) == (lines + 99) // 100
    return len(stored) / seconds, len(stored)


def splitter_cost(values: list[str], lines: int = 200_000) -> None:
    """ns per line of the splitter without and with masking, and of the regex alternation alone."""
    import re

    from runsvc.executors.lines import LineSplitter
    from runsvc.secrets.masking import Masker

    env = {f"S{k}": value for k, value in enumerate(values)}
    output = subprocess.run([sys.executable, "-c", PRINTER, str(lines)], env={**os.environ, **env},
                            capture_output=True, check=True).stdout
    reads = [output[i : i + 65536] for i in range(0, len(output), 65536)]
    alternation = re.compile(b"|".join(re.escape(value.encode()) for value in sorted(values, key=len, reverse=True)))

    def best(work) -> float:
        times = []
        for _ in range(5):
            started = time.perf_counter()
            work()
            times.append(time.perf_counter() - started)
        return min(times) / lines * 1e9

    def split(masker) -> None:
        splitter = LineSplitter(masker=masker)
        for read in reads:
            splitter.feed(read)
        splitter.finish()

    plain, masked = best(lambda: split(None)), best(lambda: split(Masker(values)))
    regex = best(lambda: [alternation.sub(b"***", read) for read in reads])
    print(f"splitter, no secrets           {plain:6.0f} ns/line")
    print(f"splitter, 10 secrets masked    {masked:6.0f} ns/line")
    print(f"regex alternation alone        {regex:6.0f} ns/line (the masking's find-based scan replaces it)")


async def main(args: argparse.Namespace) -> None:
    values = {f"S{k}": random_text.token_urlsafe(12 + 3 * k) for k in range(SECRETS)}
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    if args.splitter_only:
        splitter_cost(list(values.values()))
        return
    with trio.fail_after(3600):
        async with trio.open_nursery() as nursery:
            data = Path(args.tmp) / "data"
            server = await start_server(nursery, data, "--max-concurrent-runs", "1")
            async with admin_client(server.url) as client:
                for name, value in values.items():
                    answer = await client.post("/api/v1/secrets", json={"name": name.lower(), "value": value})
                    assert answer.status_code == 201, answer.text
                rates: dict[bool, list[float]] = {False: [], True: []}
                for round_number in range(1, args.rounds + 1):
                    for masked in (False, True):
                        started = time.monotonic()
                        rate, stored = await one_run(client, args.lines, values, masked)
                        rates[masked].append(rate)
                        label = "with 10 secrets" if masked else "without secrets"
                        print(f"round {round_number}  {label}  {rate:10,.0f} lines/s stored "
                              f"({stored:,} lines read back, {time.monotonic() - started:.1f} s in all)")
            server.send_signal()
            await server.wait()
    without, with_secrets = statistics.median(rates[False]), statistics.median(rates[True])
    print(f"median without secrets  {without:10,.0f} lines/s")
    print(f"median with 10 secrets  {with_secrets:10,.0f} lines/s")
    print(f"ratio                   {with_secrets / without:10.2f}  (target >= 0.8)")
    splitter_cost(list(values.values()))
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lines", type=int, default=500_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--splitter-only", action="store_true", help="only the in-process splitter figures")
    arguments = parser.parse_args()
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        arguments.tmp = tmp
        trio.run(main, arguments)
