"""Attribution and interventions on a tiny random model: completeness, shapes, no side effects."""
from __future__ import annotations

import rmt_core
import numpy as np
import pytest
import torch

from rmt_core import TraceError
from rmt_core.explain import attribution, interventions

from conftest import VOCAB, make_model


@pytest.fixture(scope="module")
def trace():
    model = make_model("gpt2", num_mem_tokens=3, segment_size=6)
    return rmt_core.trace(model, np.random.default_rng(3).integers(0, VOCAB, 40))


def test_read_slots_integrated_gradients_is_complete(trace):
    result = attribution.read_slots(trace, segment=3, position=4, n_steps=32)
    assert result.scores.shape == (3,)
    change = result.f_input - result.f_baseline
    assert abs(result.scores.sum() - change) <= 0.05 * abs(change) + 1e-6
    assert abs(result.delta) <= 0.05 * abs(change) + 1e-6
    assert result.target_id == int(trace.segments[3].token_ids[5]) and result.method == "ig"


@pytest.mark.parametrize("method", ["saliency", "input_x_gradient"])
def test_other_read_methods(trace, method):
    result = attribution.read_slots(trace, 2, 1, method=method)
    assert result.scores.shape == (3,) and np.all(np.isfinite(result.scores)) and result.delta is None


def test_zero_baseline_and_explicit_target(trace):
    result = attribution.read_slots(trace, 2, 1, target=5, baseline="zeros")
    change = result.f_input - result.f_baseline
    assert result.target_id == 5 and abs(result.scores.sum() - change) <= 0.05 * abs(change) + 1e-6


def test_write_slots_are_complete_per_slot(trace):
    result = attribution.write_slots(trace, segment=2, n_steps=32)
    assert result.scores.shape == (3, 6)
    change = result.f_input - result.f_baseline
    np.testing.assert_allclose(result.scores.sum(axis=1), change, atol=0.05 * np.abs(change).max() + 1e-5)


def test_through_memory_scores_earlier_tokens_and_is_complete(trace):
    calls = []
    result = attribution.through_memory(trace, segment=4, position=2, n_steps=16, progress=lambda d, t: calls.append(d))
    scores = result.scores
    assert scores.shape == (40,)
    assert np.all(np.isfinite(scores[:30])) and np.all(np.isnan(scores[30:]))  # window ends at segment 4's end
    assert np.all(scores[27:30] == 0)  # tokens after the predicting position cannot matter
    assert np.abs(scores[:24]).sum() > 0  # earlier segments matter only through memory
    change = result.f_input - result.f_baseline
    assert abs(np.nansum(scores) - change) <= 0.05 * abs(change) + 1e-6
    assert calls and calls[-1] == max(calls)


def test_through_memory_caps_the_window(trace):
    result = attribution.through_memory(trace, segment=5, position=0, n_steps=8, max_segments=2)
    assert np.all(np.isnan(result.scores[:18])) and np.isfinite(result.scores[18:31]).all()
    assert "Only the last 2 segments" in result.note


def test_attribution_leaves_the_model_untouched(trace):
    model = trace.model
    before = {k: v.clone() for k, v in model.state_dict().items()}
    attribution.read_slots(trace, 1, 0)
    attribution.write_slots(trace, 1, n_steps=4)
    assert all(p.grad is None for p in model.parameters())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_bad_positions_get_clear_errors(trace):
    with pytest.raises(TraceError, match="position must be in"):
        attribution.read_slots(trace, 0, 99)
    with pytest.raises(TraceError, match="segment must be in"):
        attribution.read_slots(trace, 50, 0)
    with pytest.raises(TraceError, match="no next token"):
        attribution.read_slots(trace, trace.num_segments - 1, trace.segments[-1].num_tokens - 1)


def test_identity_intervention_changes_nothing(trace):
    result = interventions.intervene(trace, 2, lambda mem: mem, "identity")
    np.testing.assert_allclose(result.loss_after, result.loss_before, atol=1e-5)
    assert not result.answer_changed


def test_interventions_change_later_segments_only(trace):
    for result in (interventions.reset_memory(trace, 3), interventions.zero_memory(trace, 3),
                   interventions.shuffle_slots(trace, 3, seed=1)):
        np.testing.assert_allclose(result.loss_change[:3], 0, atol=1e-6)
        assert np.abs(result.loss_change[3:]).max() > 0


def test_replace_slot_from_another_trace(trace):
    other = rmt_core.trace(trace.model, np.random.default_rng(9).integers(0, VOCAB, 40))
    result = interventions.replace_slot(trace, 2, slot=1, other=other)
    assert np.abs(result.loss_change[2:]).max() > 0
    same = interventions.replace_slot(trace, 2, slot=1, other=trace)
    np.testing.assert_allclose(same.loss_change, 0, atol=1e-5)
