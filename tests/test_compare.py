"""compare(trace_a, trace_b): alignment, memory distances, divergence, token-level refusal, files, figures."""
from __future__ import annotations

import json

import numpy as np
import pytest

import rmt_core
from rmt_core import ArgumentError, TraceError
from rmt_core.viz import comparison as cfig

from conftest import VOCAB, make_model, traced


@pytest.fixture(scope="module")
def model():
    return make_model("gpt2", num_mem_tokens=3, segment_size=6)


@pytest.fixture(scope="module")
def trace_a(model):
    return traced(model, 42)  # 7 segments of 6


@pytest.fixture(scope="module")
def trace_b(model):
    return traced(model, 42, changed=20)  # segment 3 (tokens 18..23) differs: one "fact"


@pytest.fixture(scope="module")
def ids(trace_a):
    return trace_a.token_ids


def test_a_trace_compared_with_itself_never_diverges(trace_a):
    c = rmt_core.compare(trace_a, trace_a)
    assert c.num_pairs == trace_a.num_segments and not c.unpaired_a and not c.unpaired_b
    assert np.allclose(c.cosine, 0, atol=1e-6) and np.allclose(c.l2, 0, atol=1e-5)
    assert c.diverge_at is None and "never diverge" in c.divergence_text
    assert np.all(c.loss_diff == 0) and np.all(c.mass_diff == 0)
    assert np.allclose(c.p_answer_a, c.p_answer_b) and np.all((c.p_answer_a >= 0) & (c.p_answer_a <= 1))
    assert c.token_level and c.lens_reason is None


def test_one_changed_token_diverges_at_its_segment(trace_a, trace_b):
    # a tiny random model's slots share a large common direction: its distances are small (the shipped
    # model's are ~0.5 for one changed word), so the threshold is set for it
    c = rmt_core.compare(trace_a, trace_b, threshold=1e-5)
    # segments before the change wrote identical memory; the change's segment and later ones differ
    assert np.allclose(c.cosine[:3], 0, atol=1e-6)
    assert c.diverge_at == 3 and "LEAVING segment 3 (pair 3)" in c.divergence_text
    # the definition is said with the number: the memory written by (leaving) the segment, and what entered it
    assert "memory that segment wrote (memory_out)" in c.divergence_text
    assert c.entering_at_diverge == pytest.approx(0, abs=1e-6) and "ENTERING it (memory_in) was still the same" \
        in c.divergence_text
    assert "LEAVING" in c.summary()["diverge_meaning"]
    assert np.all(c.cosine[3:].max(axis=1) > c.threshold)
    # the distances are those of the two memory_out arrays, computed independently here
    x = trace_a.segments[5].memory_out.astype(np.float64)[1]
    y = trace_b.segments[5].memory_out.astype(np.float64)[1]
    assert c.cosine[5, 1] == pytest.approx(1 - x @ y / np.linalg.norm(x) / np.linalg.norm(y), abs=1e-9)
    assert c.l2[5, 1] == pytest.approx(np.linalg.norm(x - y), rel=1e-9)
    assert c.loss_diff[:3] == pytest.approx(np.zeros(3)) and np.any(c.loss_diff[3:] != 0)
    # a threshold above every distance: no divergence (the rule is the threshold, not the index)
    assert rmt_core.compare(trace_a, trace_b, threshold=2.0).diverge_at is None


def test_answer_lens_is_the_lm_head_on_the_written_memory(trace_a):
    import torch

    from rmt_core.explain.compare import answer_lens
    model = trace_a.model
    hidden = torch.as_tensor(trace_a.segments[2].write_hidden[-1]).float()
    with torch.no_grad():
        probs = torch.softmax(model.backbone.get_output_embeddings()(hidden.to(model.dtype)).float(), -1)
    assert answer_lens(trace_a, 7)[2] == pytest.approx(float(probs[:, 7].max()), rel=1e-4)


def test_documents_of_different_lengths_align_from_the_start_or_the_end(model, ids, trace_a):
    short = rmt_core.trace(model, ids[12:])  # 5 segments: A's segments 2..6 hold the same tokens
    start = rmt_core.compare(trace_a, short)
    assert start.num_pairs == 5 and start.unpaired_a == [5, 6] and start.unpaired_b == []
    assert "A's segments 5..6 have no partner" in start.alignment_text
    end = rmt_core.compare(trace_a, short, align="end")
    assert end.segments_a.tolist() == [2, 3, 4, 5, 6] and end.segments_b.tolist() == [0, 1, 2, 3, 4]
    assert end.unpaired_a == [0, 1]


def test_other_tokenizer_refuses_token_level_but_keeps_segment_level(trace_a, ids):
    other = make_model("gpt2", seed=1, num_mem_tokens=3, segment_size=6)
    other.backbone.resize_token_embeddings(VOCAB + 3)  # another vocabulary
    trace_c = rmt_core.trace(other, ids)
    c = rmt_core.compare(trace_a, trace_c)
    assert not c.token_level and "vocabularies" in c.token_level_reason
    assert np.all(np.isnan(c.p_answer_b)) and "refused" in c.lens_reason
    assert c.cosine is not None and np.isfinite(c.loss_diff).all()  # segment level still offered


