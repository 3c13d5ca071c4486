"""Which code wrote a state dict, read off its tensor names.

    authors      booydar/recurrent-memory-transformer MemoryCell + RecurrentWrapper:
                 "<prefix>memory_cell.memory" (m, d) and "<prefix>memory_cell.model.<backbone>"
    armt         the authors' associative RMT (ARMT, RodkinIvan/associative-recurrent-memory-transformer):
                 per-layer W_mq / W_mk / W_mv / W_mb projections, the backbone's blocks wrapped
                 under ".layer." (read by armt.py; checked before "authors": it has memory_cell.memory too)
    lucidrains   lucidrains/recurrent-memory-transformer-pytorch: token_emb, read_memory_emb,
                 memory_tokens and its own transformer layers (not a Hugging Face backbone)
    backbone     a plain Hugging Face causal LM with no RMT memory
    unknown      anything else
"""
from __future__ import annotations

from typing import Iterable

from ...errors import CheckpointError

AUTHORS, ARMT, LUCIDRAINS, BACKBONE, UNKNOWN = "authors", "armt", "lucidrains", "backbone", "unknown"
FORMAT_NAMES = {
    AUTHORS: "the authors' RMT (MemoryCell + RecurrentWrapper, booydar/recurrent-memory-transformer)",
    ARMT: "the authors' ARMT (associative memory, RodkinIvan/associative-recurrent-memory-transformer)",
    LUCIDRAINS: "a lucidrains recurrent-memory-transformer-pytorch state dict",
    BACKBONE: "a plain Hugging Face language model without RMT memory",
    UNKNOWN: "a state dict of unknown origin",
}
ARMT_PARTS = ("W_mq", "W_mk", "W_mv", "W_mb")
LUCIDRAINS_PARTS = ("read_memory_emb", "memory_tokens")
# Top-level module names of Hugging Face causal LMs (GPT-2, Llama family, GPT-NeoX, OPT, ...).
BACKBONE_ROOTS = ("transformer.", "model.", "gpt_neox.", "lm_head.", "embed_out.")


def memory_keys(names: Iterable[str]) -> list[str]:
    """Keys of the authors' memory-cell parameter ("...memory_cell.memory")."""
    return sorted(n for n in names if n == "memory_cell.memory" or n.endswith(".memory_cell.memory"))


def detect_format(names: Iterable[str]) -> str:
    """One of AUTHORS, ARMT, LUCIDRAINS, BACKBONE, UNKNOWN (see the module doc)."""
    names = list(names)
    parts = {part for name in names for part in name.split(".")}
    if parts & set(ARMT_PARTS):
        return ARMT
    if parts & set(LUCIDRAINS_PARTS) and any(n.split(".")[-2:-1] == ["token_emb"] for n in names):
        return LUCIDRAINS
    if memory_keys(names):
        return AUTHORS
    if names and all(n.startswith(BACKBONE_ROOTS) for n in names):
        return BACKBONE
    return UNKNOWN


def refuse_unsupported(fmt: str, source: object, names: Iterable[str]) -> None:
    """Raise CheckpointError naming the format of a state dict RMT Lens cannot run; return for AUTHORS
    and ARMT (whose variants armt.read_layout refuses by name)."""
    if fmt in (AUTHORS, ARMT):
        return
    if fmt == LUCIDRAINS:
        raise CheckpointError(
            f"{source}: this is a lucidrains recurrent-memory-transformer-pytorch state dict: not a Hugging Face "
            "backbone (token_emb, read_memory_emb, memory_tokens and that package's own layers), so RMT Lens cannot "
            "run it. Not supported."
        )
    if fmt == BACKBONE:
        raise CheckpointError(
            f"{source}: this is a plain Hugging Face language model with no RMT memory (no memory_cell.memory). "
            "Wrap it in Python with rmt_core.RMTModel.from_backbone(backbone, RMTConfig(...)) and train it, "
            "or give the folder of an RMT checkpoint."
        )
    sample = sorted(names)[:4]
    raise CheckpointError(
        f"{source}: the tensor names ({', '.join(sample)}{' ...' if len(sample) == 4 else ''}) match no RMT "
        "format RMT Lens knows (its own save_pretrained folders; the authors' MemoryCell/RecurrentWrapper with "
        "memory_cell.memory and memory_cell.model.*; their ARMT with W_mq / W_mk / W_mv / W_mb beside each block)."
    )
