"""Services of the Compare page: the second run, the comparison and the patching sweep.

Pages call these; they call rmt_core's public API (rmt_core.trace, Trace.load, rmt_core.compare,
rmt_core.explain.compare.reset_run, rmt_core.explain.answers, rmt_core.interventions). Results
are kept in session state per pair of traces (app.state keys)."""
from __future__ import annotations

import tempfile
from pathlib import Path

import streamlit as st

import rmt_core
from rmt_core import interventions
from rmt_core.explain import answers
from rmt_core.explain.compare import reset_run

from app import services, state

MAX_SWEEP_CELLS = 160  # patched runs one sweep may start from the page (each re-runs the target to its end)


def trace_text(model, text: str):
    """The second run: `text` traced with `model` (synchronously; the page shows a spinner)."""
    return rmt_core.trace(model, text)


def second_document(model, body: str, question: str) -> str:
    """The second document's text: `body` with `question` appended in the model's training format
    (answers.prompt_text; QuestionError for a question the model was not trained on), or `body`
    alone when the question box is empty (its answer is then the next token after the document)."""
    if not question.strip():
        return body
    return answers.prompt_text(model, body, question)


def reset_trace(trace):
    """The "memory reset" second run: this run's document traced again by its model with memory
    reset to the initial state before every segment (compare.reset_run)."""
    return reset_run(trace)


def split_document(trace) -> tuple[str, str | None, str | None]:
    """(document, question, answer word) of a run's text (answers.split_asked): what the Compare
    page's second-document box and question box start from."""
    return answers.split_asked(trace.text or "")


def question_line(trace) -> str:
    """Which question a run answers, in words (from its own text: answers.answer_site)."""
    site = answers.answer_site(trace)
    if site is None:
        return "no question: its answer is the model's next token after the document"
    if not site.question:
        return "no question (the document ends with “Answer:”)"
    return f"“{site.question}”"


def open_saved(data: bytes, name: str, current_model):
    """A saved .rmtrace (the bytes of an upload), opened for the model it belongs to.

    The current model when the trace was made with its weights; else the shipped checkpoint the
    trace names; then services.open_trace checks and reads the file (a trace of other weights is
    refused naming the checkpoint it needs; damaged or crafted files get the TraceError saying
    what is wrong). Returns the Trace with its model attached."""
    model = current_model
    with tempfile.TemporaryDirectory(prefix="rmt-lens-compare-") as folder:
        path = Path(folder) / "upload.rmtrace"
        path.write_bytes(bytes(data))
        try:
            info = rmt_core.Trace.load(path).model_info  # which model it names (open_trace gives the messages)
        except rmt_core.TraceError:
            info = None
    if info is not None and current_model is not None:
        named = str(info.get("name") or "")
        if info.get("weights_hash") != current_model.weights_hash() and named in {
                c["name"] for c in services.shipped_checkpoints()}:
            model = services.load_model(named)
    return services.open_trace(bytes(data), model, name=name)


def second_trace():
    """The current second run (or None)."""
    return st.session_state.get(state.COMPARE_TRACE)


def set_second(trace, label: str) -> None:
    st.session_state[state.COMPARE_TRACE] = trace
    st.session_state[state.COMPARE_LABEL] = label
    st.session_state.pop(state.COMPARE_SWEEP, None)


def comparison(a, b):
    """rmt_core.compare(a, b), once per pair of traces."""
    key = (id(a), id(b))
    cached = st.session_state.get(state.COMPARE_RESULT)
    if cached is None or cached[0] != key:
        label = st.session_state.get(state.COMPARE_LABEL, "second run")
        cached = (key, rmt_core.compare(a, b, names=("this run", label)))
        st.session_state[state.COMPARE_RESULT] = cached
    return cached[1]


def sweep(target, source, segments: list[int], names: tuple[str, str]):
    """interventions.patch_sweep(target, source, segments) (every slot, or every layer of an associative
    memory, and all at once), kept until
    the second run changes; refused above MAX_SWEEP_CELLS cells (say fewer segments)."""
    cells = len(segments) * (len(interventions.patch_parts(target)) + 1)
    if cells > MAX_SWEEP_CELLS:
        raise rmt_core.ArgumentError(f"A sweep over {len(segments)} segments is {cells} patched runs; the page runs at "
                                     f"most {MAX_SWEEP_CELLS}: choose fewer segments (or use `rmt-lens patch`).")
    key = (id(target), id(source), tuple(segments))
    cached = st.session_state.get(state.COMPARE_SWEEP)
    if cached is None or cached[0] != key:
        cached = (key, interventions.patch_sweep(target, source, segments, names=names))
        st.session_state[state.COMPARE_SWEEP] = cached
    return cached[1]


def current_sweep():
    cached = st.session_state.get(state.COMPARE_SWEEP)
    return None if cached is None else cached[1]


def sweep_columns(target) -> list[str]:
    """The columns a sweep of `target` has: its memory's parts (slots M0.., or layers L0..), then "all"."""
    return interventions.patch_parts(target) + ["all"]


def sweep_pair(a, b, direction: int):
    """(target, source) of a sweep: direction 0 patches B's memory into A, 1 A's into B."""
    return (a, b) if direction == 0 else (b, a)
