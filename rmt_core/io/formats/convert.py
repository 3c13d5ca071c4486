"""Converting any checkpoint RMT Lens can load (the authors' RMT and ARMT) into a native RMT Lens folder;
its card names the source and, for an ARMT, every associative-memory setting and which were assumed."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ...engine.config import RMTConfig
from ...errors import CheckpointError
from .armt import default_maths


@dataclass
class Conversion:
    """What convert_checkpoint wrote and how faithfully."""

    out: Path
    source_format: str  # CheckpointInfo.describe() of the source
    max_abs_logit_diff: float  # between the source as loaded and the written folder reloaded
    n_tokens: int  # length of the random input the logits were compared on
    n_segments: int
    has_tokenizer: bool


def convert_checkpoint(
    source: str | os.PathLike,
    out: str | os.PathLike,
    trust_pickle: bool = False,
    rmt_config: RMTConfig | dict[str, Any] | None = None,
    backbone: str | os.PathLike | None = None,
    seed: int = 0,
) -> Conversion:
    """Load `source` (anything rmt_core.load reads), write it to `out` with save_pretrained
    (safetensors + config.json + tokenizer + a card naming the source), reload the written
    folder and compare both models' logits on a random input of three segments (CPU, float32).

    Raises CheckpointError as rmt_core.load does, or when `out` is a non-empty folder.
    """
    from ..._version import __version__
    from ..checkpoint import _explicit_fields, inspect_checkpoint, load, save_checkpoint

    out = Path(out).expanduser()
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise CheckpointError(f"{out} already exists and is not an empty folder: give a new folder for --out.")
    info = inspect_checkpoint(source)
    kwargs = dict(trust_pickle=trust_pickle, rmt_config=rmt_config, backbone=backbone)
    model = load(source, device="cpu", dtype=torch.float32, **kwargs)
    cfg = model.config
    armt = cfg.memory == "associative"
    if info.format == "pickled":  # read now: load() accepts the authors' RMT and ARMT as pickles
        info.format, info.num_mem_tokens = ("armt" if armt else "authors"), cfg.num_mem_tokens
    given = sorted(_explicit_fields(rmt_config))
    if armt:
        options = cfg.memory_options
        assumed = info.assumed(rmt_config) if info.armt is not None else default_maths(
            info.armt_config is not None, bool(options.get("gating")) or options.get("n_heads", 1) > 1,
            {**(info.armt_config or {}).get("memory_options", {}),
             **(_explicit_fields(rmt_config).get("memory_options") or {})})[1]
        how = (f"associative memory (ARMT) with {', '.join(f'{k}={v!r}' for k, v in sorted(options.items()))}"
               + (f"; not stored in the source, assumed: {assumed}" if assumed else ""))
    else:
        how = (f"mask mode `{cfg.mask_mode}`"
               + (" (the authors' wrapper uses the backbone's causal mask)" if info.format == "authors" else ""))
    provenance = (
        f"Converted by RMT Lens {__version__} from `{source}` ({info.describe()})"
        + (f" with the backbone config of `{backbone}`" if backbone else "") + ". "
        + f"Settings given at conversion: {', '.join(f'{k}={getattr(cfg, k)!r}' for k in given) or 'none'}; "
        + how + "."
    )
    card = {
        "title": f"{model.name} (converted)",
        "summary": f"converted from {info.describe()}",
        "description": provenance,
        "source": {"path": str(source), "format": info.format, "backbone": str(backbone) if backbone else None},
    }
    save_checkpoint(model, str(out), card=card)
    reloaded = load(out, device="cpu", dtype=torch.float32)
    n_tokens = 2 * cfg.segment_size + max(1, cfg.segment_size // 2)
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, model.vocab_size, (1, n_tokens), generator=generator)
    with torch.no_grad():
        diff = (model(ids).logits - reloaded(ids).logits).abs().max().item()
    return Conversion(out, info.describe(), float(diff), n_tokens, len(model.segment_bounds(n_tokens)),
                      model.tokenizer is not None)
