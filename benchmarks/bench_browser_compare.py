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
import sys  # noqa: E402
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
    from bench_browser import add_rows, in_browser, report_rows, timed

    report = C.Report("bench_browser_compare", "Compare page first render in Chromium", quick=args.quick)
    report.header(args)
    repeats = 2 if args.quick else args.repeats
    n_segments = 6 if args.quick else SEGMENTS
    rows: list = []
    checks: list = []

    def measure(session, server) -> None:
        model = C.load_model("cpu")
        text_a = document(model, n_segments)
        text_b = text_a.replace(" the ", " a ", 1)
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
            link = page.locator('[data-testid="stSidebarNavLink"]').filter(has=page.locator('span[label="Compare"]'))
            done = f"() => {heading} !== null && {heading}.textContent === {json.dumps('Compare two runs')}"
            samples.append(timed(page, lambda: link.click(), done_js=done))
        add_rows(rows, f"{n_segments} segments", "open Compare (both traces ready)", samples)
        if not args.quick:
            checks.append(("open Compare, two 50-segment traces (idle p50)",
                           sorted(s[1] for s in samples)[len(samples) // 2], PAGE_TARGET_MS))

    in_browser(report, "rmt-bench-compare-", measure)
    report_rows(report, rows, checks, "click -> chart redrawn / app idle")
    return report.finish(args)


if __name__ == "__main__":
    raise SystemExit(main())
