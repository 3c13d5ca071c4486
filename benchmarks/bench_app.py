"""Server-side work of one view change on the Attention and Memory pages, after a trace exists.

The shipped model traces the demo fact-recall document (app.services.demo_document, 8
segments). Then, as app/views/attention.py and app/views/memory.py do on a rerun:

Attention page: the segment's full attention (services.attention_for: recomputed on a
  segment change, cached per (trace, segment) otherwise), the heatmap (cut at MAX_HEATMAP),
  the layer x head block grid, the write-slot x token heatmap, tokens_write_slots_attend_to, the bertviz
  head view and model view HTML (st.tabs renders every tab's content on each rerun), and the
  plotly JSON that st.plotly_chart sends (plotly.io.to_json(fig, validate=False)).
Memory page: memory_states, the logit lens of every segment (hover text), pca_trajectory +
  memory_trajectory, slot norms / churn heatmaps, slot similarity, the logit-lens table.

Changes timed: Attention page segment change (attention recomputed), layer change and head
change (attention cached); Memory page segment change. Target: median < 300 ms per change.
Browser rendering and websocket transfer are not included. Optional extra rows (full mode):
streamlit.testing AppTest reruns with a changed widget (whole script; AppTest does not rerun
fragments alone, so these include the sidebar).
"""
from __future__ import annotations

import _common as C  # noqa: E402  (puts the repo root on sys.path)
import rmt_core  # noqa: E402

import time  # noqa: E402
from typing import Any, Callable  # noqa: E402

import numpy as np  # noqa: E402

TARGET_MS = 300.0


def quiet_streamlit() -> None:
    """No 'missing ScriptRunContext' warnings: the app's code runs here without a server (bare mode)."""
    import logging

    for name in ("streamlit", "streamlit.runtime.scriptrunner_utils.script_run_context",
                 "streamlit.runtime.caching.cache_data_api"):
        logging.getLogger(name).setLevel(logging.ERROR)


def build_document(model):
    """(text, how it was made): the app's demo document, else the same recipe by hand."""
    try:
        quiet_streamlit()
        from app import services

        quiet_streamlit()  # streamlit sets its loggers' levels on import

        return services.demo_document(services.DEMOS[0], model).text, "app.services.demo_document"
    except Exception as exc:  # noqa: BLE001 - fall back to the same recipe without the app
        from rmt_core.training.corpus import load_corpus
        from rmt_core.training.tasks import babi

        seg = model.config.segment_size
        sample = babi.build_sample(load_corpus("heldout"), 8 * seg, "detect", np.random.default_rng(7),
                                   model.tokenizer, keep_out_tail=seg)
        return sample.text + sample.answer, f"babi.build_sample ({type(exc).__name__}: {exc})"


