"""The memory seam: the registry, RMTConfig.memory, Trace.replay, and a toy memory type
registered from outside rmt_core (tests/toy_memory.py) that gets the whole library."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import rmt_core
from rmt_core import ArgumentError, ConfigError, RMTConfig
from rmt_core.engine.memory import MemoryType, TokenMemory, known_memories, memory_class, register_memory
from rmt_core.tracing.recorder import token_logprobs

from conftest import VOCAB, make_model


@pytest.fixture(scope="module")
def model():
    return make_model("gpt2", num_mem_tokens=3, segment_size=6)


@pytest.fixture(scope="module")
def trace(model):
    return rmt_core.trace(model, np.random.default_rng(0).integers(0, VOCAB, 40))  # 7 segments, the last short


# ---------------------------------------------------------------------- registry and config
def test_tokens_is_the_default_memory_type(model):
    assert RMTConfig().memory == "tokens" and "tokens" in known_memories()
    assert isinstance(model.memory, TokenMemory) and memory_class("tokens") is TokenMemory
    assert "initial_memory" in dict(model.named_parameters())  # checkpoints and weight hashes keep the name


def test_unknown_memory_type_is_a_config_error_naming_the_known_ones():
    with pytest.raises(ConfigError, match=r"Unknown memory type 'nope'.*'tokens'"):
        RMTConfig(memory="nope")
    with pytest.raises(ConfigError, match="Unknown memory type"):
        RMTConfig.from_dict({"num_mem_tokens": 2, "segment_size": 4, "memory": "nope"})


def test_old_configs_without_memory_load_as_tokens():
    config = RMTConfig.from_dict({"num_mem_tokens": 2, "segment_size": 4})
    assert config.memory == "tokens" and json.loads(config.to_json())["memory"] == "tokens"


def test_register_memory_checks_its_arguments():
    with pytest.raises(ArgumentError, match="MemoryType subclass"):
        register_memory("thing", dict)
    with pytest.raises(ArgumentError, match="already registered"):
        register_memory("tokens", type("Other", (TokenMemory,), {}))
    with pytest.raises(ArgumentError, match="non-empty"):
        register_memory("", TokenMemory)


# ---------------------------------------------------------------------- replay
def test_replay_reproduces_the_trace_bit_for_bit(trace, model):
    carry = None
    for seg in trace.segments:
        out = trace.replay(seg.index)
        assert np.array_equal(out.state_arrays()["memory"], seg.memory_out)
        logprobs, token_lp = token_logprobs(out.logits[0].detach(), torch.as_tensor(seg.token_ids, dtype=torch.long),
                                            carry)
        carry = logprobs[-1]
        stored = seg.token_logprob
        assert np.array_equal(token_lp.numpy()[1:], stored[1:])
        if seg.index > 0:
            assert np.array_equal(token_lp.numpy(), stored, equal_nan=True)


def test_replay_from_an_edited_state_differs(trace):
    """Negative control: the comparison above can fail (another state gives other logits)."""
    same = trace.replay(3)
    reset = trace.replay(3, edit="reset")
    zeroed = trace.replay(3, edit=lambda arrays: {k: np.zeros_like(v) for k, v in arrays.items()})
    assert not torch.equal(same.logits, reset.logits) and not torch.equal(same.logits, zeroed.logits)
    given = trace.replay(3, trace.state_in(3))
    assert torch.equal(same.logits, given.logits)


def test_replay_checks_its_arguments(trace):
    with pytest.raises(ArgumentError, match="supports the edits"):
        trace.replay(1, edit="melt")
    with pytest.raises(ArgumentError, match="named arrays"):
        trace.replay(1, edit=lambda arrays: {"other": 1})
    with pytest.raises(ArgumentError, match="shape"):
        trace.replay(1, {"memory": np.zeros((2, 2), dtype=np.float32)})
    with pytest.raises(rmt_core.TraceError):
        trace.replay(99)


def test_replay_returns_attention_and_hidden_states(trace, model):
    out = trace.replay(2, attention=True, output_hidden_states=True)
    n = 3 + trace.segments[2].num_tokens + 3
    assert out.attention.shape == (1, model.num_layers, model.num_heads, n, n)
    assert np.array_equal(out.attention[0].numpy(), trace.attention(2))
    assert len(out.hidden_states) == model.num_layers + 1
