"""Guided tour: one fact-recall sample, step by step, with next/back and any seed."""
from __future__ import annotations

import streamlit as st

from rmt_core import RMTLensError

from app import services, state
from app.views.common import literal, show_figure


def _step(delta: int, count: int) -> None:
    st.session_state[state.TOUR_STEP] = max(0, min(count - 1, st.session_state.get(state.TOUR_STEP, 0) + delta))


def render() -> None:
    st.header("Guided tour: how a recurrent memory carries a fact")
    options = services.tour_checkpoints()
    if not options:
        st.warning("The tour needs a shipped fact-recall model (checkpoints/"
                   f"{services.default_checkpoint_name()}, or the ARMT beside it).")
        return
    selected = st.session_state.get(state.CHECKPOINT)
    c0, c1, c2 = st.columns([2, 1, 3])
    checkpoint = c0.selectbox("Model", options, index=options.index(selected) if selected in options else 0,
                              key="tour_model",
                              help="A recurrent memory of slots (RMT) or an associative memory (ARMT): each gets the "
                                   "steps that fit it.")
    seed = int(c1.number_input("Sample (seed)", min_value=0, max_value=10_000, value=7, step=1, key="tour_seed"))
    c2.caption("Every seed is a different held-out sample (Persuasion, never seen in training): the same steps work on it.")
    try:
        tour, steps = services.guided_tour(checkpoint, seed)
    except RMTLensError as exc:
        st.error(literal(services.app_message(exc)))
        return
    # The buttons move the step in callbacks, before this run draws them: their state is never a click behind.
    index = min(st.session_state.get(state.TOUR_STEP, 0), len(steps) - 1)
    st.session_state[state.TOUR_STEP] = index
    back, progress, forward = st.columns([1, 4, 1])
    back.button("← Back", disabled=index == 0, key="tour_back", on_click=_step, args=(-1, len(steps)))
    forward.button("Next →", disabled=index == len(steps) - 1, key="tour_next", on_click=_step, args=(1, len(steps)))
    progress.progress((index + 1) / len(steps), text=f"Step {index + 1} of {len(steps)}")
    step = steps[index]
    st.subheader(step.title)
    st.markdown(literal(step.text))  # model output (the answer, tokens) shown as typed
    if step.html is not None:
        with st.container(height=360):
            st.html(step.html)
    if step.figure is not None:
        show_figure(step.figure, key=f"tour_fig_{index}")
