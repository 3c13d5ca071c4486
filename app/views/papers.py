"""The papers' figures, remade in one click from the shipped models: the RMT papers' (copy task,
fact recall) and the ARMT paper's memory-capacity estimate (App. B) and loss per segment (App. K)."""
from __future__ import annotations

import json

import numpy as np
import streamlit as st

import rmt_core
from rmt_core.viz import captions, paper
from rmt_core.demos import make_task_batch

from app import services, state
from app.views.common import literal, show_figure

COPY = "copy-paper"
AUTO_REACH_SECONDS = 3.0  # the current trace's loss per segment is computed with the page when it takes about this long


@st.cache_resource(show_spinner="Tracing a copy-task sample…", max_entries=8)
def _copy_trace(seed: int):
    model = services.load_model(COPY)
    ids = make_task_batch("copy", 24, 1, np.random.default_rng(seed), model.tokenizer)["input_ids"][0]
    return rmt_core.trace(model, ids)


def _card(name: str) -> dict:
    path = rmt_core.io.checkpoint.SHIPPED_DIR / name / "config.json"
    return json.loads(path.read_text())["card"].get("evaluation_results", {})


def render() -> None:
    st.header("The papers' figures, from the live models")
    shipped = [c["name"] for c in services.shipped_checkpoints()]
    tab_write, tab_read, tab_keep, tab_acc, tab_capacity, tab_reach = st.tabs(
        ["Write pattern", "Read pattern", "Keep / rewrite", "Accuracy vs segments", "ARMT: memory capacity",
         "ARMT: loss per segment"])
    armt = _armt_checkpoint()
    with tab_capacity:
        _capacity(armt)
    with tab_reach:
        _reach(armt)
    if COPY not in shipped or rmt_core.DEFAULT_CHECKPOINT not in shipped:
        with tab_write:
            st.warning("The RMT papers' figures need the shipped copy-task and default checkpoints.")
        return
    with tab_write:
        seed = int(st.number_input("Copy-task sample (seed)", 0, 10_000, 0, key="paper_seed",
                                   help="The copy-task sample of the Write and Read pattern tabs."))
    trace = _copy_trace(seed)
    with tab_write:
        segment = st.selectbox("Segment (the source is in segments 0–2)", range(trace.num_segments), key="paper_wseg")
        result = paper.write_pattern(trace, segment)
        st.caption(captions.write_pattern_caption(result.sharpness, result.injectivity, result.diagonal,
                                                  trace.num_segments))
        show_figure(result.figure, key="paper_write")
    with tab_read:
        segment = st.selectbox("Target segment", range(trace.num_segments), index=trace.num_segments - 2, key="paper_rseg")
        result = paper.read_pattern(trace, segment)
        st.caption(f"While producing the copy, tokens read the memory slots (sharpness {result.sharpness:.2f}).")
        show_figure(result.figure, key="paper_read")
    with tab_keep:
        tour, _ = services.guided_tour(rmt_core.DEFAULT_CHECKPOINT, 7)
        figure = paper.keep_rewrite(tour.trace, highlight=tour.fact_segment)
        st.caption("Default model on a fact-recall sample. " + paper.keep_rewrite_caption(figure, tour.fact_segment))
        show_figure(figure, key="paper_keep")
    with tab_acc:
        copy_rows = _card(COPY).get("algorithmic", [])
        recall_rows = _card(rmt_core.DEFAULT_CHECKPOINT).get("fact_recall", [])
        st.markdown("**Copy task** (per-character accuracy; measured on 500 samples, paper numbers beside ours)")
        st.dataframe(paper.accuracy_table(copy_rows, "copy"), hide_index=True)
        show_figure(paper.accuracy_figure(copy_rows, "copy"), key="paper_acc_copy")
        st.markdown("**Fact recall (detect)** in held-out Austen text")
        st.dataframe(paper.accuracy_table(recall_rows, "detect"), hide_index=True)
        show_figure(paper.accuracy_figure(recall_rows, "detect"), key="paper_acc_recall")


