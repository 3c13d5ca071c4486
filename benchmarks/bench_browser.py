"""Latency a user feels in the browser: Debian's Chromium (playwright, every request that leaves
the machine blocked) drives `streamlit run app/server.py` on this machine.

For each change (sidebar segment slider, Attention layer and head, and opening each page) it
times, from the click that makes the change (performance.now() in the page; for a select box
that is the click on the option: opening its menu before is the user's own step, not timed):
  chart  - until a plotly chart has redrawn (its plotly_afterplot event) after the click;
  idle   - until the app's script is no longer running (stApp data-test-script-state);
  server - the part of that spent with the script running on the server (between the first
           "running" and the last "notRunning" state the page saw), i.e. the server share; a
           rerun quicker than the page's rendering is never shown as running: "runs seen" counts
           the clicks whose server time was measured.
Cases: the demo (the first screen) and a long document: the first 50,000 words of the held-out
novel uploaded as a .txt file and traced (about 84k tokens, 2.6k segments). Prints p50 / p90 per change.
Targets (issue 18): segment / layer / head changes p50 <= 400 ms and p90 <= 800 ms (chart);
every page's first render <= 1.5 s (idle) on the long trace.

    python benchmarks/bench_browser.py [--quick] [--repeats 6] [--words 50000] [--case demo|long]
"""
from __future__ import annotations

import _common as C  # noqa: E402  (puts the repo root on sys.path)

import json  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path.insert(0, str(C.ROOT / "tests"))

P50_TARGET_MS, P90_TARGET_MS, PAGE_TARGET_MS = 400.0, 800.0, 1500.0
LONG_RUN_MS = 900_000  # tracing the long document in the app on a busy 2-core machine
PAGES = ("Timeline", "Attention", "Memory", "Attribution", "Export", "Overview")  # starts on Overview

INSTRUMENT = """() => {
  if (window.__bench) return;
  const bench = window.__bench = {last: 0, states: []};
  const hook = (el) => { if (!el.__benched && el.on) { el.__benched = true;
      el.on('plotly_afterplot', () => { bench.last = performance.now(); }); } };
  const scan = () => document.querySelectorAll('.js-plotly-plot').forEach(hook);
  new MutationObserver(scan).observe(document.body, {subtree: true, childList: true});
  scan();
  const app = document.querySelector('[data-testid="stApp"]');
  new MutationObserver(() => bench.states.push([performance.now(), app.getAttribute('data-test-script-state')]))
    .observe(app, {attributes: true, attributeFilter: ['data-test-script-state']});
}"""


def percentile(values: list[float], q: float) -> float:
    """The q-quantile (nearest rank) of the values that are not NaN; NaN when there are none."""
    ordered = sorted(v for v in values if v == v)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


def timed(page, action, want_chart: bool = True, done_js: str | None = None,
          prepare=None) -> tuple[float, float, float]:
    """(chart ms, idle ms, server ms) of one action, from the click that makes the change.

    prepare: what the user does before that click and what is not the app's latency (opening a
    select box's menu), run before the clock starts.

    done_js: a JavaScript predicate that is true once the action's result is on the page (for an
    action that redraws no chart). A rerun quicker than the page's own rendering never shows the
    script as running (the frontend gets "running" and "not running" in one batch): then the
    chart redrawn (or done_js) says it ended, and its server time is NaN (not measured)."""
    import browser_support as B
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    if prepare is not None:
        prepare()
    page.evaluate(INSTRUMENT)
    t0 = page.evaluate("() => { window.__bench.states = []; return performance.now(); }")
    action()
    chart = float("nan")
    if want_chart:
        try:
            page.wait_for_function(f"() => window.__bench.last > {t0}", timeout=B.RUN_MS)
            chart = page.evaluate("() => window.__bench.last") - t0
        except PlaywrightTimeout:
            print(f"note: no chart redrawn within {B.RUN_MS / 1000:.0f} s of the click", flush=True)
    # the rerun may not have started yet: wait for the page to see the script running (or the result
    # of a rerun too quick to show it), then for the end
    ended = [f"window.__bench.last > {t0}"] if chart == chart else []
    ended += [f"({done_js})()"] if done_js else []
    page.wait_for_function("() => window.__bench.states.some(s => s[1] === 'running')"
                           + "".join(f" || {e}" for e in ended), timeout=B.RUN_MS)
    B.wait_idle(page, timeout=LONG_RUN_MS)
    idle = page.evaluate("() => performance.now()") - t0
    states = page.evaluate("() => window.__bench.states")
    running = [t for t, s in states if s == "running"]
    done = [t for t, s in states if s == "notRunning"]
    server = (max(done) - min(running)) if running and done else float("nan")
    return chart, idle, server


