"""The ARMT paper's analyses (issue 25 item 5): the memory-capacity estimate (App. B), the loss per
segment with full / reset / previous-segment memory (App. K), their figures and captions, the
guided tour of an associative memory, the Tour and Papers pages, and the CLI's figures.

Hand-computed cases use keys whose DPFP features are orthogonal one-hots (nu = 1, d_mem = 2), so
every read is worked out by hand below; the tiny models are random (conftest.make_model)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import rmt_core
from rmt_core.engine.memory.associative import AssociativeLayer, AssociativeOptions, delta_terms, features
from rmt_core.explain import capacity, memory_reach
from rmt_core.viz import captions, figures, paper

from conftest import VOCAB, make_model
from test_armt_trace import M, S, _titles  # the tiny ARMT's memory tokens and segment size
from test_armt_trace import _app as _app_with  # AppTest with a trace in the session (no demo run)
from test_armt_trace import armt as _armt


def armt(seed: int = 0, **options) -> rmt_core.RMTModel:
    """test_armt_trace's tiny random ARMT (W_mv randomised), positions restarting in every segment (a
    two-segment window traced alone then sits where it sits in the document)."""
    return _armt(seed, reset_positions=True, **options)


@pytest.fixture(scope="module")
def model():
    return armt()


@pytest.fixture(scope="module")
def trace(model):
    return rmt_core.trace(model, np.random.default_rng(3).integers(0, VOCAB, 40))  # 7 segments, the last short


# ---------------------------------------------------------------------- capacity (App. B)
def test_the_estimate_is_the_papers_formula():
    assert capacity.capacity_estimate(1.0, 10, 16) == pytest.approx(10.0)  # every pair held
    assert capacity.capacity_estimate(1 / 16, 10, 16) == pytest.approx(0.0)  # chance: nothing held
    assert capacity.capacity_estimate(0.5, 10, 16) == pytest.approx(10 * (8 - 1) / 15)
    # a memory that holds k pairs and guesses the rest is right (k + (n - k)/v)/n of the time: the inverse
    k, n, v = 7.0, 20, 4
    assert capacity.capacity_estimate((k + (n - k) / v) / n, n, v) == pytest.approx(k)
    for bad in ({"accuracy": 1.2, "pairs": 3, "n_values": 4}, {"accuracy": 0.5, "pairs": 3, "n_values": 1}):
        with pytest.raises(rmt_core.ArgumentError):
            capacity.capacity_estimate(**bad)


ONE_HOT_KEYS = [[1.0, 1.0], [-1.0, -1.0], [1.0, -1.0], [-1.0, 1.0]]  # DPFP nu = 1: phi = e1, e3, e0, e2


def test_orthogonal_keys_are_read_back_exactly_and_a_rewrite_replaces_the_value():
    """By hand: with one-hot features, write i adds phi_i v_i^T and z += phi_i (vbar = 0, gamma ~ 1), so
    key i reads v_i |phi_i|^2 / (|phi_i|^2 + 1e-5): 4 of 4 right. A fifth write of key 0 with value 1
    has vbar = v_0 / (1 + 1e-5) and gamma = 0, so key 0 then reads about v_1: pair 0 is lost and pair 4
    right, 4 of 5 (alpha 0.8, k = 5 (4 * 0.8 - 1) / 3)."""
    options = AssociativeOptions(d_mem=2, nu=1)
    keys = torch.tensor([ONE_HOT_KEYS + [ONE_HOT_KEYS[0]]], dtype=torch.float64)  # (1 trial, 5, 2)
    phi = features(keys, options)[0, 0]
    assert torch.equal(phi, torch.tensor([[0, 1, 0, 0], [0, 0, 0, 1], [1, 0, 0, 0], [0, 0, 1, 0], [0, 1, 0, 0.]],
                                         dtype=torch.float64))
    values = torch.eye(4, dtype=torch.float64).unsqueeze(0)  # v = 4 values in d = 4
    choice = torch.tensor([[0, 1, 2, 3, 1]])
    accuracy = capacity.retrieval_accuracy(keys, values, choice, options, [4, 5])
    assert accuracy.tolist() == [[1.0, 0.8]]
    assert capacity.capacity_estimate(accuracy[0], [4, 5], 4).tolist() == pytest.approx([4.0, 5 * 2.2 / 3])
    # negative control: without the rewrite (pair 4 written with pair 0's value) all 5 read back right
    same = capacity.retrieval_accuracy(keys, values, torch.tensor([[0, 1, 2, 3, 0]]), options, [5])
    assert same.tolist() == [[1.0]]
    # the state those five writes leave, by the rule capacity writes with (delta_terms, add_terms), by hand
    A, z = torch.zeros(1, 1, 4, 4, dtype=torch.float64), torch.zeros(1, 1, 4, dtype=torch.float64)
    for i, c in enumerate(choice[0].tolist()):
        terms = delta_terms(phi[None, None, i:i + 1], values[:, None, c:c + 1], torch.ones(1, 1, 1, 1), A, z,
                            torch.tensor([i > 0]), options)
        A, z = AssociativeLayer.add_terms(A, z, *terms)
    eye, eps = torch.eye(4, dtype=torch.float64), 1e-5
    hand = sum(torch.outer(phi[i], eye[c]) for i, c in enumerate([0, 1, 2, 3]))
    hand = hand + torch.outer(phi[0], eye[1] - eye[0] / (1 + eps))  # v - vbar for the rewrite
    gamma = [1.0] + [1 - eps / (1 + eps)] * 3 + [0.0]  # 1 at the first write; ~1 for a new key; 0 for a held one
    assert torch.allclose(A[0, 0], hand, atol=1e-12)
    assert torch.allclose(z[0, 0], sum(g * phi[i] for i, g in enumerate(gamma)), atol=1e-12)


def test_one_repeated_key_holds_one_pair():
    """Negative control: n writes of the same key keep only the last value, so the estimate is about 1."""
    options = AssociativeOptions(d_mem=8)
    g = torch.Generator().manual_seed(0)
    trials, n, v = 64, 32, 16
    keys = torch.randn(trials, 1, 8, generator=g, dtype=torch.float64).expand(-1, n, -1)
    values = torch.nn.functional.normalize(torch.randn(trials, v, 16, generator=g, dtype=torch.float64), dim=-1)
    choice = torch.randint(0, v, (trials, n), generator=g)
    alpha = capacity.retrieval_accuracy(keys, values, choice, options, [n]).mean()
    assert capacity.capacity_estimate(alpha, n, v) == pytest.approx(1.0, abs=1.0)
    # the same keys drawn apart hold far more
    spread = torch.randn(trials, n, 8, generator=g, dtype=torch.float64)
    alpha = capacity.retrieval_accuracy(spread, values, choice, options, [n]).mean()
    assert capacity.capacity_estimate(alpha, n, v) > 15


def test_the_capacity_grows_with_the_key_space_and_collapses_with_a_rank_one_key_map():
    small = capacity.memory_capacity(armt(d_mem=2), 0, keys="random", trials=4)
    large = capacity.memory_capacity(armt(d_mem=16), 0, keys="random", trials=4)
    assert large.capacity > 3 * small.capacity, (small.capacity, large.capacity)
    assert small.pairs[-1] >= 4 * small.feature_size  # the default range passes 4 x the features
    model = armt(d_mem=16)
    own = capacity.memory_capacity(model, 1, keys="model", trials=4)
    assert own.capacity > 10
    with torch.no_grad():  # every key on one line: phi(c k) = c^2 phi(k) for c > 0, so two directions in all
        w = model.associative_layers[1].W_mk.weight
        w.copy_(torch.outer(torch.randn(w.shape[0]), torch.randn(w.shape[1])))
    flat = capacity.memory_capacity(model, 1, keys="model", trials=4)
    few = flat.pairs <= 64  # past that, alpha is near chance and the estimate is its sampling noise (n v / (v - 1))
    assert np.all(flat.estimate[few] < 3) and own.estimate[few][-1] > 20, (flat.estimate, own.estimate)
    rows = own.to_rows()
    assert [r["pairs"] for r in rows] == own.pairs.tolist() and rows[0]["accuracy"] == own.accuracy[0]


def test_memory_capacity_checks_its_arguments(model):
    with pytest.raises(rmt_core.ConfigError, match="associative"):
        capacity.memory_capacity(make_model("gpt2"))
    for bad in ({"layer": 5}, {"keys": "mine"}, {"pairs": [4, 2]}, {"n_values": 1}, {"trials": 0}, {"queries": 0}):
        with pytest.raises(rmt_core.ArgumentError):
            capacity.memory_capacity(model, **bad)


# ---------------------------------------------------------------------- loss per segment (App. K)
def test_the_three_losses_are_what_their_definitions_say(model, trace):
    result = memory_reach.loss_per_segment(trace)
    assert np.array_equal(result.full, trace.losses())
    reset = rmt_core.trace(model, [t for s in trace.segments for t in s.token_ids], carry_memory=False)
    assert np.allclose(result.reset, reset.losses(), atol=1e-6, equal_nan=True)
    # segment 1 reads only segment 0's write, from the initial state, in every run that carries memory
    assert result.previous[0] == result.full[0] and result.previous[1] == pytest.approx(result.full[1], abs=1e-6)
    ids = np.concatenate([s.token_ids for s in trace.segments])
    for s in (3, 5):  # previous = the two-segment window (s - 1, s) traced on its own, its second segment
        window = rmt_core.trace(model, ids[(s - 1) * S:(s + 1) * S])
        assert result.previous[s] == pytest.approx(window.segments[1].loss, abs=1e-5)
    assert not np.allclose(result.previous[2:], result.full[2:])  # earlier writes matter in this random model
    assert result.counts.tolist() == [S - 1] + [S] * 5 + [4]
    row = result.to_rows()[3]
    assert row["loss_previous"] == result.previous[3] and row["tokens"] == S


def test_a_memory_that_reads_nothing_gains_nothing():
    """Negative control: W_mv zero (the authors' initialisation): every read is 0, the three runs agree."""
    silent = make_model("gpt2", num_mem_tokens=M, segment_size=S, memory="associative",
                        memory_options={"d_mem": 8}, seed=1)
    result = memory_reach.loss_per_segment(rmt_core.trace(silent, np.arange(30) % VOCAB))
    assert np.allclose(result.full, result.reset) and np.allclose(result.full, result.previous)
    assert "does not lower the loss" in paper.memory_reach_figure_caption(result)
    assert np.isnan(result.previous_share)


def test_loss_per_segment_works_for_the_tokens_memory_and_refuses_what_it_cannot(model, trace, tmp_path):
    tokens = rmt_core.trace(make_model("gpt2"), np.arange(30) % VOCAB)
    result = memory_reach.loss_per_segment(tokens)
    assert result.previous[1] == pytest.approx(result.full[1], abs=1e-6)
    with pytest.raises(rmt_core.TraceError, match="memory reset"):
        memory_reach.loss_per_segment(rmt_core.trace(model, np.arange(20) % VOCAB, carry_memory=False))
    path = trace.save(tmp_path / "t.rmtrace")
    with pytest.raises(rmt_core.TraceError, match="checkpoint it was made with"):
        memory_reach.loss_per_segment(rmt_core.Trace.load(path))


# ---------------------------------------------------------------------- captions and figures
def test_the_captions_state_what_the_arrays_show():
    pairs = np.array([1, 2, 4, 8, 16])
    text = captions.capacity_caption(pairs, np.array([1, 1, 1, 0.95, 0.8]), capacity.capacity_estimate(
        np.array([1, 1, 1, 0.95, 0.8]), pairs, 16), 16, 2, "model", 48)
    assert "up to n = 4 written pairs" in text and "90% of the pairs up to n = 8" in text
    assert "no plateau" in text and "48 features per head" in text
    flat = captions.capacity_caption(pairs, np.array([1, 1, 0.5, 0.25, 0.125]),
                                     np.array([1, 2, 2.1, 2.13, 2.14]), 16, 0, "random")
    assert "levelled off" in flat and "up to n = 2" in flat
    assert "nothing beyond chance" in captions.capacity_caption(pairs, np.full(5, 1 / 16), np.zeros(5), 16, 0, "model")
    counts = np.array([9, 10, 10])
    reach = captions.memory_reach_caption(np.array([5, 4, 4.0]), np.array([5, 5, 5.0]), np.array([5, 4.2, 4.2]), counts)
    assert "80% of memory's gain (1.000 nats/token)" in reach and "mostly the last segment" in reach
    far = captions.memory_reach_caption(np.array([5, 4, 4.0]), np.array([5, 5, 5.0]), np.array([5, 4.9, 4.8]), counts)
    assert "reaches back further" in far
    beta, gamma = np.array([0.1, 0.1, 0.4, 0.1, 0.5]), np.array([1, 0, 0.2, 0, 0.1])
    write = captions.fact_write_caption(beta, gamma, 2, 1)
    assert "rank 2 of 5" in write and "segment 4, 0.50, the last" in write and "rank 1 of the 4" in write
    assert "absent" not in write and "absent" in captions.fact_write_caption(beta, gamma, 1, 1)
    norms = np.array([[1.0], [2.0], [12.0], [13.0]])
    assert "grows by 10 at the fact segment 2, rank 1 of 4" in captions.state_growth_caption(norms, 2, 0)
    assert "absent" in captions.state_growth_caption(norms, 3, 0)


def test_the_figures_draw_the_results(model, trace):
    result = capacity.memory_capacity(model, 1, trials=2)
    fig = paper.capacity_figure(result)
    drawn = {t.name: t for t in fig.data}
    assert np.allclose(drawn["layer 1"].y, result.estimate) and np.allclose(drawn["accuracy α"].y, result.accuracy)
    assert np.allclose(drawn["k = n (every pair held)"].y, result.pairs)
    reach = memory_reach.loss_per_segment(trace)
    fig = paper.memory_reach_figure(reach, selected=2)
    lines = [t for t in fig.data]
    assert len(lines) == 5 and np.allclose(lines[0].y, reach.full, equal_nan=True)
    assert np.allclose(lines[2].y, reach.reset - reach.full, equal_nan=True)
    assert paper.memory_reach_figure_caption(reach).startswith("Over segments 1–6")


def test_they_are_standard_figures_of_an_associative_trace_with_its_model(model, trace, tmp_path):
    names = set(figures.standard_figure_builders(trace))
    assert {"loss_per_segment", "memory_capacity"} <= names
    built = figures.standard_figures(trace, 2, 1)
    assert built["memory_capacity"].layout.title.text.endswith("8 trials)")
    assert "layer 1" in built["memory_capacity"].layout.title.text
    loaded = rmt_core.Trace.load(trace.save(tmp_path / "t.rmtrace"))  # no model: they need one
    assert not {"loss_per_segment", "memory_capacity"} & set(figures.standard_figure_builders(loaded))
    reset = rmt_core.trace(model, np.arange(20) % VOCAB, carry_memory=False)
    assert "loss_per_segment" not in figures.standard_figure_builders(reset)
    tokens = rmt_core.trace(make_model("gpt2"), np.arange(20) % VOCAB)
    assert not {"loss_per_segment", "memory_capacity"} & set(figures.standard_figure_builders(tokens))


# ---------------------------------------------------------------------- the shipped ARMT: tour, pages, CLI
ARMT = "armt-austen-pydocs-recall"


@pytest.fixture(scope="module")
def shipped():
    return rmt_core.load(ARMT, device="cpu")


def test_the_tour_of_the_shipped_armt_follows_the_fact(shipped):
    from rmt_core.viz.tour import AssociativeTour, make_tour, tour_steps

    tour = make_tour(shipped, seed=7)
    assert isinstance(tour, AssociativeTour) and tour.predicted == tour.answer == "office"
    steps = tour_steps(tour)
    assert [s.title[0] for s in steps] == list("123456")
    assert steps[0].html and all(s.figure is not None for s in steps[1:])
    f, y = tour.fact_segment, tour.layer
    retrieval = tour.retrievals[y]
    assert retrieval.top_segment == f  # the answer token reads the fact segment at the fact's layer
    assert f"retrieves most from segment {f}" in steps[4].text
    bars = steps[2].figure.data[0]
    assert bars.marker.color[f] == "#D55E00" and np.allclose(
        bars.y, rmt_core.series.associative_rows(tour.trace, "write_strength")[:, y].mean(axis=1))
    skip = tour.skip_fact_write
    assert skip.p_expected_after < 0.5 < skip.p_expected_before  # without the fact's write the answer is lost
    assert f"“{skip.answer_after}”" in steps[5].text


def test_the_tour_page_offers_the_armt(shipped):
    at = _app_with(rmt_core.trace(shipped, "Mary went to the office. " * 8))
    at.switch_page("screens/tour.py").run()
    assert not at.exception, [e.value for e in at.exception]
    assert ARMT in at.selectbox(key="tour_model").options
    at.selectbox(key="tour_model").set_value(ARMT).run()
    seen, charts = [], []
    for _ in range(6):
        assert not at.exception and not at.error, ([e.value for e in at.exception], [e.value for e in at.error])
        seen.append(at.subheader[0].value)
        charts.append(_titles(at))
        next_button = next(b for b in at.button if b.key == "tour_next")
        if next_button.disabled:
            break
        next_button.click().run()
    assert seen[1] == "2 · Tokens, then memory tokens" and seen[-1].startswith("6 · The counterfactual: skip")
    assert any(t.startswith("Retrieved from: token 30") for t in charts[4]), charts[4]
    assert "Per-segment loss" in charts[5]


def test_the_papers_page_shows_the_armt_figures(shipped):
    trace = rmt_core.trace(shipped, "Mary went to the office. " * 8)
    at = _app_with(trace)
    at.switch_page("screens/papers.py").run()
    assert not at.exception, [e.value for e in at.exception]
    titles = _titles(at)
    assert any(t.startswith(f"{ARMT}: memory capacity of layer 2") for t in titles), titles
    assert any(t.startswith("Loss per segment") for t in titles)
    assert any("no plateau" in c.value or "levelled off" in c.value for c in at.caption)
    at.radio(key="paper_reach_source").set_value("trace").run()  # the current ARMT trace instead
    assert not at.exception, [e.value for e in at.exception]
    assert any(t == "Loss per segment: full memory, none, previous segment only" for t in _titles(at))


def test_the_cli_exports_them_for_an_armt_trace(shipped, trace, tmp_path, capsys, monkeypatch):
    from rmt_core import cli
    from rmt_core.viz import export

    doc = tmp_path / "doc.txt"
    doc.write_text("Mary went to the office. Then she read a book. " * 6)
    saved = tmp_path / "t.rmtrace"
    assert cli.main(["trace", str(doc), "--checkpoint", ARMT, "--out", str(saved)]) == 0

    def fake_export(figs, directory, format="svg", provenance=None, **kwargs):  # no browser needed
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        out = {name: directory / f"{name}.{format}" for name in figs}
        for path in out.values():
            path.write_bytes(b"<svg/>")
        return out

    monkeypatch.setattr(export, "require_browser", lambda: "/usr/bin/true")
    monkeypatch.setattr(export, "export_figures", fake_export)
    capsys.readouterr()
    tiny = trace.save(tmp_path / "tiny.rmtrace")  # a checkpoint that is not shipped: no model to attach
    assert cli.main(["figures", str(tiny), "--out", str(tmp_path / "bare")]) == 0
    assert "loss_per_segment and memory_capacity skipped" in capsys.readouterr().err
    skipped = json.loads((tmp_path / "bare" / "figures.json").read_text())["skipped"]
    assert [s["name"] for s in skipped] == ["attention", "loss_per_segment", "memory_capacity"]
    assert cli.main(["figures", str(saved), "--checkpoint", ARMT, "--out", str(tmp_path / "full")]) == 0
    listing = json.loads((tmp_path / "full" / "figures.json").read_text())
    assert {"loss_per_segment", "memory_capacity"} <= {f["name"] for f in listing["figures"]}
