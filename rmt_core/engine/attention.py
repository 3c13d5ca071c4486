"""The attention implementation RMT models run with.

RMTModel switches its backbone to one of the names registered here. Outside tracing
they compute exactly what the backbone's own "sdpa" or "eager" attention computes.
Two per-call keywords (so concurrent traces on one shared model never see each other's
state) let a caller look at the weights:

- ``rmt_attention_probe=fn``: attention is computed eagerly and ``fn(layer_idx, weights)``
  receives the (batch, heads, q, k) weights at once;
- ``rmt_query_key_probe=fn``: attention runs as configured (SDPA stays fused) and
  ``fn(layer_idx, QueryKey)`` receives what the weights are made of, for the caller to turn
  into weights later with ``attention_weights`` (a trace does it for many segments in one
  batched call, so it runs the model exactly as forward does).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from transformers import AttentionInterface, AttentionMaskInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import eager_mask, sdpa_mask

PROBE_KWARG = "rmt_attention_probe"
QUERY_KEY_PROBE_KWARG = "rmt_query_key_probe"
IMPLEMENTATIONS = {"sdpa": "rmt_lens_sdpa", "eager": "rmt_lens_eager"}


@dataclass
class QueryKey:
    """One layer's inputs to its attention weights (see attention_weights)."""

    query: torch.Tensor  # (batch, heads, q, head_dim)
    key: torch.Tensor  # (batch, kv_heads, k, head_dim)
    mask: torch.Tensor | None  # (batch, 1, q, k) additive
    scaling: float


AttentionProbe = Callable[[int, torch.Tensor], None]
QueryKeyProbe = Callable[[int, QueryKey], None]


def attention_weights(query: torch.Tensor, key: torch.Tensor, attention_mask: torch.Tensor | None,
                      scaling: float) -> torch.Tensor:
    """softmax(query key^T * scaling + mask) over the keys: (..., heads, q, k), in query's dtype.

    query (..., heads, q, head_dim); key (..., kv_heads, k, head_dim) (grouped-query: each kv
    head serves heads / kv_heads query heads); attention_mask broadcastable to the scores,
    additive. The softmax runs in float32, as the backbones' eager attention does."""
    n_rep = query.shape[-3] // key.shape[-3]
    if n_rep > 1:
        key = key.repeat_interleave(n_rep, dim=-3)
    scores = torch.matmul(query, key.transpose(-1, -2))  # (..., heads, q, k)
    if attention_mask is not None:  # mask + scaling * scores in one op (the eager path runs per layer and segment)
        scores = torch.add(attention_mask[..., : key.shape[-2]], scores, alpha=scaling)
    else:
        scores.mul_(scaling)
    return torch.softmax(scores, dim=-1, dtype=torch.float32).to(query.dtype)


def eager_attention(
    module: torch.nn.Module,
    query: torch.Tensor,  # (batch, heads, q, head_dim)
    key: torch.Tensor,  # (batch, kv_heads, k, head_dim)
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,  # (batch, 1, q, k) additive
    scaling: float | None = None,
    dropout: float = 0.0,
    **_: object,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Plain softmax attention (grouped-query aware), as the backbones' eager path."""
    n_rep = query.shape[1] // key.shape[1]
    if n_rep > 1:
        value = value.repeat_interleave(n_rep, dim=1)
    weights = attention_weights(query, key, attention_mask, query.shape[-1] ** -0.5 if scaling is None else scaling)
    if dropout and module.training:
        weights = torch.nn.functional.dropout(weights, p=dropout, training=True)
    output = torch.matmul(weights, value).transpose(1, 2).contiguous()  # (batch, q, heads, head_dim)
    return output, weights


def _make_implementation(base: str) -> Callable:
    def attention(module, query, key, value, attention_mask, **kwargs):
        probe: AttentionProbe | None = kwargs.pop(PROBE_KWARG, None)
        query_key_probe: QueryKeyProbe | None = kwargs.pop(QUERY_KEY_PROBE_KWARG, None)
        if query_key_probe is not None:
            scaling = kwargs.get("scaling")
            query_key_probe(int(getattr(module, "layer_idx", -1)), QueryKey(
                query, key, attention_mask, query.shape[-1] ** -0.5 if scaling is None else float(scaling)))
        if probe is None and base == "sdpa":
            return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)
        output, weights = eager_attention(module, query, key, value, attention_mask, **kwargs)
        if probe is not None:
            probe(int(getattr(module, "layer_idx", -1)), weights)
        return output, weights

    attention.__name__ = f"rmt_lens_{base}_attention"
    return attention


for _base, _name in IMPLEMENTATIONS.items():
    AttentionInterface.register(_name, _make_implementation(_base))
    AttentionMaskInterface.register(_name, sdpa_mask if _base == "sdpa" else eager_mask)
