"""Memory: trajectories in PCA space, slot norms and churn, slot similarity, logit lens."""
from __future__ import annotations

import streamlit as st

from rmt_core.explain import analysis, series
from rmt_core.viz import figures

from app import services, sidebar
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
    tokenizer = trace.model.tokenizer if trace.model is not None else None
    dims = st.radio("Projection", [2, 3], horizontal=True, format_func=lambda d: f"{d}-D PCA", key="mem_dims")
    window = _window(trace)
    show_figure(_trajectory(trace, tokenizer, dims, window), key="mem_pca")
    # figures that do not depend on the selected segment: built once per trace (a segment change sends the same)
    c1, c2 = st.columns(2)
    with c1:
        show_figure(services.per_trace(trace, "memory: slot norms", lambda: figures.slot_segment_heatmap(
            series.slot_norms(trace)[1:], "Slot norms after each segment", "L2 norm")), key="mem_norms")
    with c2:
        show_figure(services.per_trace(trace, "memory: slot churn", lambda: figures.slot_segment_heatmap(
            series.slot_churn(trace), "Churn per slot (cosine distance in → out)", "churn")), key="mem_churn")
    states = series.memory_states(trace)  # (S + 1, m, d); every whole-trace series is computed once per trace
    show_figure(figures.slot_similarity_figure(analysis.slot_similarity(states[segment + 1]), segment), key="mem_sim")
    st.subheader(f"Logit lens of the memory written by segment {segment}")
    if not trace.has_slots:
        st.info(f"The logit lens decodes write slots; this model's memory type ({trace.memory_type!r}) has none. "
                "The figures above show its state's vectors.")
        return
    st.caption("The top tokens each write slot's hidden state decodes to through the final norm and the LM head, "
               "per layer (layer 0 = the memory as it entered).")
    lens = analysis.logit_lens(trace, segment, tokenizer)
    # one row per slot, one column per layer: a few columns, so none is cut off at the right
    rows = [{"slot": f"W{k}", **{f"layer {y}": "  ".join(visible_token(t) for t in layer[k]) for y, layer in enumerate(lens)}}
            for k in range(len(lens[0]) if lens else 0)]
    st.dataframe(rows, hide_index=True, width="stretch")


def _window(trace) -> tuple[int, int] | None:
    """The steps to draw, chosen with a range slider when the trace has more steps than the
    trajectory draws at once (None: all, evenly spaced)."""
    last = trace.num_segments  # steps 0..S: the initial memory, then the memory after each segment
    if last + 1 <= figures.TRAJECTORY_STEPS:
        return None
    first, end = st.slider(  # keyed by the trace's length: another trace starts with all its steps
        "Steps drawn", 0, last, (0, last), key=f"mem_window_{last}",
        help=f"The trajectory draws at most {figures.TRAJECTORY_STEPS} steps, evenly spaced. Narrow the range to "
             "see every step of a part of the document (step s = the memory after segment s − 1; the axes stay "
             "those of the whole trace).")
    return None if (first, end) == (0, last) else (first, end)


def _trajectory(trace, tokenizer, dims: int, window: tuple[int, int] | None):
    """The trajectory figure, with the logit-lens hover of the steps it draws only."""
    most = figures.TRAJECTORY_STEPS

    def build():
        shown = figures.trajectory_steps(trace.num_segments + 1, most, window)
        hover = series.lens_hover_at(trace, shown.tolist(), tokenizer) if trace.has_slots else None
        return figures.memory_trajectory(series.pca(trace, dims), hover, dims=dims, max_steps=most, window=window)

    if window is not None:  # a zoomed view is built each time (the hover text of its steps is kept)
        return build()
    return services.per_trace(trace, ("memory: trajectory", dims, id(tokenizer), most), build)
