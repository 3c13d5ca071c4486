"""The RMT mechanism: segments, memory, masks, BPTT, generation (tiny random backbones)."""
from __future__ import annotations

import pytest
import torch

from rmt_core import ConfigError, RMTConfig
from rmt_core.engine.masks import allowed_attention

from conftest import VOCAB, make_model


def ids(batch: int, length: int, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, VOCAB, (batch, length), generator=torch.Generator().manual_seed(seed))


def test_no_memory_equals_backbone_on_each_segment(backbone_kind, attn_impl):
    model = make_model(backbone_kind, attn_impl, num_mem_tokens=0)
    x = ids(2, 15)
    with torch.no_grad():
        out = model(x)
        for start in range(0, 15, 6):
            segment = x[:, start:start + 6]
            alone = model.backbone(input_ids=segment).logits
            torch.testing.assert_close(out.logits[:, start:start + 6], alone, rtol=1e-5, atol=1e-5)
    assert out.memory_out == []


def test_output_shapes_and_memory_out(backbone_kind):
    model = make_model(backbone_kind)
    x = ids(2, 16)  # segments 6, 6, 4 (short last segment)
    out = model(x, labels=x)
    assert out.logits.shape == (2, 16, VOCAB)
    assert len(out.memory_out) == 3
    assert all(m.shape == (2, 3, 32) for m in out.memory_out)
    assert out.memory_states is out.memory_out  # the former name (README's until now) still works
    assert out.loss.ndim == 0 and torch.isfinite(out.loss)


def test_memory_carries_information_and_reset_cuts_it(backbone_kind, attn_impl):
    model = make_model(backbone_kind, attn_impl)
    x = ids(1, 12)
    y = x.clone()
    y[0, 2] = (y[0, 2] + 1) % VOCAB  # change a token of segment 1
    with torch.no_grad():
        a, b = model(x).logits, model(y).logits
        assert not torch.allclose(a[:, 6:], b[:, 6:])
        a_reset = model(x, reset_memory={1}).logits
        b_reset = model(y, reset_memory={1}).logits
    torch.testing.assert_close(a_reset[:, 6:], b_reset[:, 6:], rtol=0, atol=0)


def test_loss_is_one_shifted_cross_entropy_over_all_segments():
    model = make_model()
    x = ids(2, 14)
    out = model(x, labels=x)
    expected = torch.nn.functional.cross_entropy(out.logits[:, :-1].reshape(-1, VOCAB), x[:, 1:].reshape(-1))
    torch.testing.assert_close(out.loss, expected)
    labels = torch.full_like(x, -100)
    labels[:, 6] = x[:, 6]  # only the first token of segment 2: predicted by segment 1's last token
    out = model(x, labels=labels)
    expected = torch.nn.functional.cross_entropy(out.logits[:, 5], x[:, 6])
    torch.testing.assert_close(out.loss, expected)


def _grad_on_initial_memory(model, x):
    model.zero_grad()
    labels = torch.full_like(x, -100)
    labels[:, 13:] = x[:, 13:]  # loss on segment 3 alone
    model.train()
    model(x, labels=labels).loss.backward()
    return model.initial_memory.grad


def test_truncated_bptt_really_cuts_the_graph(backbone_kind):
    x = ids(2, 18)
    full = _grad_on_initial_memory(make_model(backbone_kind), x)
    assert full is not None and full.abs().sum() > 0
    cut = _grad_on_initial_memory(make_model(backbone_kind, bptt_depth=1), x)
    assert cut is None or torch.count_nonzero(cut) == 0
    two = _grad_on_initial_memory(make_model(backbone_kind, bptt_depth=2), x)
    assert two is None or torch.count_nonzero(two) == 0  # 3 segments: depth 2 does not reach segment 1's input
    three = _grad_on_initial_memory(make_model(backbone_kind, bptt_depth=3), x)
    assert three.abs().sum() > 0


def test_paper_mask_is_exactly_as_described():
    m, L = 2, 3
    allowed = allowed_attention(m, L, "paper")[0].int()
    R, T, W = [0, 1], [2, 3, 4], [5, 6]
    expected = torch.zeros(7, 7, dtype=torch.int)
    for r in R:
        expected[r, R] = 1  # read slots see the whole read block only
    for i, t in enumerate(T):
        expected[t, R] = 1
        expected[t, T[: i + 1]] = 1  # causal among tokens
    expected[W, :] = 1  # write sees everything, write block included
    assert torch.equal(allowed, expected)


def test_causal_mask_is_lower_triangular():
    allowed = allowed_attention(2, 3, "causal")[0]
    assert torch.equal(allowed, torch.ones(7, 7, dtype=torch.bool).tril())


def test_padding_hides_padded_keys_but_keeps_rows_non_empty():
    valid = torch.tensor([[True, True, False]])
    allowed = allowed_attention(2, 3, "paper", token_valid=valid)[0]
    assert not allowed[5:, 4].any() and not allowed[3, 4]  # nobody else sees the pad
    assert allowed.any(dim=1).all()


