"""Compare, patching, the CLI and studies for an associative memory (ARMT; issue 25: ARMT works where RMT works).

Tiny random ARMTs (test_armt_trace's helpers: W_mv randomised, else every read is 0), and the shipped
ARMT for the real checks (marked slow). The expected distances are computed here in numpy from the
states Trace.state_out rebuilds, not by the comparison's code.
"""
from __future__ import annotations

import csv
import io
import json

import numpy as np
import pytest
import torch

import rmt_core
from rmt_core import ArgumentError, TraceError
from rmt_core import interventions as iv
from rmt_core.explain.compare import reset_run
from rmt_core.viz import comparison as cfig

from conftest import VOCAB, make_model
from test_armt_trace import M, S, armt, ids, model, randomised, trace  # noqa: F401  (fixtures)

torch.set_num_threads(1)
CHANGED = 20  # a token of segment 3 (segments of S = 6)


@pytest.fixture(scope="module")
def trace_b(model, ids):
    other = ids.copy()
    other[CHANGED] = (other[CHANGED] + 1) % VOCAB
    return rmt_core.trace(model, other)


def relative_frobenius(x: np.ndarray, y: np.ndarray) -> float:
    x, y = x.astype(np.float64), y.astype(np.float64)
    size = max(np.linalg.norm(x), np.linalg.norm(y))
    return 0.0 if size == 0 else float(np.linalg.norm(x - y) / size)


# ---------------------------------------------------------------------- compare
def test_a_run_compared_with_itself_is_at_distance_zero(trace):
    c = rmt_core.compare(trace, trace)
    assert c.memory_type == "associative" and c.layers == ["L0", "L1"]
    assert c.frobenius_A.shape == c.frobenius_z.shape == (trace.num_segments, 2)
    assert np.all(c.distance == 0) and c.diverge_at is None and "never diverge" in c.divergence_text
    assert c.cosine is None and c.slots == []  # no slot vectors
    assert np.all(c.state_norm_a > 0) and np.array_equal(c.state_norm_a, c.state_norm_b)


def test_one_changed_token_diverges_at_its_segment(trace, trace_b):
    c = rmt_core.compare(trace, trace_b)
    assert np.all(c.distance[:3] == 0)  # the segments before the change wrote the same state
    assert c.diverge_at == 3 and "LEAVING segment 3 (pair 3)" in c.divergence_text
    assert "relative Frobenius" in c.divergence_text and c.entering_at_diverge == 0
    assert "ENTERING it (memory_in) was still the same" in c.divergence_text
    for s in (3, 5):  # the definition, computed here from the rebuilt states
        a, b = trace.state_out(s), trace_b.state_out(s)
        for y in range(2):
            assert c.frobenius_A[s, y] == pytest.approx(relative_frobenius(a["A"][y], b["A"][y]), rel=1e-6)
            assert c.frobenius_z[s, y] == pytest.approx(relative_frobenius(a["z"][y], b["z"][y]), rel=1e-6)
    assert rmt_core.compare(trace, trace_b, threshold=2.0).diverge_at is None  # the rule is the threshold


def test_the_memory_reset_run_reads_another_memory_from_segment_1(trace):
    reset = reset_run(trace)
    c = rmt_core.compare(trace, reset, names=("memory", "reset"))
    assert np.all(c.distance[0] == 0)  # segment 0 writes from the initial state in both runs
    # segment 1: the reset run read the initial state (A = 0, z = 0): ||A - 0|| / ||A|| = 1 exactly
    assert c.diverge_at == 1 and c.entering_at_diverge == pytest.approx(1.0)
    assert "already differed" in c.divergence_text and "reset resets its memory" in c.divergence_text
    assert any("no-memory baseline" in n for n in c.notes) and c.carries_memory == (True, False)
    assert torch.is_grad_enabled()  # the two interleaved state walks leave the caller's grad mode as it was


def test_memories_that_cannot_be_compared_say_why(trace, ids, tmp_path):
    tokens = rmt_core.trace(make_model("gpt2", num_mem_tokens=M, segment_size=S), ids)
    c = rmt_core.compare(trace, tokens)
    assert c.distance is None and "different types ('associative' and 'tokens')" in c.memory_reason
    assert c.divergence_text.startswith("Memory not compared") and np.isfinite(c.loss_diff).all()
    loaded = rmt_core.Trace.load(trace.save(tmp_path / "a.rmtrace"))  # no model: its states cannot be rebuilt
    c = rmt_core.compare(loaded, trace)
    assert c.distance is None and "rebuilt from the stored writes with the model" in c.memory_reason
    wider = rmt_core.trace(armt(d_mem=16), ids)
    assert "different shapes" in rmt_core.compare(trace, wider).memory_reason


