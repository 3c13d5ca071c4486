"""What a trace records of an associative memory (ARMT), how it is stored, where a read comes
from, its interventions, figures and pages (issue 25, parts 4 and 5).

The model: a tiny random GPT-2 with the associative memory and W_mv randomised (zero-initialised,
every read would be exactly 0 and nothing tested). The direct computations below follow the
reference's equations in numpy (shared/docs/armt-reference.md), not the engine's code.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import rmt_core
from rmt_core.explain import associative
from rmt_core.tracing.associative import effective_rank

from conftest import VOCAB, make_model

M, S = 3, 6  # memory tokens, segment size
TOKENS = 40  # 7 segments, the last short


def armt(seed: int = 0, reset_positions: bool = False, **options) -> rmt_core.RMTModel:
    """options: memory_options over d_mem 8; reset_positions: positions restart in every segment."""
    model = make_model("gpt2", num_mem_tokens=M, segment_size=S, memory="associative", reset_positions=reset_positions,
                       memory_options={"d_mem": 8, **options}, seed=seed)
    return randomised(model, seed)


def randomised(model: rmt_core.RMTModel, seed: int = 0) -> rmt_core.RMTModel:
    """`model` (an associative one) with W_mv and W_mb's bias drawn at random, so that reads are not 0."""
    torch.manual_seed(seed + 1)
    with torch.no_grad():
        for layer in model.associative_layers:
            layer.W_mv.weight.normal_(0, 0.3)
            layer.W_mb.bias.normal_(0, 1)
    return model


@pytest.fixture(scope="module")
def model():
    return armt()


@pytest.fixture(scope="module")
def ids():
    return np.random.default_rng(3).integers(0, VOCAB, TOKENS)


@pytest.fixture(scope="module")
def trace(model, ids):
    return rmt_core.trace(model, ids)


@pytest.fixture(scope="module")
def forward(model, ids):
    """model(ids) with every block's input (before the memory's read) and output captured per segment."""
    inputs, outputs = {}, {}
    handles = []
    for y, block in enumerate(model.memory.blocks):
        # registered before the memory type's own hooks (those are added per segment): sees h before the read
        handles.append(block.register_forward_pre_hook(
            lambda mod, args, kwargs, y=y: inputs.setdefault(y, []).append(
                (args[0] if args else kwargs["hidden_states"])[0].double().numpy().copy()), with_kwargs=True))
        handles.append(block.register_forward_hook(
            lambda mod, args, out, y=y: outputs.setdefault(y, []).append(
                (out[0] if isinstance(out, tuple) else out)[0].double().numpy().copy())))
    try:
        with torch.no_grad():
            out = model(torch.as_tensor(ids).unsqueeze(0))
    finally:
        for h in handles:
            h.remove()
    return out, inputs, outputs


def dpfp(x: np.ndarray, nu: int = 3) -> np.ndarray:
    u = np.concatenate([np.maximum(x, 0), np.maximum(-x, 0)], axis=-1)
    return np.concatenate([u * np.roll(u, j, axis=-1) for j in range(1, nu + 1)], axis=-1)


def weights(model, y: int) -> dict[str, np.ndarray]:
    layer = model.associative_layers[y]
    return {name: getattr(layer, name).weight.detach().double().numpy() for name in ("W_mq", "W_mk", "W_mv", "W_mb")} | {
        "b": layer.W_mb.bias.detach().double().numpy()}


