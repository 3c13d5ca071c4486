"""Attribution and interventions on a tiny random model: completeness, shapes, no side effects."""
from __future__ import annotations

import csv
import json

import rmt_core
import numpy as np
import pytest
import torch

from rmt_core import ArgumentError, TraceError
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


# ---------------------------------------------------------------------- the one verb: attribute
KIND_METHODS = [(kind, method) for kind in attribution.KINDS for method in attribution.METHODS]
WHERE = {"read": (3, 4), "write": (2, None), "through": (4, 2)}  # (segment, position) on the 40-token trace


def _attribute(trace, kind, **kwargs):
    segment, position = WHERE[kind]
    return attribution.attribute(trace, kind, segment, position, **kwargs)


@pytest.mark.parametrize("kind, method", KIND_METHODS)
def test_every_kind_takes_every_method(trace, kind, method):
    calls = []
    result = _attribute(trace, kind, method=method, n_steps=8, progress=lambda d, t: calls.append((d, t)))
    m, seg = trace.num_mem_tokens, trace.segments[WHERE[kind][0]]
    assert result.kind == kind and result.method == method and result.segment == WHERE[kind][0]
    assert result.axes == attribution.KINDS[kind].axes
    if kind == "read":
        assert result.scores.shape == (m,) and result.slots == ["R0", "R1", "R2"] and result.tokens == []
    elif kind == "write":
        assert result.scores.shape == (m, seg.num_tokens) and result.slots == ["W0", "W1", "W2"]
        assert result.tokens == seg.tokens and result.window == (seg.start, seg.end) and result.target_id is None
    else:
        assert result.scores.shape == (trace.num_tokens,) and result.window == (0, seg.end)
        assert np.isnan(result.scores[seg.end:]).all() and len(result.tokens) == seg.end
        assert result.tokens == [t for s in trace.segments[:5] for t in s.tokens]
    scored = result.scores if kind != "through" else result.scores[:seg.end]
    assert np.isfinite(scored).all() and np.abs(scored).sum() > 0
    if kind != "write":
        assert result.position == WHERE[kind][1] and result.target_id == int(seg.token_ids[WHERE[kind][1] + 1])
    assert (result.delta is not None) == (method == "ig") and (result.n_steps == 8) == (method == "ig")
    assert result.baseline == {"saliency": None, "input_x_gradient": "zeros"}.get(
        method, "initial" if kind == "read" else "zeros")
    # progress: one call per forward pass, ending exactly at its total
    assert calls and calls[-1][0] == calls[-1][1] == len(calls) and [d for d, _ in calls] == list(range(1, len(calls) + 1))


@pytest.mark.parametrize("kind", list(attribution.KINDS))
def test_integrated_gradients_are_complete_for_every_baseline(trace, kind):
    """sum(scores) = f(input) - f(baseline) - delta, and a baseline changes f(baseline) and the scores."""
    results = {}
    for baseline in attribution.KINDS[kind].baselines:
        result = results[baseline] = _attribute(trace, kind, baseline=baseline, n_steps=64)
        total = np.nansum(result.scores, axis=-1)
        change = np.asarray(result.f_input) - np.asarray(result.f_baseline)
        np.testing.assert_allclose(total, change + np.asarray(result.delta), atol=1e-4)  # captum's delta, exactly
        np.testing.assert_allclose(total, change, atol=0.05 * np.abs(change).max() + 1e-5)  # small delta
        assert result.baseline == baseline
    first, second = results.values()
    np.testing.assert_array_equal(first.f_input, second.f_input)
    assert np.abs(np.asarray(first.f_baseline) - np.asarray(second.f_baseline)).max() > 1e-4
    assert np.nanmax(np.abs(first.scores - second.scores)) > 1e-4


def test_ablation_replaces_one_slot_by_the_baseline(trace):
    """ablation score of slot k = f(memory) - f(memory with slot k set to the baseline), checked by hand."""
    model, seg = trace.model, trace.segments[3]
    ids = torch.as_tensor(seg.token_ids).unsqueeze(0)
    target = int(seg.token_ids[5])

    def f(memory):
        with torch.no_grad():
            logits = model.run_segment(memory, ids, write=False, segment_index=3).logits
        return float(torch.log_softmax(logits[0, 4].float(), -1)[target])

    memory = torch.as_tensor(seg.memory_in).unsqueeze(0)
    for baseline, base in (("initial", model.initial_memory.detach().unsqueeze(0)), ("zeros", torch.zeros_like(memory))):
        result = attribution.attribute(trace, "read", 3, 4, method="ablation", baseline=baseline)
        for k in range(trace.num_mem_tokens):
            ablated = memory.clone()
            ablated[:, k] = base[:, k]
            assert result.scores[k] == pytest.approx(f(memory) - f(ablated), abs=1e-5)
        assert result.f_baseline == pytest.approx(f(base), abs=1e-5)


