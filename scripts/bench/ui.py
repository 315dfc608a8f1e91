#!/usr/bin/env python3
"""The web UI's numbers (SPEC §10), measured in headless Chromium against `python -m runsvc serve`.

    python scripts/bench/ui.py big [--lines 1000000]
    python scripts/bench/ui.py follow [--rate 10000] [--seconds 10]
    python scripts/bench/ui.py all

big: a finished run of N lines (`seq 1 N`) is opened in a logged-in browser. Printed: time from the
navigation's start to the last line in the DOM (performance.now() in the page, so the figure is the
browser's own), the number of line elements in the DOM, the time until every line is loaded
(backfill), the JS heap, and the time a search over all lines takes (typing to "n of m" shown).

follow: the page is opened on a running run, then the run prints RATE lines/s for SECONDS s, each line
carrying its own print time. On every animation frame the page notes the newest line on screen and how
long ago it was printed (same machine, same clock). Printed: that delay's p50/p99/max, and whether the
page ended with every line exactly once (it holds seq 1..last, each seq's text is the expected one).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from playwright.sync_api import sync_playwright  # noqa: E402

from tests.e2e.browser import ADMIN_PASSWORD, Api, launch_chromium, serve  # noqa: E402

LAST_SHOWN_PROBE = """
window.__lastShownAt = null;
new MutationObserver((_, observer) => {
  if (document.querySelector('[data-seq="%d"]')) {
    window.__lastShownAt = performance.now();
    observer.disconnect();
  }
}).observe(document, { subtree: true, childList: true });
"""

SEARCH = """async (query) => {
  const input = document.getElementById('log-search');
  const t0 = performance.now();
  input.value = query;
  input.dispatchEvent(new Event('input', { bubbles: true }));
  const scanned = performance.now() - t0;
  await new Promise((resolve) => {
    const check = () => {
      const count = document.querySelector('.search-count').textContent;
      if (/^1 of \\d+$/.test(count) && document.querySelector('.line.current')) resolve();
      else requestAnimationFrame(check);
    };
    check();
  });
  return { scanned, shown: performance.now() - t0, count: document.querySelector('.search-count').textContent };
}"""

FOLLOW_SAMPLER = """() => {
  window.__samples = [];
  window.__stop = false;
  const scroller = document.querySelector('[role=log]');
  const sample = () => {
    const rows = scroller.querySelectorAll('.line');
    const newest = rows[rows.length - 1];
    if (newest) {
      const match = /^(\\d+) (\\d+\\.\\d+)$/.exec(newest.querySelector('.tx').textContent);
      const box = newest.getBoundingClientRect();
      const view = scroller.getBoundingClientRect();
      if (match && box.bottom <= view.bottom + 1) {
        window.__samples.push([Number(newest.dataset.seq), Number(match[1]), Date.now() / 1000 - Number(match[2])]);
      }
    }
    if (!window.__stop) requestAnimationFrame(sample);
  };
  requestAnimationFrame(sample);
}"""

PRINTER = """
import os, sys, time
gate = sys.argv[1]
rate, seconds = int(sys.argv[2]), float(sys.argv[3])
while not os.path.exists(gate):
    time.sleep(0.01)