def test_rows_answers_and_figures_of_an_associative_comparison(trace, trace_b, tmp_path):
    c = rmt_core.compare(trace, trace_b)
    rows = c.to_rows()
    assert {"frobenius_max", "frobenius_A_L0", "frobenius_z_L1", "state_norm_L1_b"} <= set(rows[0])
    assert not any(k.startswith(("cosine", "mass_")) for k in rows[0])  # no slots, no slot blocks
    assert rows[4]["frobenius_A_L1"] == pytest.approx(float(c.frobenius_A[4, 1]))
    summary = c.summary()
    assert summary["memory_type"] == "associative" and "relative Frobenius" in summary["distance_meaning"]
    assert "write slots" in c.lens_reason and np.all(np.isnan(c.p_answer_a))  # the slots' logit lens: said why
    for run, answer in zip((trace, trace_b), c.answers):  # each run's answer: its stored top-1 at the end
        last = run.segments[-1]
        assert answer.segment == last.index and answer.position == last.num_tokens - 1
        assert answer.probability == pytest.approx(float(np.exp(last.topk_logprobs[-1, 0])), rel=1e-3)
    assert json.loads(c.to_json())["comparison"]["answers"][1]["answer"] == c.answers[1].answer
    figures = cfig.comparison_figures(c)
    assert set(figures) == {"memory_distance", "loss_and_answer", "state_size"}
    heat = figures["memory_distance"].data[0]
    assert list(heat.y) == ["A L0", "A L1", "z L0", "z L1"] and np.allclose(np.asarray(heat.z).T, c.distance)
    assert len(figures["state_size"].data) == 4  # 2 layers x 2 runs
    back = list(csv.DictReader(io.StringIO(c.save(tmp_path / "c.csv").read_text())))
    assert float(back[5]["frobenius_z_L0"]) == pytest.approx(float(c.frobenius_z[5, 0]))


# ---------------------------------------------------------------------- patching
def test_patching_a_run_with_its_own_state_changes_nothing(trace):
    r = iv.patch_memory(trace, 3, trace)  # negative control
    assert np.all(r.loss_change == 0) and r.answer_after == r.answer_before
    assert r.layers == (0, 1) and r.slots == () and r.axis == "layer" and "all layers" in r.name
    sweep = iv.patch_sweep(trace, trace, segments=[1, 4])
    assert np.allclose(sweep.loss_change, 0, atol=1e-6)
    assert np.allclose(sweep.p_source_answer, sweep.p_source_answer_before, rtol=1e-4)


def test_all_layers_from_the_source_continue_as_the_source(model, trace, trace_b):
    last = trace.num_segments - 1
    r = iv.patch_memory(trace, last, trace_b)
    with torch.no_grad():  # the target's last tokens run from the source's state, directly
        out = model.run_segment(model.memory.state_from_arrays(trace_b.state_in(last)),
                                torch.as_tensor(trace.segments[last].token_ids, dtype=torch.long).unsqueeze(0),
                                segment_index=last)
    assert r.p_answer_after == pytest.approx(float(torch.softmax(out.logits[0, -1].float(), -1).max()), rel=1e-4)
    assert r.p_answer_after != pytest.approx(r.p_answer_before, rel=1e-3)  # it did change something
    assert np.all(r.loss_change[:last] == 0)


def test_one_layer_patch_copies_that_layer_only(model, trace, trace_b):
    last = trace.num_segments - 1
    r = iv.patch_memory(trace, last, trace_b, layers=1)
    expected = {k: np.array(v, copy=True) for k, v in trace.state_in(last).items()}
    source = trace_b.state_in(last)
    expected["A"][1], expected["z"][1] = source["A"][1], source["z"][1]
    with torch.no_grad():
        out = model.run_segment(model.memory.state_from_arrays(expected),
                                torch.as_tensor(trace.segments[last].token_ids, dtype=torch.long).unsqueeze(0),
                                segment_index=last)
    assert r.p_answer_after == pytest.approx(float(torch.softmax(out.logits[0, -1].float(), -1).max()), rel=1e-4)
    assert r.layers == (1,) and r.name == f"layer L1 patched from the source before segment {last}"


