"""Warm-starting a recipe's backbone from a shipped checkpoint (Recipe.init_backbone_from).

Only the backbone's weights are copied (the ``backbone.*`` tensors: embeddings, blocks,
final norm, LM head); the memory type's parameters (TokenMemory's ``initial_memory``,
AssociativeMemory's ``memory_tokens`` and ``associative_layers``) keep the fresh, seeded
initialisation :func:`rmt_core.training.loop.build_model` gave them, so a new memory type
can be trained on top of a backbone that already models the text.
"""
from __future__ import annotations

from typing import Any

import torch

from ..engine.model import RMTModel
from ..errors import CheckpointError


def _vocabulary(tokenizer: Any) -> dict[str, int]:
    """token -> id of a Hugging Face tokenizer."""
    return dict(tokenizer.get_vocab())


def init_backbone_from(model: RMTModel, source: str) -> dict[str, Any]:
    """Copy the backbone weights of checkpoint ``source`` into ``model.backbone`` (in place).

    source: a shipped checkpoint's name (``checkpoints/<name>``) or a checkpoint folder
        (anything rmt_core.io.checkpoint.load opens without extra arguments).
    The source's backbone must have exactly the model's backbone tensors (names and shapes)
    and its tokenizer the same vocabulary (token -> id) as the model's, else the copied
    embeddings would mean other tokens. Memory parameters are left untouched.

    Returns the provenance a run records: {"source", "weights_hash" (the source model's
    rmt_core weights hash), "tensors" (how many backbone tensors were copied)}.
    Raises CheckpointError when the source is missing or unreadable, or when its backbone or
    tokenizer does not fit the model (naming the first mismatching tensors / the vocabulary sizes).
    """
    from ..io import checkpoint

    try:
        src = checkpoint.load(source, device="cpu", dtype=torch.float32)
    except CheckpointError as exc:
        raise CheckpointError(f"Cannot warm-start the backbone from {source!r} (recipe field "
                              f"init_backbone_from): {exc}") from exc
    if model.tokenizer is not None and src.tokenizer is not None:
        if _vocabulary(model.tokenizer) != _vocabulary(src.tokenizer):
            raise CheckpointError(
                f"The tokenizer of {source!r} ({len(src.tokenizer)} tokens) differs from this recipe's "
                f"({len(model.tokenizer)} tokens): its embeddings would mean other tokens. Use the recipe "
                "tokenizer the source was trained with.")
    theirs = src.backbone.state_dict()
    ours = model.backbone.state_dict()
    missing = sorted(set(ours) - set(theirs))
    extra = sorted(set(theirs) - set(ours))
    wrong = sorted(k for k in set(ours) & set(theirs) if tuple(ours[k].shape) != tuple(theirs[k].shape))
    if missing or extra or wrong:
        detail = "; ".join(part for part in (
            f"missing {missing[:3]}" if missing else "",
            f"unexpected {extra[:3]}" if extra else "",
            "shape of " + ", ".join(f"{k} {tuple(theirs[k].shape)} vs {tuple(ours[k].shape)}" for k in wrong[:3])
            if wrong else "") if part)
        raise CheckpointError(f"The backbone of {source!r} does not fit this recipe's backbone ({detail}): "
                              "init_backbone_from needs the same backbone kind and size.")
    model.backbone.load_state_dict(theirs, strict=True)
    model.backbone.tie_weights()
    model.invalidate_hash()
    return {"source": str(source), "weights_hash": src.weights_hash(), "tensors": len(theirs)}


def backbone_init_line(provenance: dict[str, Any]) -> str:
    """The model card's sentence on a warm-started backbone, from a run's state.json "backbone_init"
    (what :func:`init_backbone_from` returned)."""
    return (f"backbone initialised from {provenance['source']} (its backbone weights only, weights hash "
            f"{provenance['weights_hash']}); the memory's parameters were trained from a fresh initialisation")
