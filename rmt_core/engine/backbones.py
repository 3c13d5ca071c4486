"""Small backbones built from configs (nothing is downloaded)."""
from __future__ import annotations

from typing import Any

import torch
from transformers import AutoConfig, AutoModelForCausalLM, GPT2Config, LlamaConfig, PretrainedConfig

from ..errors import ArgumentError, ConfigError


def gpt2_config(vocab_size: int, n_layer: int = 3, n_embd: int = 64, n_head: int = 4, n_positions: int = 256, **extra: Any) -> GPT2Config:
    """A GPT-2-style config (dropout off: small models here are trained on few data).

    initializer_range defaults to 0.1, not GPT-2's 0.02: from scratch, with 0.02 the path
    from a token through the write block into the next segment starts so weak that tiny
    RMTs never learn to use memory in a few hundred steps (measured: 0.11 vs 1.0 accuracy
    on a carry-one-token task after 600 steps).
    """
    extra.setdefault("initializer_range", 0.1)
    return GPT2Config(
        vocab_size=vocab_size, n_layer=n_layer, n_embd=n_embd, n_head=n_head, n_positions=n_positions,
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
        bos_token_id=extra.pop("bos_token_id", 0), eos_token_id=extra.pop("eos_token_id", 0), **extra,
    )


def llama_config(vocab_size: int, n_layer: int = 3, hidden: int = 64, n_head: int = 4, n_kv_head: int | None = None, **extra: Any) -> LlamaConfig:
    """A Llama/SmolLM2-style config (RoPE, RMSNorm, SwiGLU, grouped-query attention).

    initializer_range defaults to 0.1 for the same reason as gpt2_config."""
    extra.setdefault("initializer_range", 0.1)
    return LlamaConfig(
        vocab_size=vocab_size, hidden_size=hidden, intermediate_size=hidden * 4, num_hidden_layers=n_layer,
        num_attention_heads=n_head, num_key_value_heads=n_kv_head or n_head, max_position_embeddings=4096,
        tie_word_embeddings=True, bos_token_id=extra.pop("bos_token_id", 0),
        eos_token_id=extra.pop("eos_token_id", 0), **extra,
    )


def backbone_from_config(config: PretrainedConfig | dict[str, Any], attn_implementation: str = "sdpa", seed: int | None = None) -> torch.nn.Module:
    """A randomly initialised causal LM for a config (an object or its to_dict())."""
    if isinstance(config, dict):
        config = dict(config)
        model_type = config.pop("model_type", None)
        if model_type is None:
            raise ArgumentError("backbone config has no model_type")
        config = AutoConfig.for_model(model_type, **config)
    if seed is not None:
        torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(config, attn_implementation=attn_implementation)


LAYER_LISTS = ("h", "layers", "blocks")  # where a base model keeps its decoder blocks (GPT-2: h; Llama, GPT-NeoX: layers)


def decoder_layers(backbone: torch.nn.Module) -> tuple[str, torch.nn.ModuleList]:
    """The backbone's decoder blocks, in order, and their path from the causal LM (the authors'
    `layers_attr`: GPT-2 "transformer.h", Llama "model.layers", GPT-NeoX "gpt_neox.layers").

    A memory that lives inside the layers (ARMT) hooks these. Raises ConfigError when the base
    model keeps no ModuleList of num_hidden_layers blocks under one of LAYER_LISTS."""
    base = backbone.base_model
    prefix = getattr(backbone, "base_model_prefix", "")
    count = getattr(backbone.config, "num_hidden_layers", None)
    for name in LAYER_LISTS:
        blocks = getattr(base, name, None)
        if isinstance(blocks, torch.nn.ModuleList) and (count is None or len(blocks) == count):
            return (f"{prefix}.{name}" if prefix and base is not backbone else name), blocks
    raise ConfigError(
        f"Cannot find the decoder blocks of this {type(backbone).__name__}: its base model has no list of "
        f"{count} blocks named one of {list(LAYER_LISTS)}. Memory inside the layers (associative) needs them; "
        "use a GPT-2, Llama-family or GPT-NeoX backbone.")