def test_mean_baseline_is_the_mean_embedding(trace):
    result = attribution.attribute(trace, "through", 1, 3, method="ablation", baseline="mean")
    model, window = trace.model, trace.segments[:2]
    mean = model.backbone.get_input_embeddings().weight.detach().mean(0)
    memory = model.initial_memory.unsqueeze(0)
    with torch.no_grad():
        for i, seg in enumerate(window):
            embeds = mean.expand(1, seg.num_tokens, -1)
            out = model.run_segment(memory, torch.as_tensor(seg.token_ids).unsqueeze(0), segment_index=i,
                                    inputs_embeds=embeds, write=i == 0)
            memory = out.memory_out if out.memory_out is not None else memory
    expected = float(torch.log_softmax(out.logits[0, 3].float(), -1)[int(window[1].token_ids[4])])
    assert result.f_baseline == pytest.approx(expected, abs=1e-5)


@pytest.mark.parametrize("kind", list(attribution.KINDS))
def test_the_former_functions_are_the_verb(trace, kind):
    segment, position = WHERE[kind]
    old = {"read": lambda: attribution.read_slots(trace, segment, position, method="saliency"),
           "write": lambda: attribution.write_slots(trace, segment, n_steps=4),
           "through": lambda: attribution.through_memory(trace, segment, position, n_steps=4, max_segments=2)}[kind]()
    new = attribution.attribute(trace, kind, segment, position, n_steps=4,
                                **{"read": {"method": "saliency"}, "write": {}, "through": {"max_segments": 2}}[kind])
    for name in ("scores", "delta", "f_input", "f_baseline"):
        np.testing.assert_array_equal(getattr(old, name), getattr(new, name))
    assert (old.kind, old.method, old.baseline, old.note, old.window) == (new.kind, new.method, new.baseline,
                                                                          new.note, new.window)


def test_read_scores_are_captums_integrated_gradients(trace):
    """The verb computes exactly captum's IntegratedGradients on the read memory (the former read_slots)."""
    from captum.attr import IntegratedGradients

    model, seg = trace.model, trace.segments[3]
    ids, target = torch.as_tensor(seg.token_ids).unsqueeze(0), int(seg.token_ids[5])

    def forward(memory):
        out = model.run_segment(memory, ids.expand(memory.shape[0], -1), write=False, segment_index=3)
        return torch.log_softmax(out.logits[:, 4].float(), dim=-1)[:, target]

    with torch.enable_grad():
        attr, delta = IntegratedGradients(forward).attribute(
            torch.as_tensor(seg.memory_in).unsqueeze(0), baselines=model.initial_memory.detach().unsqueeze(0),
            n_steps=32, internal_batch_size=16, return_convergence_delta=True)
    result = attribution.attribute(trace, "read", 3, 4)
    np.testing.assert_array_equal(result.scores, attr[0].float().sum(-1).detach().numpy())
    assert result.delta == float(delta)


@pytest.mark.parametrize("kind", list(attribution.KINDS))
def test_rows_and_files_round_trip(trace, kind, tmp_path):
    result = _attribute(trace, kind, n_steps=4)
    rows = result.to_rows()
    columns = {"read": ["slot", "score", "share_of_abs"],
               "write": ["slot", "position", "document_position", "token", "score"],
               "through": ["document_position", "segment", "position", "token", "score"]}[kind]
    assert all(list(row) == columns for row in rows)
    scored = result.scores if kind != "through" else result.scores[slice(*result.window)]
    assert len(rows) == scored.size and [r["score"] for r in rows] == scored.ravel().tolist()
    if kind == "write":
        assert rows[7] == {"slot": "W1", "position": 1, "document_position": result.window[0] + 1,
                           "token": result.tokens[1], "score": float(result.scores[1, 1])}
    if kind == "through":
        seg = trace.segments[2]
        row = rows[seg.start + 1]
        assert (row["segment"], row["position"], row["token"]) == (2, 1, seg.tokens[1])
    top = result.to_rows(top=2)
    assert top[0]["rank"] == 1 and abs(top[0]["score"]) >= abs(top[1]["score"])
    assert len(top) == (2 * trace.num_mem_tokens if kind == "write" else 2)
    assert abs(top[0]["score"]) == (np.abs(scored[0]) if kind == "write" else np.abs(scored)).max()

    with open(result.save(tmp_path / "scores.csv"), newline="", encoding="utf-8") as fh:
        read_back = list(csv.DictReader(fh))
    assert [list(r) for r in read_back[:1]] == [columns] and len(read_back) == len(rows)
    assert [float(r["score"]) for r in read_back] == [r["score"] for r in rows]  # full precision
    assert [r.get("token") for r in read_back] == [r.get("token") for r in rows]
    record = json.loads(result.save(tmp_path / "sub" / "scores.json", provenance={"checkpoint": "tiny"})
                        .read_text(encoding="utf-8"))
    assert record["rows"] == rows and record["provenance"] == {"checkpoint": "tiny"}
    assert record["attribution"]["kind"] == kind and record["attribution"]["method"] == "ig"
    assert record["attribution"]["n_steps"] == 4 and record["attribution"]["axes"] == list(result.axes)
    assert record["attribution"]["delta"] == pytest.approx(np.asarray(result.delta).tolist())


