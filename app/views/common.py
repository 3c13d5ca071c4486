"""Small helpers shared by the pages."""
from __future__ import annotations

import functools

import streamlit as st

from rmt_core.errors import RMTLensError, unexpected_error_message
from rmt_core.figures import FIGURE_CONFIG

from app import state


def require_trace():
    """The current trace, or None after telling the user what to do."""
    trace = st.session_state.get(state.TRACE)
    if trace is None or trace.num_segments == 0:
        st.info("Run a document first (sidebar → Run).")
        return None
    return trace


def require_trace_with_model(purpose: str):
    """The current trace if its model is attached (needed to recompute), else None with a message."""
    trace = require_trace()
    if trace is not None and trace.model is None:
        st.warning(f"{purpose} needs the model the trace was made with; load the trace with its checkpoint.")
        return None
    return trace


def show_error(exc: BaseException, context: str = "") -> None:
    """One message for an exception: an RMTLensError's own text; anything else (a bug) as one line
    saying where its traceback was logged, with a request to report it. Never a traceback on screen."""
    if isinstance(exc, RMTLensError):
        st.error(str(exc))
    else:
        st.error(unexpected_error_message(exc, context), icon="🐞")


def guarded(fn):
    """Run a page part (a fragment) with show_error instead of a traceback (st.rerun/st.stop pass through:
    they are BaseExceptions)."""
    @functools.wraps(fn)
    def run(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            show_error(exc, f"app: {fn.__module__}.{fn.__name__}")
            return None

    return run


def show_figure(fig, key: str | None = None, **kwargs):
    return st.plotly_chart(fig, config=FIGURE_CONFIG, key=key, **kwargs)


def model_for(trace):
    """The model a trace was made with (attached at run time)."""
    return trace.model