def test_the_batched_sweep_equals_the_cells_one_by_one(trace, trace_b, tmp_path):
    batched = iv.patch_sweep(trace, trace_b, segments=[2, 3, 5], batch_size=2)
    single = iv.patch_sweep(trace, trace_b, segments=[2, 3, 5], batched=False)
    assert batched.columns == ["L0", "L1", "all"] and batched.axis == "layer" and batched.parts == [(0,), (1,), (0, 1)]
    assert np.allclose(batched.p_source_answer, single.p_source_answer, rtol=1e-4, atol=1e-7)
    assert np.allclose(batched.loss_change, single.loss_change, atol=1e-5)
    assert batched.answer_after == single.answer_after
    assert np.allclose(batched.loss_change[0], 0, atol=1e-6)  # before segment 3 the runs' states are the same
    cell = batched.cell(trace, trace_b, 1, 2)
    assert cell.p_source_answer_after == pytest.approx(batched.p_source_answer[1, 2], rel=1e-4)
    data = json.loads(batched.save(tmp_path / "s.json").read_text())
    assert data["sweep"]["patched_by"] == "layer" and {r["patched"] for r in data["rows"]} == {"L0", "L1", "all"}
    fig = cfig.patching_heatmap(batched)
    assert "layer (A, z)" in fig.layout.yaxis.title.text and list(fig.data[0].y) == ["L0", "L1", "all"]


def test_bad_patches_are_refused_in_the_memory_s_terms(trace, trace_b, ids, tmp_path):
    with pytest.raises(TraceError, match="patched by layer: give layers=, not slots="):
        iv.patch_memory(trace, 1, trace_b, slots=[0])
    with pytest.raises(ArgumentError, match="layer must be in 0..1"):
        iv.patch_memory(trace, 1, trace_b, layers=[2])
    with pytest.raises(ArgumentError, match="layer must be in 0..1"):
        iv.patch_sweep(trace, trace_b, segments=[1], layers=[3])
    with pytest.raises(ArgumentError, match="must not repeat"):
        iv.patch_memory(trace, 1, trace_b, layers=[0, 0])
    tokens = rmt_core.trace(make_model("gpt2", num_mem_tokens=M, segment_size=S), ids)
    with pytest.raises(TraceError, match="same kind of memory"):
        iv.patch_memory(trace, 1, tokens)
    with pytest.raises(TraceError, match="patched by slot: give slots=, not layers="):
        iv.patch_memory(tokens, 1, tokens, layers=[0])
    wider = rmt_core.trace(armt(d_mem=16), ids)
    with pytest.raises(TraceError, match="another shape"):
        iv.patch_memory(trace, 1, wider)
    loaded = rmt_core.Trace.load(trace_b.save(tmp_path / "b.rmtrace"))  # its states need its model
    with pytest.raises(TraceError, match="rebuilding the source's memory state"):
        iv.patch_memory(trace, 1, loaded)


# ---------------------------------------------------------------------- the command line
@pytest.fixture(scope="module")
def armt_ckpt(tmp_path_factory):
    """A tiny ARMT with the tiny BPE tokenizer, saved as a checkpoint folder, and a fact document."""
    from test_evaluation import make_fact_model

    rmt = make_fact_model()  # its tokenizer and backbone size; the memory made associative below
    from rmt_core import RMTConfig, RMTModel
    from rmt_core.engine.backbones import backbone_from_config, gpt2_config

    torch.manual_seed(0)
    config = RMTConfig(memory="associative", num_mem_tokens=3, segment_size=16, task="detect",
                       memory_options={"d_mem": 8})
    backbone = backbone_from_config(gpt2_config(len(rmt.tokenizer), n_layer=2, n_embd=32, n_head=4, n_positions=64))
    model = randomised(RMTModel.from_backbone(backbone, config, tokenizer=rmt.tokenizer).eval())
    folder = tmp_path_factory.mktemp("armt")
    rmt_core.save(model, str(folder / "tiny-armt"))
    return folder / "tiny-armt"