def test_attribution_figure_for_every_kind(trace):
    from rmt_core.viz import figures

    read = figures.attribution_figure(_attribute(trace, "read", method="saliency"))
    assert list(read.data[0].x) == ["R0", "R1", "R2"] and read.layout.title.text.startswith("Read-slot attribution")
    write = figures.attribution_figure(_attribute(trace, "write", method="saliency"))
    assert np.asarray(write.data[0].z).shape == (3, 6) and list(write.data[0].y) == ["W0", "W1", "W2"]
    through = _attribute(trace, "through", method="saliency")
    fig = figures.attribution_figure(through, "mine")
    assert len(fig.data[0].x) == 30 and fig.layout.title.text == "mine"
    assert [a.text for a in fig.layout.annotations] == [f"§{s}" for s in range(5)]


@pytest.mark.parametrize("call, message", [
    (lambda t: attribution.attribute(t, "reed", 1, 2), r"kind must be one of 'read', 'write', 'through', got 'reed'\. "
                                                        r"Did you mean 'read'\?"),
    (lambda t: attribution.attribute(t, "read", 1, 2, method="gradient"), r"method must be one of 'ig', 'saliency', "
                                                                          r"'input_x_gradient', 'ablation'"),
    (lambda t: attribution.attribute(t, "read", 1, 2, baseline="zero"), r"baseline must be one of 'initial', 'zeros',"
                                                                        r" got 'zero'\. Did you mean 'zeros'\?"),
    (lambda t: attribution.attribute(t, "write", 1, baseline="initial"), r"got 'initial'\. 'initial' is a baseline of "
                                                                         r"kind 'read'; kind 'write' compares token"),
    (lambda t: attribution.attribute(t, "through", 1, 2, method="saliency", baseline="zeros"),
     r"method 'saliency' uses no baseline .* use method 'ig' or 'ablation'"),
    (lambda t: attribution.attribute(t, "read", 1, 2, method="input_x_gradient", baseline="initial"),
     r"compares with zero inputs by construction .* Use baseline 'zeros', or method 'ig' or 'ablation'"),
    (lambda t: attribution.attribute(t, "read", 1), r"kind 'read' needs position"),
    (lambda t: attribution.attribute(t, "write", 1, 2), r"kind 'write' takes no position"),
    (lambda t: attribution.attribute(t, "write", 1, target=3), r"kind 'write' takes no target"),
    (lambda t: attribution.attribute(t, "read", 1, 2, max_segments=2), r"max_segments is for kind 'through' only"),
    (lambda t: attribution.attribute(t, "through", 1, 2, max_segments=-1), r"max_segments must be >= 0"),
    (lambda t: attribution.attribute(t, "write", 1, n_steps=0), r"n_steps must be >= 1"),
])
def test_bad_requests_name_the_problem(trace, call, message):
    with pytest.raises(ArgumentError, match=message):
        call(trace)


def test_bad_rows_and_paths_name_the_problem(trace, tmp_path):
    result = _attribute(trace, "read", method="saliency")
    with pytest.raises(ArgumentError, match=r"path must end in \.csv or \.json, got '.*scores\.txt'"):
        result.save(tmp_path / "scores.txt")
    with pytest.raises(ArgumentError, match="provenance is written to .json files only"):
        result.save(tmp_path / "scores.csv", provenance={"checkpoint": "tiny"})
    with pytest.raises(ArgumentError, match=r"top must be >= 1 \(an integer\), got 0"):
        result.to_rows(top=0)
    assert not list(tmp_path.iterdir())


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


def test_small_scores_are_labelled_with_digits_not_si_prefixes():
    """Issue 28 item 9: saliency gradients of ~2e-7 read "200n" on plotly's default ticks (SI
    prefixes read as units). Colour bars, bar axes and hovers use d3's ".3~g" / ".4~g" instead."""
    import numpy as np

    from rmt_core.viz import figures

    tiny = np.array([[2e-7, -1e-7, 5e-8], [0.0, 1e-7, -2e-7]])
    heat = figures.slot_token_heatmap(tiny, ["a", "b", "c"], "saliency", value_name="attribution", signed=True)
    assert heat.data[0].colorbar.tickformat == ".3~g" and ":.4~g}" in heat.data[0].hovertemplate
    bar = figures.slot_bar(tiny[0], "saliency")
    assert bar.layout.yaxis.tickformat == ".3~g" and ":.4~g}" in bar.data[0].hovertemplate
    norms = figures.slot_segment_heatmap(tiny, "norms", "norm")
    assert norms.data[0].colorbar.tickformat == ".3~g"
