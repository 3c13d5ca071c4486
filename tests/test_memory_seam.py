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


# ---------------------------------------------------------------------- a toy memory type from outside rmt_core
@pytest.fixture(scope="module")
def toy():
    import toy_memory  # noqa: F401  (registers "toy-mean")

    return make_model("gpt2", num_mem_tokens=0, segment_size=6, memory="toy-mean")


@pytest.fixture(scope="module")
def toy_ids():
    return np.random.default_rng(1).integers(0, VOCAB, 30)  # 5 segments


@pytest.fixture(scope="module")
def toy_trace(toy, toy_ids):
    return rmt_core.trace(toy, toy_ids)


def test_toy_forward_carries_its_state(toy, toy_ids):
    x = torch.as_tensor(toy_ids).unsqueeze(0)
    out = toy(x)
    assert out.logits.shape == (1, 30, VOCAB) and len(out.memory_out) == 5
    assert torch.equal(out.memory_out[-1]["count"], torch.tensor([[5.0]]))
    reset = toy(x, reset_memory=True).logits  # negative control: without the state the later segments differ
    assert torch.equal(reset[:, :6], out.logits[:, :6]) and not torch.allclose(reset[:, 6:], out.logits[:, 6:])


def test_toy_bptt_training_step(toy_ids):
    import toy_memory  # noqa: F401

    model = make_model("gpt2", num_mem_tokens=0, segment_size=6, memory="toy-mean").train()
    x = torch.as_tensor(toy_ids).unsqueeze(0)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    loss = model(x, labels=x).loss
    loss.backward()
    assert model.mean_gain.grad is not None and float(model.mean_gain.grad.abs()) > 0  # through the carried state
    optimizer.step()
    assert float(model(x, labels=x).loss.detach()) < float(loss.detach())


def test_toy_trace_replay_and_file(toy, toy_trace, tmp_path):
    trace = toy_trace
    assert trace.complete and trace.num_segments == 5 and trace.memory_type == "toy-mean"
    assert trace.state_in(0)["count"] == 0 and trace.state_out(4)["count"] == 5
    assert np.array_equal(trace.replay(3).state_arrays()["mean"], trace.state_out(3)["mean"])
    assert trace.memory_states().shape == (6, 1, toy.hidden_size)
    loaded = rmt_core.Trace.load(trace.save(tmp_path / "toy.rmtrace"), model=toy)
    for s in range(5):
        assert all(np.array_equal(loaded.state_out(s)[k], trace.state_out(s)[k]) for k in ("mean", "count"))
        assert np.array_equal(loaded.segments[s].token_logprob, trace.segments[s].token_logprob, equal_nan=True)
    assert np.array_equal(loaded.memory_states(), trace.memory_states())


def test_a_trace_of_an_unknown_memory_type_is_refused_by_name(toy_trace, tmp_path, monkeypatch):
    from rmt_core.engine.memory import registry

    path = toy_trace.save(tmp_path / "toy.rmtrace")
    monkeypatch.delitem(registry._REGISTRY, "toy-mean")
    with pytest.raises(rmt_core.TraceError, match="memory type 'toy-mean'"):
        rmt_core.Trace.load(path)


def test_toy_attribution_through_memory_and_reset(toy_trace):
    from rmt_core import attribution, interventions

    result = attribution.attribute(toy_trace, "through", 3, 2, n_steps=4)
    earlier = result.scores[:18]
    assert np.isfinite(earlier).all() and np.abs(earlier).sum() > 0  # earlier segments reach it through the state
    reset = interventions.reset_memory(toy_trace, 2)
    assert np.array_equal(reset.loss_after[:2], reset.loss_before[:2])
    assert not np.allclose(reset.loss_after[2:], reset.loss_before[2:])
    same = interventions.intervene(toy_trace, 2, lambda arrays: arrays, "identity")  # negative control
    assert np.allclose(same.loss_after, same.loss_before)


@pytest.mark.parametrize("page", ["screens/timeline.py", "screens/memory.py"])
def test_toy_trace_on_the_timeline_and_memory_pages(toy_trace, page):
    pytest.importorskip("streamlit")
    from streamlit.testing.v1 import AppTest

    from app import state

    at = AppTest.from_file("../app/main.py", default_timeout=240)
    at.session_state[state.TRACE] = toy_trace  # a trace is there: the app does not run its demo
    at.run()
    at.switch_page(page).run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.session_state[state.TRACE] is toy_trace and len(at.get("plotly_chart")) >= 1


# ---------------------------------------------------------------------- capabilities
def test_capabilities_say_why_slot_views_are_missing_for_the_toy(toy_trace, trace):
    from rmt_core import attribution, interventions
    from rmt_core.viz import figures

    for kind in ("read", "write"):
        with pytest.raises(rmt_core.TraceError, match="no read / write slots"):
            attribution.attribute(toy_trace, kind, 2, **({"position": 1} if kind == "read" else {}))
        assert attribution.KINDS[kind].needs.missing(trace) is None  # the tokens memory has them
    assert interventions.NEEDS["reset"].supports(toy_trace) and not interventions.NEEDS["shuffle"].supports(toy_trace)
    assert "supports the edits" in interventions.NEEDS["shuffle"].missing(toy_trace)
    names = set(figures.standard_figure_builders(toy_trace, 1))
    assert "timeline" in names and "write_to_tokens_attention" not in names
    assert "write_to_tokens_attention" in figures.standard_figure_builders(trace, 1)


def test_the_attribution_page_says_why_slot_attribution_is_missing_for_the_toy(toy_trace):
    pytest.importorskip("streamlit")
    from streamlit.testing.v1 import AppTest

    from app import state

    at = AppTest.from_file("../app/main.py", default_timeout=240)
    at.session_state[state.TRACE] = toy_trace
    at.run()
    at.switch_page("screens/attribution.py").run()
    assert not at.exception, [e.value for e in at.exception]
    assert any("no read / write slots" in info.value for info in at.info), [i.value for i in at.info]
