"""Padded batches (issue 28 item 2): left, right and both-sided padding give each row its own
results on its real tokens, memory included, as when run alone, in forward, generate and
evaluation; a mask with a hole is refused. Sources: TransformerLens#1609, transformers#29419."""
from __future__ import annotations

import pytest
import torch

from rmt_core import ArgumentError
from rmt_core.engine.padding import roll_rows, row_spans
from rmt_core.training.evaluation import logits_with_and_without_memory

from conftest import VOCAB, make_model

LENGTHS = (17, 11, 23, 6)  # 3, 2, 4 and 1 segments of 6 tokens
TOL = 1e-5


@pytest.fixture(scope="module", params=[("gpt2", "paper"), ("llama", "paper"), ("gpt2", "causal")],
                ids=lambda p: "-".join(p))
def model(request):
    kind, mode = request.param
    return make_model(kind, mask_mode=mode)


def _rows():
    g = torch.Generator().manual_seed(0)
    return [torch.randint(1, VOCAB, (n,), generator=g) for n in LENGTHS]


def _batch(rows, side: str):
    """(ids, mask) of the rows padded on `side` ("left", "right" or "both": 2 pads before, rest after)."""
    total = max(len(r) for r in rows) + (2 if side == "both" else 0)
    ids = torch.zeros(len(rows), total, dtype=torch.long)
    mask = torch.zeros(len(rows), total, dtype=torch.long)
    starts = []
    for b, r in enumerate(rows):
        start = {"left": total - len(r), "right": 0, "both": 2}[side]
        ids[b, start:start + len(r)] = r
        mask[b, start:start + len(r)] = 1
        starts.append(start)
    return ids, mask, starts


@pytest.mark.parametrize("side", ["left", "right", "both"])
def test_each_padded_row_gets_its_own_logits_and_memory(model, side):
    rows = _rows()
    ids, mask, starts = _batch(rows, side)
    with torch.no_grad():
        out = model(ids, attention_mask=mask)
        for b, (row, start) in enumerate(zip(rows, starts)):
            alone = model(row.unsqueeze(0))
            real = out.logits[b, start:start + len(row)]
            assert (real - alone.logits[0]).abs().max() <= TOL
            for k, state in enumerate(alone.memory_out):  # its own segments' memory, then kept
                assert (out.memory_out[k][b] - state[0]).abs().max() <= TOL
            assert (out.memory_out[-1][b] - alone.memory_out[-1][0]).abs().max() <= TOL


def test_the_comparison_can_fail(model):
    """Negative control: the left-padded batch run without its mask is far from the rows alone."""
    rows = _rows()
    ids, _, starts = _batch(rows, "left")
    with torch.no_grad():
        out = model(ids)
        alone = model(rows[1].unsqueeze(0))
    assert (out.logits[1, starts[1]:] - alone.logits[0]).abs().max() > 1e-2
    assert (out.memory_out[-1][1] - alone.memory_out[-1][0]).abs().max() > 1e-3


def test_the_loss_of_a_left_padded_batch_is_the_right_padded_one(model):
    rows = _rows()
    losses = []
    for side in ("left", "right"):
        ids, mask, _ = _batch(rows, side)
        labels = ids.masked_fill(mask == 0, -100)
        with torch.no_grad():
            losses.append(float(model(ids, attention_mask=mask, labels=labels).loss))
    assert abs(losses[0] - losses[1]) <= TOL


def test_a_mask_with_a_hole_is_refused(model):
    ids = torch.randint(1, VOCAB, (2, 12))
    mask = torch.ones(2, 12, dtype=torch.long)
    mask[1, 5] = 0
    with pytest.raises(ArgumentError, match="attention_mask row 1 has a hole: position 5 is 0 between real tokens"):
        model(ids, attention_mask=mask)
    with pytest.raises(ArgumentError, match="has a hole"):
        model.generate(ids, max_new_tokens=2, attention_mask=mask)
    valid = torch.ones(2, 6, dtype=torch.bool)
    valid[0, 0] = False
    with pytest.raises(ArgumentError, match="token_valid must be True on a prefix"):
        model.run_segment(None, ids[:, :6], valid)