class Pages:
    """What the two pages compute on a rerun, with a per-part timing log."""

    def __init__(self, trace, max_heatmap: int, pair: str) -> None:
        self.trace = trace
        self.max_heatmap = max_heatmap
        self.pair = pair
        self.cache: dict[int, np.ndarray] = {}
        self.parts: dict[str, list[float]] = {}
        self.device = trace.model.device

    def _part(self, name: str, fn: Callable[[], Any]) -> Any:
        start = time.perf_counter()
        out = fn()
        C.sync(self.device)
        self.parts.setdefault(name, []).append(time.perf_counter() - start)
        return out

    def attention_page(self, segment: int, layer: int, head: int) -> None:
        import plotly.io

        from rmt_core.explain import analysis
        from rmt_core.viz import figures
        from rmt_core.viz.bertviz_views import head_view_html, model_view_html

        trace = self.trace
        if segment not in self.cache:  # services.attention_for
            self.cache[segment] = self._part("attention recompute", lambda: trace.attention(segment))
        attention = self.cache[segment]
        labels = trace.attention_labels(segment)
        m = trace.num_mem_tokens
        matrix, shown = attention[layer, head], labels
        if len(labels) > self.max_heatmap:
            keep = list(range(m)) + list(range(m, self.max_heatmap - m)) + list(range(len(labels) - m, len(labels)))
            matrix = matrix[np.ix_(keep, keep)]
            shown = [labels[i] for i in keep]

        def send(fig):
            return plotly.io.to_json(fig, validate=False)  # what st.plotly_chart serialises

        self._part("heatmap figure + json", lambda: send(figures.attention_heatmap(
            matrix, shown, m, f"Segment {segment}, layer {layer}, head {head}")))
        self._part("block grid figure + json", lambda: send(figures.block_grid_figure(
            analysis.block_grid(trace, segment, self.pair), self.pair)))
        seg = trace.segments[segment]
        self._part("slot-token figure + json", lambda: send(figures.slot_token_heatmap(
            seg.write_to_tokens[layer, head].astype(float), seg.tokens,
            f"Write slots' attention over the tokens (layer {layer}, head {head})")))
        self._part("tokens_write_slots_attend_to table", lambda: [
            {"slot": f"W{k}", **{f"#{i + 1}": f"{tok!r} ({w:.2f})" for i, (_, tok, w) in enumerate(top)}}
            for k, top in enumerate(analysis.tokens_write_slots_attend_to(trace, segment, layer=layer, k=5))])
        self._part("bertviz head view html", lambda: head_view_html(attention, labels, layer=layer))
        self._part("bertviz model view html", lambda: model_view_html(attention, labels))

    def memory_page(self, segment: int, dims: int = 2) -> None:
        import plotly.io

        from rmt_core.explain import analysis
        from rmt_core.viz import figures

        trace = self.trace
        tokenizer = trace.model.tokenizer

        def send(fig):
            return plotly.io.to_json(fig, validate=False)

        states = self._part("memory_states", trace.memory_states)

        def hover():
            rows = [["" for _ in range(trace.num_mem_tokens)]]
            for index in range(trace.num_segments):
                lens = analysis.logit_lens(trace, index, tokenizer)[-1]
                rows.append(["decodes to: " + ", ".join(repr(t) for t in tokens[:3]) for tokens in lens])
            return rows

        rows = self._part("logit-lens hover (all segments)", hover)
        self._part("pca_trajectory + figure + json", lambda: send(figures.memory_trajectory(
            analysis.pca_trajectory(states, dims), rows, dims=dims)))
        self._part("norms + churn figures + json", lambda: (
            send(figures.slot_segment_heatmap(analysis.slot_norms(states)[1:], "Slot norms after each segment",
                                              "L2 norm")),
            send(figures.slot_segment_heatmap(analysis.slot_churn(states), "Churn per slot", "churn"))))
        self._part("slot similarity figure + json", lambda: send(figures.slot_similarity_figure(
            analysis.slot_similarity(states[segment + 1]), segment)))
        self._part("logit-lens table", lambda: [
            {"layer": y, **{f"W{k}": " ".join(repr(t) for t in tokens) for k, tokens in enumerate(layer)}}
            for y, layer in enumerate(analysis.logit_lens(trace, segment, tokenizer))])


def measure_changes(trace, rounds: int, device) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    from app.views.attention import MAX_HEATMAP

    from rmt_core.tracing.trace import BLOCK_PAIRS

    pages = Pages(trace, MAX_HEATMAP, BLOCK_PAIRS[1])
    S = trace.num_segments
    Y, H = int(trace.model_info["num_layers"]), int(trace.model_info["num_heads"])
    state = {"segment": S - 1, "layer": Y - 1, "head": 0, "mem_segment": S - 1}
    # warm-up: every code path once (plotly, bertviz and the vendored JS are loaded lazily)
    pages.attention_page(S - 1, Y - 1, 0)
    pages.memory_page(S - 1)
    pages.parts.clear()

    def segment_change():
        state["segment"] = (state["segment"] + 1) % S
        pages.cache.clear()  # a new segment: services.attention_for misses
        pages.attention_page(state["segment"], state["layer"], state["head"])

    def layer_change():
        state["layer"] = (state["layer"] + 1) % Y
        pages.attention_page(state["segment"], state["layer"], state["head"])

    def head_change():
        state["head"] = (state["head"] + 1) % H
        pages.attention_page(state["segment"], state["layer"], state["head"])

    def memory_segment_change():
        state["mem_segment"] = (state["mem_segment"] + 1) % S
        pages.memory_page(state["mem_segment"])

    times = C.interleaved({"Attention: segment change": segment_change, "Attention: layer change": layer_change,
                           "Attention: head change": head_change, "Memory: segment change": memory_segment_change},
                          rounds=rounds, warmup=0, device=device)
    return times, pages.parts


