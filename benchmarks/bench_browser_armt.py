"""ARMT pages in the browser: first render of every page an associative-memory trace shows, on a
50k-token trace of the shipped ARMT (Debian's Chromium via playwright, every request that leaves
the machine blocked, driving `streamlit run app/server.py`).

The trace: the shipped ARMT (checkpoints/armt-austen-pydocs-recall) over the first 50,000 tokens of
the held-out novel (1,563 segments), traced once and saved as an .rmtrace in the temporary folder
(rmt-bench-armt-browser/, reused while the checkpoint and the tokens are the same). Chromium selects
the ARMT in the sidebar and opens that file through the uploader (as a user opens a saved trace:
its states are then rebuilt from the stored writes when first needed), then times, from the click
(performance.now() in the page):
  open <page>         the sidebar link of Overview, Timeline, Memory, Attention, Attribution, Export,
                      `--repeats` times each from another page; the first open after the trace was
                      opened is a row of its own (it pays for what is built once per trace);
  last segment        the sidebar slider to the last segment (on the Memory page), then
  open Attention      at that segment: the first time (the state entering it rebuilt), then again;
  Memory: retrieved from, first token   the last token's read split into the earlier writes (a
                      click on "Split this token's read" where the page offers it);
  Memory: retrieved from, another token  from choosing another token of the segment in its box to
                      its chart (with the Split click, where the page asks for one);
  Memory: layer change  the layer box (write strength / novelty heatmaps of that layer).
chart = until a plotly chart has redrawn after the click, idle = until the app's script has ended
(bench_browser.timed; the sum of both clicks where a Split click is needed). --baseline DIR runs a
second app tree (e.g. a checkout of main) beside this one in the same run, every step alternating
between the two (the order flipped every round), and prints the ratio this tree / baseline.
Target (issue 25): every ARMT page's first render p50 <= 1.5 s (idle).

    python benchmarks/bench_browser_armt.py [--quick] [--repeats 5] [--tokens 50000] [--baseline DIR]
"""
from __future__ import annotations

import _common as C  # noqa: E402  (puts the repo root on sys.path)

