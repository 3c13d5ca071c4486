"""Memory: trajectories in PCA space, slot norms and churn, slot similarity, logit lens."""
from __future__ import annotations

import streamlit as st

from rmt_core.explain import analysis, series
from rmt_core.viz import figures

from app import sidebar
from app.views.common import guarded, require_trace, show_figure, visible_token


def render() -> None:
    st.header("Memory")
    trace = require_trace()
    if trace is None:
        return
    _views(trace, sidebar.selected_segment(trace))


@st.fragment
@guarded
def _views(trace, segment: int) -> None:
    states = series.memory_states(trace)  # (S + 1, m, d); every whole-trace series is computed once per trace
    tokenizer = trace.model.tokenizer if trace.model is not None else None
    hover = series.lens_hover(trace, tokenizer)
    dims = st.radio("Projection", [2, 3], horizontal=True, format_func=lambda d: f"{d}-D PCA", key="mem_dims")
    show_figure(figures.memory_trajectory(series.pca(trace, dims), hover, dims=dims), key="mem_pca")
    c1, c2 = st.columns(2)
    with c1:
        show_figure(figures.slot_segment_heatmap(series.slot_norms(trace)[1:], "Slot norms after each segment",
                                                 "L2 norm"), key="mem_norms")
    with c2:
        show_figure(figures.slot_segment_heatmap(series.slot_churn(trace),
                                                 "Churn per slot (cosine distance in → out)", "churn"), key="mem_churn")
    show_figure(figures.slot_similarity_figure(analysis.slot_similarity(states[segment + 1]), segment), key="mem_sim")
    st.subheader(f"Logit lens of the memory written by segment {segment}")
    st.caption("The top tokens each write slot's hidden state decodes to through the final norm and the LM head, "
               "per layer (layer 0 = the memory as it entered).")
    lens = analysis.logit_lens(trace, segment, tokenizer)
    # one row per slot, one column per layer: a few columns, so none is cut off at the right
    rows = [{"slot": f"W{k}", **{f"layer {y}": "  ".join(visible_token(t) for t in layer[k]) for y, layer in enumerate(lens)}}
            for k in range(len(lens[0]) if lens else 0)]
    st.dataframe(rows, hide_index=True, width="stretch")
