"""The Compare page through AppTest: a second document, side by side, the patching sweep; saved traces."""
from __future__ import annotations

import numpy as np
import pytest

import rmt_core

pytest.importorskip("streamlit")
from streamlit.testing.v1 import AppTest  # noqa: E402

from app import comparing, state  # noqa: E402
from app.views.common import literal  # noqa: E402

TIMEOUT = 240


@pytest.fixture(scope="module")
def compared():
    at = AppTest.from_file("../app/main.py", default_timeout=TIMEOUT)
    at.run()
    at.switch_page("screens/compare.py").run()
    trace = at.session_state[state.TRACE]
    answer = trace.meta.get("answer") or "garden"
    text = trace.text
    other_place = "kitchen" if "kitchen" not in text else "garden"
    area = next(t for t in at.text_area if t.key.startswith("cmp_text_"))
    area.set_value(text.replace(answer.strip(), other_place)).run()
    next(b for b in at.button if b.key == "cmp_run_text").click().run()
    return at


def test_a_second_document_is_compared_side_by_side(compared):
    at = compared
    assert not at.exception, [e.value for e in at.exception]
    c = at.session_state[state.COMPARE_RESULT][1]
    assert c.num_pairs == at.session_state[state.TRACE].num_segments
    assert c.diverge_at is not None  # one fact changed: the memories diverge where it is written
    assert np.allclose(c.cosine[:c.diverge_at], 0, atol=1e-6)
    assert len(at.get("plotly_chart")) >= 3  # distance, curves, mass
    assert any("diverge" in w.value for w in at.warning)


def test_the_patching_sweep_runs_from_the_page(compared):
    at = compared
    next(b for b in at.button if b.key == "cmp_sweep").click().run()
    assert not at.exception, [e.value for e in at.exception]
    sweep = at.session_state[state.COMPARE_SWEEP][1]
    assert sweep.p_source_answer.shape == (len(sweep.segments), at.session_state[state.TRACE].num_mem_tokens + 1)


def test_a_saved_trace_of_another_model_is_refused_by_name(tmp_path):
    from conftest import make_model

    tiny = make_model("gpt2")
    path = rmt_core.trace(tiny, np.arange(20) % 50).save(tmp_path / "t.rmtrace")
    with pytest.raises(rmt_core.TraceError, match="This trace was made with 'unsaved model'"):
        comparing.open_saved(path.read_bytes(), "t.rmtrace", rmt_core.load(rmt_core.DEFAULT_CHECKPOINT))
    with pytest.raises(rmt_core.TraceError, match="empty"):
        comparing.open_saved(b"", "e.rmtrace", tiny)
    with pytest.raises(rmt_core.TraceError, match="junk.rmtrace"):
        comparing.open_saved(b"not a trace file at all", "junk.rmtrace", tiny)
    assert comparing.open_saved(path.read_bytes(), "t.rmtrace", tiny).model is tiny


def test_both_attention_maps_of_a_segment_pair(compared):
    at = compared
    at.session_state["cmp_tab"] = "Attention, both runs"
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    before = len(at.get("plotly_chart"))
    at.select_slider(key="cmp_pair").set_value(1).run()
    assert not at.exception and len(at.get("plotly_chart")) == before
    assert {"cmp_att_a", "cmp_att_b"} <= _chart_keys(at)


def _chart_keys(at) -> set[str]:
    return {str(getattr(c, "key", "") or "") for c in at.get("plotly_chart")}


def test_attribution_interventions_offer_one_slot_reset_and_patch(compared):
    at = compared
    at.switch_page("screens/attribution.py").run()
    at.session_state["attr_tab"] = "Interventions"
    at.run()
    kind = at.selectbox(key="int_slot_kind")
    assert kind.options == ["reset one slot", "patch one slot from the compared run"]
    for choice in ("reset one slot", "patch one slot from the compared run"):
        at.selectbox(key="int_slot_kind").set_value(choice).run()
        assert not at.exception, [e.value for e in at.exception]
        at.selectbox(key="int_slot").set_value(1).run()
        assert not at.exception, [e.value for e in at.exception]
        assert sum("before:" in m.value for m in at.markdown) == 2  # the whole-memory and the one-slot results


