"""Small helpers shared by the pages."""
from __future__ import annotations

import streamlit as st

from rmt_core.figures import FIGURE_CONFIG

from app import state


def require_trace():
    """The current trace, or None after telling the user what to do."""
    trace = st.session_state.get(state.TRACE)
    if trace is None or trace.num_segments == 0:
        st.info("Run a document first (sidebar → Run).")
        return None
    return trace


def show_figure(fig, key: str | None = None, **kwargs):
    return st.plotly_chart(fig, config=FIGURE_CONFIG, key=key, **kwargs)


def model_for(trace):
    """The model a trace was made with (attached at run time)."""
    return trace.model