def test_cli_compare_memory_reset_and_patch_by_layer(armt_ckpt, tmp_path, capsys):
    from rmt_core.cli import main
    from test_cli_trace import COMMON, TEXT, run

    paths = []
    for place in ("garden", "kitchen"):
        doc = tmp_path / f"{place}.txt"
        doc.write_text(TEXT + f"Mary went to the {place}.\n" + TEXT, encoding="utf-8")
        paths.append(tmp_path / f"{place}.rmtrace")
        assert main(["trace", str(doc), "--checkpoint", str(armt_ckpt), "--out", str(paths[-1]), *COMMON]) == 0
    code, out, err = run(capsys, "compare", str(paths[0]), "--memory-reset", "--checkpoint", str(armt_ckpt),
                         "--out", str(tmp_path / "reset"), "--format", "html", "--device", "cpu")
    assert code == 0, err
    assert "first diverge LEAVING segment 1" in out and "relative Frobenius" in out and " answers " in out
    rows = list(csv.DictReader(io.StringIO((tmp_path / "reset" / "comparison.csv").read_text())))
    assert float(rows[0]["frobenius_max"]) == 0 and float(rows[1]["frobenius_max"]) > 0.05
    listing = json.loads((tmp_path / "reset" / "figures.json").read_text())
    assert set(listing["figures"]) == {"memory_distance", "loss_and_answer", "state_size"}
    code, out, _ = run(capsys, "compare", str(paths[0]), str(paths[1]), "--out", str(tmp_path / "no-model"),
                       "--format", "html")
    assert code == 0 and "Memory not compared" in out and "give --checkpoint" in out
    code, out, err = run(capsys, "patch", str(paths[1]), str(paths[0]), "--checkpoint", str(armt_ckpt),
                         "--segments", "0-1", "--layers", "1", "--csv", str(tmp_path / "p.csv"), "--device", "cpu")
    assert code == 0, err
    header = next(line for line in out.splitlines() if line.startswith("segment"))
    assert header.split() == ["segment", "L1", "all"]
    code, _, err = run(capsys, "patch", str(paths[1]), str(paths[0]), "--checkpoint", str(armt_ckpt), "--slots", "0")
    assert code == 1 and "--slots does not apply" in err and "use --layers" in err and "Traceback" not in err
    code, _, err = run(capsys, "patch", str(paths[1]), str(paths[0]), "--checkpoint", str(armt_ckpt), "--layers", "7")
    assert code == 1 and "--layers values must be in 0..1" in err


# ---------------------------------------------------------------------- studies
GRID = dict(task="detect", segments=[2, 3], depths=[10, 90], samples=2, seed=3)


@pytest.fixture(scope="module")
def armt_study(armt_ckpt, tmp_path_factory):
    """A 2 x 2 x 2 grid of the tiny ARMT measured in this process."""
    from rmt_core.studies.measures import MeasureConfig
    from rmt_core.studies.runner import run_study
    from rmt_core.studies.source import BabilongSource

    folder = tmp_path_factory.mktemp("armt_study")
    model = rmt_core.load(str(armt_ckpt), device="cpu")
    result = run_study(folder, BabilongSource(*GRID.values()), str(armt_ckpt), model,
                       config=MeasureConfig(attribution_steps=2))
    assert result.complete and result.errors == 0
    return folder


