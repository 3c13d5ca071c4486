"""The Compare page through AppTest: a second document, side by side, the patching sweep; saved traces."""
from __future__ import annotations

import numpy as np
import pytest

import rmt_core

pytest.importorskip("streamlit")
from streamlit.testing.v1 import AppTest  # noqa: E402

from app import comparing, state  # noqa: E402

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
