"""Server-side work of the whole-document pages on a long trace: the Memory page and the Timeline
curves of an 87k-token trace (the first 50,000 words of the held-out novel, 2.7k segments),
first render and rerun, before (every series recomputed on every rerun, as the Memory page did)
and after (rmt_core.explain.series: computed once per trace; trajectory drawn at <= 600 steps,
with the logit-lens hover of those steps only).

What is timed is what the page computes and serialises (plotly JSON as st.plotly_chart sends
it), on a trace without its logit lens yet (as right after tracing: the first render pays for
the lens); browser rendering is not included. Target: first render and rerun <= 1.5 s each (after).

    python benchmarks/bench_pages.py [--quick] [--trace PATH]   (--trace: reuse a saved trace)
"""
from __future__ import annotations

import _common as C  # noqa: E402  (puts the repo root on sys.path)
import rmt_core  # noqa: E402

import time  # noqa: E402

import numpy as np  # noqa: E402

TARGET_S = 1.5
WORDS = 50_000


def build_trace(model, words: int):
    from rmt_core.training.corpus import load_corpus

    text = " ".join(load_corpus("heldout").split(" ")[:words])
    return rmt_core.trace(model, text)


def memory_page_before(trace, tokenizer, dims: int = 2) -> int:
    """What app/views/memory.py computed on every rerun before rmt_core.explain.series."""
    import plotly.io as pio

    from rmt_core.explain import analysis
    from rmt_core.viz import figures

    states = trace.memory_states()
    hover = [["" for _ in range(trace.num_mem_tokens)]]
    for index in range(trace.num_segments):
        lens = analysis.logit_lens(trace, index, tokenizer)[-1]
        hover.append(["decodes to: " + ", ".join(repr(t) for t in tokens[:3]) for tokens in lens])
    figs = [figures.memory_trajectory(analysis.pca_trajectory(states, dims), hover, dims=dims, max_steps=10**9),
            figures.slot_segment_heatmap(analysis.slot_norms(states)[1:], "norms", "L2 norm"),
            figures.slot_segment_heatmap(analysis.slot_churn(states), "churn", "churn")]
    return sum(len(pio.to_json(f, validate=False)) for f in figs)


def memory_page_after(trace, tokenizer, dims: int = 2) -> int:
    """What app/views/memory.py computes now."""
    import plotly.io as pio

    from rmt_core.viz import figures
    from rmt_core.explain import series

    shown = figures.trajectory_steps(trace.num_segments + 1)  # the logit-lens hover of the drawn steps only
    hover = series.lens_hover_at(trace, shown.tolist(), tokenizer)
    figs = [figures.memory_trajectory(series.pca(trace, dims), hover, dims=dims),
            figures.slot_segment_heatmap(series.slot_norms(trace)[1:], "norms", "L2 norm"),
            figures.slot_segment_heatmap(series.slot_churn(trace), "churn", "churn")]
    return sum(len(pio.to_json(f, validate=False)) for f in figs)


def timeline_curves(trace) -> int:
    import plotly.io as pio

    from rmt_core.viz import figures

    return len(pio.to_json(figures.segment_curves(trace, selected=3), validate=False))


def fresh_copy(trace):
    """The same trace as a new object without cached series or logit lens, as the app has it
    right after tracing (a trace file also stores the lens; a fresh trace does not)."""
    import copy
    import dataclasses

    clone = copy.copy(trace)
    clone.segments = [dataclasses.replace(s, lens_ids=None) for s in trace.segments]
    return clone


def main() -> int:
    p = C.parser(__doc__.splitlines()[0])
    p.add_argument("--trace", default=None, help="a saved trace of the default model to use")
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    C.setup(args)
    import rmt_core

    report = C.Report("bench_pages", "whole-document pages on a long trace (server side)", quick=args.quick)
    report.header(args)
    model = C.load_model("cpu")
    t0 = time.perf_counter()
    if args.trace:
        trace = rmt_core.Trace.load(args.trace, model=model)
    else:
        trace = build_trace(model, 2_000 if args.quick else WORDS)
    print(f"trace: {trace.num_tokens:,} tokens, {trace.num_segments:,} segments ({time.perf_counter() - t0:.1f} s)")
    tokenizer = model.tokenizer
    rows, checks = [], []
    for page, before, after in (
        ("Memory", lambda t: memory_page_before(t, tokenizer), lambda t: memory_page_after(t, tokenizer)),
        ("Timeline curves", None, timeline_curves),
    ):
        for label, fn in (("before", before), ("after", after)):
            if fn is None:
                continue
            first, reruns = [], []
            size = 0
            for _ in range(args.repeats):
                t = fresh_copy(trace)
                first.append(C.time_call(lambda: fn(t)))
                start = time.perf_counter()
                size = fn(t)
                reruns.append(time.perf_counter() - start)
            rows.append([page, label, C.median(first), C.median(reruns), size / 2**20, len(first)])
            if label == "after":
                checks.append((f"{page} first render, {trace.num_tokens // 1000}k tokens", C.median(first)))
                checks.append((f"{page} rerun, {trace.num_tokens // 1000}k tokens", C.median(reruns)))
    report.table(["page", "code", "first render s", "rerun s", "plotly JSON MB", "repeats"], rows,
                 title="server-side work per page (median)")
    for label, value in checks:
        report.check(label, value, TARGET_S, " s")
    return report.finish(args)


if __name__ == "__main__":
    raise SystemExit(main())
