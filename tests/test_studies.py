"""Studies: the grid source, one row per traced sample, rows.parquet + resume, executors, probes, report."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from rmt_core.studies import aggregate
from rmt_core.studies.measures import COMPARED, NOT_APPLICABLE, MeasureConfig, measure_spec
from rmt_core.studies.rows import RowWriter, done_ids, read_rows, rows_path
from rmt_core.studies.runner import read_study, run_study
from rmt_core.studies.source import BabilongSource, DocumentSource, GridError, StudyError

ROOT = Path(__file__).resolve().parents[1]
CONFIG = MeasureConfig(attribution_steps=2)


@pytest.fixture(scope="module")
def model():
    import rmt_core

    return rmt_core.load(rmt_core.DEFAULT_CHECKPOINT, device="cpu")


def small_grid(seed: int = 3) -> BabilongSource:
    return BabilongSource("detect", [2, 3], [10, 90], 2, seed=seed)


@pytest.fixture(scope="module")
def study(model, tmp_path_factory):
    """A small grid measured in this process: 2 lengths x 2 depths x 2 samples."""
    directory = tmp_path_factory.mktemp("study")
    result = run_study(directory, small_grid(), "austen-pydocs-recall", model, config=CONFIG, flush_rows=3)
    assert result.complete and result.written == 8
    return directory


# ---------------------------------------------------------------------- grid specs
@pytest.mark.parametrize("kwargs, match", [
    ({"task": "nope"}, "unknown task 'nope'"),
    ({"segments": "2,-4"}, "segments: -4 is out of range"),
    ({"segments": "1"}, "never in the asking segment"),
    ({"depths": "10,150"}, "depths: 150 is out of range"),
    ({"depths": "ten"}, "not a number"),
    ({"samples": 0}, "samples must be"),
    ({"segments": "2,2"}, "twice"),
])
def test_bad_grid_specs_name_the_problem(kwargs, match):
    args = {"task": "detect", "segments": "2,4", "depths": "10,90", "samples": 2} | kwargs
    with pytest.raises(GridError, match=match):
        BabilongSource(args["task"], args["segments"], args["depths"], args["samples"])


def test_cli_bad_grid_is_a_usage_error(tmp_path, capsys):
    from rmt_core.cli import main

    code = main(["study", "run", "--task", "detect", "--depths", "10,101", "--out", str(tmp_path / "s")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("error: rmt-lens study run: depths: 101")
    assert not (tmp_path / "s").exists()  # nothing started


# ---------------------------------------------------------------------- the source
def test_samples_are_deterministic_and_facts_follow_the_depth(model):
    from rmt_core.token_text import encode_with_offsets

    source = BabilongSource("detect", [8], [0, 50, 100], 2, seed=5)
    specs = source.specs()
    assert len(specs) == 6 and len({s.sample_id for s in specs}) == 6
    again = BabilongSource("detect", [8], [0, 50, 100], 2, seed=5)
    assert source.build(specs[0], model).text == again.build(specs[0], model).text
    assert source.build(specs[0], model).text != source.build(specs[1], model).text  # another index, another sample
    size = model.config.segment_size
    starts = {}
    for spec in specs:
        sample = source.build(spec, model)
        ids, offsets = encode_with_offsets(model.tokenizer, sample.text)
        assert len(ids) + 1 == 8 * size  # text + answer fill 8 segments
        fact_start, fact_end = sample.fact_chars[sample.supporting]
        last_fact_token = max(i for i, (a, b) in enumerate(offsets) if a < fact_end)
        assert last_fact_token < 7 * size  # never in the asking segment
        first = min(i for i, (a, b) in enumerate(offsets) if b > fact_start)
        starts.setdefault(spec.depth, []).append(first / (7 * size))
    for depth, found in starts.items():  # within the tolerance (5% of the range) of the asked depth
        # facts may start up to ~96% of the way (the fact itself and a margin must fit before the asking segment)
        assert np.allclose(found, depth / 100 * 0.96, atol=0.07), (depth, found)


def test_document_source_skips_and_names_what_it_cannot_read(tmp_path):
    (tmp_path / "good.txt").write_text("Mary went to the garden. Some text.\nQuestion: Where is Mary?\nAnswer: garden\n")
    (tmp_path / "noquestion.txt").write_text("Just a story without a question.")
    (tmp_path / "broken.pdf").write_bytes(b"%PDF-1.4 this is not a pdf")
    (tmp_path / "binary.txt").write_bytes(bytes(range(256)) * 4)
    (tmp_path / "rows.jsonl").write_text(json.dumps({"text": "John went to the office.", "question": "Where is John?",
                                                     "answer": "office"}) + "\n{not json\n"
                                         + json.dumps({"text": "x", "question": ""}) + "\n")
    (tmp_path / "table.csv").write_text("text,question\nabc,def\n")
    source = DocumentSource(str(tmp_path))
    assert [s[0] for s in source.samples] == ["good.txt", "rows.jsonl:1"]
    skipped = " | ".join(source.skipped)
    for name in ("noquestion.txt", "broken.pdf", "binary.txt", "rows.jsonl:2", "rows.jsonl:3", "table.csv"):
        assert name in skipped, name
    with pytest.raises(StudyError, match="does not exist"):
        DocumentSource(str(tmp_path / "missing"))


def test_a_question_the_model_cannot_answer_is_a_row_not_a_crash(model, tmp_path):
    (tmp_path / "q.jsonl").write_text(
        json.dumps({"text": "Mary went to the garden. " * 20, "question": "What is the capital of France?",
                    "answer": "Paris"}) + "\n"
        + json.dumps({"text": "Mary went to the garden. " + "It rained. " * 30, "question": "Where is Mary?",
                      "answer": "garden"}) + "\n")
    source = DocumentSource(str(tmp_path / "q.jsonl"))
    rows = [measure_spec(model, source, spec, CONFIG) for spec in source.specs()]
    assert rows[0]["error"] and "not a question this model was trained on" in rows[0]["error"]
    assert rows[0]["document"] == "q.jsonl:1" and rows[0]["correct"] is None
    assert rows[1]["error"] is None and rows[1]["fact_segment"] == 0 and rows[1]["answer"] == "garden"


# ---------------------------------------------------------------------- rows
def test_rows_measure_what_they_say(model, study):
    rows = read_rows(study)
    assert len(rows) == 8 and all(r["error"] is None for r in rows)
    for r in rows:
        assert r["fact_segment"] < r["question_segment"] == r["n_segments"] - 1
        assert r["correct"] == (r["predicted"] == r["answer"]) and 0 < r["p_answer"] <= 1
        assert (r["rank"] == 0) == r["correct"]
        assert len(r["lens_rank_by_age"]) == r["question_segment"] - r["fact_segment"]
        assert r["state_shape"] == [len(r["lens_rank_by_age"]), 8, 128]
        assert r["answer_loss_memory"] == pytest.approx(-np.log(r["p_answer"]), abs=1e-4)
        # slots: the associative memory's own measures are named as not applicable, and left empty
        assert r["memory_type"] == "tokens" and r["not_applicable"] == sorted(NOT_APPLICABLE["tokens"])
        assert r["fact_read_share"] is None and r["fact_write_strength"] is None
    assert set(aggregate.not_applicable(rows)) == set(NOT_APPLICABLE["tokens"])
    # the memory matters for the answer: reset loses it (the shipped model answers from memory)
    assert np.mean([r["correct"] for r in rows]) > np.mean([r["correct_reset"] for r in rows])
    study_json = read_study(study)
    assert study_json["weights_hash"] and study_json["status"] == "complete" and study_json["source"]["seed"] == 3
    assert study_json["executor"]["kind"] == "in-process" and study_json["code"]["rmt_lens_version"]


def test_a_study_of_another_grid_is_refused_in_the_same_folder(model, study):
    with pytest.raises(StudyError, match="holds another study"):
        run_study(study, small_grid(seed=4), "austen-pydocs-recall", model, config=CONFIG)


def test_rerunning_a_finished_study_writes_nothing(model, study):
    result = run_study(study, small_grid(), "austen-pydocs-recall", model, config=CONFIG)
    assert result.written == 0 and result.rows == 8


def test_killed_study_resumes_with_exactly_one_row_per_sample(model, tmp_path):
    """A subprocess killed half way (SIGKILL) leaves complete parts only; the restart fills the rest."""
    script = (
        "import sys, torch; torch.set_num_threads(1)\n"
        "from rmt_core.studies.source import BabilongSource\n"
        "from rmt_core.studies.measures import MeasureConfig\n"
        "from rmt_core.studies.runner import run_study\n"
        "run_study(sys.argv[1], BabilongSource('detect', [2, 3], [10, 90], 2, seed=3), 'austen-pydocs-recall',\n"
        "          config=MeasureConfig(attribution_steps=2), flush_rows=1)\n")
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, "-c", script, str(tmp_path)], env=env)
    try:
        deadline = time.monotonic() + 240
        while len(list(rows_path(tmp_path).glob("part-*.parquet"))) < 3 and time.monotonic() < deadline:
            assert proc.poll() is None, "the study ended before it was killed"
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    before = done_ids(tmp_path)
    assert 3 <= len(before) < 8  # killed half way
    result = run_study(tmp_path, small_grid(), "austen-pydocs-recall", model, config=CONFIG)
    ids = [r["sample_id"] for r in read_rows(tmp_path)]
    assert sorted(ids) == sorted(s.sample_id for s in small_grid().specs())  # exactly one row per sample
    assert result.written == 8 - len(before)
    assert not list(rows_path(tmp_path).glob(".*"))  # no temporary part left


def test_read_rows_keeps_one_row_per_sample_id(tmp_path):
    writer = RowWriter(tmp_path, flush_rows=1)
    for value in (0.1, 0.2):
        writer.add({"sample_id": "a", "p_answer": value})
    writer.add({"sample_id": "b", "p_answer": 0.3})
    writer.close()
    rows = read_rows(tmp_path)
    assert [(r["sample_id"], r["p_answer"]) for r in rows] == [("a", 0.1), ("b", 0.3)]


@pytest.mark.slow
def test_process_pool_gives_the_same_rows(model, study, tmp_path):
    from rmt_core.studies.executors import ProcessPool

    result = run_study(tmp_path, small_grid(), "austen-pydocs-recall", model, ProcessPool(2), CONFIG)
    assert result.complete and read_study(tmp_path)["executor"] == {"kind": "processes", "workers": 2,
                                                                    "torch_threads_per_worker": 1, "device": "cpu"}
    ours = {r["sample_id"]: r for r in read_rows(study)}
    theirs = {r["sample_id"]: r for r in read_rows(tmp_path)}
    assert set(ours) == set(theirs)
    for sid in ours:
        for column in COMPARED:
            assert theirs[sid][column] == ours[sid][column], (sid, column)


# ---------------------------------------------------------------------- aggregates
def _row(n, d, correct, **extra):
    return {"sample_id": f"{n}-{d}-{extra.get('i', 0)}", "task": "detect", "n_segments": n, "depth": d,
            "correct": correct, "correct_reset": False, "error": None} | extra


def test_grid_and_operating_range():
    rows = [_row(2, 10, True), _row(2, 90, True), _row(4, 10, True), _row(4, 90, True, i=1),
            _row(8, 10, False), _row(8, 90, True), _row(16, 10, True), _row(16, 90, True),
            {"sample_id": "err", "n_segments": 2, "depth": 10, "error": "x", "correct": None}]
    g = aggregate.grid(rows)
    assert g.segments == [2, 4, 8, 16] and g.depths == [10.0, 90.0]
    assert g.values[2].tolist() == [0.0, 1.0] and g.counts[0].tolist() == [1, 1]  # the error row is not scored
    card = aggregate.operating_range(rows, {"rmt_config": {"segment_size": 32}, "checkpoint_name": "m",
                                            "source": {"haystack": "austen"}})
    assert card["study"]["max_segments"] == 4 and card["study"]["max_tokens"] == 128  # 16 passes, but 8 fails first
    assert card["study"]["errors"] == 1 and card["study"]["checkpoint"] == "m"
    assert aggregate.operating_range([_row(2, 10, False)])["study"]["max_segments"] is None
    # the card's own format: training.operating_range reads it back
    from rmt_core.operating_range import read_operating_range

    read = read_operating_range({"operating_range": card}, "detect")
    assert read.accuracy == {"held-out Austen (Persuasion)": {2: 1.0, 4: 1.0, 8: 0.5, 16: 1.0}} and read.max_segments == 16


def test_grid_heatmap_cells_name_their_cell():
    from rmt_core.viz import study as vs

    fig = vs.grid_heatmap(np.array([[1.0, 0.5], [0.0, np.nan]]), [2, 4], [10, 90], np.array([[3, 3], [3, 0]]))
    custom = np.asarray(fig.data[0].customdata)
    assert custom[1, 0].tolist() == [4, 10.0, 3]  # row = length, column = depth
    diff = vs.grid_heatmap(np.array([[0.2, -0.6]]), [2], [10, 90], diverging=True)
    assert diff.data[0].zmin == -0.6 and diff.data[0].zmax == 0.6


# ---------------------------------------------------------------------- probes
def _synthetic_rows(n: int, seed: int = 0, signal_strength: float = 3.0):
    rng = np.random.default_rng(seed)
    places = ["garden", "office", "kitchen"]
    direction = rng.standard_normal((3, 16))
    rows = []
    for i in range(n):
        label = i % 3
        states = rng.standard_normal((3, 2, 16)).astype(np.float16)  # (ages, slots, hidden)
        states[:, 1] += (signal_strength * direction[label]).astype(np.float16)  # only slot 1 holds the answer
        rows.append({"sample_id": f"s{i}", "answer": places[label], "error": None,
                     "memory_after_write": states.tobytes(), "state_shape": list(states.shape)})
    return rows


def test_probes_read_the_slot_that_holds_the_answer_and_the_control_does_not():
    from rmt_core.studies.probes import fit_probes

    result = fit_probes(_synthetic_rows(90))
    assert not set(result.train) & set(result.test)  # held out by sample
    assert np.all(result.slots[1] > 0.9) and np.all(result.slots[0] < 0.6)  # slot 0 is noise
    assert np.all(result.joined > 0.9) and np.mean(result.shuffled) < 0.6
    assert result.chance == pytest.approx(1 / 3, abs=0.1)
    with pytest.raises(StudyError, match="at least 4 samples"):
        fit_probes(_synthetic_rows(3))


def test_causal_check_runs_through_the_interventions_api(model, study):
    from rmt_core.studies.probes import causal_check, fit_probes

    rows = read_rows(study)
    result = fit_probes(rows, test_size=0.5)
    checks = causal_check(model, read_study(study), rows, result, strength=2.0, samples=2)
    assert checks
    by_id = {r["sample_id"]: r for r in rows}
    for c in checks:
        # p(answer) before the push is the row's p(answer): the same model on the same sample
        assert c["p_answer_before"] == pytest.approx(by_id[c["sample_id"]]["p_answer"], rel=1e-3)
        assert 0 <= c["p_answer_after"] <= 1 and 0 <= c["p_answer_control"] <= 1


# ---------------------------------------------------------------------- report
@pytest.mark.slow
def test_report_writes_figures_with_provenance_and_tables(study, tmp_path):
    from rmt_core.cli import main
    from rmt_core.viz import export

    if export.browser_available() is None:
        pytest.skip("no Chromium for kaleido")
    assert main(["study", "report", str(study), "--out", str(tmp_path), "--format", "svg"]) == 0
    names = {p.name for p in tmp_path.iterdir()}
    assert {"heatmap_accuracy.svg", "accuracy_by_length.svg", "retention.svg", "grid.csv", "rows.csv",
            "operating_range.json", "report.json"} <= names
    prov = export.read_provenance(tmp_path / "heatmap_accuracy.svg")
    assert prov["study"]["weights_hash"] == read_study(study)["weights_hash"]
    grid_csv = (tmp_path / "grid.csv").read_text().splitlines()
    assert grid_csv[0].startswith("segments,depth,correct,samples") and len(grid_csv) == 5
