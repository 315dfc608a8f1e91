"""/metrics and API-token benchmark.

1. Scrape time with RUNS runs stored (default 10,000, spread over every status): the wall time of
   `GET /metrics` over HTTP from loopback, and of `Metrics.scrape()` alone (the grouped count query and
   the text rendering), each repeated SCRAPES times. SPEC §10 asks for <= 20 ms.
2. What authenticating with an API token costs next to a session cookie: `GET /api/v1/auth/me` with
   each, REQUESTS times, interleaved, and the authenticate() calls alone.

    python scripts/bench/metrics.py
    python scripts/bench/metrics.py --runs 100000 --scrapes 50
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import argon2
import httpx
import trio

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from runsvc.config import Settings  # noqa: E402
from runsvc.model import STATUSES  # noqa: E402
from runsvc.server import serve  # noqa: E402
from runsvc.store import open_store  # noqa: E402
from runsvc.timeutil import now_ts  # noqa: E402

PASSWORD = "bench-admin-password-1"
CHEAP_HASHER = argon2.PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)  # login cost is not measured


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=10_000, help="runs stored (default 10000)")
    parser.add_argument("--scrapes", type=int, default=200, help="scrapes timed (default 200)")
    parser.add_argument("--requests", type=int, default=1000, help="requests per credential (default 1000)")
    return parser.parse_args()


def summary(label: str, seconds: list[float]) -> str:
    ordered = sorted(seconds)
    p = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000  # noqa: E731
    return (f"{label:<44} n={len(seconds):>5}  mean={statistics.fmean(seconds) * 1000:7.3f} ms  "
            f"p50={p(0.5):7.3f} ms  p99={p(0.99):7.3f} ms")


async def populate(path: Path, runs: int) -> None:
    def insert(conn):
        ts = now_ts()
        conn.executemany(
            "INSERT INTO runs (name, command, env, timeout_s, status, exit_code, created_by, created_at, "
            "started_at, ended_at, last_seq) VALUES (?, '[\"true\"]', '{}', 60, ?, NULL, 'admin', ?, ?, ?, 1)",
            [(f"run {i}", STATUSES[2 + i % 5], ts, ts, ts) for i in range(runs)],  # terminal statuses only
        )

    async with open_store(path) as store:
        await store.write(insert)


async def main() -> None:
    args = parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp)
        await populate(data / "runsvc.db", args.runs)
        os.environ["RUNSVC_ADMIN_PASSWORD"] = PASSWORD
        settings = Settings(host="127.0.0.1", port=0, data_dir=data)
        async with trio.open_nursery() as nursery:
            server = await nursery.start(partial(serve, settings, password_hasher=CHEAP_HASHER))
            svc = server.services
            async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
                login = await client.post("/api/v1/auth/login", json={"username": "admin", "password": PASSWORD})
                csrf = login.json()["csrf_token"]
                cookie = client.cookies["runsvc_session"]
                made = await client.post("/api/v1/tokens", json={"name": "bench"}, headers={"X-CSRF-Token": csrf})
                secret = made.json()["secret"]

                print(f"runs stored: {args.runs}")
                http_times, direct_times = [], []
                statements = svc.store.statistics().statements
                for _ in range(args.scrapes):
                    started = time.perf_counter()
                    response = await client.get("/metrics")
                    http_times.append(time.perf_counter() - started)
                    assert response.status_code == 200
                per_scrape = (svc.store.statistics().statements - statements) / args.scrapes
                for _ in range(args.scrapes):
                    started = time.perf_counter()
                    await svc.metrics.scrape()
                    direct_times.append(time.perf_counter() - started)
                print(summary("GET /metrics over HTTP (loopback)", http_times))
                print(summary("Metrics.scrape() alone", direct_times))
                print(f"SQL statements per scrape: {per_scrape:.2f}; body {len(response.content)} bytes")

                async with httpx.AsyncClient(base_url=server.url, timeout=30) as by_cookie, \
                        httpx.AsyncClient(base_url=server.url, timeout=30,
                                          headers={"Authorization": f"Bearer {secret}"}) as by_token:
                    by_cookie.cookies.set("runsvc_session", cookie)
                    session_times, token_times = [], []
                    for _ in range(args.requests):
                        for who, times in ((by_cookie, session_times), (by_token, token_times)):
                            started = time.perf_counter()
                            answer = await who.get("/api/v1/auth/me")
                            times.append(time.perf_counter() - started)
                            assert answer.status_code == 200
                print(summary("GET /auth/me with a session cookie", session_times))
                print(summary("GET /auth/me with a bearer token", token_times))
                difference = statistics.fmean(token_times) - statistics.fmean(session_times)
                print(f"token - session, mean: {difference * 1000:+.3f} ms")

                session_auth, token_auth = [], []
                writes = svc.store.statistics().write_requests
                for _ in range(args.requests):
                    started = time.perf_counter()
                    assert await svc.auth.authenticate(cookie) is not None
                    session_auth.append(time.perf_counter() - started)
                    started = time.perf_counter()
                    assert await svc.tokens.authenticate(secret) is not None
                    token_auth.append(time.perf_counter() - started)
                print(summary("Auth.authenticate(session token) alone", session_auth))
                print(summary("ApiTokens.authenticate(secret) alone", token_auth))
                print(f"writes during {args.requests} token checks (last_used_at): "
                      f"{svc.store.statistics().write_requests - writes}")
            server.request_shutdown()


if __name__ == "__main__":
    trio.run(main)
