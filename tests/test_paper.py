"""The papers' figures from the shipped models, and the write pattern detected numerically."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import rmt_core
from rmt_core.viz import paper
from rmt_core.training.recipes import COPY
from rmt_core.training.tasks.algorithmic import make_task_batch
from rmt_core.training.loop import build_model


def _copy_traces(model, seeds):
    return [rmt_core.trace(model, make_task_batch("copy", 24, 1, np.random.default_rng(s), model.tokenizer)["input_ids"][0])
            for s in seeds]


@pytest.fixture(scope="module")
def copy_model():
    return rmt_core.load("copy-paper", device="cpu", dtype=torch.float32)


def test_diagonal_score_detects_a_rising_diagonal():
    assert paper.diagonal_score(np.eye(6)) == pytest.approx(1.0)
    assert paper.diagonal_score(np.eye(6)[::-1]) == pytest.approx(-1.0)
    assert paper.injectivity(np.eye(6)) == 1.0 and paper.sharpness(np.eye(6)) == 1.0
    assert paper.injectivity(np.ones((4, 6))) == 0.25


@pytest.mark.slow
def test_write_pattern_of_the_copy_model_is_a_one_slot_per_token_diagonal(copy_model):
    """Each write slot attends to one source token (sharp, mostly distinct): the papers' diagonal up to
    the order of the exchangeable slots. An untrained model of the same shape does not do this."""
    untrained = build_model(COPY, copy_model.tokenizer).eval()

    def stats(model):
        results = [paper.write_pattern(t, s) for t in _copy_traces(model, range(100, 106)) for s in (0, 1, 2)]
        return np.mean([r.sharpness for r in results]), np.mean([r.injectivity for r in results])

    (sharp, inj), (sharp0, inj0) = stats(copy_model), stats(untrained)
    assert sharp > 2.5 * sharp0 and sharp > 0.3, (sharp, sharp0)
    assert inj > inj0, (inj, inj0)
    # after ordering slots by the token they read, the argmax column rises with the slot index
    result = paper.write_pattern(_copy_traces(copy_model, [1])[0], 1)
    weights = np.stack([d["z"] for d in result.figure.data])[0]
    assert paper.diagonal_score(np.asarray(weights)) > 0.9


@pytest.mark.slow
def test_paper_figures_build_from_real_traces(copy_model):
    trace = _copy_traces(copy_model, [0])[0]
    assert paper.read_pattern(trace).figure.data
    default = rmt_core.load(rmt_core.DEFAULT_CHECKPOINT, device="cpu")
    from rmt_core.viz.tour import make_tour

    tour = make_tour(default, seed=3, n_steps=8)
    fig = paper.keep_rewrite(tour.trace, highlight=tour.fact_segment)
    assert len(fig.data) == 3
    import json

    card = json.loads((rmt_core.io.checkpoint.SHIPPED_DIR / "copy-paper" / "config.json").read_text())["card"]
    rows = card["evaluation_results"]["algorithmic"]
    table = paper.accuracy_table(rows, "copy")
    assert table[0]["RMT (paper)"] == 1.0 and table[0]["ours, with memory"] == rows[0]["accuracy_memory"]
    assert len(paper.accuracy_figure(rows, "copy").data) >= 4
