"""The first screen: the document, the model's answer, Ask, and the per-segment summary."""
from __future__ import annotations

import streamlit as st

from rmt_core import QuestionError
from rmt_core.viz import figures
from rmt_core.explain import answers as rmt_answers
from rmt_core.explain import attribution

from app import services, sidebar, state
from app.views.common import document_view, literal, require_trace, show_figure

SEGMENT_PAGES = [("Timeline", "screens/timeline.py"), ("Attention", "screens/attention.py"),
                 ("Memory", "screens/memory.py"), ("Attribution", "screens/attribution.py")]


def render() -> None:
    st.header("What the memory did on this document")
    trace = require_trace()
    # Only a model the sidebar could load (a local folder may still lack its settings).
    model = sidebar.current_model() if st.session_state.get("current_model_name") else None
    if trace is None:
        if model is not None:
            _ask_box(model)
        return
    meta = trace.meta
    cols = st.columns(4)
    cols[0].metric("Tokens", f"{trace.num_tokens:,}")
    cols[1].metric("Segments", trace.num_segments)
    cols[2].metric("Memory slots" if trace.memory_type == "tokens" else f"Memory tokens ({trace.memory_type})",
                   trace.num_mem_tokens)
    cols[3].metric("Mean loss (nats/token)", f"{trace.mean_loss():.3f}",
                   help="Token-weighted: −log p summed over every predicted token, divided by their count "
                        "(the number the CLI, the report and the model card use).")
    warning = services.reading_warning(trace, trace.model)
    if warning:
        st.warning(warning, icon=":material/translate:")
    answer = st.session_state.get(state.ANSWER)
    if answer is not None and answer.trace is trace:
        _answer_panel(trace, answer)
    if model is not None:
        _ask_box(model)
    if not trace.complete:
        st.warning(f"Partial trace: {trace.num_segments} segments were done before the run was cancelled.")
    name, asked = str(meta.get("document", "")), sidebar.traced_question(trace)  # the question as traced
    if asked:
        name = f"{name} “{asked}”" if name.endswith("+ question") else f"{name} · question “{asked}”"
    st.caption(f"{literal(name)} · colour = surprise (−log p of each token); §n marks the start of segment n.")
    segment = sidebar.selected_segment(trace)
    opened = st.session_state.get(state.OPENED_AT)
    if opened is not None and opened[0] is trace and opened[1] == segment and trace.num_segments > 1:
        # why the pages opened here, until another segment is chosen
        st.caption(literal(opened[2]))
    document_view(trace, segment, key="overview_doc", marked_chars=[tuple(s) for s in meta.get("fact_spans", [])])
    show_figure(figures.segment_curves(trace, selected=segment), key="overview_curves")


def _answer_panel(trace, answer: rmt_answers.AskResult) -> None:
    site = answer.site
    top = answer.predictions
    others = ", ".join(f"“{literal(p.text)}” {p.probability:.2f}" for p in top[1:])
    question = f"“{literal(site.question)}”" if site.question else "the question"
    line = (f"**Question at the end:** {question} — the model answers **“{literal(top[0].text)}”** "
            f"(p = {top[0].probability:.2f}; then {others}).")
    if site.expected is not None:
        verdict = "✓ correct" if answer.correct else "✗ wrong"
        line += f" The document's answer is **“{literal(site.expected)}”** — {verdict}."
    verdict_line = None
    if answer.verdict is not None:  # no answer in the document: checked against its own fact sentences
        mark = {True: "✓ Right.", False: "✗ Wrong.", None: "?"}[answer.correct]  # the text says "Cannot tell"
        verdict_line = f"**{mark}** {literal(answer.verdict)}"
    if answer.candidates and answer.attributed is not None and answer.attributed.token_id != top[0].token_id:
        best = answer.candidates[0]
        line += (f" “{literal(top[0].text)}” is not one of the answers it was trained on; the most likely of "
                 f"those is **“{literal(best.text)}”** (p = {best.probability:.3f}).")
    with st.container(border=True):
        st.markdown(line)
        if verdict_line is not None:
            st.markdown(verdict_line)
        for warning in answer.warnings:  # the answer's limits, right under it
            st.warning(literal(warning.text), icon=":material/report:")
        _carrier_line(trace, answer)
        claim = answer.carrier
        if claim is not None and claim.segment is not None:  # only a clear carrier gets buttons
            cols = st.columns(len(SEGMENT_PAGES) + 1)
            cols[0].button(f"Select segment {claim.segment}", key="answer_select",
                           on_click=sidebar.request_segment, args=(claim.segment,))
            for col, (title, page) in zip(cols[1:], SEGMENT_PAGES):
                if col.button(f"Open it on {title}", key=f"answer_open_{title}",
                              on_click=sidebar.request_segment, args=(claim.segment,)):
                    st.switch_page(page)
        if answer.note:
            st.caption(literal(answer.note))


def _carrier_line(trace, answer: rmt_answers.AskResult) -> None:
    """"Memory carried it from": only a clear carrier (AskResult.carrier: a positive credit of at least
    answers.MIN_CARRIER_SHARE of the answer's total attribution, under no guess / no-credit warning);
    otherwise, plainly, that no earlier segment carries a clear credit and why."""
    claim = answer.carrier
    if claim is None:
        return
    first, last = answer.scored
    window = (f"segments {first}..{last} scored" + ("" if first == 0 else
              f"; segments 0..{first - 1} not scored, the window stops short of the document's start"))
    fact = ""
    if answer.fact_segment is not None and answer.fact_segment != claim.segment:
        credit = answer.segment_scores[answer.fact_segment]
        fact = (f" The fact's segment ({answer.fact_segment}) gets {credit:+.3g}." if credit == credit
                else f" The fact's segment ({answer.fact_segment}) was not scored.")
    if claim.segment is None:
        st.markdown(f"**No earlier segment carries a clear credit**: {literal(claim.reason)} ({window}).{fact}")
        return
    what = f"log p(“{literal(answer.attributed.text)}”)"
    share = "" if claim.share is None else f" ({100 * claim.share:.0f}% of the answer's total attribution)"
    st.markdown(f"Memory carried it from **segment {claim.segment}**: through-memory attribution "
                f"(integrated gradients through the recurrence) credits that segment's tokens with {claim.credit:+.3g} "
                f"of {what}{share}, the largest positive credit of any scored earlier segment ({window}).{fact} "
                "The fact, when the document has one, is underlined.")