def test_a_grid_of_an_armt_is_scored_and_says_what_does_not_apply(armt_ckpt, armt_study, tmp_path):
    from rmt_core.studies import aggregate
    from rmt_core.studies.measures import NOT_APPLICABLE, states_of
    from rmt_core.studies.report import write_report
    from rmt_core.studies.rows import read_rows
    from rmt_core.studies.source import BabilongSource
    from rmt_core.explain import associative

    model = rmt_core.load(str(armt_ckpt), device="cpu")
    source = BabilongSource(*GRID.values())
    rows = read_rows(armt_study)
    g = aggregate.grid(rows, "correct")
    assert g.segments == [2, 3] and np.all(g.counts == 2) and np.isfinite(g.values).all()  # accuracy cells
    skipped = aggregate.not_applicable(rows)
    assert set(skipped) == set(NOT_APPLICABLE["associative"]) and "write slots" in skipped["write_mass_fact"]
    for r in rows:
        assert r["memory_type"] == "associative" and r["write_mass_fact"] is None and r["lens_rank_by_age"] is None
        assert r["fact_segment"] < r["question_segment"] and len(r["fact_read_share"]) == 2
        assert 0 < r["fact_write_strength"] < 1 and r["fact_read_top"] is not None
    two = next(r for r in rows if r["segments"] == 2)  # one earlier segment: it is the whole read
    assert two["fact_read_share"] == pytest.approx([1.0, 1.0], abs=1e-5) and two["fact_read_top"]
    # the states kept for the probes: the state summary per layer, computed here from the rebuilt state
    sample = source.build(next(s for s in source.specs() if s.sample_id == two["sample_id"]), model)
    trace = rmt_core.trace(model, sample.text)
    expected = trace.state_out(two["fact_segment"])["A"].astype(np.float64).sum(axis=-2).reshape(2, -1)
    assert states_of(two).shape == (1, 2, 32)
    assert np.allclose(states_of(two)[0], expected, rtol=2e-3, atol=1e-3)  # float16 in the row
    assert np.allclose(associative.state_summary(trace.state_out(two["fact_segment"])["A"]), expected, rtol=1e-5)
    report = write_report(armt_study, tmp_path / "report", formats=(), probes=True, causal_samples=2)
    assert any(n.startswith("write_mass_fact: not applicable") for n in report["notes"])
    assert {"grid.csv", "probes.csv", "causal.csv"} <= set(report["files"])  # probes per layer, their causal check
    causal = list(csv.DictReader(io.StringIO((tmp_path / "report" / "causal.csv").read_text())))
    assert causal and all(c["axis"] == "layer" for c in causal) and any("on layer" in n for n in report["notes"])
    assert "layer_0" in (tmp_path / "report" / "probes.csv").read_text().splitlines()[0]


def test_the_study_page_shows_an_armt_study_and_names_what_does_not_apply(armt_study):
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file("../app/main.py", default_timeout=240)
    at.run()
    at.switch_page("screens/study.py").run()
    at.text_input(key="study_folder").set_value(str(armt_study)).run()
    assert not at.exception, [e.value for e in at.exception]
    assert any(json.loads(c.proto.spec)["layout"]["title"]["text"] == "Accuracy by length and fact depth"
               for c in at.get("plotly_chart"))
    columns = list(at.dataframe[0].value.columns)
    assert "fact_read_top" in columns and "fact_write_strength" in columns and "retention_lens" not in columns
    assert any("Not applicable to this model's memory" in c.value and "write_mass_fact" in c.value for c in at.caption)