# ---------------------------------------------------------------------- ARMT (Rodkin et al. 2024)
def _armt_checkpoint() -> str | None:
    """The ARMT the ARMT tabs show: the sidebar's model when it is a shipped ARMT, else the first shipped one."""
    options = services.associative_checkpoints()
    selected = st.session_state.get(state.CHECKPOINT)
    return selected if selected in options else (options[0] if options else None)


def _capacity(checkpoint: str | None) -> None:
    if checkpoint is None:
        st.info("The memory-capacity estimate is of an associative memory (ARMT): no ARMT checkpoint is shipped.")
        return
    model = services.load_model(checkpoint)
    layers = len(model.memory.parts())
    c1, c2 = st.columns(2)
    layer = c1.selectbox("Layer", range(layers), index=layers - 1, key="paper_cap_layer")
    keys = c2.radio("Keys", ["model", "random"], horizontal=True, key="paper_cap_keys",
                    format_func=lambda k: "through the layer's W_mk" if k == "model" else "random in d_mem",
                    help="Keys k = W_mk·x for standard-normal x (the layer's own key map), or standard-normal keys "
                         "in the key space (the update rule alone).")
    result = services.memory_capacity(checkpoint, int(layer), keys)
    _show(f"{checkpoint}: n synthetic key-value pairs are written one per write into a fresh state of layer {layer} "
          "by the model's own update rule (DPFP features, the γ correction, the denominator; β = 1), each key then "
          f"read back and decoded to the nearest of v = {result.n_values} values. The paper's estimate (App. B): a "
          "memory that holds k of n pairs and guesses the rest among v values is right a fraction "
          "α = (k + (n − k)/v)/n of the time, so k = n(vα − 1)/(v − 1). The paper measures α end to end on a model "
          "trained on this task; this measures the memory block of a model trained on other text.",
          paper.capacity_figure_caption(result), paper.capacity_figure(result), result.to_rows(), "paper_capacity")


def _show(intro: str, caption: str, figure, rows: list[dict], key: str) -> None:
    """An ARMT tab's body: what was measured, the finding, the figure, the exact numbers."""
    st.markdown(literal(intro))
    st.caption(literal(caption))
    show_figure(figure, key=key)
    st.dataframe(rows, hide_index=True)


def _reach(checkpoint: str | None) -> None:
    trace = st.session_state.get(state.TRACE)
    own = trace is not None and trace.memory_type == "associative" and trace.carries_memory and \
        trace.model is not None
    choices = ["excerpt"] + (["trace"] if own else [])
    if checkpoint is None and not own:
        st.info("The loss per segment with full, no and previous-segment memory is the ARMT paper's figure: no ARMT "
                "checkpoint is shipped and the current trace is not of one.")
        return
    source = st.radio("Document", choices, horizontal=True, key="paper_reach_source",
                      format_func=lambda c: "the held-out Persuasion excerpt" if c == "excerpt" else
                      "the current trace", disabled=len(choices) == 1)
    if source == "trace":
        from rmt_core.explain.memory_reach import loss_per_segment, reach_seconds

        from app import threads

        cache = st.session_state.setdefault(state.ATTRIBUTION_CACHE, {})
        key = (id(trace), "memory reach")
        if key not in cache:
            seconds = reach_seconds(trace)
            if seconds > AUTO_REACH_SECONDS and not st.button(
                    f"Re-run the {trace.num_segments} segments twice (about {seconds:.0f} s)", key="paper_reach_run"):
                return
            with threads.heavy(), st.spinner("Re-running the trace with no and with previous-segment memory…"):
                cache[key] = loss_per_segment(trace)
        result = cache[key]
    else:
        trace, result = services.memory_reach_excerpt(checkpoint)
    _show(f"{trace.model_info['name']} on {trace.meta.get('document') or 'the document'}: every segment's loss "
          "(nats/token) with the full memory as traced, with memory reset before every segment, and with only what "
          "the previous segment writes from an empty state (the document read as two-segment windows). The ARMT "
          "paper found its LM-trained ARMT keeps mostly the last segment (App. K).",
          paper.memory_reach_figure_caption(result), paper.memory_reach_figure(result), result.to_rows(), "paper_reach")
