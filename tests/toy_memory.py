"""A toy memory type registered from outside rmt_core (the memory seam's proof, test_memory_seam.py).

State: the running mean of every earlier segment's last hidden states (and how many segments
it averages), added, times a learned gain, to each token embedding of the next segment.
"""
from __future__ import annotations

import torch
from torch import nn

from rmt_core import MemoryType, SegmentRow, register_memory


class MeanMemory(MemoryType):
    """State {"mean": (batch, d), "count": (batch, 1)}; the row is the segment's tokens only."""

    def __init__(self, model) -> None:
        super().__init__(model)
        model.register_parameter("mean_gain", nn.Parameter(torch.ones(1)))  # its own weight, trained by BPTT

    def initial_state(self, batch: int) -> dict[str, torch.Tensor]:
        like = self.model.mean_gain
        return {"mean": like.new_zeros(batch, self.model.hidden_size), "count": like.new_zeros(batch, 1)}

    def state_spec(self) -> dict[str, tuple[str, ...]]:
        return {"mean": ("hidden",), "count": ("one",)}

    def row_length(self, n_tokens: int, write: bool = True) -> int:
        return n_tokens

    def build_row(self, state, embeds, token_valid, write, segment_index) -> SegmentRow:
        batch, n = embeds.shape[:2]
        row = embeds + self.model.mean_gain * state["mean"].unsqueeze(1)
        causal = torch.ones(n, n, dtype=torch.bool, device=row.device).tril().unsqueeze(0)
        positions = torch.arange(n, device=row.device).expand(batch, -1)
        return SegmentRow(row, causal, positions, slice(0, n), {"tokens": slice(0, n)}, write)

    def read_state(self, state, row, hidden, token_valid) -> dict[str, torch.Tensor]:
        count = state["count"] + 1
        latest = hidden[:, row.tokens].mean(dim=1)  # (batch, d)
        return {"mean": state["mean"] + (latest - state["mean"]) / count, "count": count}


register_memory("toy-mean", MeanMemory)
