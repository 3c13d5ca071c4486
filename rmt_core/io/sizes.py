"""What a checkpoint's config implies, checked before anything is allocated; and weights
that are not finite.

A config.json can declare any size (n_embd=40000, num_mem_tokens=2e7, a vocabulary of 10^9):
building that model first and comparing shapes after would take tens of gigabytes. Here the
backbone is built on torch's "meta" device (shapes only, no memory) and the number of values
it implies is compared with the number the weights hold (read from the safetensors header,
or from the tensors already read): a config that needs more values than the weights hold
does not belong to them, and nothing of its size is allocated.
"""
from __future__ import annotations

import math
from typing import Any, Iterable

import torch

from ..engine.backbones import backbone_from_config
from ..engine.config import RMTConfig
from ..errors import CheckpointError

LAYER_FIELDS = ("n_layer", "num_hidden_layers", "num_layers", "n_layers")
BUILD_ERRORS = (ValueError, KeyError, TypeError, ZeroDivisionError, AttributeError, IndexError, RuntimeError,
                OverflowError)


def meta_backbone(backbone_config: dict[str, Any], source: object, attn_implementation: str = "sdpa") -> torch.nn.Module:
    """The backbone of a config built on the meta device (no memory), or CheckpointError saying
    why the config cannot be built (n_head=0, a missing model_type, wrong-typed fields ...)."""
    if not isinstance(backbone_config, dict):
        raise CheckpointError(f"{source}: the backbone config is {type(backbone_config).__name__}, not a JSON object.")
    try:
        with torch.device("meta"):
            return backbone_from_config(backbone_config, attn_implementation=attn_implementation)
    except BUILD_ERRORS as exc:
        raise CheckpointError(f"{source}: the backbone config cannot be built ({type(exc).__name__}: "
                              f"{' '.join(str(exc).split())[:200]}). Re-copy the checkpoint's config.json.") from exc


def implied_values(rmt: RMTConfig, backbone: torch.nn.Module) -> int:
    """Values the weights must hold for this config: the backbone's parameters (tied ones once)
    plus the initial memory (num_mem_tokens x hidden size)."""
    hidden = int(getattr(backbone.config, "hidden_size", 0) or 0)
    return sum(p.numel() for p in backbone.parameters()) + rmt.num_mem_tokens * hidden


def check_config_fits_weights(rmt: RMTConfig, backbone_config: dict[str, Any], stored: dict[str, tuple[int, ...]],
                              source: object, named: bool = True) -> None:
    """Refuse (CheckpointError) a config whose model needs more values than the weights hold.

    stored: tensor name -> shape in the weights (safetensors header, or tensors already read).
    named: the names are RMT Lens's ("initial_memory", "backbone.<name>"): the message then
    names the first tensor whose shape differs from what the config needs."""
    _check_layer_count(backbone_config, len(stored), source)
    backbone = meta_backbone(backbone_config, source, rmt.attn_implementation)
    needed = implied_values(rmt, backbone)
    held = sum(math.prod(shape) for shape in stored.values())
    if needed <= held:
        return
    if named:
        hidden = int(getattr(backbone.config, "hidden_size", 0) or 0)
        wanted = {"initial_memory": (rmt.num_mem_tokens, hidden),
                  **{f"backbone.{name}": tuple(p.shape) for name, p in backbone.named_parameters()}}
        for name, shape in wanted.items():
            if name in stored and tuple(stored[name]) != shape:
                raise CheckpointError(
                    f"{source}: tensor '{name}' has shape {tuple(stored[name])} in the weights but the config "
                    f"needs {shape}. The config and the weights do not match (nothing of the config's size was "
                    "allocated)."
                )
    cfg = backbone.config
    sizes = ", ".join(f"{name} {getattr(cfg, name)}" for name in ("hidden_size", "num_hidden_layers",
                                                                   "num_attention_heads", "vocab_size")
                      if getattr(cfg, name, None) is not None)
    raise CheckpointError(
        f"{source}: the config describes a model of {needed:,} values ({sizes}, {rmt.num_mem_tokens} memory "
        f"slots) but the weights hold {held:,}: the config does not belong to these weights (nothing of "
        "that size was allocated). Re-copy the checkpoint's config.json."
    )


def _check_layer_count(backbone_config: Any, tensors: int, source: object) -> None:
    """Each layer holds at least one tensor: more layers than the weights hold tensors is a lie
    (and building 10^9 layers, even on the meta device, takes 10^9 Python objects)."""
    if not isinstance(backbone_config, dict):
        return  # meta_backbone says so
    for key in LAYER_FIELDS:
        value = backbone_config.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value > tensors:
            raise CheckpointError(
                f"{source}: the config declares {key}={value:,} layers but the weights hold {tensors:,} tensors: "
                "the config does not belong to these weights (nothing was built). Re-copy the checkpoint's config.json."
            )


def check_finite(tensors: dict[str, torch.Tensor], source: object) -> None:
    """Refuse weights holding NaN or infinite values (a diverged run, a damaged file): they would
    give traces where every log-probability is NaN. Names the tensors and counts the bad values."""
    bad = []
    for name, tensor in tensors.items():
        if tensor.is_floating_point() and tensor.numel() and not bool(torch.isfinite(tensor).all()):
            count = int((~torch.isfinite(tensor)).sum())
            kinds = "NaN" if bool(torch.isnan(tensor).any()) else "infinite"
            if kinds == "NaN" and bool(torch.isinf(tensor).any()):
                kinds = "NaN and infinite"
            bad.append(f"'{name}' ({count:,} {kinds} of {tensor.numel():,})")
    if bad:
        raise CheckpointError(
            f"{source} holds values that are not finite: {', '.join(bad[:4])}{' ...' if len(bad) > 4 else ''}. "
            "A model with them gives NaN everywhere; use a checkpoint from before training diverged, or re-copy it."
        )
