"""The authors' RMT (booydar/recurrent-memory-transformer: MemoryCell + RecurrentWrapper).

Their wrapper holds the backbone as ``memory_cell.model`` and one learned (m, d) parameter
``memory_cell.memory``; accelerate, torch.save or a training dict may add a prefix
("module.", "_orig_mod.") or drop the tied lm_head. Per segment it runs the backbone on
[memory | tokens | memory] with no position ids (positions restart each segment) and the
backbone's own causal mask, and takes the new memory from the last hidden states of the
write block: RMT Lens's ``mask_mode="causal"``, ``reset_positions=True``.

Not stored in their files: the segment size (a training argument) and the backbone's
config (their trainer takes it from --from_pretrained / --model_cfg).

Legacy buffers: GPT-2 state dicts from older transformers carry ``attn.bias`` /
``attn.masked_bias`` (GPT-NeoX ``attention.bias`` / ``attention.masked_bias``, Llama
``rotary_emb.inv_freq``); transformers recomputes them, so they are dropped.

wrap_pos: a variant of their memory cell (``wrap_positional_embeddings``) enlarges GPT-2's
``wpe`` by 2m rows (old rows moved to m..m+n), feeds the write block the table's last m
rows and the read block rows 0..m-1. RMT Lens has no such position scheme, so these
checkpoints are refused by name (with the enlarged table they would otherwise load and
compute the wrong positions). An RMT file with n + m rows (the one-sided layout of the ARMT's wrap_pos)
is refused the same way; ARMT files themselves are read by armt.py, where n + M rows mean wrap_pos.
"""
from __future__ import annotations

from typing import Any, Mapping

import torch

from ...errors import CheckpointArgumentError, CheckpointError, CheckpointNeed
from .detect import memory_keys

DEFAULTS: dict[str, Any] = {"mask_mode": "causal", "reset_positions": True}  # what their wrapper does
LEGACY_BUFFER_SUFFIXES = (".attn.bias", ".attn.masked_bias", ".attention.bias", ".attention.masked_bias",
                          ".rotary_emb.inv_freq")
# What their files do not store, asked for by name (rmt_core.load's argument, the CLI flag, the app box).
SEGMENT_SIZE = CheckpointNeed("segment_size", "the segment size it was trained with", "rmt_config={'segment_size': N}",
                              "--segment-size N", "the segment size box")
BACKBONE = CheckpointNeed("backbone", "the backbone's config",
                          "backbone='org/name' or a folder with the backbone's config.json", "--backbone NAME_OR_DIR",
                          "the backbone box")
SEGMENT_SIZE_HINT = SEGMENT_SIZE.hint
BACKBONE_HINT = BACKBONE.hint


def split_state(state: Mapping[str, torch.Tensor], source: object) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """(memory (m, d), backbone state dict with the wrapper's prefix removed)."""
    keys = memory_keys(state)
    if len(keys) != 1:
        raise CheckpointError(f"{source}: expected one memory_cell.memory tensor (the authors' memory cell), found {keys}.")
    memory = state[keys[0]]
    if memory.dim() != 2:
        raise CheckpointError(f"{source}: memory_cell.memory has shape {tuple(memory.shape)}; the authors' memory is (m, d).")
    prefix = keys[0][: -len("memory")] + "model."
    backbone = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    if not backbone:
        raise CheckpointError(f"{source}: no backbone tensors under '{prefix}' beside the memory.")
    return memory, backbone


def drop_legacy_buffers(backbone: dict[str, torch.Tensor], expected: set[str]) -> dict[str, torch.Tensor]:
    """The backbone state without the buffers older transformers saved and the current model recomputes."""
    return {k: v for k, v in backbone.items() if k in expected or not k.endswith(LEGACY_BUFFER_SUFFIXES)}


def check_positions(backbone: Mapping[str, torch.Tensor], backbone_config: Mapping[str, Any], m: int, source: object) -> None:
    """Refuse the wrap_pos variants, detected from the position table's shape."""
    table = next((v for k, v in backbone.items() if k.endswith("wpe.weight")), None)
    n_positions = backbone_config.get("n_positions", backbone_config.get("max_position_embeddings"))
    if table is None or not isinstance(n_positions, int) or m == 0:
        return
    rows = int(table.shape[0])
    if rows in (n_positions + 2 * m, n_positions + m):
        extra = "2m" if rows == n_positions + 2 * m else "m"
        raise CheckpointError(
            f"{source}: this authors' RMT was trained with wrap_pos (the memory cell's wrap_positional_embeddings: "
            f"memory gets its own position rows; wpe has n_positions + {extra} = {rows} rows for n_positions "
            f"{n_positions} and {m} memory slots). RMT Lens does not support that position scheme: not loaded. "
            "Editing n_positions would load it but compute the wrong positions."
        )


def rmt_fields(explicit: Mapping[str, Any], stored: Mapping[str, Any], num_mem_tokens: int, source: object) -> dict[str, Any]:
    """The RMT settings: the format's defaults, then settings stored beside the weights, then the caller's.

    explicit: only the fields the caller set (RMTConfig.explicit_dict() or a dict).
    Raises CheckpointError when the segment size is nowhere or the caller's memory size
    contradicts the weights.
    """
    fields = {**DEFAULTS, **stored, **explicit}
    if "num_mem_tokens" in explicit and explicit["num_mem_tokens"] != num_mem_tokens:
        problem = (f"the weights hold {num_mem_tokens} memory slots (memory_cell.memory), not the "
                   f"{explicit['num_mem_tokens']} given: leave num_mem_tokens out, it is read from the weights.")
        raise CheckpointArgumentError(
            f"{source}: rmt_config says num_mem_tokens={explicit['num_mem_tokens']} but the weights hold "
            f"{num_mem_tokens} memory slots (memory_cell.memory). Leave num_mem_tokens out: it is read from the weights.",
            problem=problem, argument="num_mem_tokens", value=explicit["num_mem_tokens"])
    fields["num_mem_tokens"] = num_mem_tokens
    if "segment_size" not in fields:
        problem = (f"{source} is the authors' RMT format ({num_mem_tokens} memory slots), which does not store the "
                   "segment size it was trained with.")
        raise CheckpointArgumentError(f"{problem[:-1]}: pass {SEGMENT_SIZE_HINT}.", problem=problem,
                                      needs=(SEGMENT_SIZE,))
    return fields