def open_select(page, label: str, option: str) -> None:
    """Open the select box `label` and wait until `option` shows in its menu (not timed: the
    change happens on the option's click)."""
    import browser_support as B

    box = page.locator(B.MAIN).locator('[data-testid="stSelectbox"]').filter(has_text=label).first
    box.click()
    page.get_by_role("option", name=option, exact=True).wait_for(state="visible")


def pick_option(page, option: str) -> None:
    page.get_by_role("option", name=option, exact=True).click()


def changes(page, case: str, repeats: int, rows: list, checks: list, num_layers: int, num_heads: int) -> None:
    import browser_support as B

    slider = page.locator(B.SIDEBAR).get_by_role("slider").first
    B.goto_page(page, "Attention")
    # (prepare, act): the clock starts at the click that changes the view (a select box's option;
    # opening its menu before is the user's own step)
    options = {"layer": ("Layer", lambda i: str(i % num_layers)), "head": ("Head", lambda i: str((i + 1) % num_heads))}
    actions = {"segment": (None, lambda i: slider.press("ArrowLeft" if i % 2 == 0 else "ArrowRight"))}
    for name, (label, option) in options.items():
        actions[name] = (lambda i, label=label, option=option: open_select(page, label, option(i)),
                         lambda i, option=option: pick_option(page, option(i)))
    for name, (prepare, act) in actions.items():
        samples = [timed(page, lambda: act(i), prepare=(lambda: prepare(i)) if prepare else None)
                   for i in range(repeats)]
        add_rows(rows, case, f"Attention: {name} change", samples)
        chart = [s[0] for s in samples]
        checks.append((f"{case}: {name} change p50 (chart)", percentile(chart, 0.5), P50_TARGET_MS))
        checks.append((f"{case}: {name} change p90 (chart)", percentile(chart, 0.9), P90_TARGET_MS))
    B.goto_page(page, "Memory")
    samples = [timed(page, lambda i=i: slider.press("ArrowLeft" if i % 2 == 0 else "ArrowRight")) for i in range(repeats)]
    add_rows(rows, case, "Memory: segment change", samples)


def page_opens(page, case: str, rows: list, checks: list) -> None:
    import browser_support as B

    heading = f"document.querySelector('{B.MAIN} h2 [data-heading-text]')"
    for title in PAGES:
        link = page.locator('[data-testid="stSidebarNavLink"]').filter(has=page.locator(f'span[label="{title}"]'))
        before = B.page_heading(page).text_content()
        new_heading = f"() => {heading} !== null && {heading}.textContent !== {json.dumps(before)}"
        sample = timed(page, lambda: link.click(), want_chart=title not in ("Export", "Attribution"), done_js=new_heading)
        add_rows(rows, case, f"open {title}", [sample])
        if case != "demo":
            checks.append((f"{case}: open {title} (idle)", sample[1], PAGE_TARGET_MS))


def add_rows(rows: list, case: str, change: str, samples: list[tuple[float, float, float]]) -> None:
    chart, idle, server = ([s[k] for s in samples] for k in range(3))
    share = [s / i for s, i in zip(server, idle) if s == s and i > 0]
    rows.append([case, change, len(samples), percentile(chart, 0.5), percentile(chart, 0.9), percentile(idle, 0.5),
                 percentile(idle, 0.9), f"{len(share)}/{len(samples)}", percentile(server, 0.5),
                 C.median(share) if share else float("nan")])


COLUMNS = ["case", "change", "n", "chart p50 ms", "chart p90 ms", "idle p50 ms", "idle p90 ms", "runs seen",
           "server p50 ms", "server share"]