# ---------------------------------------------------------------------- which question each run answers
def _on_compare(at):
    at.switch_page("screens/compare.py").run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def _question_box(at):
    return next(t for t in at.text_input if t.key == f"cmp_question_{id(at.session_state[state.TRACE])}")


def test_the_second_document_is_asked_this_runs_question_and_the_page_says_so(compared):
    from rmt_core.explain.answers import split_asked

    at = _on_compare(compared)
    trace, other = at.session_state[state.TRACE], at.session_state[state.COMPARE_TRACE]
    body, question, _ = split_asked(trace.text)
    assert question and _question_box(at).value == question  # the box starts with this run's question
    area = next(t for t in at.text_area if t.key.startswith("cmp_text_"))
    assert "Question:" not in area.value and body.startswith(area.value[:200])  # the document without it
    assert any(f"will be asked “{literal(question)}”, the same question" in c.value for c in at.caption)
    assert other.text.endswith(f"\nQuestion: {question}\nAnswer:")  # asked explicitly, in the training format
    line = next(m.value for m in at.markdown if m.value.startswith("Question answered"))
    assert line.count(f"“{literal(question)}”") == 2  # both runs' questions on screen


def test_a_cleared_question_asks_the_second_document_none_and_says_so(compared):
    from rmt_core.explain.answers import split_asked

    at = _on_compare(compared)
    _question_box(at).set_value("").run()
    assert any("will be asked no question" in c.value for c in at.caption)
    next(b for b in at.button if b.key == "cmp_run_text").click().run()
    assert not at.exception, [e.value for e in at.exception]
    other = at.session_state[state.COMPARE_TRACE]
    assert split_asked(other.text)[1] is None
    line = next(m.value for m in at.markdown if m.value.startswith("Question answered"))
    assert "another document: no question" in line


def test_memory_reset_is_offered_as_the_second_run(compared):
    at = _on_compare(compared)
    at.radio(key="cmp_source").set_value("This document, memory reset").run()
    next(b for b in at.button if b.key == "cmp_run_reset").click().run()
    assert not at.exception, [e.value for e in at.exception]
    trace, other = at.session_state[state.TRACE], at.session_state[state.COMPARE_TRACE]
    assert not other.carries_memory and np.array_equal(other.token_ids, trace.token_ids)
    assert all(np.array_equal(s.memory_in, other.initial_memory) for s in other.segments)
    c = at.session_state[state.COMPARE_RESULT][1]
    assert np.allclose(c.cosine[0], 0, atol=1e-6) and c.diverge_at is not None and c.diverge_at >= 1
    warning = next(w.value for w in at.warning if "diverge" in w.value)
    assert f"LEAVING segment {c.diverge_at}" in warning and "resets its memory before every segment" in warning
    assert any("resets its memory to the initial state" in cap.value for cap in at.caption)


def test_after_asking_another_question_the_compare_page_asks_that_one(compared):
    from rmt_core.explain.answers import split_asked

    at = compared
    at.switch_page("screens/overview.py").run()
    asked = split_asked(at.session_state[state.TRACE].text)[1]
    other = "John" if "John" not in asked else "Sandra"
    at.text_input(key=state.ASK_QUESTION).input(other)
    next(b for b in at.button if b.label == "Ask").click().run()
    assert not at.exception, [e.value for e in at.exception]
    at = _on_compare(at)
    question = f"Where is {other}?"
    assert split_asked(at.session_state[state.TRACE].text)[1] == question
    assert _question_box(at).value == question
    at.radio(key="cmp_source").set_value("Another document").run()
    assert any(f"This run was asked “{literal(question)}”" in c.value for c in at.caption)