# ---------------------------------------------------------------------- observables vs a direct computation
def test_the_recorded_rows_equal_a_direct_computation(model, trace, forward):
    """state_norm, z_norm, write_strength, novelty, overwrite, read_ratio and read_denominator of every
    segment and layer, against the reference's equations in numpy on what model(ids) computed."""
    out, inputs, outputs = forward
    L = [seg.num_tokens for seg in trace.segments]
    for y in range(model.num_layers):
        w = weights(model, y)
        A, z = np.zeros((48, 32)), np.zeros(48)
        for s, seg in enumerate(trace.segments):
            h, o = inputs[y][s], outputs[y][s][-M:]  # block input of the row (before the read), memory outputs
            if s > 0:  # the read of every token
                phi_q = dpfp(h[:L[s]] @ w["W_mq"].T)
                den = phi_q @ z + 1e-5
                read = (phi_q @ A) / den[:, None]
                ratio = np.linalg.norm(read, axis=1) / np.linalg.norm(h[:L[s]], axis=1)
                assert np.allclose(seg.read_ratio[y], ratio, rtol=1e-4, atol=1e-6), (s, y)
                assert np.allclose(seg.read_denominator[y], den, rtol=1e-4), (s, y)
            else:
                assert not seg.read_ratio[y].any() and np.isnan(seg.read_denominator[y]).all()
            phi_k = dpfp(o @ w["W_mk"].T)
            v = o @ w["W_mv"].T
            beta = 1 / (1 + np.exp(-(o @ w["W_mb"].T + w["b"])))  # (M, 1)
            if s == 0:
                vbar, gamma = np.zeros_like(v), np.ones(M)
            else:
                den_k = phi_k @ z + 1e-5
                vbar = (phi_k @ A) / den_k[:, None]
                gamma = np.clip(1 - den_k / ((phi_k ** 2).sum(1) + 1e-5), 0, 1)
            assert np.allclose(seg.write_strength[y], beta[:, 0], rtol=1e-5), (s, y)
            assert np.allclose(seg.novelty[y], gamma, atol=1e-5), (s, y)
            assert np.allclose(seg.overwrite[y], np.linalg.norm(v - vbar, axis=1), rtol=1e-4), (s, y)
            A = A + phi_k.T @ (beta * (v - vbar))
            z = z + (gamma[:, None] * phi_k).sum(0)
            assert np.isclose(seg.state_norm[y], np.linalg.norm(A), rtol=1e-5), (s, y)
            assert np.isclose(seg.z_norm[y], np.linalg.norm(z), rtol=1e-5), (s, y)
            engine = out.memory_out[s]["A"][0, y, 0].double().numpy()
            assert np.allclose(engine, A, rtol=1e-4, atol=1e-5)  # the numpy oracle is the engine's state
    later = np.stack([s.novelty for s in trace.segments[1:]])
    assert 0 <= later.min() < 0.99 and later.max() <= 1  # the correction acts after the first segment


def test_the_effective_rank_is_roy_and_vetterli_s(trace, model, forward):
    out = forward[0]
    sigma = lambda a: np.linalg.svd(a, compute_uv=False)  # noqa: E731
    def erank(a):
        s = sigma(a)
        p = s / s.sum()
        p = p[p > 0]
        return float(np.exp(-(p * np.log(p)).sum()))

    assert float(effective_rank(torch.tensor([[1.0, 1.0, 1.0, 0.0]]))) == pytest.approx(3.0)  # equal values: their count
    assert float(effective_rank(torch.tensor([[5.0, 0.0]]))) == pytest.approx(1.0)
    assert float(effective_rank(torch.zeros(1, 4))) == 0.0  # A = 0
    ranks = trace.state_ranks()  # computed on first use from the rebuilt states
    assert ranks.shape == (trace.num_segments, model.num_layers)
    for s in (0, 3, trace.num_segments - 1):
        for y in range(model.num_layers):
            assert ranks[s, y] == pytest.approx(erank(out.memory_out[s]["A"][0, y, 0].double().numpy()), rel=1e-4)
    assert 1 <= ranks[0, 0] <= M and ranks[-1, 0] > ranks[0, 0]  # one segment's write has rank <= M


