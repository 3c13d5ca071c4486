"""Attention: one head's full heatmap, the layer x head block grid, what write slots attend to, bertviz."""
from __future__ import annotations

import numpy as np
import streamlit as st

from rmt_core.explain import analysis
from rmt_core.viz import figures
from rmt_core.tracing.trace import BLOCK_PAIRS

from app import services, sidebar
from app.views.common import guarded, literal, require_trace_with_model, show_figure, visible_token

MAX_HEATMAP = 200  # positions per axis before the heatmap is cut (the browser stays responsive)


def render() -> None:
    st.header("Attention")
    trace = require_trace_with_model("Recomputing full attention")
    if trace is None:
        return
    _views(trace, sidebar.selected_segment(trace))


@st.fragment
@guarded
def _views(trace, segment: int) -> None:
    layers, heads = int(trace.model_info["num_layers"]), int(trace.model_info["num_heads"])
    c1, c2 = st.columns(2)
    layer = c1.selectbox("Layer", range(layers), index=layers - 1, key="att_layer")
    head = c2.selectbox("Head", range(heads), key="att_head")
    attention = services.attention_for(trace, segment)  # (Y, H, n, n)
    labels = trace.attention_labels(segment)
    m = trace.num_slots  # read slots first (tokens memory); the rows after the tokens: write slots or memory tokens
    tail = len(labels) - m - trace.segments[segment].num_tokens
    edges = figures.row_edges(trace, segment)
    matrix, shown = attention[layer, head], labels
    if len(labels) > MAX_HEATMAP:
        keep = list(range(m)) + list(range(m, MAX_HEATMAP - tail)) + list(range(len(labels) - tail, len(labels)))
        matrix = matrix[np.ix_(keep, keep)]
        shown = [labels[i] for i in keep]
        if edges:  # the memory tokens follow the tokens kept
            edges = [MAX_HEATMAP - tail]
        st.caption(f"Segment row has {len(labels)} positions; the heatmap shows the memory rows and the first "
                   f"{MAX_HEATMAP - m - tail} tokens so the browser stays responsive.")
    # Only the open tab's content is built (on_change="rerun" makes tab.open known): bertviz's HTML and
    # the other figures cost nothing until their tab is chosen.
    tab_map, tab_grid, tab_slots, tab_head, tab_model = st.tabs(
        ["Heatmap", "Layer × head grid", "What write slots attend to", "bertviz head view", "bertviz model view"],
        key="att_tab", on_change="rerun")
    if tab_map.open:
        with tab_map:
            if trace.has_slots or edges is None:
                st.caption("Read slots R0.. come first, then the segment's tokens, then write slots W0..; "
                           "orange lines separate the blocks. Rows are queries.")
            else:
                st.caption("The segment's tokens come first, then the memory tokens P0.. (they attend to the tokens; "
                           "the tokens never attend to them); the orange line separates them. Rows are queries.")
            show_figure(figures.attention_heatmap(matrix, shown, m, f"Segment {segment}, layer {layer}, head {head}",
                                                  edges=edges), key="att_heatmap")
    if (tab_grid.open or tab_slots.open) and not trace.has_slots:
        with tab_grid if tab_grid.open else tab_slots:
            st.info(f"Not available for this model: it shows read / write memory slots, and its memory type "
                    f"({trace.memory_type!r}) has none. The heatmap shows its whole segment row.")
    elif tab_grid.open:
        with tab_grid:
            pair = st.selectbox("Block pair", BLOCK_PAIRS, index=1, key="att_pair",
                                format_func=lambda p: p.replace("->", " → "),
                                help="Which block attends to which: e.g. write → tokens is how much the write slots "
                                     "attend to the tokens.")
            show_figure(figures.block_grid_figure(analysis.block_grid(trace, segment, pair), pair), key="att_grid")
    if tab_slots.open and trace.has_slots:
        with tab_slots:
            seg = trace.segments[segment]
            show_figure(figures.slot_token_heatmap(seg.write_to_tokens[layer, head].astype(float), seg.tokens,
                                                   f"Write slots' attention over the tokens (layer {layer}, head {head})"),
                        key="att_slots")
            rows = [{"slot": f"W{k}", **{f"#{i + 1}": f"{visible_token(tok)} ({w:.2f})" for i, (_, tok, w) in enumerate(top)}}
                    for k, top in enumerate(analysis.tokens_write_slots_attend_to(trace, segment, layer=layer, k=5))]
            st.dataframe(rows, hide_index=True)
    if tab_head.open:
        with tab_head:
            _bertviz("head", attention, labels, layer)
    if tab_model.open:
        with tab_model:
            _bertviz("model", attention, labels, layer)


MODEL_VIEW_HEIGHT = 760  # px; a taller model view scrolls inside its frame


def _bertviz(kind: str, attention: np.ndarray, labels: list[str], layer: int) -> None:
    from rmt_core.viz.bertviz_views import head_view_html, model_view_html

    if kind == "head":
        view = head_view_html(attention, labels, layer=layer)
        height = view.height
    else:
        every = st.toggle("All layers", value=False, key="att_model_all",
                          help="Off: the heads of the selected layer only (a shorter view).")
        view = model_view_html(attention, labels, layers=None if every else [layer])
        height = min(view.height, MODEL_VIEW_HEIGHT)
        st.caption("One thumbnail per head" + ("" if every else f" of layer {layer}") + ". **Click a thumbnail** to "
                   "open it with the token labels (R0.. read slots, then the tokens, then W0.. write slots)"
                   + (f"; the view scrolls inside its frame ({view.height} px)." if view.height > height else "."))
    if view.note:
        st.caption(literal(view.note))
    st.iframe(view.html, height=height)
