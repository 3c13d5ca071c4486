"""Recipe.init_backbone_from: the backbone starts from a shipped checkpoint, the memory starts fresh.

rmt_core.training.warm_start; the ARMT recipe (armt-austen-pydocs-recall) is the one that uses it.
"""
from __future__ import annotations

import dataclasses

import pytest
import torch

import rmt_core
from rmt_core.errors import CheckpointError
from rmt_core.training.loop import build_model, start_model
from rmt_core.training.recipes import ANYWHERE, RECIPES, Recipe
from rmt_core.training.warm_start import backbone_init_line

SOURCE = "austen-pydocs-recall"


@pytest.fixture(scope="module")
def source():
    return rmt_core.load(SOURCE, device="cpu", dtype=torch.float32)


def _recipe(**changes) -> Recipe:
    """The default recipe (token memory, shipped backbone size) with a warm start."""
    return dataclasses.replace(ANYWHERE, **{"name": "warm-test", "init_backbone_from": SOURCE, **changes})


def _same_tensors(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_backbone_equals_the_source_and_memory_is_fresh(source):
    recipe = _recipe()
    model, provenance = start_model(recipe, source.tokenizer)
    assert _same_tensors(model.backbone.state_dict(), source.backbone.state_dict())
    assert provenance == {"source": SOURCE, "weights_hash": source.weights_hash(),
                          "tensors": len(source.backbone.state_dict())}
    # The memory's parameters are those of a fresh build (same seed), not the source's.
    fresh = build_model(recipe, source.tokenizer)
    ours = {k: v for k, v in model.state_dict().items() if not k.startswith("backbone.")}
    assert ours and _same_tensors(ours, {k: v for k, v in fresh.state_dict().items() if not k.startswith("backbone.")})
    theirs = source.state_dict()
    assert all(not torch.equal(v, theirs[k]) for k, v in ours.items())
    # ... and the fresh build's backbone is not the source's (the copy did something).
    assert not torch.equal(fresh.backbone.transformer.wte.weight, source.backbone.transformer.wte.weight)
    # Tied LM head follows the copied embeddings.
    assert model.backbone.get_output_embeddings().weight.data_ptr() == model.backbone.transformer.wte.weight.data_ptr()
    assert SOURCE in backbone_init_line(provenance) and provenance["weights_hash"] in backbone_init_line(provenance)


def test_without_the_field_nothing_is_copied(source):
    model, provenance = start_model(dataclasses.replace(ANYWHERE, name="cold"), source.tokenizer)
    assert provenance is None
    assert not torch.equal(model.backbone.transformer.wte.weight, source.backbone.transformer.wte.weight)


def test_a_missing_source_is_a_clear_error(source, tmp_path):
    with pytest.raises(CheckpointError, match="init_backbone_from"):
        start_model(_recipe(init_backbone_from=str(tmp_path / "no-such-checkpoint")), source.tokenizer)
    with pytest.raises(CheckpointError, match="no-such-shipped-model"):
        start_model(_recipe(init_backbone_from="no-such-shipped-model"), source.tokenizer)


def test_a_backbone_of_another_size_is_refused(source):
    recipe = _recipe(backbone={**ANYWHERE.backbone, "n_layer": 2})
    with pytest.raises(CheckpointError, match=r"does not fit.*unexpected \['transformer\.h\.2"):
        start_model(recipe, source.tokenizer)


def test_another_tokenizer_is_refused(source):
    import json

    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    # Same size, two tokens' ids swapped: the copied embeddings would mean other tokens.
    spec = json.loads(source.tokenizer.backend_tokenizer.to_str())
    vocab = spec["model"]["vocab"]
    a, b = "the", "and"
    vocab[a], vocab[b] = vocab[b], vocab[a]
    other = PreTrainedTokenizerFast(tokenizer_object=Tokenizer.from_str(json.dumps(spec)))
    assert len(other) == len(source.tokenizer)
    with pytest.raises(CheckpointError, match="tokenizer"):
        start_model(_recipe(), other)


def test_the_armt_recipe_warm_starts_from_the_shipped_default():
    recipe = RECIPES["armt-austen-pydocs-recall"]
    assert recipe.init_backbone_from == SOURCE
    assert recipe.backbone == ANYWHERE.backbone and recipe.tokenizer == ANYWHERE.tokenizer
    assert recipe.rmt["memory"] == "associative" and recipe.rmt["segment_size"] == 32
    assert [s.segments for s in recipe.stages] == [(1, 2), (2, 3, 4), (4, 6, 8), (8, 16, 32)]
    assert all(s.gate is not None and s.layout == "any" for s in recipe.stages)
    assert recipe.to_dict()["init_backbone_from"] == SOURCE  # recorded in every run's state.json


def test_the_armt_model_starts_from_the_default_backbone_with_fresh_associative_memory(source):
    recipe = RECIPES["armt-austen-pydocs-recall"]
    model, provenance = start_model(recipe, source.tokenizer)
    assert provenance["source"] == SOURCE and provenance["weights_hash"] == source.weights_hash()
    assert _same_tensors(model.backbone.state_dict(), source.backbone.state_dict())
    fresh = build_model(recipe, source.tokenizer)
    memory = {k: v for k, v in model.state_dict().items() if not k.startswith("backbone.")}
    assert any(k.startswith("associative_layers.") for k in memory) and "memory_tokens" in memory
    assert _same_tensors(memory, {k: v for k, v in fresh.state_dict().items() if not k.startswith("backbone.")})
    assert "initial_memory" not in model.state_dict()  # the RMT's memory is never copied