# ---------------------------------------------------------------------- storage
def test_the_trace_stores_writes_not_states_and_replays_exactly(model, trace, forward, tmp_path):
    from safetensors import safe_open

    out = forward[0]
    path = trace.save(tmp_path / "armt.rmtrace")
    with safe_open(str(path), framework="numpy") as handle:
        layout = json.loads(handle.metadata()["rmt_lens_trace"])["arrays"]
    assert layout["state_write.memory_outputs"]["shape"] == [trace.num_segments, model.num_layers, M, model.hidden_size]
    assert not [name for name in layout if name.startswith("state_out.")]  # no A per segment
    loaded = rmt_core.Trace.load(path, model=model)
    assert loaded.stores_writes and loaded.memory_type == "associative"
    for name in ("state_norm", "write_strength", "novelty", "overwrite", "read_ratio", "read_denominator"):
        for a, b in zip(trace.segments, loaded.segments):
            assert np.array_equal(getattr(a, name), getattr(b, name), equal_nan=True), name
    worst_logits = worst_state = 0.0
    for seg in loaded.segments:  # replay from segment s gets the exact state: the original run's logits
        with torch.no_grad():
            replay = loaded.replay(seg.index)
        worst_logits = max(worst_logits, float((replay.logits[0] - out.logits[0, seg.start:seg.end]).abs().max()))
        state = loaded.state_out(seg.index)
        worst_state = max(worst_state, max(float(np.abs(state[n] - out.memory_out[seg.index][n][0].numpy()).max())
                                           for n in ("A", "z")))
    assert worst_logits <= 1e-5 and worst_state <= 1e-6, (worst_logits, worst_state)
    # negative control: a changed stored write gives other states and logits (the check above can fail)
    loaded.segments[2].state_write = {"memory_outputs": loaded.segments[2].state_write["memory_outputs"] * 1.5}
    loaded._rebuilder = None
    with torch.no_grad():
        changed = loaded.replay(4).logits[0]
    assert float((changed - out.logits[0, trace.segments[4].start:trace.segments[4].end]).abs().max()) > 1e-3


def test_a_trace_with_memory_reset_rebuilds_each_state_from_the_initial_one(model, ids, tmp_path):
    with torch.no_grad():
        reset = model(torch.as_tensor(ids).unsqueeze(0), reset_memory=True)
    trace = rmt_core.Trace.load(rmt_core.trace(model, ids, carry_memory=False).save(tmp_path / "reset.rmtrace"),
                                model=model)
    assert not trace.carries_memory and all(not s.read_ratio.any() for s in trace.segments)  # nothing is ever read
    for seg in trace.segments:
        with torch.no_grad():
            logits = trace.replay(seg.index).logits[0]
        assert float((logits - reset.logits[0, seg.start:seg.end]).abs().max()) <= 1e-5
        assert np.allclose(trace.state_out(seg.index)["A"], reset.memory_out[seg.index]["A"][0].numpy(), atol=1e-6)
        assert not trace.state_in(seg.index)["A"].any()


def test_the_effective_rank_is_stored_once_computed(model, ids, tmp_path):
    trace = rmt_core.trace(model, ids)
    first = rmt_core.Trace.load(trace.save(tmp_path / "a.rmtrace"))  # not computed: not stored, and no model needed
    assert all(s.state_rank is None for s in first.segments)
    with pytest.raises(rmt_core.TraceError, match="no model attached"):
        first.state_ranks()
    ranks = trace.state_ranks()
    again = rmt_core.Trace.load(trace.save(tmp_path / "b.rmtrace"))
    assert np.array_equal(again.state_ranks(), ranks)  # read from the file, no model attached


def test_a_file_whose_writes_do_not_fit_the_model_is_refused(trace, tmp_path):
    from rmt_core.tracing import trace_file

    trace.save(tmp_path / "ok.rmtrace")
    bad = rmt_core.Trace.load(tmp_path / "ok.rmtrace")
    bad.settings = {**bad.settings, "state_write": {"memory_outputs": ["layer", "hidden"]}}
    bad.save(tmp_path / "bad.rmtrace")
    with pytest.raises(rmt_core.TraceError, match="state_write.memory_outputs has shape"):
        trace_file.read_trace_file(tmp_path / "bad.rmtrace")