per_tick = max(1, rate // 100)
start = time.time()
n = 0
for tick in range(int(seconds * 100)):
    delay = start + tick / 100 - time.time()
    if delay > 0:
        time.sleep(delay)
    now = time.time()
    sys.stdout.write("".join(f"{n + k} {now:.6f}\\n" for k in range(per_tick)))
    sys.stdout.flush()
    n += per_tick
"""


def logged_in_page(browser, url: str):
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(url + "/login")
    page.get_by_label("Username").fill("admin")
    page.get_by_label("Password").fill(ADMIN_PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.get_by_role("button", name="Log out").wait_for()
    return context, page, errors


def bench_big(browser, url: str, api: Api, lines: int) -> None:
    started = time.monotonic()
    run = api.submit(f"echo needle-at-the-top; seq 1 {lines}", name=f"{lines:,} lines")
    finished = api.wait(run["id"], timeout=600)
    last = finished["last_seq"]
    print(f"big: run #{run['id']} with {last:,} events stored in {time.monotonic() - started:.1f} s")
    context, page, errors = logged_in_page(browser, url)
    page.add_init_script(LAST_SHOWN_PROBE % last)
    page.goto(f"{url}/runs/{run['id']}", wait_until="commit")
    page.wait_for_function("() => window.__lastShownAt !== null", timeout=60_000)
    shown_ms = page.evaluate("window.__lastShownAt")
    rows_at_open = page.locator(".line").count()
    page.wait_for_selector('[role=log][aria-busy="false"]', timeout=600_000)
    loaded_ms = page.evaluate("performance.now()")
    held = int(page.get_attribute("[role=log]", "data-lines"))
    heap = page.evaluate("performance.memory ? performance.memory.usedJSHeapSize : 0") / 2**20
    one = page.evaluate(SEARCH, "needle-at-the-top")
    page.evaluate("() => { const i = document.getElementById('log-search'); i.value = ''; "
                  "i.dispatchEvent(new Event('input', { bubbles: true })); }")
    many = page.evaluate(SEARCH, "99999")
    rows_after = page.locator(".line").count()
    # Past ~15,000,000 px the scroll range is compressed: the top, middle and end must all be reachable.
    positions = page.evaluate("""async () => {
      const s = document.querySelector('[role=log]');
      const frame = () => new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r)));
      const seen = [];
      for (const at of [0, 0.5, 1]) {
        s.scrollTop = at * (s.scrollHeight - s.clientHeight);
        await frame();
        const rows = [...s.querySelectorAll('.line')].filter((r) => {
          const b = r.getBoundingClientRect(), v = s.getBoundingClientRect();
          return b.top >= v.top - 1 && b.bottom <= v.bottom + 1;
        });
        seen.push([rows[0].dataset.seq, rows[rows.length - 1].dataset.seq]);
      }
      return { height: s.scrollHeight, seen };
    }""")
    context.close()
    print(f"  last line in the DOM {shown_ms:,.0f} ms after navigation start (target <= 1,000 ms)")
    print(f"  line elements in the DOM: {rows_at_open} at open, {rows_after} after searching (target <= 5,000)")
    print(f"  all {held:,} lines loaded {loaded_ms / 1000:.1f} s after navigation; JS heap {heap:,.0f} MiB")
    print(f"  search 'needle-at-the-top': {one['scanned']:.0f} ms scan, {one['shown']:.0f} ms until shown "
          f"({one['count']}) (target <= 250 ms)")
    print(f"  search '99999': {many['scanned']:.0f} ms scan, {many['shown']:.0f} ms until shown ({many['count']})")
    print(f"  scroll height {positions['height']:,} px for {last:,} rows of 20 px; lines on screen at the "
          f"top, middle and bottom: " + ", ".join(f"{a}-{b}" for a, b in positions["seen"]))
    if errors:
        print(f"  PAGE ERRORS: {errors}")


def bench_follow(browser, url: str, api: Api, rate: int, seconds: float, workdir: Path) -> None:
    gate = workdir / "go"
    script = workdir / "printer.py"
    script.write_text(PRINTER)
    run = api.post("/runs", {"command": [sys.executable, str(script), str(gate), str(rate), str(seconds)],
                             "name": f"{rate:,} lines/s"})["run"]
    api.wait(run["id"], {"running"})
    context, page, errors = logged_in_page(browser, url)
    page.goto(f"{url}/runs/{run['id']}")
    page.get_by_role("status", name="Connection").filter(has_text="live").wait_for()
    page.evaluate(FOLLOW_SAMPLER)
    gate.touch()
    finished = api.wait(run["id"], timeout=seconds + 120)
    page.get_by_role("status", name="Connection").filter(has_text="ended").wait_for(timeout=60_000)
    page.wait_for_timeout(300)
    page.evaluate("window.__stop = true")
    samples = page.evaluate("window.__samples")
    held = int(page.get_attribute("[role=log]", "data-lines"))
    context.close()
    lines = samples
    lags = sorted(s[2] for s in lines if s[1] < rate * seconds - 1)  # while printing
    consistent = all(seq == index + 3 for seq, index, _ in lines)  # seq 1, 2: queued, running
    monotonic = all(a[0] <= b[0] for a, b in zip(lines, lines[1:], strict=False))
    expected = finished["last_seq"]
    print(f"follow: run #{run['id']} printed {rate * seconds:,.0f} lines at {rate:,}/s for {seconds:g} s")
    if lags:
        p50 = statistics.median(lags)
        p99 = lags[min(len(lags) - 1, int(len(lags) * 0.99))]
        print(f"  newest line on screen, time since it was printed: p50 {p50 * 1000:.0f} ms, "
              f"p99 {p99 * 1000:.0f} ms, max {lags[-1] * 1000:.0f} ms over {len(lags)} frames (target <= 1,000 ms)")
    print(f"  page holds {held:,} lines of {expected:,} events: "
          f"{'every seq once' if held == expected else 'MISMATCH'}; newest-line seq/text consistent: "
          f"{consistent}; never went backwards: {monotonic}")
    if errors:
        print(f"  PAGE ERRORS: {errors}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("scenario", choices=["big", "follow", "all"])
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--rate", type=int, default=10_000)
    parser.add_argument("--seconds", type=float, default=10)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="runsvc-bench-ui-") as tmp:
        workdir = Path(tmp)
        with serve(workdir / "data") as server, sync_playwright() as playwright:
            api = Api(server.url)
            browser = launch_chromium(playwright)
            try:
                if args.scenario in ("big", "all"):
                    bench_big(browser, server.url, api, args.lines)
                if args.scenario in ("follow", "all"):
                    bench_follow(browser, server.url, api, args.rate, args.seconds, workdir)
            finally:
                browser.close()
                api.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