def test_a_study_begun_before_the_new_columns_reads_them_as_null(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from rmt_core.studies.rows import RowWriter, read_rows, rows_path, schema

    old = pa.schema([f for f in schema() if f.name not in ("memory_type", "not_applicable", "fact_read_share")])
    rows_path(tmp_path).mkdir()
    pq.write_table(pa.Table.from_pylist([{"sample_id": "a", "correct": True}], schema=old),
                   rows_path(tmp_path) / "part-00000.parquet")
    writer = RowWriter(tmp_path)  # resumed with today's columns
    writer.add({"sample_id": "b", "memory_type": "associative", "fact_read_share": [0.5, 1.0]})
    writer.close()
    rows = {r["sample_id"]: r for r in read_rows(tmp_path)}
    assert rows["a"]["correct"] is True and rows["a"]["memory_type"] is None and rows["a"]["fact_read_share"] is None
    assert rows["b"]["fact_read_share"] == [0.5, 1.0]
    assert [r["sample_id"] for r in read_rows(tmp_path, ["memory_type"])] == ["a", "b"]


def test_probes_of_an_armt_are_per_layer():
    from rmt_core.studies.probes import fit_probes

    rng = np.random.default_rng(0)
    rows = []
    for i in range(40):  # layer 1's summary holds the answer, layer 0's is noise
        answer = ("garden", "kitchen")[i % 2]
        states = rng.normal(size=(2, 2, 8))
        states[:, 1, 0] += 4.0 if answer == "garden" else -4.0
        rows.append({"sample_id": f"s{i}", "answer": answer, "error": None, "memory_type": "associative",
                     "memory_after_write": states.astype(np.float16).tobytes(), "state_shape": [2, 2, 8]})
    result = fit_probes(rows)
    assert result.axis == "layer" and result.slots.shape == (2, 2)
    assert np.all(result.slots[1] > 0.9) and np.all(result.slots[0] < 0.8)
    assert "layer_1" in result.to_rows()[0] and "slot_1" not in result.to_rows()[0]


def test_push_summary_moves_the_state_summary_by_exactly_delta(trace):
    from rmt_core.explain import associative

    arrays = trace.state_out(3)
    delta = np.random.default_rng(1).normal(size=arrays["A"].shape[1] * arrays["A"].shape[3])
    pushed = associative.push_summary(arrays, 1, delta)
    before, after = associative.state_summary(arrays["A"]), associative.state_summary(pushed["A"])
    assert np.allclose(after[1] - before[1], delta, atol=1e-4) and np.array_equal(after[0], before[0])
    assert np.array_equal(pushed["z"], arrays["z"]) and not np.shares_memory(pushed["A"], arrays["A"])


# ---------------------------------------------------------------------- the app
def test_the_compare_page_compares_an_armt_run_with_its_memory_reset_and_patches_layers(trace):
    from test_armt_trace import _app
    from app import state

    at = _app(trace)
    at.switch_page("screens/compare.py").run()
    assert not at.exception, [e.value for e in at.exception]
    at.radio(key="cmp_source").set_value("This document, memory reset").run()
    next(b for b in at.button if b.key == "cmp_run_reset").click().run()
    assert not at.exception, [e.value for e in at.exception]
    c = at.session_state[state.COMPARE_RESULT][1]
    assert c.frobenius_A is not None and c.diverge_at == 1
    assert any("diverge" in w.value for w in at.warning)
    assert any("relative Frobenius" in cap.value for cap in at.caption)
    assert any("Answer at the question" in md.value for md in at.markdown)
    titles = [json.loads(ch.proto.spec)["layout"].get("title", {}).get("text", "") for ch in at.get("plotly_chart")]
    assert any(t.startswith("State size") for t in titles) and not any(t.startswith("Block attention") for t in titles)
    sweep_button = next(b for b in at.button if b.key == "cmp_sweep")
    assert "L0, L1, all" in sweep_button.label
    sweep_button.click().run()
    assert not at.exception, [e.value for e in at.exception]
    sweep = at.session_state[state.COMPARE_SWEEP][1]
    assert sweep.columns == ["L0", "L1", "all"] and sweep.p_source_answer.shape == (len(sweep.segments), 3)
    at.switch_page("screens/attribution.py").run()  # one layer patched from the compared run
    at.session_state["attr_tab"] = "Interventions"
    at.run()
    at.selectbox(key="int_layer_kind").set_value("patch one layer from the compared run").run()
    assert not at.exception, [e.value for e in at.exception]
    assert any("layer L1 patched from the source" in json.dumps(json.loads(ch.proto.spec)["data"])
               for ch in at.get("plotly_chart"))


# ---------------------------------------------------------------------- the shipped ARMT
@pytest.fixture(scope="module")
def shipped():
    return rmt_core.load("armt-austen-pydocs-recall", device="cpu")


@pytest.mark.slow
def test_the_shipped_armt_keeps_a_changed_fact_in_one_layer(shipped):
    from rmt_core.explain import answers
    from document_builders import austen_story

    runs = {place: rmt_core.trace(shipped, answers.prompt_text(
        shipped, austen_story(8, f"Sandra went to the {place}."), "Where is Sandra?")) for place in ("garden", "kitchen")}
    garden, kitchen = runs["garden"], runs["kitchen"]
    fact = next(s.index for s in garden.segments if "garden" in "".join(s.tokens))
    c = rmt_core.compare(garden, kitchen)
    assert [a.answer for a in c.answers] == ["garden", "kitchen"]
    assert c.diverge_at == fact and c.entering_at_diverge == 0  # the fact's segment wrote the difference
    assert rmt_core.compare(garden, garden).distance.max() == 0
    reset = rmt_core.compare(garden, reset_run(garden))
    assert reset.diverge_at == 1 and reset.entering_at_diverge == pytest.approx(1.0)
    sweep = iv.patch_sweep(garden, kitchen, names=("garden", "kitchen"))
    assert sweep.columns == ["L0", "L1", "L2", "all"] and sweep.source_answer == "kitchen"
    flipped = sweep.flipped
    assert not flipped[: fact + 1].any()  # up to the fact's segment the two runs' states are the same
    assert flipped[fact + 1:, sweep.columns.index("all")].all()  # the whole state after it carries the fact
    assert np.all(flipped[fact + 1:, :3].sum(axis=1) == 1)  # one layer's (A, z) alone carries it (measured: L1)
    own = iv.patch_memory(garden, fact + 1, garden)
    assert np.all(own.loss_change == 0) and own.answer_after == "garden"
