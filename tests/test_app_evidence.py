"""The Overview says only what the data shows, tried as a new user would on their own document:
right / wrong against the document's own sentences, no carrier headline without a clear credit, the
Ask box, answer and caption agreeing after a refused question, the Export page's trace button drawn
once, and the pages opening where the answer's evidence is."""
from __future__ import annotations

import pytest

pytest.importorskip("streamlit")
from streamlit.testing.v1 import AppTest  # noqa: E402

from app import state  # noqa: E402
from app.views.common import literal  # noqa: E402
from document_builders import austen_story  # noqa: E402

TIMEOUT = 240
WRONG = "Sandra went to the garden. It rained all day and nobody went out. Mary went to the kitchen."


def _app() -> AppTest:
    at = AppTest.from_file("../app/main.py", default_timeout=TIMEOUT)
    at.run()
    return at


def _paste_and_run(at: AppTest, text: str) -> AppTest:
    at.radio(key=state.SOURCE).set_value("Paste text").run()
    at.text_area(key=state.PASTED).input(text)
    next(b for b in at.button if b.label == "Run").click().run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def _ask(at: AppTest, question: str) -> AppTest:
    at.text_input(key=state.ASK_QUESTION).input(question)
    next(b for b in at.button if b.label == "Ask").click().run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def _markdown(at: AppTest) -> list[str]:
    return [m.value for m in at.markdown]


def _captions(at: AppTest) -> list[str]:
    return [c.value for c in at.caption]


def test_a_wrong_answer_gets_its_verdict_from_the_documents_sentences():
    at = _ask(_paste_and_run(_app(), WRONG), "Where is Sandra?")
    answer = at.session_state[state.ANSWER]
    assert answer.answer == "kitchen"  # what the model answers on this text (measured)
    verdict = next(m for m in _markdown(at) if "last statement about Sandra" in m)
    assert verdict.startswith("**✗ Wrong.**")
    for part in ("“Sandra went to the garden.”", "“kitchen” is wrong", "comes from parsing the document's sentences"):
        assert literal(part) in verdict, verdict
    _ask(at, "Where is Daniel?")  # nobody says where Daniel is: it cannot tell, and says so
    cannot = next(m for m in _markdown(at) if "Cannot tell" in m)
    assert cannot.startswith("**?**") and literal("where Daniel is") in cannot
    assert not any("Wrong." in m or "Right." in m for m in _markdown(at))


def test_no_carrier_headline_for_a_guessed_name():
    """A name the document never mentions: before, "Memory carried it from segment 16 (+0.03)" was headlined."""
    at = _ask(_paste_and_run(_app(), austen_story(16)), "Where is Daniel?")
    answer = at.session_state[state.ANSWER]
    assert "name_absent" in {w.code for w in answer.warnings}
    assert answer.memory_segment is not None  # a largest positive credit exists, and is not the headline
    shown = _markdown(at)
    assert not any("Memory carried it from" in m for m in shown), shown
    line = next(m for m in shown if "No earlier segment carries a clear credit" in m)
    assert literal("the answer is a guess") in line
    assert not [b for b in at.button if b.label.startswith("Open it on")]  # nothing to open


def test_a_refused_question_leaves_the_box_the_answer_and_the_caption_agreeing():
    at = _ask(_paste_and_run(_app(), WRONG), "Sandra")
    trace = at.session_state[state.TRACE]
    assert at.text_input(key=state.ASK_QUESTION).value == "Where is Sandra?"  # the question as traced
    _ask(at, "Who wrote Persuasion?")
    assert at.session_state[state.TRACE] is trace  # not run
    error = next(e.value for e in at.error if "Not asked" in e.value)
    assert literal("“Who wrote Persuasion?” is not a question") in error
    assert literal("still those of “Where is Sandra?”") in error
    assert at.text_input(key=state.ASK_QUESTION).value == "Where is Sandra?"
    assert any(literal("Pasted text + question “Where is Sandra?”") in c for c in _captions(at))
    assert any(literal("“Where is Sandra?”") in m for m in _markdown(at) if "Question at the end" in m)
    _paste_and_run(at, "It rained all day and nobody went out.")  # a new document: no older question or refusal
    assert at.text_input(key=state.ASK_QUESTION).value == "" and not [e for e in at.error if "Not asked" in e.value]


def test_the_export_page_draws_the_trace_button_once():
    """A download button with a help tooltip is drawn twice in the page by Streamlit (a hidden copy for
    narrow screens, which a reader of the page lists too): the trace button has none, its hint is a caption."""
    at = _app()
    at.switch_page("screens/export.py").run()
    assert not at.exception
    traces = [b for b in at.get("download_button") if b.proto.label == "Trace file (.rmtrace)"]
    assert len(traces) == 1 and not traces[0].proto.help
    assert not [b.proto.label for b in at.get("download_button") if b.proto.help]
    assert any("Trace.load" in c for c in _captions(at))


def test_a_long_document_opens_where_the_answers_evidence_is():
    """About 9,000 tokens (more than one window of the document box), the fact in segment 4, the question at
    the end: the pages open at the fact's segment and say why (a document that asks nothing opens at the start:
    tests/test_app.py::test_long_documents_show_a_window_around_the_selected_segment)."""
    text = austen_story(260) + "\nQuestion: Where is Sandra?\nAnswer:"
    at = _paste_and_run(_app(), text)
    trace = at.session_state[state.TRACE]
    char = trace.text.index("Sandra went to the garden.")
    fact = next(s.index for s in trace.segments if s.char_spans[:, 1].max() > char)  # the segment holding it
    assert trace.num_tokens > 8_000 and fact < 10
    assert at.session_state[state.SEGMENT] == fact
    html = next(h.proto.body for h in at.get("html") if "rmt-doc" in h.proto.body)
    last = trace.num_segments - 1
    assert f">§{fact}<" in html and f">§{last}<" not in html
    why = next(c for c in _captions(at) if c.startswith(literal(f"Opened at segment {fact}")))
    assert literal("“Sandra went to the garden.”") in why
    at.number_input(key="overview_doc_jump").set_value(last).run()  # the user moves on: the reason goes
    assert not any(c.startswith("Opened at") for c in _captions(at))
