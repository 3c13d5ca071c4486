"""Memory patching across documents: patch_memory and patch_sweep (rmt_core.interventions)."""
from __future__ import annotations

import json

import numpy as np
import pytest

import rmt_core
from rmt_core import ArgumentError, TraceError
from rmt_core import interventions as iv
from rmt_core.viz.comparison import patching_heatmap

from conftest import make_model, traced
from test_compare import model, trace_a  # noqa: F401  (fixtures: the random model and its 7-segment document)


@pytest.fixture(scope="module")
def target(trace_a):
    return trace_a


@pytest.fixture(scope="module")
def source(model):
    return traced(model, 42, seed=1)


def test_patching_a_run_with_its_own_memory_changes_nothing(target):
    r = iv.patch_memory(target, 2, target)  # negative control: the memory it already had
    assert np.allclose(r.loss_after, r.loss_before, atol=1e-5)
    assert r.answer_after == r.answer_before and r.p_answer_after == pytest.approx(r.p_answer_before, rel=2e-3)  # stored top-k: float16
    assert r.p_source_answer_after == pytest.approx(r.p_source_answer_before, rel=1e-4)


def test_all_slots_from_the_source_make_the_target_continue_as_the_source(model, target, source):
    # the target's last segment run on the source's memory equals a run of the source's memory on those tokens
    last = target.num_segments - 1
    r = iv.patch_memory(target, last, source)
    assert np.allclose(r.loss_after[:last], r.loss_before[:last])  # earlier segments untouched
    import torch
    with torch.no_grad():
        out = model.run_segment(torch.as_tensor(source.segments[last].memory_in).unsqueeze(0),
                                torch.as_tensor(target.segments[last].token_ids, dtype=torch.long).unsqueeze(0),
                                segment_index=last)
    p = torch.softmax(out.logits[0, -1].float(), -1)
    assert r.p_answer_after == pytest.approx(float(p.max()), rel=1e-4)
    assert r.p_answer_after != pytest.approx(r.p_answer_before, rel=1e-3)  # it did change something


def test_one_slot_changes_less_than_all(target, source):
    one = iv.patch_memory(target, 1, source, slots=[0])
    every = iv.patch_memory(target, 1, source)
    assert one.slots == (0,) and every.slots == (0, 1, 2)
    assert 0 < np.abs(one.loss_change).sum() and np.abs(one.loss_change[:1]).sum() == 0
    assert "slot M0" in one.name and "all slots" in every.name


def test_out_of_range_and_bad_inputs_are_refused(target, source, model):
    with pytest.raises(ArgumentError, match="segment must be in 0..6"):
        iv.patch_memory(target, 7, source)
    with pytest.raises(ArgumentError, match="slot must be in 0..2"):
        iv.patch_memory(target, 1, source, slots=[3])
    with pytest.raises(ArgumentError, match="repeat"):
        iv.patch_memory(target, 1, source, slots=[1, 1])
    with pytest.raises(ArgumentError, match="at least one"):
        iv.patch_memory(target, 1, source, slots=[])
    short = rmt_core.trace(model, target.token_ids[:12])
    with pytest.raises(ArgumentError, match="of the source"):
        iv.patch_memory(target, 4, short)
    assert iv.patch_memory(target, 4, short, source_segment=1).source_segment == 1
    wider = rmt_core.trace(make_model("gpt2", num_mem_tokens=4, segment_size=6), target.token_ids)
    with pytest.raises(TraceError, match="another shape"):
        iv.patch_memory(target, 1, wider)
    with pytest.raises(ArgumentError, match="slot must be in 0..2"):
        iv.patch_sweep(target, source, segments=[1], slots=[5])
    with pytest.raises(ArgumentError, match="batch_size must be"):
        iv.patch_sweep(target, source, segments=[1], batch_size=0)


def test_sweep_cells_are_the_single_patches(target, source, tmp_path):
    sweep = iv.patch_sweep(target, source, segments=[1, 3], names=("t", "s"))
    assert sweep.columns == ["M0", "M1", "M2", "all"] and sweep.p_source_answer.shape == (2, 4)
    single = iv.patch_memory(target, 3, source, slots=[2])
    assert sweep.p_source_answer[1, 2] == pytest.approx(single.p_source_answer_after, rel=1e-6)
    assert sweep.loss_change[1, 2] == pytest.approx(single.loss_change[3:].mean(), rel=1e-6)
    assert sweep.cell(target, source, 1, 2).p_answer_after == pytest.approx(single.p_answer_after)
    rows = json.loads(sweep.save(tmp_path / "s.json", provenance={"x": 1}).read_text())["rows"]
    assert len(rows) == 8 and rows[6]["segment"] == 3 and rows[6]["patched"] == "M2"
    assert sweep.save(tmp_path / "s.csv").read_text().startswith("segment,patched,answer_after")
    fig = patching_heatmap(sweep)
    assert np.allclose(np.asarray(fig.data[0].z, dtype=float), sweep.p_source_answer_change.T)


def test_reset_slot_resets_one_slot_only(target):
    r = iv.reset_slot(target, 2, 1)
    assert "reset slot M1" in r.name and np.abs(r.loss_change[2:]).sum() > 0 and not r.loss_change[:2].any()
    with pytest.raises(ArgumentError, match="slot must be in 0..2"):
        iv.reset_slot(target, 2, 3)


@pytest.mark.parametrize("carry_memory", [True, False])
def test_the_batched_sweep_equals_one_cell_at_a_time(model, source, carry_memory):
    target = traced(model, 42, carry_memory=carry_memory)
    segments = [0, 2, 6]  # 0: no earlier segment predicts its first token; 6: the answer's segment
    one_by_one = iv.patch_sweep(target, source, segments, batched=False)
    for batch_size in (5, None):  # 5: 12 cells in batches of 5 and fewer (rows join as their segment comes)
        batched = iv.patch_sweep(target, source, segments, batch_size=batch_size)
        assert batched.columns == one_by_one.columns and batched.answer_after == one_by_one.answer_after
        for name in ("p_source_answer", "p_answer_after", "loss_change"):
            np.testing.assert_allclose(getattr(batched, name), getattr(one_by_one, name), rtol=1e-5, atol=1e-7)
        assert batched.target_answer == one_by_one.target_answer
        assert batched.p_source_answer_before == pytest.approx(one_by_one.p_source_answer_before)
    # a cell is a patched run that changed something (the sweep is not the unpatched run)
    assert np.abs(one_by_one.loss_change).max() > 1e-4


def test_memory_reset_target_is_patched_in_one_segment_only(model, source):
    reset = traced(model, 42, carry_memory=False)
    r = iv.patch_memory(reset, 2, source)
    assert np.abs(r.loss_change[2]) > 0 and not r.loss_change[3:].any() and not r.loss_change[:2].any()
    carried = iv.patch_memory(traced(model, 42), 2, source)  # negative control: carried memory goes on changing
    assert np.abs(carried.loss_change[3:]).max() > 0
