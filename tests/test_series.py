"""Per-trace series (computed once per trace) and figures that stay small for long traces."""
from __future__ import annotations

import rmt_core
import numpy as np
import pytest

from rmt_core.explain import analysis, series
from rmt_core.viz import figures

from conftest import VOCAB, make_model


@pytest.fixture(scope="module")
def model():
    return make_model("gpt2", num_mem_tokens=3, segment_size=6)


@pytest.fixture(scope="module")
def ids():
    return np.random.default_rng(2).integers(0, VOCAB, 40)


def test_series_equal_the_analysis_functions_and_are_computed_once(model, ids):
    trace = rmt_core.trace(model, ids)
    states = trace.memory_states()
    assert np.array_equal(series.memory_states(trace), states)
    assert series.memory_states(trace) is series.memory_states(trace)
    np.testing.assert_array_equal(series.slot_churn(trace), analysis.slot_churn(states))
    np.testing.assert_array_equal(series.slot_norms(trace), analysis.slot_norms(states))
    np.testing.assert_array_equal(series.pca(trace, 3).coords, analysis.pca_trajectory(states, 3).coords)
    assert series.pca(trace, 2) is series.pca(trace, 2)
    np.testing.assert_array_equal(series.block_mass(trace, "write->tokens"), analysis.block_mass(trace, "write->tokens"))


def test_lens_hover_matches_the_per_segment_logit_lens(model, ids):
    trace = rmt_core.trace(model, ids)
    hover = series.lens_hover(trace, None)  # the last layer only: the full lens is not filled in
    assert all(s.lens_ids is None for s in trace.segments)
    assert len(hover) == trace.num_segments + 1 and hover[0] == [""] * 3
    analysis.logit_lens(trace, 2)
    assert [s.lens_ids is not None for s in trace.segments] == [i == 2 for i in range(trace.num_segments)]
    for index in range(trace.num_segments):
        lens = analysis.logit_lens(trace, index)[-1]
        assert hover[index + 1] == ["decodes to: " + ", ".join(repr(t) for t in tokens[:3]) for tokens in lens]


def test_a_growing_trace_gets_fresh_series(model, ids):
    stream = rmt_core.trace_iter(model, ids)
    next(stream)
    first = series.memory_states(stream.trace)
    for _ in stream:
        pass
    assert first.shape[0] == 2 and series.memory_states(stream.trace).shape[0] == stream.trace.num_segments + 1


def test_memory_trajectory_draws_at_most_max_steps():
    rng = np.random.default_rng(0)
    projection = analysis.pca_trajectory(rng.normal(size=(3001, 4, 8)), 2)
    hover = [[f"step {s} slot {k}" for k in range(4)] for s in range(3001)]
    fig = figures.memory_trajectory(projection, hover, max_steps=600)
    assert len(fig.data) == 4 and all(len(t.x) <= 600 for t in fig.data)
    line = fig.data[1]
    assert line.x[0] == projection.coords[0, 1, 0] and line.x[-1] == projection.coords[-1, 1, 0]
    assert line.text[-1].startswith("slot 1, after segment 2999") and line.text[-1].endswith("step 3000 slot 1")
    assert "of 3001 steps drawn" in fig.layout.title.text
    small = figures.memory_trajectory(analysis.pca_trajectory(rng.normal(size=(9, 4, 8)), 2))
    assert len(small.data[0].x) == 9 and "drawn" not in small.layout.title.text
