"""Timeline: the document with segment boundaries and surprise; per-segment curves."""
from __future__ import annotations

import streamlit as st

from rmt_core.viz import figures

from app import sidebar, state
from app.views.common import document_view, require_trace, show_figure


def _pick_segment_from_chart() -> None:
    selection = st.session_state.get("timeline_curves")
    points = (selection or {}).get("selection", {}).get("points", [])
    if points:
        st.session_state[state.SEGMENT] = int(points[0]["x"])


def render() -> None:
    st.header("Timeline")
    trace = require_trace()
    if trace is None:
        return
    segment = sidebar.selected_segment(trace)
    st.caption("Click a point on the curves to select that segment everywhere (or use the sidebar slider).")
    show_figure(figures.segment_curves(trace, selected=segment), key="timeline_curves",
                on_select=_pick_segment_from_chart, selection_mode="points")
    _document(trace, segment)


def _document(trace, segment: int) -> None:
    st.subheader("Document")
    st.caption("Colour = surprise (−log p, nats); §n = segment n starts; the selected segment is outlined.")
    document_view(trace, segment, key="timeline_doc", height=520,
                  marked_chars=[tuple(s) for s in trace.meta.get("fact_spans", [])])