def test_generate_continues_each_left_padded_prompt_as_alone(model):
    rows = _rows()[:3]
    ids, mask, _ = _batch(rows, "left")
    out = model.generate(ids, max_new_tokens=5, attention_mask=mask)
    assert out.shape == (3, ids.shape[1] + 5) and torch.equal(out[:, :ids.shape[1]], ids)
    for b, row in enumerate(rows):
        alone = model.generate(row.unsqueeze(0), max_new_tokens=5)
        assert torch.equal(out[b, ids.shape[1]:], alone[0, len(row):])


def test_evaluation_runs_give_each_left_padded_row_its_own_logits(model):
    rows = _rows()
    ids, mask, starts = _batch(rows, "left")
    with torch.no_grad():
        padded = dict(logits_with_and_without_memory(model, ids, mask))
        for b, (row, start) in enumerate(zip(rows, starts)):
            alone = dict(logits_with_and_without_memory(model, row.unsqueeze(0)))
            for reset in (False, True):
                assert (padded[reset][b, start:] - alone[reset][0]).abs().max() <= TOL
    assert row_spans(mask).last.tolist() == [ids.shape[1] - 1] * len(rows)


def test_roll_rows_is_undone_by_the_opposite_roll():
    x = torch.arange(24).view(2, 4, 3)
    shift = torch.tensor([1, 3])
    assert torch.equal(roll_rows(roll_rows(x, shift), -shift), x)
    assert roll_rows(x, shift)[0, 0].tolist() == x[0, 1].tolist()


# ---------------------------------------------------------------------- another memory type through the seam
def _valid_mean_toy():
    """The toy mean memory (tests/toy_memory.py) reading only a segment's real tokens: padding
    support lives above the memory type (forward rolls rows), so any type that honours
    token_valid (right padding) gets left and both-sided padding too."""
    from rmt_core.engine.memory import known_memories

    from toy_memory import MeanMemory
    from rmt_core import register_memory

    class ValidMeanMemory(MeanMemory):
        def read_state(self, state, row, hidden, token_valid):
            tokens = hidden[:, row.tokens]
            if token_valid is None:
                latest = tokens.mean(dim=1)
            else:
                weight = token_valid.to(tokens.dtype).unsqueeze(-1)
                latest = (tokens * weight).sum(dim=1) / weight.sum(dim=1).clamp(min=1)
            count = state["count"] + 1
            return {"mean": state["mean"] + (latest - state["mean"]) / count, "count": count}

    if "toy-mean-valid" not in known_memories():
        register_memory("toy-mean-valid", ValidMeanMemory)
    return make_model("gpt2", num_mem_tokens=0, segment_size=6, memory="toy-mean-valid")


@pytest.mark.parametrize("side", ["left", "both"])
def test_another_memory_type_gets_padding_through_the_seam(side):
    from rmt_core.engine.memory import state_tensors

    toy = _valid_mean_toy()
    rows = _rows()
    ids, mask, starts = _batch(rows, side)
    with torch.no_grad():
        out = toy(ids, attention_mask=mask)
        unmasked = toy(ids)  # negative control: the same batch without its mask
        for b, (row, start) in enumerate(zip(rows, starts)):
            alone = toy(row.unsqueeze(0))
            assert (out.logits[b, start:start + len(row)] - alone.logits[0]).abs().max() <= TOL
            for got, want in zip(state_tensors(out.memory_out[-1]), state_tensors(alone.memory_out[-1])):
                assert (got[b] - want[0]).abs().max() <= TOL
        b = 3  # the shortest row: the most padding
        alone = toy(rows[b].unsqueeze(0))
        assert (unmasked.logits[b, starts[b]:starts[b] + len(rows[b])] - alone.logits[0]).abs().max() > 1e-2