def test_memory_vector_views_say_they_do_not_apply(trace):
    from rmt_core.viz import figures

    with pytest.raises(rmt_core.TraceError, match="matrix per layer"):
        trace.memory_states()
    names = set(figures.standard_figure_builders(trace, 2))
    assert {"state_size", "write_strength", "novelty", "timeline"} <= names
    assert not names & {"memory_pca_2d", "slot_norms", "slot_churn", "write_to_tokens_attention"}


# ---------------------------------------------------------------------- retrieved from
@pytest.mark.parametrize("options", [{}, {"n_heads": 2, "gating": True}, {"use_denom": False}])
def test_a_read_is_the_sum_of_the_earlier_writes(options, ids):
    model = armt(seed=5, **options)
    trace = rmt_core.trace(model, ids)
    for segment, position, layer in ((3, 4, 0), (6, 1, 1), (1, 0, -1)):
        result = associative.retrieved_from(trace, segment, position, layer)
        assert result.contributions.shape == (segment, M, model.hidden_size)
        size = np.linalg.norm(result.read)
        assert size > 1e-5  # something is read (W_mv randomised)
        error = np.abs(result.contributions.sum(axis=(0, 1)) - result.read).max()
        assert error <= 1e-5 and error <= 1e-4 * size, (error, size)
        assert result.shares.sum() == pytest.approx(1.0, abs=1e-6)
        ratio = trace.segments[segment].read_ratio[layer, position]
        assert np.linalg.norm(result.read) / result.hidden_norm == pytest.approx(ratio, rel=1e-4)
        # negative control: without the most recent segment's writes the sum is not the read
        assert np.abs(result.contributions[:-1].sum(axis=(0, 1)) - result.read).max() > 1e-2 * size
    nothing = associative.retrieved_from(trace, 0, 2, 0)
    assert not nothing.reads and nothing.top is None and nothing.contributions.shape == (0, M, model.hidden_size)


def test_a_layers_walk_is_kept_and_any_order_gives_the_same_split(model, ids):
    late_first = rmt_core.trace(model, ids)
    fresh = rmt_core.trace(model, ids)
    late = associative.retrieved_from(late_first, 6, 1, 1)  # walks layer 1's writes of segments 0..5
    assert associative.layer_writes(late_first, 1).walked == 6
    assert associative.layer_writes(late_first, 0).walked == 0  # another layer: not walked
    early = associative.retrieved_from(late_first, 3, 4, 1)  # from the kept walk
    early_fresh = associative.retrieved_from(fresh, 3, 4, 1)  # walks segments 0..2 only
    assert associative.layer_writes(fresh, 1).walked == 3
    assert np.array_equal(early.contributions, early_fresh.contributions)
    assert np.array_equal(associative.retrieved_from(fresh, 6, 1, 1).contributions, late.contributions)  # walk extended
    assert associative.layer_writes(fresh, 1).walked == 6


def test_retrieval_seconds_counts_the_state_rebuild_and_the_walk_still_to_do(tmp_path):
    model = make_model("gpt2", num_mem_tokens=M, segment_size=S, memory="associative", memory_options={"d_mem": 8},
                       reset_positions=True)  # positions restart in every segment: a 20-segment document
    recorded = rmt_core.trace(model, np.random.default_rng(4).integers(0, VOCAB, 20 * S))
    last, kept = recorded.num_segments - 1, recorded.rebuilder().every()  # a state kept every 16 segments
    loaded = rmt_core.Trace.load(recorded.save(tmp_path / "walk.rmtrace"), model=model)
    assert recorded.rebuilder().steps_to(last) == last - kept  # the recorder kept the states as they ran
    assert loaded.rebuilder().steps_to(last) == last  # a trace read from a file keeps none yet
    before = associative.retrieval_seconds(loaded, last, 0)
    assert before > associative.retrieval_seconds(recorded, last, 0)
    associative.retrieved_from(loaded, last, 0, 0)
    assert loaded.rebuilder().steps_to(last) == last - kept
    after, other_layer = associative.retrieval_seconds(loaded, last, 0), associative.retrieval_seconds(loaded, last, 1)
    assert after < other_layer < before  # layer 0's walk is done, layer 1's is still to do; the state was rebuilt