def apptest_rows(rounds: int) -> list[list[Any]]:
    """Whole-script AppTest reruns after a widget change (info; includes the sidebar)."""
    from streamlit.testing.v1 import AppTest

    from app import state

    at = AppTest.from_file(str(C.ROOT / "app" / "main.py"), default_timeout=600)
    start = time.perf_counter()
    at.run()
    first = time.perf_counter() - start
    if at.exception:
        raise RuntimeError(f"AppTest first run raised: {[e.value for e in at.exception]}")
    trace = at.session_state[state.TRACE]
    at.switch_page("screens/attention.py").run()
    S, H = trace.num_segments, int(trace.model_info["num_heads"])
    Y = int(trace.model_info["num_layers"])
    rows: dict[str, list[float]] = {"AppTest: Attention head change": [], "AppTest: Attention layer change": [],
                                    "AppTest: Attention segment change": [], "AppTest: Memory segment change": []}
    for r in range(rounds):
        for name, action in (
            ("AppTest: Attention head change", lambda: at.selectbox(key="att_head").set_value((r + 1) % H)),
            ("AppTest: Attention layer change", lambda: at.selectbox(key="att_layer").set_value(r % Y)),
            ("AppTest: Attention segment change", lambda: at.slider(key=state.SEGMENT).set_value(r % S)),
        ):
            widget = action()
            start = time.perf_counter()
            widget.run()
            rows[name].append(time.perf_counter() - start)
    at.switch_page("screens/memory.py").run()
    for r in range(rounds):
        widget = at.slider(key=state.SEGMENT).set_value((r + 1) % S)
        start = time.perf_counter()
        widget.run()
        rows["AppTest: Memory segment change"].append(time.perf_counter() - start)
    if at.exception:
        raise RuntimeError(f"AppTest rerun raised: {[e.value for e in at.exception]}")
    out = [["cpu", "AppTest: first run (load model, build + trace the demo)", first * 1e3, "-", 1]]
    out += [["cpu", name, C.ms(C.median(v)), C.spread(v), len(v)] for name, v in rows.items()]
    return out


def main() -> int:
    p = C.parser(__doc__.splitlines()[0])
    p.add_argument("--no-apptest", action="store_true", help="skip the AppTest rows (always skipped with --quick)")
    args = p.parse_args()
    C.setup(args)
    report = C.Report("bench_app", "server-side work of a segment / layer / head change", quick=args.quick)
    report.header(args)
    rounds = 2 if args.quick else 15
    change_rows, part_rows, checks = [], [], []
    for device in C.devices(args):
        model = C.load_model(device)
        text, source = build_document(model)
        trace = rmt_core.trace(model, text)
        print(f"{device}: document from {source}: {trace.num_tokens} tokens, {trace.num_segments} segments, "
              f"{len(trace.attention_labels(0))} positions per segment row")
        times, parts = measure_changes(trace, rounds, device)
        for name, values in times.items():
            change_rows.append([device, name, C.ms(C.median(values)), C.spread(values), len(values)])
            if device == "cpu":
                checks.append((f"{name} (cpu)", C.ms(C.median(values))))
        for name, values in parts.items():
            part_rows.append([device, name, C.ms(C.median(values)), C.spread(values), len(values)])
        del model, trace
    if not args.quick and not args.no_apptest:
        try:
            change_rows += apptest_rows(5)
        except Exception as exc:  # noqa: BLE001 - an extra row; report and go on
            report.note(f"AppTest rows skipped: {type(exc).__name__}: {exc}")
    report.table(["device", "change", "median ms", "min..max ms", "n"], change_rows,
                 title="Per change: everything the page computes on that rerun (server side)")
    report.table(["device", "part", "median ms", "min..max ms", "n"], part_rows,
                 title="Breakdown (per call, over all changes that computed it)")
    for label, value in checks:
        report.check(label, value, TARGET_MS, " ms", op="<", digits=1)
    return report.finish(args)


if __name__ == "__main__":
    raise SystemExit(main())
