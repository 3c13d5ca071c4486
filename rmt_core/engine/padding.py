"""Padded batches as RMT Lens honours them: left, right or both-sided padding; never a hole.

An RMT cuts each input into segments from its first token, so a left-padded row cut at the
batch's segment boundaries would be segmented differently from the same row alone (its tokens
would also take other positions): silently other logits and another memory. Here each row's
real tokens are moved to the front (a roll of the row), the batch runs right-padded, where
every row segments from its own first token and a segment of padding keeps the state it had,
and the results are rolled back into the row's own places. A mask whose zeros are not all at
the ends of a row (a hole between real tokens) cannot be honoured and is refused.

Situations these come from: TransformerLens#1609 (left padding shifts positions) and
transformers#29419 (position ids under left padding).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import ArgumentError


@dataclass(frozen=True)
class RowSpans:
    """Where each row's real tokens are: start (batch,) and length (batch,), as long tensors."""

    start: torch.Tensor
    length: torch.Tensor

    @property
    def left_padded(self) -> bool:
        """True when some row starts after position 0 (it needs rolling to run)."""
        return bool((self.start > 0).any())

    @property
    def last(self) -> torch.Tensor:
        """(batch,) index of each row's last real token (-1 for a row of padding only)."""
        return self.start + self.length - 1


def row_spans(attention_mask: torch.Tensor) -> RowSpans:
    """The real tokens of each row of a (batch, T) 0/1 mask, or ArgumentError for a mask with a
    hole (a 0 between two 1s): RMT Lens honours padding at either end of a row only."""
    valid = attention_mask.bool()
    if valid.dim() != 2:
        raise ArgumentError(f"attention_mask must be (batch, tokens), got shape {tuple(valid.shape)}.")
    length = valid.sum(dim=1)
    total = valid.shape[1]
    positions = torch.arange(total, device=valid.device)
    first = torch.where(valid, positions, total).amin(dim=1)
    start = torch.where(length > 0, first, torch.zeros_like(first))
    inside = (positions >= start.unsqueeze(1)) & (positions < (start + length).unsqueeze(1))
    holes = (inside != valid).any(dim=1)
    if bool(holes.any()):
        row = int(holes.nonzero()[0, 0])
        gap = int((inside[row] & ~valid[row]).nonzero()[0, 0])
        raise ArgumentError(
            f"attention_mask row {row} has a hole: position {gap} is 0 between real tokens. RMT Lens honours "
            "padding at the start or the end of a row only (a row's tokens must be contiguous): remove the "
            "padding inside the row, or run its parts as separate rows."
        )
    return RowSpans(start, length)


def roll_rows(values: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Each row b of `values` (batch, T, ...) rolled left by shift[b]: out[b, j] = values[b, (j + shift[b]) % T].
    roll_rows(roll_rows(x, s), -s) == x."""
    total = values.shape[1]
    index = (torch.arange(total, device=values.device).unsqueeze(0) + shift.to(values.device).unsqueeze(1)) % total
    index = index.view(*index.shape, *([1] * (values.dim() - 2))).expand(*index.shape, *values.shape[2:])
    return torch.gather(values, 1, index)


def check_prefix_valid(token_valid: torch.Tensor) -> None:
    """run_segment's token_valid must be True on a prefix of each row (right padding)."""
    if token_valid.dim() == 2 and token_valid.shape[1] > 1:
        valid = token_valid.bool()
        if bool((valid[:, 1:] & ~valid[:, :-1]).any()):
            raise ArgumentError("token_valid must be True on a prefix of each row (right padding) in run_segment; "
                                "for left-padded batches use forward / generate with attention_mask, which move "
                                "each row's tokens to the front.")