def test_states_and_the_last_layers_walk_are_prepared_in_the_background(tmp_path):
    from app import services

    model = make_model("gpt2", num_mem_tokens=M, segment_size=S, memory="associative", memory_options={"d_mem": 8},
                       reset_positions=True)
    recorded = rmt_core.trace(model, np.random.default_rng(5).integers(0, VOCAB, 40 * S))  # 40 segments
    loaded = rmt_core.Trace.load(recorded.save(tmp_path / "prepare.rmtrace"), model=model)
    every, last = loaded.rebuilder().every(), loaded.num_segments - 1
    assert loaded.rebuilder().steps_to(last) == last
    services.prepare_in_background(loaded).join(timeout=120)
    assert max(loaded.rebuilder().steps_to(s) for s in range(loaded.num_segments)) == every - 1
    assert associative.layer_writes(loaded, 1).walked == loaded.num_segments  # the last layer's, for the Memory page
    assert associative.layer_writes(loaded, 0).walked == 0
    for name, array in loaded.state_in(last).items():  # the same states as the run kept
        np.testing.assert_array_equal(array, recorded.state_in(last)[name])
    assert services.prepare_in_background(recorded) is not None  # a recorded trace: only what is missing
    assert services.prepare_in_background(rmt_core.trace(model, np.arange(12) % VOCAB, carry_memory=False)) is None


def test_retrieved_from_checks_its_arguments(trace, model):
    with pytest.raises(rmt_core.TraceError):
        associative.retrieved_from(trace, 99, 0)
    with pytest.raises(rmt_core.TraceError, match="position"):
        associative.retrieved_from(trace, 2, S)
    tokens_trace = rmt_core.trace(make_model("gpt2", num_mem_tokens=2, segment_size=6), np.arange(12) % VOCAB)
    with pytest.raises(rmt_core.TraceError, match="associative"):
        associative.retrieved_from(tokens_trace, 1, 0)


# ---------------------------------------------------------------------- interventions
def test_reset_one_layer_and_skip_one_write(trace, model):
    from rmt_core import interventions

    reset = interventions.reset_layer(trace, 3, 1)
    assert np.array_equal(reset.loss_after[:3], reset.loss_before[:3]) and not np.allclose(reset.loss_after[3:],
                                                                                           reset.loss_before[3:])
    skipped = interventions.skip_write(trace, 2)
    assert np.array_equal(skipped.loss_after[:3], skipped.loss_before[:3])
    assert not np.allclose(skipped.loss_after[3:], skipped.loss_before[3:])
    # skipping segment 2's write = running segment 3 on from the state that entered segment 2
    with torch.no_grad():
        direct = trace.replay(3, trace.state_in(2)).logits[0]
        from rmt_core.tracing.recorder import segment_loss, token_logprobs

        carry = torch.log_softmax(trace.replay(2).logits[0, -1].float(), dim=-1)
        _, token_lp = token_logprobs(direct, torch.as_tensor(trace.segments[3].token_ids, dtype=torch.long), carry)
    assert skipped.loss_after[3] == pytest.approx(segment_loss(token_lp), abs=1e-6)
    with pytest.raises(rmt_core.TraceError, match="last"):
        interventions.skip_write(trace, trace.num_segments - 1)
    with pytest.raises(rmt_core.TraceError, match="layer"):
        interventions.reset_layer(trace, 2, 9)
    same = interventions.intervene(trace, 3, lambda arrays: arrays, "identity")  # negative control
    assert np.allclose(same.loss_after, same.loss_before)


