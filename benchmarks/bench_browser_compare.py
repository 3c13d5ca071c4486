"""The Compare page in the browser: first render with two 50-segment traces (Debian's Chromium via
playwright, every request that leaves the machine blocked, driving `streamlit run app/main.py`).

The first trace: the held-out novel's first words, cut to 50 segments of the shipped model,
pasted and run; the second: the same text with one word changed near the start, traced from the
Compare page ("Another document"). Then the page is left and opened again `--repeats` times:
open Compare (idle) = from the click on its link until the app's script has finished and the
page is drawn, i.e. the page's first render with both traces (comparison computed once per pair).
Target (issue 27): open Compare p50 <= 1.5 s (idle).

    python benchmarks/bench_browser_compare.py [--quick] [--repeats 5]
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
sys.path.insert(0, str(Path(__file__).resolve().parent))

PAGE_TARGET_MS = 1500.0
SEGMENTS = 50


def document(model, n_segments: int) -> str:
    """The held-out novel's first words, as many as fill n_segments segments (not one more)."""
    from rmt_core.token_text import encode_ids
    from rmt_core.training.corpus import load_corpus

    words = load_corpus("heldout").split(" ")
    most = n_segments * model.config.segment_size
    low, high = 1, most
    while low < high:  # the most words whose tokens fit in n_segments segments
        mid = (low + high + 1) // 2
        if len(encode_ids(model.tokenizer, " ".join(words[:mid]))) <= most:
            low = mid
        else:
            high = mid - 1
    return " ".join(words[:low])


def main() -> int:
    p = C.parser(__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args()
    import browser_support as B
    from _pytest.outcomes import OutcomeException
    from bench_browser import add_rows, timed

    report = C.Report("bench_browser_compare", "Compare page first render in Chromium", quick=args.quick)
    report.header(args)
    repeats = 2 if args.quick else args.repeats
    n_segments = 6 if args.quick else SEGMENTS
    rows: list = []
    checks: list = []
    server = manager = None
    try:
        with tempfile.TemporaryDirectory(prefix="rmt-bench-compare-") as tmp:
            model = C.load_model("cpu")
            text_a = document(model, n_segments)
            text_b = text_a.replace(" the ", " a ", 1)
            server = B.start_server(Path(tmp))
            manager, browser = B.launch_browser()
            session = B.new_session(browser, server.url)
            page = session.page
            B.open_app(session, server.url)
            traced = page.locator(B.SIDEBAR).locator('[data-testid="stCaptionContainer"]', has_text="Traced ")
            demo = traced.first.inner_text()
            B.paste_text(page, text_a)
            B.run_button(page).click()
            traced.filter(has_not_text=demo).first.wait_for(timeout=B.RUN_MS)
            B.wait_idle(page)
            B.goto_page(page, "Compare")
            page.locator(B.MAIN).locator('[data-testid="stTextArea"] textarea').fill(text_b)
            button = page.locator(B.MAIN).get_by_role("button", name="Trace and compare")
            sample = timed(page, lambda: button.click())
            add_rows(rows, f"{n_segments} segments", "trace the second document and compare", [sample])
            heading = f"document.querySelector('{B.MAIN} h2 [data-heading-text]')"
            samples = []
            for _ in range(repeats):
                B.goto_page(page, "Overview")
                link = page.locator('[data-testid="stSidebarNavLink"]').filter(
                    has=page.locator('span[label="Compare"]'))
                done = f"() => {heading} !== null && {heading}.textContent === {json.dumps('Compare two runs')}"
                samples.append(timed(page, lambda: link.click(), done_js=done))
            add_rows(rows, f"{n_segments} segments", "open Compare (both traces ready)", samples)
            if not args.quick:
                checks.append(("open Compare, two 50-segment traces (idle p50)",
                               sorted(s[1] for s in samples)[len(samples) // 2], PAGE_TARGET_MS))
            report.note(f"load average at the end: {os.getloadavg()[0]:.2f} (1 min)")
            if session.guard.blocked:
                report.note(f"blocked requests that tried to leave the machine: {session.guard.blocked[:5]}")
    except OutcomeException as exc:
        report.note(f"browser benchmark not run: {exc}")
    finally:
        if manager is not None:
            manager.__exit__(None, None, None)
        if server is not None:
            server.stop()
    report.table(["case", "change", "n", "chart p50 ms", "chart p90 ms", "idle p50 ms", "idle p90 ms",
                  "runs seen", "server p50 ms", "server share"], rows, title="click -> chart redrawn / app idle")
    for label, value, target in checks:
        report.check(label, value, target, " ms", digits=0)
    return report.finish(args)


if __name__ == "__main__":
    raise SystemExit(main())
