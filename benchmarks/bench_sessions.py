"""Many users on one server: Chromium sessions (playwright, Debian's chromium, every request that
leaves the machine blocked) against one `streamlit run app/server.py` (what `make app` runs).

Cases, each on a fresh server (the first visitor finds nothing cached, as after `make app`):
  first-N  N sessions open the first page at once; time from each page's navigation start
           until the Overview's first plotly chart is drawn (performance.now() in the page).
  paste-N  N sessions, first screen drawn, each paste a different ~5,000-word held-out text and
           click Run at once; time from the click until the Overview shows that trace with a
           chart. Each page's "Tokens" must equal the text's token count (no leak between sessions).
Prints p50 / p95 / max per case, the server's peak RSS (sampled every 0.5 s, children included)
and the machine's load average (1 min) before and after: the numbers are only as quiet as the machine.

    python benchmarks/bench_sessions.py [--cases first-8,first-30,paste-8] [--words 5000] [--quick]
"""
from __future__ import annotations

import _common as C  # noqa: E402  (puts the repo root on sys.path)

import os  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path.insert(0, str(C.ROOT / "tests"))

SESSION_MS = 1_800_000  # the slowest session of 30 on a busy 2-core machine
MAIN = '[data-testid="stMain"]'

FIRST_CHART = """() => {
  const seen = () => {
    if (window.__firstChart === undefined && document.querySelector('[data-testid="stMain"] .js-plotly-plot .main-svg'))
      window.__firstChart = performance.now();
  };
  new MutationObserver(seen).observe(document, {subtree: true, childList: true});
}"""

DONE_WHEN = """(label) => {
  window.__clicked = performance.now();
  window.__done = undefined;
  const timer = setInterval(() => {
    const main = document.querySelector('[data-testid="stMain"]');
    if (main && main.querySelector('.js-plotly-plot .main-svg') && main.innerText.includes(label)) {
      window.__done = performance.now(); clearInterval(timer);
    }
  }, 100);
}"""


class RssSampler(threading.Thread):
    def __init__(self, server) -> None:
        super().__init__(daemon=True)
        self.server, self.peak, self._halt = server, 0, threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            self.peak = max(self.peak, self.server.rss_bytes())
            self._halt.wait(0.5)

    def stop(self) -> int:
        self._halt.set()
        self.join(5)
        return self.peak


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, int(round(q * (len(ordered) - 1)))))]


def _sessions(browser, server, n: int):
    from browser_support import new_session

    sessions = [new_session(browser, server.url) for _ in range(n)]
    for s in sessions:
        s.page.set_default_timeout(SESSION_MS)
        s.page.add_init_script(f"({FIRST_CHART})()")
    return sessions


def first_screen(browser, server, n: int) -> list[float]:
    """Seconds from navigation start to the first chart, per session, all opened at once."""
    sessions = _sessions(browser, server, n)
    for s in sessions:
        s.page.goto(server.url, wait_until="commit")
    times = []
    for s in sessions:
        s.page.wait_for_function("() => window.__firstChart !== undefined", timeout=SESSION_MS, polling=500)
        times.append(s.page.evaluate("() => window.__firstChart") / 1000)
    for s in sessions:
        s.context.close()
    return times


def paste_runs(browser, server, n: int, words: int) -> list[float]:
    """Seconds from the Run click to the pasted text's chart, per session, all clicked at once."""
    import rmt_core
    from browser_support import paste_text, run_button, wait_first_screen
    from rmt_core.token_text import encode_ids
    from rmt_core.training.corpus import load_corpus

    corpus = load_corpus("heldout").split()
    texts = [" ".join(corpus[i * words:(i + 1) * words]) for i in range(n)]
    tokenizer = rmt_core.load(rmt_core.DEFAULT_CHECKPOINT).tokenizer
    expected = [f"{len(encode_ids(tokenizer, t)):,}" for t in texts]
    sessions = _sessions(browser, server, n)
    for s in sessions:
        s.page.goto(server.url, wait_until="commit")
    for s in sessions:
        wait_first_screen(s.page, timeout=SESSION_MS)
    for s, text in zip(sessions, texts):
        paste_text(s.page, text)
    for s in sessions:
        s.page.evaluate(DONE_WHEN, "Pasted text · colour")
        run_button(s.page).click(no_wait_after=True)
    times, wrong = [], []
    for i, s in enumerate(sessions):
        s.page.wait_for_function("() => window.__done !== undefined", timeout=SESSION_MS, polling=500)
        times.append((s.page.evaluate("() => window.__done - window.__clicked")) / 1000)
        metric = s.page.locator(MAIN).locator('[data-testid="stMetric"]', has_text="Tokens")
        shown = metric.locator('[data-testid="stMetricValue"]').inner_text().strip()
        if shown != expected[i]:
            wrong.append(f"session {i}: Tokens {shown}, its text has {expected[i]}")
    for s in sessions:
        s.context.close()
    if wrong:
        print("WRONG RESULTS:", "; ".join(wrong))
    return times


def main() -> int:
    p = C.parser(__doc__.splitlines()[0])
    p.add_argument("--cases", default="first-8,first-30,paste-8")
    p.add_argument("--words", type=int, default=5000)
    args = p.parse_args()
    if args.quick:
        args.cases, args.words = "first-2,paste-2", 300
    C.setup(args)
    from browser_support import launch_browser, start_server

    manager, browser = launch_browser()
    rows = []
    try:
        for case in args.cases.split(","):
            kind, n = case.strip().split("-")
            n = int(n)
            load_before = os.getloadavg()[0]
            server = start_server(Path(tempfile.mkdtemp(prefix="bench-sessions-")))
            sampler = RssSampler(server)
            sampler.start()
            try:
                started = time.perf_counter()
                times = first_screen(browser, server, n) if kind == "first" else paste_runs(browser, server, n,
                                                                                           args.words)
                wall = time.perf_counter() - started
            finally:
                peak = sampler.stop()
                server.stop()
            rows.append((case, n, statistics.median(times), _percentile(times, 0.95), max(times), peak / 2**30,
                         load_before, os.getloadavg()[0], wall))
            print(f"{case}: p50 {rows[-1][2]:.1f} s, p95 {rows[-1][3]:.1f} s, RSS peak {rows[-1][5]:.2f} GiB",
                  flush=True)
    finally:
        browser.close()
        manager.__exit__(None, None, None)
    print("\n| case | sessions | p50 s | p95 s | max s | server RSS peak GiB | load avg before / after | wall s |")
    print("|---|---:|---:|---:|---:|---:|---|---:|")
    for case, n, p50, p95, top, rss, before, after, wall in rows:
        print(f"| {case} | {n} | {p50:.1f} | {p95:.1f} | {top:.1f} | {rss:.2f} | {before:.1f} / {after:.1f} | "
              f"{wall:.0f} |")
    print(f"(CPUs: {os.cpu_count()}; workers: {os.environ.get('RMT_LENS_WORKERS') or 'default'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