def test_other_memory_shape_gives_a_reason_not_a_number(trace_a, ids):
    wider = make_model("gpt2", num_mem_tokens=4, segment_size=6)
    c = rmt_core.compare(trace_a, rmt_core.trace(wider, ids))
    assert c.cosine is None and "different shapes" in c.memory_reason
    assert c.diverge_at is None and "not compared" in c.divergence_text
    assert "cosine_mean" not in c.to_rows()[0]


def test_without_models_the_answer_curve_says_why(trace_a, trace_b, tmp_path):
    bare_a = rmt_core.Trace.load(trace_a.save(tmp_path / "a.rmtrace"))
    c = rmt_core.compare(bare_a, trace_b, threshold=1e-5)
    assert np.all(np.isnan(c.p_answer_a)) and "no model attached" in c.lens_reason
    assert c.diverge_at == 3  # memory distances need no model


def test_saves_csv_and_json_with_provenance(trace_a, trace_b, tmp_path):
    c = rmt_core.compare(trace_a, trace_b, names=("fact", "changed"), threshold=1e-5)
    csv_text = c.save(tmp_path / "c.csv").read_text()
    assert csv_text.splitlines()[0].startswith("segment_a,segment_b,loss_a")
    assert len(csv_text.splitlines()) == 1 + c.num_pairs and "cosine_M2" in csv_text
    record = json.loads(c.save(tmp_path / "c.json").read_text())
    assert record["comparison"]["diverge_at"] == 3 and record["comparison"]["names"] == ["fact", "changed"]
    assert record["provenance"]["a"]["weights_hash"] == trace_a.model_info["weights_hash"]
    assert len(record["rows"]) == c.num_pairs
    with pytest.raises(ArgumentError, match=r"\.csv or \.json"):
        c.save(tmp_path / "c.txt")


def test_bad_arguments_are_argument_errors(trace_a):
    with pytest.raises(ArgumentError, match="align"):
        rmt_core.compare(trace_a, trace_a, align="middle")
    with pytest.raises(ArgumentError, match="threshold"):
        rmt_core.compare(trace_a, trace_a, threshold=-1)
    with pytest.raises(ArgumentError, match="must be a Trace"):
        rmt_core.compare(trace_a, "b.rmtrace")
    empty = rmt_core.Trace(None, np.zeros(0, np.int32), trace_a.model_info, trace_a.initial_memory, {})
    with pytest.raises(TraceError, match="no segments"):
        rmt_core.compare(trace_a, empty)


def test_figures_show_the_comparison(trace_a, trace_b):
    c = rmt_core.compare(trace_a, trace_b, threshold=1e-5)
    figs = cfig.comparison_figures(c)
    heat = figs["memory_distance"].data[0]
    assert np.allclose(np.asarray(heat.z), c.cosine.T) and list(heat.y) == ["M0", "M1", "M2"]
    curves = figs["loss_and_answer"]
    assert np.allclose(curves.data[0].y, c.loss_a) and np.allclose(curves.data[1].y, c.loss_b)
    mass = figs["block_mass"]
    assert np.allclose(mass.data[0].y, c.mass_a[:, 0])


# ---------------------------------------------------------------------- memory on vs memory reset
def _alone(model, trace, segment):
    """Segment `segment` of the trace's document run alone from the model's initial memory:
    (log-softmax (L, V), memory_out (m, d))."""
    import torch

    ids = torch.as_tensor(trace.segments[segment].token_ids, dtype=torch.long).unsqueeze(0)
    with torch.no_grad():
        out = model.run_segment(model.memory.initial_state(1), ids, segment_index=segment)
    return torch.log_softmax(out.logits[0].float(), -1).numpy(), out.memory_out[0].numpy()


def _predicted(logprobs_by_segment, trace):
    """(T,) log p of every token but the first from per-segment log-softmax rows (the row before each token)."""
    rows = np.concatenate(logprobs_by_segment)
    return rows[np.arange(trace.num_tokens - 1), trace.token_ids[1:]]


