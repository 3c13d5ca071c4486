"""Models placed by accelerate (device_map): offloaded layers give the single-device results."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import rmt_core
from rmt_core import CheckpointError

from conftest import VOCAB, make_model

# GPT-2 backbone modules; transformer.h.1 keeps its weights on disk and is loaded for each call
OFFLOAD_MAP = {"transformer.wte": "cpu", "transformer.wpe": "cpu", "transformer.drop": "cpu",
               "transformer.h.0": "cpu", "transformer.h.1": "disk", "transformer.ln_f": "cpu", "lm_head": "cpu"}


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    path = tmp_path_factory.mktemp("placement") / "tiny"
    rmt_core.save(make_model("gpt2", num_mem_tokens=3, segment_size=6), path)
    return path


@pytest.fixture(scope="module")
def ids():
    return np.random.default_rng(1).integers(0, VOCAB, 40)


def _logits(model, ids):
    with torch.no_grad():
        return model(torch.as_tensor(ids).unsqueeze(0)).logits


def test_offloaded_layers_give_the_single_device_results(saved, ids, tmp_path):
    single = rmt_core.load(saved, device="cpu")
    placed = rmt_core.load(saved, device_map=OFFLOAD_MAP, offload_folder=tmp_path / "offload")
    assert placed.backbone.transformer.h[1].mlp.c_fc.weight.device.type == "meta"  # really on disk
    assert placed.device == torch.device("cpu") and placed.initial_memory.device.type == "cpu"
    assert placed.weights_hash() == single.weights_hash()
    assert torch.equal(_logits(placed, ids), _logits(single, ids))
    a, b = rmt_core.trace(single, ids), rmt_core.trace(placed, ids)
    for x, y in zip(a.segments, b.segments):
        assert np.array_equal(x.memory_out, y.memory_out)
        assert np.array_equal(x.token_logprob, y.token_logprob, equal_nan=True)
    np.testing.assert_array_equal(b.attention(2), a.attention(2))


def test_auto_map_within_max_memory(saved, ids, tmp_path):
    single = rmt_core.load(saved, device="cpu")
    placed = rmt_core.load(saved, device_map="auto", max_memory={"cpu": 80_000}, offload_folder=tmp_path / "off")
    assert "disk" in placed.backbone.hf_device_map.values()
    assert torch.equal(_logits(placed, ids), _logits(single, ids))


@pytest.mark.parametrize("device_map, kwargs, message", [
    ({**OFFLOAD_MAP, "transformer.h.7": "cpu"}, {}, "does not have"),
    ({k: v for k, v in OFFLOAD_MAP.items() if k != "transformer.h.0"}, {}, "without a device"),
    (OFFLOAD_MAP, {}, "offload_folder"),
    ("everywhere", {}, "not known"),
    ("auto", {"max_memory": {"cpu": 1_000}}, "Nothing fits"),
])
def test_bad_device_maps_are_refused(saved, device_map, kwargs, message):
    with pytest.raises(CheckpointError, match=message):
        rmt_core.load(saved, device_map=device_map, **kwargs)
