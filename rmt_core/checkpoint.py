"""Checkpoints: safetensors weights + JSON config + tokenizer files + a model card.

A folder written by RMTModel.save_pretrained holds
    config.json        {"format": "rmt-lens", "rmt": RMTConfig, "backbone": HF config, "card": {...}}
    model.safetensors  "initial_memory" and "backbone.<name>" tensors (tied aliases stored once)
    tokenizer files    as PreTrainedTokenizerFast.save_pretrained writes them
    README.md          the model card
Nothing here unpickles, except the authors' own format behind an explicit opt-in.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from .backbones import backbone_from_config
from .config import RMTConfig
from .devices import default_dtype, pick_device
from .errors import CheckpointError, ConfigError
from .model import RMTModel

FORMAT = "rmt-lens"
FORMAT_VERSION = 1
SHIPPED_DIR = Path(__file__).resolve().parent.parent / "checkpoints"
DEFAULT_CHECKPOINT = "austen-recall"
WEIGHTS_FILE = "model.safetensors"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")


# ---------------------------------------------------------------------- saving
def _unique_state_dict(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """state_dict without tied aliases (safetensors refuses shared storage)."""
    seen: set[int] = set()
    tensors: dict[str, torch.Tensor] = {}
    for name, tensor in module.state_dict().items():
        key = tensor.untyped_storage().data_ptr()
        if key in seen:
            continue
        seen.add(key)
        tensors[name] = tensor.detach().to("cpu").contiguous()
    return tensors


def save_checkpoint(model: RMTModel, directory: str | os.PathLike, card: dict[str, Any] | None = None) -> Path:
    """Write the checkpoint folder (see module doc). `card` adds model-card facts."""
    from safetensors.torch import save_file

    from . import __version__

    path = Path(directory)
    path.mkdir(parents=True, exist_ok=True)
    card = dict(card or {})
    config = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "rmt_lens_version": __version__,
        "rmt": model.config.to_dict(),
        "backbone": model.backbone.config.to_dict(),
        "card": card,
    }
    # Write to temporary names first so an interrupted save never leaves a half checkpoint.
    tmp_weights = path / (WEIGHTS_FILE + ".tmp")
    save_file(_unique_state_dict(model), str(tmp_weights), metadata={"format": "pt"})
    tmp_weights.replace(path / WEIGHTS_FILE)
    (path / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True, default=str))
    if model.tokenizer is not None:
        model.tokenizer.save_pretrained(str(path))
    (path / "README.md").write_text(model_card(model, card))
    model.name = path.name
    return path


def model_card(model: RMTModel, card: dict[str, Any]) -> str:
    """A Markdown model card: what the model is, what it was trained on, how it scored."""
    cfg = model.config
    bb = model.backbone.config
    lines = [
        f"# {card.get('title', model.name or 'RMT checkpoint')}",
        "",
        card.get("description", cfg.description or ""),
        "",
        "## Architecture",
        f"- backbone: {bb.model_type}, {model.num_layers} layers, hidden size {model.hidden_size}, "
        f"{model.num_heads} heads, vocabulary {model.vocab_size}",
        f"- parameters: {sum(p.numel() for p in model.parameters()):,}",
        f"- memory: {cfg.num_mem_tokens} slots; segments of {cfg.segment_size} tokens; "
        f"mask mode `{cfg.mask_mode}`; positions restart per segment: {cfg.reset_positions}",
        f"- training BPTT depth: {cfg.bptt_depth or 'full'}",
        "",
    ]
    for heading in ("data", "recipe", "training_time", "evaluation"):
        if heading in card:
            lines += [f"## {heading.replace('_', ' ').capitalize()}", str(card[heading]).rstrip(), ""]
    lines += ["## Files", "config.json (RMT + backbone config), model.safetensors, tokenizer files.", ""]
    return "\n".join(lines)


# ---------------------------------------------------------------------- finding
def list_checkpoints() -> list[dict[str, str]]:
    """Shipped checkpoints: name, path and one-line description, default first."""
    found = []
    if SHIPPED_DIR.is_dir():
        for folder in sorted(SHIPPED_DIR.iterdir()):
            config_file = folder / "config.json"
            if not config_file.is_file():
                continue
            try:
                card = json.loads(config_file.read_text()).get("card", {})
            except (OSError, json.JSONDecodeError):
                card = {}
            found.append({"name": folder.name, "path": str(folder), "description": card.get("summary", "")})
    found.sort(key=lambda item: item["name"] != DEFAULT_CHECKPOINT)
    return found


def resolve_checkpoint(name_or_path: str | os.PathLike) -> Path:
    """A folder path as given, else a shipped checkpoint of that name."""
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return path
    shipped = SHIPPED_DIR / str(name_or_path)
    if "/" not in str(name_or_path) and shipped.is_dir():
        return shipped
    names = [c["name"] for c in list_checkpoints()]
    raise CheckpointError(
        f"No checkpoint folder at '{name_or_path}' and no shipped checkpoint of that name. "
        f"Shipped checkpoints: {', '.join(names) or 'none'}. Give a folder written by save_pretrained."
    )


# ---------------------------------------------------------------------- loading
def load(
    name_or_path: str | os.PathLike,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    trust_pickle: bool = False,
    rmt_config: RMTConfig | dict[str, Any] | None = None,
) -> RMTModel:
    """Load a checkpoint: a shipped name (see list_checkpoints) or a folder.

    device: None = CUDA, else MPS, else CPU; dtype: None = bf16 on CUDA, else float32.
    trust_pickle: allow the authors' pickled format (pytorch_model.bin), read with
        torch.load(weights_only=True). Never set it for files you do not trust.
    rmt_config: RMT settings for folders that do not carry them (the authors' format).
    """
    path = resolve_checkpoint(name_or_path)
    config = _read_config(path)
    if config.get("format") == FORMAT:
        model = _load_native(path, config)
    elif (path / "pytorch_model.bin").is_file():
        model = _load_authors_format(path, config, trust_pickle, rmt_config)
    elif not (path / WEIGHTS_FILE).is_file():
        raise CheckpointError(f"{path} has no {WEIGHTS_FILE}: the weights are missing. Re-copy the whole checkpoint folder.")
    else:
        raise CheckpointError(
            f"{path / 'config.json'} is not an RMT Lens config (no \"format\": \"rmt-lens\"). "
            "Save models with RMTModel.save_pretrained."
        )
    model.name = path.name
    target = pick_device(device)
    model.to(device=target, dtype=dtype or default_dtype(target))
    model.eval()
    return model


def _read_config(path: Path) -> dict[str, Any]:
    config_file = path / "config.json"
    if not config_file.is_file():
        raise CheckpointError(f"{path} has no config.json: this folder is not a checkpoint.")
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{config_file} is not valid JSON ({exc}). Re-copy the checkpoint.") from exc
    if not isinstance(config, dict):
        raise CheckpointError(f"{config_file} must hold a JSON object.")
    return config


def _build_model(path: Path, rmt: RMTConfig, backbone_config: dict[str, Any]) -> RMTModel:
    try:
        backbone = backbone_from_config(backbone_config, attn_implementation=rmt.attn_implementation)
    except (ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(f"{path / 'config.json'}: the backbone config cannot be built ({exc}).") from exc
    try:
        return RMTModel.from_backbone(backbone, rmt, tokenizer=_load_tokenizer(path, backbone))
    except ConfigError as exc:
        raise CheckpointError(f"{path}: {exc}") from exc


def _load_native(path: Path, config: dict[str, Any]) -> RMTModel:
    if "rmt" not in config or "backbone" not in config:
        missing = [k for k in ("rmt", "backbone") if k not in config]
        raise CheckpointError(f"{path / 'config.json'} lacks the field(s) {missing}. Re-save the model with save_pretrained.")
    try:
        rmt = RMTConfig.from_dict(config["rmt"])
    except ConfigError as exc:
        raise CheckpointError(f"{path / 'config.json'}: {exc}") from exc
    model = _build_model(path, rmt, config["backbone"])
    weights_file = path / WEIGHTS_FILE
    if not weights_file.is_file():
        raise CheckpointError(f"{path} has no {WEIGHTS_FILE}: the weights are missing. Re-copy the whole checkpoint folder.")
    _load_weights_into(model, _read_safetensors(weights_file), weights_file)
    return model


def _read_safetensors(weights_file: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(weights_file))
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise CheckpointError(
            f"{weights_file} is truncated or corrupt ({exc}). Re-copy or re-download the checkpoint."
        ) from exc


def _load_weights_into(model: RMTModel, tensors: dict[str, torch.Tensor], source: Path) -> None:
    """Copy tensors in by name, naming any tensor that is missing, unexpected or of the wrong shape."""
    expected = model.state_dict()
    aliases = set(expected) - set(_unique_state_dict(model))  # tied copies, stored once
    missing = sorted(set(expected) - set(tensors) - aliases)
    unexpected = sorted(set(tensors) - set(expected))
    if missing:
        raise CheckpointError(f"{source} lacks tensor(s) {missing[:5]}{' ...' if len(missing) > 5 else ''}: "
                              "the weights do not belong to this config.")
    if unexpected:
        raise CheckpointError(f"{source} has tensor(s) the config does not know: {unexpected[:5]}. "
                              "The config.json and the weights come from different models.")
    for name, tensor in tensors.items():
        if tuple(tensor.shape) != tuple(expected[name].shape):
            raise CheckpointError(
                f"{source}: tensor '{name}' has shape {tuple(tensor.shape)} but the config needs "
                f"{tuple(expected[name].shape)}. The config.json and the weights do not match."
            )
    model.load_state_dict(tensors, strict=False)
    model.backbone.tie_weights()
    model.invalidate_hash()


def _load_tokenizer(path: Path, backbone: torch.nn.Module):
    if not any((path / f).is_file() for f in TOKENIZER_FILES):
        return None
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    except Exception as exc:  # transformers raises many types for broken tokenizer files
        raise CheckpointError(f"The tokenizer files in {path} cannot be read ({exc}). Re-copy the checkpoint.") from exc
    vocab = backbone.get_output_embeddings().weight.shape[0]
    if len(tokenizer) > vocab:
        raise CheckpointError(
            f"The tokenizer in {path} has {len(tokenizer)} tokens but the model's vocabulary holds {vocab}: "
            "they come from different models. Put the tokenizer the model was trained with beside its weights."
        )
    return tokenizer


# ---------------------------------------------------------------------- authors' format
def _load_authors_format(
    path: Path, config: dict[str, Any], trust_pickle: bool, rmt_config: RMTConfig | dict[str, Any] | None
) -> RMTModel:
    """The authors' memory-cell wrapper: `memory_cell.memory` (m, d) + `memory_cell.model.<backbone>`."""
    weights_file = path / "pytorch_model.bin"
    if not trust_pickle:
        raise CheckpointError(
            f"{weights_file} is a pickled PyTorch file, which can run code when loaded. "
            "Load it only if you trust its source, with trust_pickle=True (it is then read with weights_only=True)."
        )
    try:
        state = torch.load(weights_file, map_location="cpu", weights_only=True)
    except Exception as exc:  # the restricted unpickler refuses anything but tensors
        raise CheckpointError(f"{weights_file} could not be read as plain tensors ({exc}). It is not loaded.") from exc
    if isinstance(state, dict) and "model_state_dict" in state:
        state = state["model_state_dict"]
    memory_keys = [k for k, v in state.items() if k.split(".")[-1] == "memory" and getattr(v, "dim", lambda: 0)() == 2]
    if len(memory_keys) != 1:
        raise CheckpointError(f"{weights_file}: expected one 2-D 'memory' tensor (the authors' memory cell), found {memory_keys}.")
    memory = state[memory_keys[0]]
    prefix = memory_keys[0][: -len("memory")] + "model."
    backbone_state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    if not backbone_state:
        raise CheckpointError(f"{weights_file}: no backbone tensors under the prefix '{prefix}'.")
    rmt_fields = dict(config.get("rmt", {}))
    if isinstance(rmt_config, RMTConfig):
        rmt_fields.update(rmt_config.to_dict())
    elif rmt_config:
        rmt_fields.update(rmt_config)
    rmt_fields["num_mem_tokens"] = int(memory.shape[0])
    rmt_fields.setdefault("mask_mode", "causal")  # what the authors' wrapper does
    if "segment_size" not in rmt_fields:
        raise CheckpointError("The authors' format does not store the segment size: pass rmt_config={'segment_size': N}.")
    backbone_config = config.get("backbone", {k: v for k, v in config.items() if k != "rmt"})
    rmt = RMTConfig.from_dict(rmt_fields)
    model = _build_model(path, rmt, backbone_config)
    tensors = {"initial_memory": memory, **{f"backbone.{k}": v for k, v in backbone_state.items()}}
    _load_weights_into(model, tensors, weights_file)
    return model