# ---------------------------------------------------------------------- figures and captions
def test_figures_and_captions_draw_the_recorded_numbers(trace):
    from rmt_core.explain import series
    from rmt_core.viz import captions, figures

    norms = series.associative_rows(trace, "state_norms")
    fig = figures.state_size_figure(norms, series.associative_rows(trace, "z_norms"), trace.state_ranks(), rank_bound=48)
    assert len(fig.data) == 3 * 2  # three panels, a line per layer
    assert np.allclose(fig.data[1].y, norms[:, 1])
    curves = figures.segment_curves(trace)
    titles = [a.text for a in curves.layout.annotations]
    assert any("‖A‖_F" in t for t in titles) and any("write strength" in t for t in titles)
    assert not any("churn" in t for t in titles)
    result = associative.retrieved_from(trace, 5, 2, 0)
    bars = figures.retrieved_from_figure(result)
    assert len(bars.data) == M and np.allclose(np.sum([b.y for b in bars.data], axis=0), result.segment_shares)
    # many earlier segments (here: more than 2): a bar per segment's total and the memory tokens as a heatmap,
    # the same numbers
    long = figures.retrieved_from_figure(result, max_stacked=2)
    assert [d.type for d in long.data] == ["bar", "heatmap"]
    assert np.allclose(long.data[0].y, result.segment_shares) and np.array_equal(np.asarray(long.data[1].z), result.shares.T)
    assert list(long.data[1].y) == [f"P{i}" for i in range(M)] and long.layout.title.text == bars.layout.title.text
    text = captions.retrieved_from_caption(result.shares, 5, 2, trace.segments[5].tokens[2], 0, 0.1)
    assert f"retrieves most from segment {result.top_segment}" in text
    assert "reads nothing" in captions.retrieved_from_caption(np.zeros((0, M)), 0, 1, "x", 0)
    assert "stays new" not in captions.write_caption(series.associative_rows(trace, "write_strength")[:, 0],
                                                     series.associative_rows(trace, "novelty")[:, 0], 0)
    assert "keys stay new" in captions.write_caption(np.full((4, M), 0.5), np.ones((4, M)), 0)
    rows = figures.standard_figures(trace, 3)
    assert set(rows) >= {"state_size", "write_strength", "novelty", "attention"}


def test_the_segment_table_has_the_associative_columns(trace):
    from rmt_core.viz import export

    rows = export.segment_table(trace)
    assert list(rows[0]) == list(export.segment_columns(trace))
    assert rows[3]["state_norm"] == pytest.approx(float(np.mean(trace.segments[3].state_norm)))


# ---------------------------------------------------------------------- the app
def _app(trace):
    pytest.importorskip("streamlit")
    from streamlit.testing.v1 import AppTest

    from app import state

    at = AppTest.from_file("../app/main.py", default_timeout=240)
    at.session_state[state.TRACE] = trace  # a trace is there: the app does not run its demo
    at.run()
    return at


def _titles(at) -> list[str]:
    return [json.loads(c.proto.spec)["layout"].get("title", {}).get("text", "") for c in at.get("plotly_chart")]


def test_the_memory_page_shows_the_associative_charts(trace):
    from app import state

    at = _app(trace)
    at.switch_page("screens/memory.py").run()
    assert not at.exception, [e.value for e in at.exception]
    titles = _titles(at)
    assert "State size per layer over the segments" in titles
    assert "Write strength β" in titles and any(t.startswith("Novelty γ") for t in titles)
    assert any(t.startswith("Retrieved from: token") for t in titles), titles
    assert not any(t.startswith("Memory trajectory") for t in titles)  # no slot charts
    assert any("has no memory slots" in c.value for c in at.caption)
    open_button = next(b for b in at.button if b.key == "mem_armt_open")
    target = int(open_button.label.split()[2])
    open_button.click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.session_state[state.SEGMENT] == target
    at.slider(key=state.SEGMENT).set_value(0).run()  # segment 0 reads nothing: said so
    assert any("Segment 0 reads nothing" in i.value for i in at.info)