def test_the_reset_run_is_every_segment_run_alone_from_the_initial_memory(model, trace_a):
    from rmt_core.explain.compare import reset_run

    reset = reset_run(trace_a)
    assert not reset.carries_memory and trace_a.carries_memory and reset.settings["carry_memory"] is False
    alone = [_alone(model, reset, s) for s in range(reset.num_segments)]
    recorded = np.concatenate([s.token_logprob for s in reset.segments])[1:]
    np.testing.assert_allclose(recorded, _predicted([lp for lp, _ in alone], reset), atol=1e-5)
    for seg, (_, memory_out) in zip(reset.segments, alone):
        np.testing.assert_allclose(seg.memory_out, memory_out, atol=1e-6)
        assert np.array_equal(seg.memory_in, reset.initial_memory)  # every segment reads the initial memory
    replayed = reset.replay(4).logits[0].detach().float()  # the one re-run path starts from it too
    np.testing.assert_allclose(replayed.log_softmax(-1).numpy(), alone[4][0], atol=1e-5)
    # the engine's own no-memory baseline (forward with reset_memory=True) gives the same predictions
    import torch
    with torch.no_grad():
        logits = model.forward(torch.as_tensor(trace_a.token_ids, dtype=torch.long)[None], reset_memory=True).logits
    forward = torch.log_softmax(logits[0].float(), -1).numpy()
    np.testing.assert_allclose(recorded, forward[np.arange(reset.num_tokens - 1), reset.token_ids[1:]], atol=1e-5)
    # negative control: the run that carries memory is not the segments run alone (after segment 0)
    carried = np.concatenate([s.token_logprob for s in trace_a.segments])[1:]
    later = slice(trace_a.segments[1].start - 1, None)
    assert np.abs(carried[later] - recorded[later]).max() > 1e-2
    np.testing.assert_allclose(carried[:later.start], recorded[:later.start], atol=1e-6)  # segment 0: the same


def test_a_reset_trace_file_round_trips_with_every_memory_in_the_initial_memory(model, trace_a, tmp_path):
    reset = rmt_core.trace(model, trace_a.token_ids, carry_memory=False)
    loaded = rmt_core.Trace.load(reset.save(tmp_path / "reset.rmtrace"), model=model)
    assert not loaded.carries_memory
    for seg, original in zip(loaded.segments, reset.segments):
        assert np.array_equal(seg.memory_in, loaded.initial_memory)
        assert np.array_equal(seg.memory_out, original.memory_out)
    assert np.array_equal(loaded.memory_inputs(), np.broadcast_to(loaded.initial_memory, loaded.memory_inputs().shape))
    np.testing.assert_allclose(loaded.replay(3).logits.detach().numpy(), reset.replay(3).logits.detach().numpy())
    # an older file (no carry_memory in its settings) still loads, as a trace that carried memory
    old = rmt_core.trace(model, trace_a.token_ids)
    del old.settings["carry_memory"]
    older = rmt_core.Trace.load(old.save(tmp_path / "old.rmtrace"))
    assert older.carries_memory
    assert all(np.array_equal(s.memory_in, p.memory_out) for p, s in zip(older.segments, older.segments[1:]))
    # the flag decides every memory_in: a file whose flag is not true / false is refused, never guessed
    old.settings["carry_memory"] = "no"
    with pytest.raises(TraceError, match="carry_memory.*not true or false"):
        rmt_core.Trace.load(old.save(tmp_path / "bad.rmtrace"))


def test_memory_on_vs_reset_diverges_leaving_segment_1_and_says_what_entered(model, trace_a):
    from rmt_core.explain import series
    from rmt_core.explain.compare import reset_run

    reset = reset_run(trace_a)
    c = rmt_core.compare(trace_a, reset, names=("memory on", "memory reset"))
    assert np.allclose(c.cosine[0], 0, atol=1e-6)  # segment 0 reads the initial memory in both runs
    assert c.diverge_at == 1 and "LEAVING segment 1 (pair 1)" in c.divergence_text
    assert c.entering_at_diverge > c.threshold and "memory reset resets its memory before every segment" in \
        c.divergence_text
    assert c.carries_memory == (True, False) and c.summary()["carry_memory"] == [True, False]
    assert any("memory reset resets its memory" in note for note in c.notes)
    # churn (memory in -> out) of a reset run compares each memory_out with the initial memory
    churn = series.slot_churn(reset)
    x, y = reset.initial_memory[1].astype(np.float64), reset.segments[5].memory_out[1].astype(np.float64)
    assert churn[5, 1] == pytest.approx(1 - x @ y / np.linalg.norm(x) / np.linalg.norm(y), abs=1e-6)
    with pytest.raises(TraceError, match="already resets its memory"):
        reset_run(reset)
    with pytest.raises(ArgumentError, match="carry_memory must be True"):
        rmt_core.trace(model, trace_a.token_ids, carry_memory="no")


def test_through_memory_attribution_of_a_reset_run_gives_earlier_segments_no_credit(model, trace_a):
    from rmt_core.explain import attribution

    reset = rmt_core.trace(model, trace_a.token_ids, carry_memory=False)
    last = reset.num_segments - 1
    scores = np.asarray(attribution.through_memory(reset, last, 3, n_steps=4).scores)
    earlier = slice(0, reset.segments[last].start)
    assert np.all(scores[earlier] == 0) and np.abs(scores[earlier.stop:]).max() > 0
    carried = np.asarray(attribution.through_memory(trace_a, last, 3, n_steps=4).scores)
    assert np.abs(carried[earlier]).max() > 0  # negative control: carried memory gives earlier tokens credit