def in_browser(report: C.Report, prefix: str, body, extra_env: dict[str, str] | None = None) -> None:
    """Start the app's server (on a fresh temporary folder; extra_env: its environment's additions)
    and Chromium, run body(session, server)
    (browser_support's session and server), then close both; a skip (no Chromium, a server that does
    not start) becomes a note. Notes the load average and any blocked request at the end."""
    import browser_support as B
    from _pytest.outcomes import OutcomeException

    server = manager = None
    try:
        with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
            server = B.start_server(Path(tmp), extra_env)
            manager, browser = B.launch_browser()
            session = B.new_session(browser, server.url)
            body(session, server)
            report.note(f"load average at the end: {os.getloadavg()[0]:.2f} (1 min), {os.getloadavg()[1]:.2f} (5 min)")
            if session.guard.blocked:
                report.note(f"blocked requests that tried to leave the machine: {session.guard.blocked[:5]}")
    except OutcomeException as exc:  # browser_support skips/fails through pytest's exceptions
        report.note(f"browser benchmark not run: {exc}")
    finally:
        if manager is not None:
            manager.__exit__(None, None, None)
        if server is not None:
            server.stop()


def report_rows(report: C.Report, rows: list, checks: list, title: str) -> None:
    """The rows (add_rows) as one table, then each (label, value ms, target ms) check."""
    report.table(COLUMNS, rows, title=title)
    for label, value, target in checks:
        report.check(label, value, target, " ms", digits=0)


def main() -> int:
    p = C.parser(__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=6)
    p.add_argument("--words", type=int, default=50_000, help="words of the held-out novel in the long document")
    p.add_argument("--case", choices=("demo", "long"), default=None,
                   help="measure only the demo or only the long document (default: both)")
    args = p.parse_args()
    import browser_support as B

    report = C.Report("bench_browser", "click -> chart redrawn / idle in Chromium", quick=args.quick)
    report.header(args)
    repeats = 2 if args.quick else args.repeats
    words = 1_500 if args.quick else args.words
    rows: list = []
    checks: list = []

    def measure(session, server) -> None:
        page = session.page
        t0 = time.perf_counter()
        B.open_app(session, server.url)
        print(f"first screen (demo traced, charts drawn) after {time.perf_counter() - t0:.1f} s", flush=True)
        model = C.load_model("cpu")
        layers, heads = model.num_layers, model.num_heads
        if args.case != "long":
            page_opens(page, "demo", rows, checks)
            changes(page, "demo", repeats, rows, checks, layers, heads)
        if args.case != "demo":
            from rmt_core.token_text import encode_ids
            from rmt_core.training.corpus import load_corpus

            text = " ".join(load_corpus("heldout").split(" ")[:words])
            n_tokens = len(encode_ids(model.tokenizer, text))
            case = f"{n_tokens // 1000}k tokens"
            B.goto_page(page, "Overview")
            B.upload(page, "long-document.txt", text.encode("utf-8"))  # filling a textarea with it takes minutes
            traced = page.locator(B.SIDEBAR).locator('[data-testid="stCaptionContainer"]', has_text="Traced ")
            demo = traced.first.inner_text()  # the demo's "Traced 256 tokens ...": wait for the next one
            t0 = time.perf_counter()
            B.run_button(page).click()
            traced.filter(has_not_text=demo).first.wait_for(timeout=LONG_RUN_MS)
            B.wait_idle(page, timeout=LONG_RUN_MS)
            print(f"long document: {n_tokens:,} tokens traced in the app in {time.perf_counter() - t0:.1f} s", flush=True)
            page_opens(page, case, rows, checks)
            changes(page, case, repeats, rows, checks, layers, heads)

    in_browser(report, "rmt-bench-browser-", measure)
    report_rows(report, rows, checks, "click -> chart redrawn / app idle (Chromium); runs seen: clicks whose rerun the "
                                      "page showed as running (the others were quicker than the page's rendering: "
                                      "server time not measured)")
    return report.finish(args)


if __name__ == "__main__":
    raise SystemExit(main())