def test_after_one_split_the_next_token_is_split_with_the_page(model, ids, monkeypatch):
    from app import state
    from app.views import memory

    probe = rmt_core.trace(model, ids)  # the same run, to learn the page's estimate before and after a first split
    last = probe.num_segments - 1
    before = associative.retrieval_seconds(probe, last, -1)
    associative.retrieved_from(probe, last, 0, -1)
    after = associative.retrieval_seconds(probe, last, -1)
    monkeypatch.setattr(memory, "AUTO_SPLIT_SECONDS", (before + after) / 2)  # a first split waits for a click
    at = _app(rmt_core.trace(model, ids))
    at.slider(key=state.SEGMENT).set_value(last).run()
    at.switch_page("screens/memory.py").run()
    assert not any(t.startswith("Retrieved from: token") for t in _titles(at))
    next(b for b in at.button if b.key == "mem_armt_split").click().run()
    assert any(t.startswith("Retrieved from: token") for t in _titles(at))
    at.selectbox(key=f"mem_armt_pos_{last}").set_value(1).run()  # another token: no click needed now
    assert not at.exception, [e.value for e in at.exception]
    assert any(t.startswith("Retrieved from: token 1 ") for t in _titles(at)), _titles(at)
    assert not any(b.key == "mem_armt_split" for b in at.button)


def test_a_long_split_waits_for_a_click(model, ids, monkeypatch):
    from app.views import memory

    trace = rmt_core.trace(model, ids)  # its effective ranks not computed yet
    monkeypatch.setattr(memory, "AUTO_SPLIT_SECONDS", 0.0)  # as if the trace were long (50k tokens: about 0.6 s)
    monkeypatch.setattr(memory, "AUTO_RANK_SECONDS", 0.0)
    at = _app(trace)
    at.switch_page("screens/memory.py").run()
    assert not any(t.startswith("Retrieved from: token") for t in _titles(at))
    assert not any("effective rank" in json.dumps(json.loads(c.proto.spec)) for c in at.get("plotly_chart"))
    next(b for b in at.button if b.key == "mem_armt_split").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert any(t.startswith("Retrieved from: token") for t in _titles(at))
    next(b for b in at.button if b.key == "mem_armt_rank").click().run()
    assert any("effective rank" in json.dumps(json.loads(c.proto.spec)) for c in at.get("plotly_chart"))


def test_the_timeline_attention_and_interventions_pages_for_an_associative_memory(trace):
    at = _app(trace)
    at.switch_page("screens/timeline.py").run()
    assert not at.exception, [e.value for e in at.exception]
    assert "Per-segment summary" in _titles(at)
    at.switch_page("screens/attention.py").run()
    assert not at.exception, [e.value for e in at.exception]
    heatmap = next(json.loads(c.proto.spec) for c in at.get("plotly_chart"))
    assert heatmap["layout"]["yaxis"]["ticktext"][-1].endswith(f"P{M - 1}")
    at.switch_page("screens/attribution.py").run()
    at.session_state["attr_tab"] = "Interventions"
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert any(s.label == "Layer" for s in at.selectbox)  # reset one layer's state
    assert not any(s.label == "Slot" for s in at.selectbox)  # no slot interventions
    assert any("reset layer" in json.dumps(json.loads(c.proto.spec)["data"]) for c in at.get("plotly_chart"))


def test_the_other_pages_run_or_say_why_not_for_an_associative_memory(trace):
    at = _app(trace)
    for page in ("screens/overview.py", "screens/export.py", "screens/compare.py"):
        at.switch_page(page).run()
        assert not at.exception, (page, [e.value for e in at.exception])
        assert not at.error, (page, [e.value for e in at.error])
    assert any("Choose a second run above" in i.value for i in at.info)  # the Compare page runs for it (issue 25)
