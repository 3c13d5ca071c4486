"""Checkpoints that lie (issue 29 item 4, issue 28 item 10): a config.json declaring huge sizes is
refused before anything of its size is allocated; wrong-typed fields and weights that are not
finite get one clear CheckpointError."""
from __future__ import annotations

import json
import os
import stat
import time
import tracemalloc

import pytest
import torch
from safetensors.torch import load_file, save_file

import rmt_core
from rmt_core import CheckpointError

from conftest import make_model


@pytest.fixture
def saved(tmp_path):
    model = make_model("gpt2")
    path = tmp_path / "ckpt"
    rmt_core.save(model, str(path))
    return path


def _edit_config(path, edit):
    config = json.loads((path / "config.json").read_text())
    edit(config)
    (path / "config.json").write_text(json.dumps(config))


def _load_bounded(path, match):
    """Load, expect CheckpointError matching `match`, quickly and with little Python-side memory
    (torch allocations go through tracemalloc's hooks only in part: time is the second witness;
    a 40000-wide GPT-2 would take ~230 GB and minutes to build)."""
    tracemalloc.start()
    start = time.perf_counter()
    try:
        with pytest.raises(CheckpointError, match=match) as caught:
            rmt_core.load(str(path), device="cpu")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert time.perf_counter() - start < 5 and peak < 50 << 20
    return str(caught.value)


@pytest.mark.parametrize("field, value", [("n_embd", 6000), ("n_embd", 40000), ("vocab_size", 10**9),
                                          ("n_positions", 10**9)])
def test_a_config_declaring_huge_sizes_is_refused_before_allocating(saved, field, value):
    _edit_config(saved, lambda c: c["backbone"].update({field: value}))
    message = _load_bounded(saved, "config.json: (tensor '.*' has shape .* but the config needs|the config describes "
                                   "a model of [0-9,]+ values .* but the weights hold [0-9,]+)")
    assert "nothing of" in message


def test_a_config_declaring_a_billion_layers_is_refused_before_building(saved):
    _edit_config(saved, lambda c: c["backbone"].update(n_layer=10**9))
    _load_bounded(saved, "declares n_layer=1,000,000,000 layers but the weights hold [0-9]+ tensors")


def test_a_config_declaring_twenty_million_memory_slots_is_refused(saved):
    _edit_config(saved, lambda c: c["rmt"].update(num_mem_tokens=20_000_000))
    _load_bounded(saved, "tensor 'initial_memory' has shape \\(3, 32\\) in the weights but the config needs "
                         "\\(20000000, 32\\)")
    _edit_config(saved, lambda c: c["rmt"].update(num_mem_tokens=2e7))
    _load_bounded(saved, "num_mem_tokens must be an integer >= 0, got 20000000.0")


@pytest.mark.parametrize("edit, match", [
    (lambda c: c["backbone"].update(n_head=0), "the backbone config cannot be built \\(ZeroDivisionError"),
    (lambda c: c["rmt"].update(num_mem_tokens=True), "num_mem_tokens must be an integer >= 0, got True"),
    (lambda c: c["rmt"].update(segment_size=6.0), "segment_size must be an integer >= 1, got 6.0"),
    (lambda c: c["rmt"].update(reset_positions="yes"), "reset_positions must be true or false"),
    (lambda c: c.update(rmt=[]), '"rmt" is \\[\\], not a JSON object'),
    (lambda c: c.update(backbone="gpt2"), '"backbone" is "gpt2", not a JSON object'),
    (lambda c: c["backbone"].pop("model_type"), "the backbone config cannot be built .*no model_type"),
])
def test_wrong_typed_config_fields_get_clear_messages(saved, edit, match):
    _edit_config(saved, edit)
    with pytest.raises(CheckpointError, match=match):
        rmt_core.load(str(saved), device="cpu")


def test_a_right_config_still_loads_the_same_model(saved):
    """Negative control: the checks pass a checkpoint whose config is its own."""
    model = rmt_core.load(str(saved), device="cpu")
    assert model.num_heads == 4 and model.config.num_mem_tokens == 3


@pytest.mark.parametrize("name, value, words", [
    ("initial_memory", float("inf"), "'initial_memory' \\(1 infinite of 96\\)"),
    ("backbone.transformer.h.0.attn.c_attn.weight", float("nan"), "'backbone.transformer.h.0.attn.c_attn.weight' "
                                                                  "\\(1 NaN of 3,072\\)"),
])
def test_weights_that_are_not_finite_are_refused_at_load(saved, name, value, words):
    tensors = load_file(str(saved / "model.safetensors"))
    tensors[name].view(-1)[0] = value
    save_file(tensors, str(saved / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match=f"holds values that are not finite: {words}"):
        rmt_core.load(str(saved), device="cpu")


def test_checkpoint_weights_get_normal_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        path = rmt_core.save(make_model("gpt2"), str(tmp_path / "shared"))
    finally:
        os.umask(old)
    assert stat.S_IMODE((path / "model.safetensors").stat().st_mode) == 0o644
    assert not list(path.glob("*.tmp"))
