"""Shipping a model with a reference model measured beside it (Recipe.card "compare_with").

rmt_core.training.shipping: the reference is measured the same way in the same run (same
segment counts, samples and seeds), its rows land in the card beside the model's, and the
card says what the model was not trained for. Tiny models, a few samples: fast.
"""
from __future__ import annotations

import dataclasses
import json

import pytest
import torch

import rmt_core
from rmt_core.io.checkpoint import save_checkpoint
from rmt_core.training import evaluation, shipping
from rmt_core.training.corpus import load_source
from rmt_core.training.loop import build_model
from rmt_core.training.recipes import ANYWHERE, RECIPES, Stage

TINY_BACKBONE = {"kind": "gpt2", "n_layer": 1, "n_embd": 16, "n_head": 2, "n_positions": 64}
SEGMENTS = (1, 2)


def _recipe(name: str, memory: dict, **card):
    stage = Stage("tiny", "fact", "detect", (1, 2), max_steps=5, layout="any", sources=("austen", "pydocs"))
    return dataclasses.replace(ANYWHERE, name=name, backbone=TINY_BACKBONE,
                               rmt={"num_mem_tokens": 2, "segment_size": 32, "task": "detect", **memory},
                               stages=[stage, dataclasses.replace(stage, name="tiny, longer")], card=card)


@pytest.fixture(scope="module")
def tokenizer():
    return rmt_core.load(rmt_core.DEFAULT_CHECKPOINT, device="cpu").tokenizer


def _short_source(name: str, split: str) -> str:
    """The held-out texts cut to their first 40k characters (tokenising whole texts dominates the time)."""
    return load_source(name, split)[:40_000]


@pytest.fixture
def shipped(tmp_path, tokenizer, monkeypatch, request):
    memory = getattr(request, "param", {})
    from rmt_core.training import corpus

    monkeypatch.setattr(corpus, "load_source", _short_source)
    monkeypatch.setattr(shipping, "out_of_domain_texts", lambda: {"a text of no source": "Plain words. " * 400})
    reference = build_model(dataclasses.replace(_recipe("tiny-ref", {}), seed=1), tokenizer)
    save_checkpoint(reference, str(tmp_path / "reference"), card={})
    recipe = _recipe("tiny-compare", memory, segments=SEGMENTS, compare_with=str(tmp_path / "reference"),
                     limits="- Trained on nothing at all.")
    monkeypatch.setitem(RECIPES, recipe.name, recipe)
    model = build_model(recipe, tokenizer)
    run = tmp_path / "run"
    save_checkpoint(model, str(run / "latest"), card={})
    state = {"recipe": recipe.to_dict(), "stage": 1, "step": 3, "total_steps": 8, "seconds": 60.0, "threads": 1,
             "stages": [{"name": "tiny", "steps": 5, "minutes": 0.5, "gate": None, "gate_reached": False}],
             "backbone_init": {"source": "somewhere", "weights_hash": "0123456789abcdef", "tensors": 9}}
    (run / "state.json").write_text(json.dumps(state))
    out = shipping.ship(run, "tiny-shipped", samples=2, lm_windows=1, dest=tmp_path / "shipped",
                        progress=lambda _: None)
    return out, reference, model


ASSOCIATIVE = {"memory": "associative", "memory_options": {"d_mem": 8}}


@pytest.mark.parametrize("shipped", [{}, ASSOCIATIVE], indirect=True, ids=["tokens", "associative"])
def test_the_reference_is_measured_the_same_way_beside_the_model(shipped):
    out, reference, model = shipped
    config = json.loads((out / "config.json").read_text())
    results = config["card"]["evaluation_results"]
    ref = results["reference"]
    assert ref["weights_hash"] == reference.weights_hash() and ref["memory"] == "tokens"
    for key in ("fact_recall", "fact_recall_pydocs"):
        assert [r["segments"] for r in results[key]] == list(SEGMENTS) == [r["segments"] for r in ref[key]]
    # The reference's rows are what evaluating it directly on the same samples gives.
    direct = evaluation.evaluate_fact_recall(reference, "detect", SEGMENTS, samples=2,
                                             haystack=_short_source("austen", "heldout"))
    assert ref["fact_recall"] == direct
    assert [r["text"] for r in ref["lm_texts"]] == [r["text"] for r in results["lm_texts"]]
    card = (out / "README.md").read_text()
    assert "### Beside " in card and "random tiny-shipped" in card and f"random {out.parent.parent / 'reference'}" in card
    assert "## Limits\n- Trained on nothing at all." in card
    assert "backbone initialised from somewhere" in card
    assert "- tiny, longer: stopped at step 3 of 5 (shipped before the run ended)" in card
    assert ("slot_similarity" in results) == (model.config.memory == "tokens")
    if model.config.memory != "tokens":
        assert f"- memory type: `{model.config.memory}`" in card and "d_mem=8" in card
    # What was shipped loads back as the same model.
    assert rmt_core.load(str(out), device="cpu").weights_hash() == model.weights_hash()


def test_the_reference_card_gets_the_same_comparison(shipped, tmp_path):
    out, reference, model = shipped
    folder = tmp_path / "reference"
    weights = (folder / "model.safetensors").read_bytes()
    shipping.add_comparison_to_card(folder, out)
    shipping.add_comparison_to_card(folder, out)  # again: replaced, not added twice
    card = (folder / "README.md").read_text()
    assert card.count("### Beside tiny-shipped (") == 1 and "random tiny-shipped" in card
    assert (folder / "model.safetensors").read_bytes() == weights
    config = json.loads((folder / "config.json").read_text())
    compared = config["card"]["comparisons"]["tiny-shipped"]
    assert compared["weights_hash"] == model.weights_hash()
    assert compared["this_model"]["fact_recall"] == json.loads((out / "config.json").read_text())[
        "card"]["evaluation_results"]["reference"]["fact_recall"]
    assert rmt_core.load(str(folder), device="cpu").weights_hash() == reference.weights_hash()
    # The shipped card measured `folder`'s model, not the shipped one itself: refused.
    with pytest.raises(rmt_core.errors.CheckpointError, match="measured another model"):
        shipping.add_comparison_to_card(out, out)
    with pytest.raises(rmt_core.errors.CheckpointError, match="measured no reference"):
        shipping.add_comparison_to_card(out, folder)


def test_without_compare_with_the_card_has_no_reference(monkeypatch):
    recipe = _recipe("tiny-alone", {})
    monkeypatch.setitem(RECIPES, recipe.name, recipe)
    assert shipping.card_segments(recipe.name) == shipping.CARD_SEGMENTS
    assert shipping.card_segments("armt-austen-pydocs-recall") == (1, 2, 4, 8, 16, 32, 64, 128)
    assert shipping.comparison_tables({"fact_recall": [{"segments": 1, "samples": 1}]}, "x") == ""


def test_a_missing_reference_is_a_clear_error(tmp_path, tokenizer):
    with pytest.raises(rmt_core.errors.CheckpointError):
        shipping.evaluate_reference(str(tmp_path / "nothing"), "austen-pydocs-recall", 1, 1, progress=lambda _: None)
