"""A run that leaks its secret every way a careless script can, and what its masked output must be."""

from __future__ import annotations

import hashlib
import sys

VALUE = "correct-Horse-battery-5taple"
MULTI = "-----BEGIN KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n-----END KEY-----\n"
CUT = 16 * 1024 - 10  # where the straddling value starts: it crosses the 16 KiB cut of its line

# Prints: the value's digest (the child got it), the value alone, the value split across two writes of
# the pipe with a pause between (two reads), the value across the 16 KiB cut of a long line, on stderr
# too, and the multi-line value as it is.
SCRIPT = f"""
import hashlib, os, sys, time
value, multi = os.environ["DB_PASSWORD"], os.environ["TLS_KEY"]
print(hashlib.sha256(value.encode()).hexdigest(), flush=True)
print("pw=" + value, flush=True)
sys.stdout.write("split:" + value[:9]); sys.stdout.flush(); time.sleep(0.3)
sys.stdout.write(value[9:] + ":end\\n"); sys.stdout.flush()
print("a" * {CUT} + value + "b" * 20, flush=True)
print("err " + value, file=sys.stderr, flush=True)
sys.stdout.write(multi); sys.stdout.flush()
"""
COMMAND = [sys.executable, "-c", SCRIPT]
SECRETS = {"DB_PASSWORD": "db", "TLS_KEY": "tls"}


def expected_output() -> list[tuple[str, str]]:
    """The (kind, line) events the run must produce, masked, in order per stream."""
    digest = hashlib.sha256(VALUE.encode()).hexdigest()
    long_line = "a" * CUT + "***" + "b" * 20
    return [
        ("stdout", digest), ("stdout", "pw=***"), ("stdout", "split:***:end"),
        ("stdout", long_line[: 16 * 1024]), ("stdout", long_line[16 * 1024 :]),
        ("stderr", "err ***"), ("stdout", "***"), ("stdout", "***"), ("stdout", "***"),
    ]


def output_by_stream(events: list[dict]) -> dict[str, list[str]]:
    streams: dict[str, list[str]] = {"stdout": [], "stderr": []}
    for event in events:
        if event["kind"] in streams:
            streams[event["kind"]].append(event["data"])
    return streams


def expected_by_stream() -> dict[str, list[str]]:
    streams: dict[str, list[str]] = {"stdout": [], "stderr": []}
    for kind, line in expected_output():
        streams[kind].append(line)
    return streams
