"""TokenMemory: the Recurrent Memory Transformer's memory (Bulatov et al. 2022), m slot vectors.

Per segment the unmodified backbone sees, through ``inputs_embeds``,

    [ read memory (m) | segment tokens (L) | write memory (m) ]

with one memory tensor in both blocks. The new memory is the final hidden states (after the
final norm) at the write positions; logits come from the token positions. The state is one
(batch, m, d) tensor; its learned initial value is the model's ``initial_memory`` parameter
(registered on the RMTModel, so checkpoints and weight hashes keep their names).

Where per-sample positions and masks are made (padding): position_ids and build_row's
allowed_attention / n_valid below (masks in engine/masks.py).
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from ..masks import allowed_attention, segment_layout
from .base import MemoryType, SegmentRow, StateArrays



class TokenMemory(MemoryType):
    """m memory slots carried in the row [read R_k | tokens | write W_k] (RMTConfig.num_mem_tokens)."""

    supported_edits = ("reset", "zero", "replace", "shuffle")
    option_specs = {}  # the RMT's memory has no settings beyond RMTConfig's fields: any given is refused by name

    def __init__(self, model: Any) -> None:
        super().__init__(model)
        config = model.config
        embeddings = model.backbone.get_input_embeddings().weight.detach()
        # Distinct slots at the scale of the word embeddings (the HF wrapper's init).
        std = float(embeddings.float().std())
        model.initial_memory = nn.Parameter(
            (torch.randn(config.num_mem_tokens, model.hidden_size) * std).to(embeddings.dtype)
        )

    @property
    def num_slots(self) -> int:
        return self.model.config.num_mem_tokens

    # ------------------------------------------------------------------ state
    def initial_state(self, batch: int) -> torch.Tensor:
        return self.model.initial_memory.unsqueeze(0).expand(batch, -1, -1)  # (batch, m, d)

    def state_spec(self) -> dict[str, tuple[str, ...]]:
        return {"memory": ("slot", "hidden")}

    def state_to_arrays(self, state: torch.Tensor, index: int = 0) -> StateArrays:
        return {"memory": state[index].detach().float().cpu().numpy()}

    # ------------------------------------------------------------------ one segment
    def row_length(self, n_tokens: int, write: bool = True) -> int:
        m = self.num_slots
        return m + n_tokens + (m if write and m else 0)

    def position_ids(self, n_valid: torch.Tensor, n_tokens: int, write: bool, offset: int) -> torch.Tensor:
        """(batch, n) positions of a row: they restart in each row; the write block follows each
        sample's LAST REAL token, so a right-padded sample gets the same positions as when run alone.

        n_valid: (batch,) real tokens per sample; offset: added to every position."""
        m = self.num_slots
        batch = n_valid.shape[0]
        row = torch.arange(m + n_tokens, device=n_valid.device).expand(batch, -1)
        if write and m:
            write_pos = m + n_valid.unsqueeze(1) + torch.arange(m, device=n_valid.device)
            row = torch.cat([row, write_pos], dim=1)
        return row + offset

    def build_row(self, state: torch.Tensor, embeds: torch.Tensor, token_valid: torch.Tensor | None, write: bool,
                  segment_index: int) -> SegmentRow:
        cfg = self.model.config
        m = self.num_slots
        batch, n_tokens = embeds.shape[:2]
        write = write and m > 0
        blocks = [state, embeds, state] if write else [state, embeds]
        row = torch.cat(blocks, dim=1)  # (batch, m + L + m, d)
        allowed = allowed_attention(m, n_tokens, cfg.mask_mode, write, token_valid, device=row.device)
        n_valid = (
            token_valid.sum(dim=1) if token_valid is not None
            else torch.full((batch,), n_tokens, device=row.device)
        )
        offset = 0 if cfg.reset_positions else segment_index * cfg.segment_length()
        positions = self.position_ids(n_valid, n_tokens, write, offset)
        read, tokens, write_block = segment_layout(m, n_tokens, write)
        return SegmentRow(row, allowed, positions, tokens, {"read": read, "tokens": tokens, "write": write_block},
                          write)

    def read_state(self, state: torch.Tensor, row: SegmentRow, hidden: torch.Tensor,
                   token_valid: torch.Tensor | None) -> torch.Tensor:
        return hidden[:, row.parts["write"]]  # (batch, m, d): the write slots' last hidden states

    # ------------------------------------------------------------------ labels and edits
    def row_labels(self, token_labels: list[str], write: bool = True) -> list[str]:
        m = self.num_slots
        write_labels = [f"W{k}" for k in range(m)] if write and m else []
        return [f"R{k}" for k in range(m)] + list(token_labels) + write_labels

    def parts(self) -> list[str]:
        return [f"M{k}" for k in range(self.num_slots)]

    def edit_state(self, arrays: StateArrays, edit: str, *, part: int | None = None,
                   source: StateArrays | None = None, seed: int = 0) -> StateArrays:
        if edit == "replace":
            memory = np.array(arrays["memory"], dtype=np.float32, copy=True)
            memory[part] = source["memory"][part]
            return {"memory": memory}
        if edit == "shuffle":
            order = np.random.default_rng(seed).permutation(self.num_slots)
            if np.array_equal(order, np.arange(self.num_slots)):  # a shuffle that moves nothing is no test
                order = np.roll(order, 1)
            return {"memory": np.asarray(arrays["memory"])[order]}
        return super().edit_state(arrays, edit, part=part, source=source, seed=seed)