def _refuse(question: str, why: str) -> None:
    """A question that is not asked: the Ask box goes back to the question the shown trace asks (as the
    answer and the document's caption do), and the message says what was refused and what is shown."""
    traced = sidebar.traced_question(st.session_state.get(state.TRACE))
    st.session_state[state.ASK_QUESTION] = traced or ""
    typed = question.strip()
    refused = "Not asked: " if not typed or f"“{typed}”" in why else f"Not asked: “{typed}”. "
    shown = (f" The answer and the document shown are still those of “{traced}”." if traced else
             " The document shown asks no question." if st.session_state.get(state.TRACE) is not None else "")
    st.session_state[state.ASK_ERROR] = refused + why + shown


def _ask(model) -> None:
    """Form callback: check the question; the run starts in render (after the sidebar)."""
    st.session_state[state.ASK_ERROR] = None
    document = st.session_state.get(state.DOCUMENT)
    question = st.session_state.get(state.ASK_QUESTION, "")
    if sidebar.running():
        _refuse(question, "A run is in progress: wait for it or Cancel it, then ask.")
        return
    if document is None:
        _refuse(question, "Run a document first (sidebar → Run), then ask about it.")
        return
    try:
        text = rmt_answers.prompt_text(model, document.ask_body(), question)
    except QuestionError as exc:
        _refuse(question, services.app_message(exc))
        return
    asked = services.Document(document.name if "+ question" in document.name else f"{document.name} + question",
                              text, fact_spans=document.fact_spans, body=document.ask_body())
    st.session_state["ask_pending"] = (asked, text[len(asked.body):].strip(), _window())


def _window() -> int | None:
    """The attribution window chosen in the Ask box (None: to the start, up to the cost bound)."""
    value = st.session_state.get(state.ASK_WINDOW)
    return None if value is None else int(value)


def _names(items) -> str:
    return ", ".join(items[:-1]) + " or " + items[-1] if len(items) > 1 else "".join(items)


def _window_control(document) -> None:
    """How far back the answer's through-memory attribution unrolls, with the estimated time."""
    bound = attribution.MAX_THROUGH_SEGMENTS
    c1, c2 = st.columns([1, 3], vertical_alignment="bottom")
    window = c1.number_input("Attribution window (earlier segments)", min_value=0, max_value=100_000, value=bound,
                             step=8, key=state.ASK_WINDOW,
                             help="How many segments before the question's the through-memory attribution unrolls. "
                                  f"Default {bound}: back to the document's start up to that cost bound; a larger "
                                  "window than the document is clamped to its start.")
    trace = st.session_state.get(state.TRACE)
    site = rmt_answers.answer_site(trace) if trace is not None and trace.model is not None else None
    if site is None or site.segment == 0:
        c2.caption(f"Cost grows with the window (default {bound} segments back; about 0.17 s per segment for the "
                   "default model on one CPU thread).")
        return
    n, seconds = attribution.estimate_through_seconds(trace, site.segment, int(window))
    reach = "reaches the document's start" if n >= site.segment else f"stops {site.segment - n} segments short of the start"
    c2.caption(f"On this document: {n} earlier segments unrolled ({reach}), estimated {seconds:.0f} s.")


def _pick(entity: str, spec) -> None:
    st.session_state[state.ASK_QUESTION] = spec.question(entity)


def _ask_box(model) -> None:
    spec = rmt_answers.question_spec(model)
    with st.expander("Ask the model about this document", expanded=True, icon=":material/help:"):
        op = rmt_answers.operating_range_of(model) if spec.answerable else None
        if op is not None:
            st.caption(f"{op.sentence()} Ask about {_names(spec.entities)}, one person per document "
                       "(the model card's own tables).")
        else:
            st.caption(literal(spec.description))
        if not spec.answerable:
            return
        document = st.session_state.get(state.DOCUMENT)
        if document is not None and rmt_answers.split_question(document.text)[1] is not None:
            st.caption("This document already ends with a question (its answer is shown above); "
                       "a question asked here replaces it.")
        with st.form("ask_form", border=False, enter_to_submit=True):
            c1, c2 = st.columns([4, 1], vertical_alignment="bottom")
            c1.text_input("Question", key=state.ASK_QUESTION, placeholder=spec.examples[0],
                          help="Appended to the document as “Question: …\\nAnswer:”, the format the model was "
                               "trained on; the model's next word is its answer.")
            c2.form_submit_button("Ask", type="primary", on_click=_ask, args=(model,), disabled=sidebar.running(),
                                  width="stretch")
        picks = st.columns(len(spec.entities))
        for col, entity in zip(picks, spec.entities):
            col.button(spec.question(entity), key=f"ask_pick_{entity}", on_click=_pick, args=(entity, spec),
                       type="tertiary")
        _window_control(document)
        if st.session_state.get(state.ASK_ERROR):
            st.error(literal(st.session_state[state.ASK_ERROR]))
        pending = st.session_state.pop("ask_pending", None)
        if pending is not None and not sidebar.running():
            sidebar.start(model, pending[0], question=pending[1], window=pending[2])
            st.rerun()