@pytest.mark.parametrize("mode,depends", [("paper", True), ("causal", False)])
def test_outputs_obey_the_mask(backbone_kind, attn_impl, mode, depends):
    """Write slot 0 depends on write slot m-1's input in paper mode, not in causal mode."""
    model = make_model(backbone_kind, attn_impl, mask_mode=mode)
    m = model.config.num_mem_tokens
    tokens = ids(1, 6)
    row_mem = model.initial_memory_batch(1).detach().clone()
    embeds = model.backbone.get_input_embeddings()(tokens)

    def write_out(last_write_slot: torch.Tensor) -> torch.Tensor:
        row = torch.cat([row_mem, embeds, row_mem], dim=1).clone()
        row[:, -1] = last_write_slot
        allowed = allowed_attention(m, 6, mode)
        from rmt_core.engine.masks import additive_mask
        hidden = model.backbone.base_model(inputs_embeds=row, attention_mask=additive_mask(allowed, row.dtype)).last_hidden_state
        return hidden[:, -m]  # write slot 0

    with torch.no_grad():
        base = write_out(row_mem[:, -1])
        changed = write_out(row_mem[:, -1] + torch.randn(row_mem.shape[-1]))  # not a constant shift: LayerNorm would erase it
    assert (not torch.allclose(base, changed)) == depends
    # and in paper mode the read block ignores the tokens; in causal mode too (tokens come after it)
    with torch.no_grad():
        a = model.run_segment(None, tokens, output_hidden_states=True).hidden_states[-1][:, :m]
        b = model.run_segment(None, (tokens + 1) % VOCAB, output_hidden_states=True).hidden_states[-1][:, :m]
    torch.testing.assert_close(a, b)


def test_eager_and_sdpa_give_the_same_outputs(backbone_kind):
    x = ids(2, 14)
    with torch.no_grad():
        a = make_model(backbone_kind, "sdpa")(x)
        b = make_model(backbone_kind, "eager")(x)
    torch.testing.assert_close(a.logits, b.logits, rtol=1e-4, atol=1e-4)


def test_padded_batch_matches_samples_run_alone(backbone_kind):
    model = make_model(backbone_kind)
    long, short = ids(1, 16, seed=2), ids(1, 9, seed=3)
    batch = torch.cat([long, torch.cat([short, torch.zeros(1, 7, dtype=torch.long)], dim=1)])
    mask = torch.ones_like(batch)
    mask[1, 9:] = 0
    with torch.no_grad():
        out = model(batch, attention_mask=mask)
        alone = model(short)
    torch.testing.assert_close(out.logits[1:, :9], alone.logits, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(out.memory_out[-1][1], alone.memory_out[-1][0], rtol=1e-4, atol=1e-4)


def test_generate_reads_memory_and_matches_forward(backbone_kind):
    model = make_model(backbone_kind)
    x = ids(2, 15)
    out = model.generate(x, max_new_tokens=4)
    assert out.shape == (2, 19) and torch.equal(out[:, :15], x)
    with torch.no_grad():
        # the first generated token is the argmax of the last position: with no write
        # block in the last segment the tokens see exactly what forward shows them
        first = model(x).logits[:, -1].argmax(-1)
    assert torch.equal(out[:, 15], first)
    # greedy continuation equals re-running forward on the extended prompt (KV cache is right)
    with torch.no_grad():
        second = model(out[:, :16]).logits[:, -1].argmax(-1)
    if 16 % model.config.segment_size != 1:  # same segmentation of the final segment
        assert torch.equal(out[:, 16], second)


def test_config_validation_and_json_round_trip():
    cfg = RMTConfig(num_mem_tokens=4, segment_size=32, mask_mode="causal", bptt_depth=2)
    assert RMTConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ConfigError, match="mask_mode"):
        RMTConfig(mask_mode="diagonal")
    with pytest.raises(ConfigError, match="bptt_depth"):
        RMTConfig(bptt_depth=0)
    with pytest.raises(ConfigError, match="Unknown RMT config field"):
        RMTConfig.from_dict({"num_mem_tokens": 2, "segment_size": 4, "segmnt": 3})
    with pytest.raises(ConfigError, match="missing required"):
        RMTConfig.from_dict({"num_mem_tokens": 2})


def test_segment_that_does_not_fit_the_backbone_is_refused():
    with pytest.raises(ConfigError, match="positions"):
        make_model("gpt2", segment_size=60, num_mem_tokens=4)  # 68 > 64 positions


def test_initial_memory_slots_are_distinct_and_scaled():
    model = make_model(num_mem_tokens=8)
    mem = model.initial_memory.detach()
    assert mem.shape == (8, 32)
    assert torch.cdist(mem, mem).add(torch.eye(8) * 1e9).min() > 0
    emb_std = model.backbone.get_input_embeddings().weight.detach().std()
    assert 0.5 < float(mem.std() / emb_std) < 2.0
