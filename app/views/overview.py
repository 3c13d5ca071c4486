"""The first screen: the document, the model's answer, and the per-segment summary."""
from __future__ import annotations

import streamlit as st

from rmt_core import figures
from rmt_core.render import document_html

from app import services, sidebar
from app.views.common import require_trace, show_figure


def render() -> None:
    st.header("What the memory did on this document")
    trace = require_trace()
    if trace is None:
        return
    model = trace.model
    meta = trace.meta
    cols = st.columns(4)
    cols[0].metric("Tokens", f"{trace.num_tokens:,}")
    cols[1].metric("Segments", trace.num_segments)
    cols[2].metric("Memory slots", trace.num_mem_tokens)
    cols[3].metric("Mean loss (nats/token)", f"{trace.losses().mean():.3f}")
    check = services.answer_check(trace, model.tokenizer if model is not None else None)
    if check is not None:
        verdict = "✅ correct" if check["correct"] else "❌ wrong"
        st.markdown(
            f"**Question at the end:** the model answers **“{check['predicted']}”** "
            f"(p = {check['probability']:.2f}); the fact says **“{check['expected']}”** — {verdict}. "
            "The fact is underlined in green below; it sits segments before the question, "
            "so the answer can only come through memory.")
    if not trace.complete:
        st.warning(f"Partial trace: {trace.num_segments} segments were done before the run was cancelled.")
    st.caption(f"{meta.get('document', '')} · colour = surprise (−log p of each token); §n marks the start of segment n.")
    html, note = document_html(trace, selected_segment=sidebar.selected_segment(trace),
                               marked_chars=[tuple(s) for s in meta.get("fact_spans", [])])
    with st.container(height=380):
        st.html(html)
    if note:
        st.caption(note)
    show_figure(figures.segment_curves(trace, selected=sidebar.selected_segment(trace)), key="overview_curves")