import hashlib  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path.insert(0, str(C.ROOT / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

ARMT = "armt-austen-pydocs-recall"
TOKENS = 50_000
PAGE_TARGET_MS = 1500.0
PAGES = ("Timeline", "Memory", "Attention", "Attribution", "Export", "Overview")  # opens on Overview
CACHE_DIR = Path(tempfile.gettempdir()) / "rmt-bench-armt-browser"


def armt_trace_file(n_tokens: int, log=print) -> Path:
    """The shipped ARMT's trace of the held-out novel's first `n_tokens` tokens, as an .rmtrace in
    CACHE_DIR: traced and saved on first use (minutes on one core), reused while the checkpoint's
    weights and the tokens are the same (the name holds both)."""
    import torch

    import rmt_core
    from rmt_core.training.corpus import load_corpus

    model = rmt_core.load(ARMT, device="cpu").eval()
    text = load_corpus("heldout")[: n_tokens * 8]  # ~3.8 characters a token: enough
    _, ids, spans = C.corpus_ids(model, split="heldout", max_chars=len(text))
    ids = ids[:n_tokens]
    key = hashlib.sha256(model.weights_hash().encode() + ids.tobytes()).hexdigest()[:12]
    path = CACHE_DIR / f"armt-{n_tokens}-{key}.rmtrace"
    if path.exists():
        return path
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)
    document = text[: int(spans[len(ids) - 1][1])]  # the text of those tokens, so the pages show it
    t0 = time.perf_counter()
    trace = rmt_core.trace(model, document)
    log(f"traced {trace.num_tokens:,} tokens ({trace.num_segments:,} segments) with {ARMT} in "
        f"{time.perf_counter() - t0:.0f} s")
    partial = path.with_suffix(".partial.rmtrace")
    trace.save(partial)
    partial.rename(path)
    return path



def select_model(page, name: str) -> None:
    """Choose `name` in the sidebar's Model box (the shown trace stays until another is opened)."""
    import browser_support as B

    page.locator(B.SIDEBAR).get_by_role("combobox", name="Model").click()
    page.get_by_role("option", name=name, exact=True).click()
    B.wait_idle(page)


def open_trace_file(page, path: Path) -> float:
    """Open a saved trace through the sidebar's uploader; seconds until the app says it is open."""
    import browser_support as B

    B.choose_source(page, "Upload a file")
    t0 = time.perf_counter()
    page.locator(B.SIDEBAR).locator('[data-testid="stFileUploaderDropzoneInput"]').set_input_files(
        {"name": path.name, "mimeType": "application/octet-stream", "buffer": path.read_bytes()})
    opened = page.locator(B.SIDEBAR).locator('[data-testid="stCaptionContainer"]', has_text=f"Opened {path.name}")
    opened.first.wait_for(timeout=B.RUN_MS)
    B.wait_idle(page)
    return time.perf_counter() - t0


def page_open(page, title: str) -> tuple[float, float, float]:
    """(chart, idle, server) ms of a click on the sidebar link of `title` (bench_browser.timed)."""
    import browser_support as B
    from bench_browser import timed

    heading = f"document.querySelector('{B.MAIN} h2 [data-heading-text]')"
    link = page.locator('[data-testid="stSidebarNavLink"]').filter(has=page.locator(f'span[label="{title}"]'))
    before = B.page_heading(page).text_content()
    new_heading = f"() => {heading} !== null && {heading}.textContent !== {json.dumps(before)}"
    return timed(page, lambda: link.click(), want_chart=title not in ("Attribution",), done_js=new_heading)


def open_menu(page, label: str, option: str | None = None) -> None:
    """Open the main area's select box `label` until its menu shows (`option`, else any option): a
    click that lands while the page redraws can leave the menu shut, so it is clicked again."""
    import browser_support as B
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    box = page.locator(B.MAIN).locator('[data-testid="stSelectbox"]').filter(has_text=label).first
    shown = page.get_by_role("option", name=option, exact=True) if option else page.get_by_role("option").first
    for attempt in range(3):
        box.click()
        try:
            shown.wait_for(state="visible", timeout=5_000 if attempt < 2 else B.UI_MS)
            return
        except PlaywrightTimeout:
            if attempt == 2:
                raise


SPLIT_SHOWN = "() => [...document.querySelectorAll('button')].some(b => b.innerText.includes(\"Split this token\"))"


def split_button(page):
    import browser_support as B

    return page.locator(B.MAIN).get_by_role("button", name="Split this token's read", exact=False)


def timed_any(page, action, done_js: str | None = None) -> tuple[float, float, float]:
    """(chart, idle, server) ms of an action that may or may not redraw a chart (chart NaN when none did).
    done_js: a JavaScript predicate that is true once the action's result is on the page (a rerun
    quicker than the page's rendering is never seen running)."""
    import browser_support as B
    from bench_browser import INSTRUMENT

    page.evaluate(INSTRUMENT)
    t0 = page.evaluate("() => { window.__bench.states = []; window.__bench.last = 0; return performance.now(); }")
    action()
    page.wait_for_function("() => window.__bench.states.some(s => s[1] === 'running') || window.__bench.last > 0"
                           + (f" || ({done_js})()" if done_js else ""), timeout=B.RUN_MS)
    B.wait_idle(page, timeout=B.RUN_MS * 5)
    idle = page.evaluate("() => performance.now()") - t0
    last = page.evaluate("() => window.__bench.last")
    states = page.evaluate("() => window.__bench.states")
    running = [t for t, st in states if st == "running"]
    done = [t for t, st in states if st == "notRunning"]
    return (last - t0 if last > t0 else float("nan")), idle, (max(done) - min(running)) if running and done else float("nan")


def retrieved_from(page, choose=None) -> tuple[float, float, float] | None:
    """The Memory page's retrieved-from chart for a token: `choose()` picks it (None: the token shown),
    then a click on Split where the page asks for one; (chart, idle, server) ms of both clicks together
    (a token change that shows the Split button counts until the page is idle, then the click to the chart);
    None when the token shown was split with the page (nothing to click)."""
    chart = idle = server = 0.0
    if choose is not None:
        chosen = timed_any(page, choose, done_js=SPLIT_SHOWN)
        if split_button(page).count() == 0:  # split with the page
            return chosen
        chart, idle, server = chosen[1], chosen[1], (0.0 if chosen[2] != chosen[2] else chosen[2])
    button = split_button(page)
    if button.count() == 0:  # the first token's read was split with the page (its open is timed)
        return None
    clicked = timed_any(page, lambda: button.first.click())
    if clicked[0] != clicked[0]:
        raise RuntimeError("the Split click drew no chart")
    return chart + clicked[0], idle + clicked[1], server + (0.0 if clicked[2] != clicked[2] else clicked[2])


def main() -> int:
    p = C.parser(__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=5, help="opens of each page (and clicks of each change)")
    p.add_argument("--tokens", type=int, default=TOKENS, help="tokens of the held-out novel in the trace")
    p.add_argument("--baseline", default=None, help="another app tree (its app/server.py) to measure beside this one")
    args = p.parse_args()
    import browser_support as B
    from _pytest.outcomes import OutcomeException
    from bench_browser import percentile, pick_option

    report = C.Report("bench_browser_armt", "ARMT pages' first render in Chromium", quick=args.quick)
    report.header(args)
    repeats = 2 if args.quick else args.repeats
    n_tokens = 2_000 if args.quick else args.tokens
    path = armt_trace_file(n_tokens)
    import rmt_core

    layers = rmt_core.load(ARMT, device="cpu").num_layers
    report.note(f"trace file {path} ({path.stat().st_size / 2**20:.1f} MB)")
    trees = [("this tree", C.ROOT)] + ([("baseline", Path(args.baseline).resolve())] if args.baseline else [])
    samples: dict[tuple[str, str], list] = {}  # (tree, change) -> [(chart, idle, server)]
    order: list[str] = []

    def add(tree: str, change: str, sample) -> None:
        if sample is None:
            return
        if change not in order:
            order.append(change)
        samples.setdefault((tree, change), []).append(sample)

    servers, manager = [], None
    try:
        with tempfile.TemporaryDirectory(prefix="rmt-bench-armt-") as tmp:
            env = {"RMT_LENS_MAX_UPLOAD_BYTES": str(200 * 2**20)}
            for name, root in trees:
                servers.append(B.start_server(Path(tmp), env, script=str(root / "app" / "server.py")))
            manager, browser = B.launch_browser()
            pages = {}
            for (name, _), server in zip(trees, servers):
                session = B.new_session(browser, server.url)
                B.open_app(session, server.url)
                select_model(session.page, ARMT)
                seconds = open_trace_file(session.page, path)
                print(f"{name}: {path.name} opened in {seconds:.1f} s (upload, check, load)", flush=True)
                pages[name] = session.page

            def each(step, r: int = 0) -> None:
                """step(tree, page) for every tree, the order flipped every other round."""
                for name in ([t for t, _ in trees] if r % 2 == 0 else [t for t, _ in trees][::-1]):
                    step(name, pages[name])

            for r in range(repeats + 1):  # round 0: the first open of each page after the trace was opened
                for title in PAGES:
                    each(lambda t, pg, title=title, r=r: add(
                        t, f"open {title}" + (": first after loading" if r == 0 else ""), page_open(pg, title)), r)

            def to_last(t, pg) -> None:
                B.goto_page(pg, "Memory")
                slider = pg.locator(B.SIDEBAR).get_by_role("slider").first
                add(t, "Memory: last segment selected (its split too, where made with the page)",
                    timed_any(pg, lambda: slider.press("End")))

            each(to_last)
            for r in range(repeats + 1):
                each(lambda t, pg, r=r: add(t, "open Attention at the last segment" + (": first" if r == 0 else ""),
                                            page_open(pg, "Attention")), r)
                each(lambda t, pg: B.goto_page(pg, "Memory"), r)
            each(lambda t, pg: add(t, "Memory: retrieved from, first token (last segment)", retrieved_from(pg)))

            def another_token(t, pg, i: int) -> None:
                def choose():
                    open_menu(pg, "Token")
                    pg.get_by_role("option").nth(i).click()
                add(t, "Memory: retrieved from, another token", retrieved_from(pg, choose))

            for i in range(1, repeats + 1):
                each(lambda t, pg, i=i: another_token(t, pg, i), i)
            for i in range(repeats):
                each(lambda t, pg, i=i: add(t, "Memory: layer change", timed_any(
                    pg, lambda: (open_menu(pg, "Layer", str(i % layers)), pick_option(pg, str(i % layers))))), i)
            for r in range(repeats):
                each(lambda t, pg: B.goto_page(pg, "Timeline"), r)
                each(lambda t, pg: add(t, "open Memory at the last segment", page_open(pg, "Memory")), r)
    except OutcomeException as exc:  # browser_support skips / fails through pytest's exceptions
        report.note(f"browser benchmark not run: {exc}")
    except Exception as exc:  # noqa: BLE001 - a step that failed: the steps measured so far are still printed
        report.note(f"stopped early ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); "
                    "the table has the steps measured before")
    finally:
        report.note(f"load average at the end: {os.getloadavg()[0]:.2f} (1 min), {os.getloadavg()[1]:.2f} (5 min)")
        if manager is not None:
            manager.__exit__(None, None, None)
        for server in servers:
            server.stop()

    def p50(tree: str, change: str, k: int) -> float:
        return percentile([s[k] for s in samples.get((tree, change), [])], 0.5)

    columns = ["change", "n"] + [f"{t} {what} p50 ms" for t, _ in trees for what in ("chart", "idle")]
    columns += ["idle ratio (this / baseline)"] if len(trees) > 1 else []
    rows = []
    for change in order:
        row = [change, len(samples.get(("this tree", change), []))]
        row += [p50(t, change, k) for t, _ in trees for k in (0, 1)]
        if len(trees) > 1:
            row.append(p50("this tree", change, 1) / p50("baseline", change, 1))
        rows.append(row)
    report.table(columns, rows, title=f"{n_tokens // 1000}k-token ARMT trace opened from a file: click -> chart "
                                      "redrawn / app idle (Chromium)")
    for change in order:
        if not samples.get(("this tree", change)):
            report.note(f"{change}: not measured in this tree (nothing to click: done with the page before)")
        elif change.startswith("open ") or change.startswith("Memory: retrieved") or change == "Memory: layer change":
            report.check(f"{n_tokens // 1000}k tokens: {change} p50 (idle)", p50("this tree", change, 1),
                         PAGE_TARGET_MS, " ms", digits=0)
    return report.finish(args)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--build-only"]:  # make the cached trace file only: --build-only [TOKENS]
        print(armt_trace_file(int(sys.argv[2]) if len(sys.argv) > 2 else TOKENS))
        raise SystemExit(0)
    raise SystemExit(main())
