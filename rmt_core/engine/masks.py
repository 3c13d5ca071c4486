"""Attention masks for one RMT segment row [read m | tokens L | write m].

Two variants (reference section 1), chosen by RMTConfig.mask_mode:

paper   read block: each read slot sees every read slot (and nothing else);
        tokens: see the whole read block and earlier tokens (causal);
        write block: each write slot sees everything in the row, write slots included.
causal  the backbone's ordinary lower-triangular mask over the whole row (what the
        official Hugging Face wrapper does): read slots are causal among themselves,
        write slot j sees all tokens and write slots < j.

Padding (right-padded batches) hides padded token keys from every query; a padded
query still sees itself so no softmax row is empty.
"""
from __future__ import annotations

import torch

from ..errors import ArgumentError


def segment_layout(num_mem: int, n_tokens: int, write: bool) -> tuple[slice, slice, slice]:
    """Slices of the read block, the tokens and the write block in a segment row."""
    read = slice(0, num_mem)
    tokens = slice(num_mem, num_mem + n_tokens)
    write_block = slice(num_mem + n_tokens, num_mem + n_tokens + (num_mem if write else 0))
    return read, tokens, write_block


def allowed_attention(
    num_mem: int,
    n_tokens: int,
    mode: str,
    write: bool = True,
    token_valid: torch.Tensor | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Boolean (batch, q, k) mask: True where query q may attend to key k.

    token_valid: (batch, n_tokens) bool, False at padding; None = all valid (batch 1).
    """
    read, tokens, write_block = segment_layout(num_mem, n_tokens, write)
    n = write_block.stop
    causal = torch.ones(n, n, dtype=torch.bool, device=device).tril()
    if mode == "causal":
        allowed = causal
    elif mode == "paper":
        allowed = torch.zeros(n, n, dtype=torch.bool, device=device)
        allowed[read, read] = True
        allowed[tokens, read] = True
        allowed[tokens, tokens] = causal[tokens, tokens]
        allowed[write_block, :] = True
    else:
        raise ArgumentError(f"unknown mask mode {mode!r}")

    if token_valid is None:
        return allowed.unsqueeze(0)  # (1, n, n)
    token_valid = token_valid.to(device=allowed.device, dtype=torch.bool)
    batch = token_valid.shape[0]
    key_valid = torch.ones(batch, n, dtype=torch.bool, device=allowed.device)
    key_valid[:, tokens] = token_valid
    allowed = allowed.unsqueeze(0) & key_valid.unsqueeze(1)  # (batch, n, n)
    eye = torch.eye(n, dtype=torch.bool, device=allowed.device).unsqueeze(0)
    return allowed | eye


def additive_mask(allowed: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """(batch, 1, q, k) float mask for the backbone: 0 where allowed, the dtype's minimum elsewhere.

    A float mask is honoured identically by eager attention (added to the scores) and
    by SDPA (passed as attn_mask); transformers 5 passes a 4-D mask through untouched.
    """
    mask = torch.zeros(allowed.shape, dtype=dtype, device=allowed.device)
    mask.masked_fill_(~allowed, torch.finfo(dtype).min)
    return mask.unsqueeze(1)
