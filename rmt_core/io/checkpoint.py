"""Checkpoints: safetensors weights + JSON config + tokenizer files + a model card.

A folder written by RMTModel.save_pretrained holds
    config.json        {"format": "rmt-lens", "rmt": RMTConfig, "backbone": HF config, "card": {...}}
    model.safetensors  "initial_memory" and "backbone.<name>" tensors (tied aliases stored once)
    tokenizer files    as PreTrainedTokenizerFast.save_pretrained writes them
    README.md          the model card
Other trainers' checkpoints (the authors' RMT and ARMT in every layout) are read through
rmt_core.io.formats, and what they still need is found by rmt_core.io.checkpoint_info; a Hugging Face Hub name resolves through rmt_core.io.hub (local cache).
Nothing here unpickles, except pickled files behind an explicit opt-in (weights_only=True).
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from . import formats, hub
from . import sizes
from .atomic import written_whole
from ..engine.backbones import backbone_from_config
from ..engine.config import RMTConfig
from ..engine.devices import default_dtype, pick_device
from ..errors import CheckpointArgumentError, CheckpointError, ConfigError
# CheckpointInfo and OpenOption are re-exported: this is the module the app reads them from.
from .checkpoint_info import (CheckpointInfo, OpenOption, check_given_options,  # noqa: F401
                              explicit_fields as _explicit_fields)
from .formats import authors
from ..engine.memory import memory_class
from ..engine.model import RMTModel

FORMAT = "rmt-lens"
FORMAT_VERSION = 1
SHIPPED_DIR = Path(__file__).resolve().parents[2] / "checkpoints"
DEFAULT_CHECKPOINT = "austen-pydocs-recall"
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

    from .._version import __version__

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
    with written_whole(path / WEIGHTS_FILE, CheckpointError, "the weights") as tmp_weights:
        save_file(_unique_state_dict(model), str(tmp_weights), metadata={"format": "pt"})
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
        (f"- memory: {cfg.num_mem_tokens} slots; segments of {cfg.segment_size} tokens; "
         f"mask mode `{cfg.mask_mode}`; positions restart per segment: {cfg.reset_positions}" if cfg.memory == "tokens"
         else f"- memory: {cfg.num_mem_tokens} memory tokens after each segment's tokens (the same learned vectors "
         f"in every segment; what is carried between segments is the memory type's own state, below); segments of "
         f"{cfg.segment_size} tokens; positions restart per segment: {cfg.reset_positions}"),
        f"- training BPTT depth: {cfg.bptt_depth or 'full'}",
    ]
    if cfg.memory != "tokens":
        options = ", ".join(f"{k}={v}" for k, v in sorted(cfg.memory_options.items()))
        lines.append(f"- memory type: `{cfg.memory}`" + (f" ({options})" if options else ""))
    if card.get("backbone_init"):
        lines.append(f"- {card['backbone_init']}")
    lines.append("")
    for heading in ("data", "recipe", "training_time", "evaluation", "limits"):
        if heading in card:
            lines += [f"## {heading.replace('_', ' ').capitalize()}", str(card[heading]).rstrip(), ""]
    lines += _operating_range_lines(card.get("operating_range"))
    lines += ["## Files", "config.json (RMT + backbone config), model.safetensors, tokenizer files.", ""]
    return "\n".join(lines)


def _operating_range_lines(entry: Any) -> list[str]:
    """The card's "Operating range" section from its operating_range entry (rmt_core.operating_range)."""
    if not isinstance(entry, dict):
        return []
    lines = ["## Operating range (as measured)",
             f"- task: `{entry.get('task')}`; answers {entry.get('question')}",
             f"- facts per document in training: {entry.get('facts')} (several facts, or facts about several "
             "people, were not measured)",
             f"- names it may be asked about: {', '.join(entry.get('names', []))}; answers: "
             f"{', '.join(entry.get('answers', []))}"]
    for where, table in (entry.get("accuracy") or {}).items():
        # By length (a card read back from JSON has its keys as sorted strings: "16" before "2").
        cells = ", ".join(f"{s} segments {a:.3f}" for s, a in sorted(table.items(), key=lambda item: int(item[0])))
        lines.append(f"- accuracy ({entry.get('accuracy_column', 'accuracy')}) in {where}: {cells}")
    if entry.get("accuracy"):
        top = max(int(s) for table in entry["accuracy"].values() for s in table)
        lines.append(f"- documents longer than {top} segments were not measured: answers there carry a warning")
    else:
        lines.append("- no accuracy was measured: the range is unknown")
    return lines + [""]


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


def resolve_checkpoint(name_or_path: str | os.PathLike, download: bool = False) -> Path:
    """A folder or weights file as given, else a shipped checkpoint of that name, else a
    Hugging Face Hub name ("org/name") from the local cache (see rmt_core.io.hub; download=True
    may fetch it when HF_HUB_OFFLINE is not set)."""
    path = Path(name_or_path).expanduser()
    if path.is_dir() or path.is_file():
        return path
    shipped = SHIPPED_DIR / str(name_or_path)
    if "/" not in str(name_or_path) and shipped.is_dir():
        return shipped
    if _is_hub_name(name_or_path):
        return hub.resolve_repo(str(name_or_path), download=download)
    names = [c["name"] for c in list_checkpoints()]
    raise CheckpointError(
        f"No checkpoint folder at '{name_or_path}' and no shipped checkpoint of that name. "
        f"Shipped checkpoints: {', '.join(names) or 'none'}. Give a folder written by save_pretrained, "
        "a weights file, or a Hugging Face model name (org/name) that is in the local cache."
    )


# ---------------------------------------------------------------------- inspecting
def inspect_checkpoint(name_or_path: str | os.PathLike, download: bool = False,
                       trust_pickle: bool = False) -> CheckpointInfo:
    """Find what a folder, file or name holds (see CheckpointInfo) without reading pickled data;
    with trust_pickle=True a pickled file is read (torch.load(weights_only=True), as rmt_core.load
    does) so that its format and layout show.

    Raises CheckpointError for a missing path, unreadable config.json, incomplete shards,
    corrupt safetensors headers, or an ARMT variant RMT Lens does not run (named: ACT, sink
    token, sliding window; see rmt_core.io.formats.armt).
    """
    path = resolve_checkpoint(name_or_path, download=download)
    folder = path if path.is_dir() else path.parent
    config = _read_config(folder)
    if config is not None and config.get("format") == FORMAT:
        rmt = config.get("rmt") if isinstance(config.get("rmt"), dict) else None
        return CheckpointInfo(path, "rmt-lens", has_tokenizer=_has_tokenizer(folder), rmt=rmt,
                              has_segment_size=rmt is not None and "segment_size" in rmt,
                              has_backbone_config=isinstance(config.get("backbone"), dict))
    weights = formats.find_weights(path)
    armt_config = formats.armt.causal_lm_config(config, folder / "config.json")
    stored_backbone = _stored_backbone_config(config) if config is not None else None
    info = CheckpointInfo(
        path, "none" if weights is None else "pickled", weights=weights,
        has_backbone_config=stored_backbone is not None,
        has_segment_size=config is not None and ((isinstance(config.get("rmt"), dict) and "segment_size" in config["rmt"])
                                                 or "segment_size" in (armt_config or {}).get("rmt", {})),
        has_tokenizer=_has_tokenizer(folder), armt_config=armt_config, stored_backbone=stored_backbone,
    )
    shapes = formats.tensor_shapes(weights) if weights is not None else None
    if shapes is None and weights is not None and trust_pickle:
        shapes = {k: tuple(t.shape) for k, t in formats.read_tensors(weights, trust_pickle=True).items()}
    if shapes is not None:
        info.format = formats.detect_format(shapes)
        keys = formats.detect.memory_keys(shapes)
        if info.format in (formats.AUTHORS, formats.ARMT) and len(keys) == 1 and len(shapes[keys[0]]) == 2:
            info.num_mem_tokens = int(shapes[keys[0]][0])
        if info.format == formats.ARMT:
            info.armt = formats.armt.read_layout(shapes, weights.source)
    return info


# ---------------------------------------------------------------------- loading
def load(
    name_or_path: str | os.PathLike,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    trust_pickle: bool = False,
    rmt_config: RMTConfig | dict[str, Any] | None = None,
    backbone: str | os.PathLike | None = None,
    download: bool = False,
    device_map: str | dict[str, Any] | None = None,
    max_memory: dict[int | str, int | str] | None = None,
    offload_folder: str | os.PathLike | None = None,
) -> RMTModel:
    """Load a checkpoint: a shipped name (see list_checkpoints), a folder, a weights file, or a
    Hugging Face Hub name ("org/name") found in the local cache.

    Formats: RMT Lens's own folders (save_pretrained), and the authors' RMT
    (booydar/recurrent-memory-transformer MemoryCell + RecurrentWrapper) in every layout
    their tools write (see rmt_core.io.formats). Other RMT formats are refused by name.

    device: None = CUDA, else MPS, else CPU; dtype: None = bf16 on CUDA, else float32.
    trust_pickle: allow pickled files (pytorch_model.bin, sharded .bin, a .pth training dict),
        read with torch.load(weights_only=True). Never set it for files you do not trust.
    rmt_config: RMT settings as an RMTConfig or a dict. Only the fields the caller set count
        (RMTConfig.explicit_fields): they override what the checkpoint stores; the rest come
        from the checkpoint or its format's defaults (the authors' format: mask_mode "causal").
        The authors' format does not store segment_size: it must be given here.
    backbone: for checkpoints without the backbone's config.json: a folder holding it, or a
        Hugging Face model name resolved from the local cache; its tokenizer is used when
        the checkpoint has none.
    download: let Hub names be fetched when not cached (never when HF_HUB_OFFLINE is set).

    Raises CheckpointArgumentError (a CheckpointError and an ArgumentError) when the caller's part is
    missing or wrong: the format found, what is missing (its `needs`: argument, flag and app box for
    each), or the argument at fault (a memory option the memory type does not know, a value the weights
    contradict); the file is never read further than needed to say so. A missing, incomplete or corrupt
    checkpoint raises a plain CheckpointError.
    device_map, max_memory, offload_folder: for backbones bigger than one device, placement by
        accelerate ("auto" or an explicit map; see rmt_core.engine.placement.dispatch); `device` is
        then ignored and the memory lives on the first layer's device.
    """
    explicit = _explicit_fields(rmt_config)
    path = resolve_checkpoint(name_or_path, download=download)
    folder = path if path.is_dir() else path.parent
    config = _read_config(folder)
    if config is not None and config.get("format") == FORMAT:
        model = _load_native(folder, config, explicit)
    else:
        model = _load_foreign(path, folder, config, trust_pickle, explicit, backbone, download)
    if _is_hub_name(name_or_path):
        model.name = str(name_or_path)
    else:
        model.name = folder.name if path.is_dir() or config is not None else path.stem
    if device_map is not None:
        from ..engine.placement import dispatch

        return dispatch(model, device_map, dtype=dtype, max_memory=max_memory, offload_folder=offload_folder)
    target = pick_device(device)
    model.to(device=target, dtype=dtype or default_dtype(target))
    model.eval()
    return model


def _is_hub_name(name_or_path: str | os.PathLike) -> bool:
    """True when a name was resolved through the Hub cache (not a path here, not a shipped name)."""
    text = str(name_or_path)
    return "/" in text and not Path(text).expanduser().exists() and hub.looks_like_repo_id(text)


def _read_config(folder: Path) -> dict[str, Any] | None:
    """config.json of a folder as a dict; None when there is none."""
    config_file = folder / "config.json"
    if not config_file.is_file():
        return None
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{config_file} is not valid JSON ({exc}). Re-copy the checkpoint.") from exc
    if not isinstance(config, dict):
        raise CheckpointError(f"{config_file} must hold a JSON object.")
    return config


def _has_tokenizer(folder: Path | None) -> bool:
    return folder is not None and any((folder / f).is_file() for f in TOKENIZER_FILES)


def _build_model(rmt: RMTConfig, backbone_config: dict[str, Any], config_source: object,
                 tokenizer_folders: list[Path]) -> RMTModel:
    try:
        backbone = backbone_from_config(backbone_config, attn_implementation=rmt.attn_implementation)
    except sizes.BUILD_ERRORS as exc:
        raise CheckpointError(f"{config_source}: the backbone config cannot be built ({exc}).") from exc
    folder = next((f for f in tokenizer_folders if _has_tokenizer(f)), None)
    tokenizer = _load_tokenizer(folder, backbone) if folder is not None else None
    try:
        return RMTModel.from_backbone(backbone, rmt, tokenizer=tokenizer)
    except ConfigError as exc:
        raise CheckpointError(f"{config_source}: {exc}") from exc


def _load_native(path: Path, config: dict[str, Any], explicit: dict[str, Any]) -> RMTModel:
    if "rmt" not in config or "backbone" not in config:
        missing = [k for k in ("rmt", "backbone") if k not in config]
        raise CheckpointError(f"{path / 'config.json'} lacks the field(s) {missing}. Re-save the model with save_pretrained.")
    for field_name in ("rmt", "backbone"):
        if not isinstance(config[field_name], dict):
            raise CheckpointError(f"{path / 'config.json'}: \"{field_name}\" is {json.dumps(config[field_name])[:40]}, "
                                  "not a JSON object of settings. Re-copy the checkpoint's config.json.")
    stored = config["rmt"]
    memory = explicit.get("memory", stored.get("memory", "tokens"))
    given = check_given_options(memory, explicit, path)
    fields = {**stored, **explicit}
    if given:  # merged into the stored options: the ones not given keep their stored values
        stored_options = stored.get("memory_options") if isinstance(stored.get("memory_options"), dict) else {}
        _refuse_weights_options(memory, given, stored_options, path / "config.json")
        fields["memory_options"] = {**stored_options, **given}
    rmt = _checked_config(fields, given, path / "config.json")
    weights_file = path / WEIGHTS_FILE
    if not weights_file.is_file():
        raise CheckpointError(f"{path} has no {WEIGHTS_FILE}: the weights are missing. Re-copy the whole checkpoint folder.")
    weights = formats.WeightFiles("safetensors", [weights_file])
    sizes.check_config_fits_weights(rmt, config["backbone"], formats.tensor_shapes(weights),
                                    path / "config.json")  # before building anything of the config's size
    model = _build_model(rmt, config["backbone"], path / "config.json", [path])
    _load_weights_into(model, formats.read_tensors(weights), weights_file)
    return model


def _load_weights_into(model: RMTModel, tensors: dict[str, torch.Tensor], source: object) -> None:
    """Copy tensors in by name, naming any tensor that is missing, unexpected, of the wrong shape
    or holding NaN / infinite values."""
    expected = model.state_dict()
    aliases = set(expected) - set(_unique_state_dict(model))  # tied copies, stored once
    missing = sorted(set(expected) - set(tensors) - aliases)
    unexpected = sorted(set(tensors) - set(expected))
    if missing:
        raise CheckpointError(f"{source} lacks tensor(s) {missing[:5]}{' ...' if len(missing) > 5 else ''}: "
                              "the weights do not belong to this config.")
    if unexpected:
        raise CheckpointError(f"{source} has tensor(s) the config does not know: {unexpected[:5]}. "
                              "The config and the weights come from different models.")
    for name, tensor in tensors.items():
        if tuple(tensor.shape) != tuple(expected[name].shape):
            raise CheckpointError(
                f"{source}: tensor '{name}' has shape {tuple(tensor.shape)} but the config needs "
                f"{tuple(expected[name].shape)}. The config and the weights do not match."
            )
    sizes.check_finite(tensors, source)
    model.load_state_dict(tensors, strict=False)
    model.backbone.tie_weights()
    model.invalidate_hash()


def _load_tokenizer(path: Path, backbone: torch.nn.Module):
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


# ---------------------------------------------------------------------- other formats
def _stored_backbone_config(config: dict[str, Any]) -> dict[str, Any] | None:
    """The backbone config inside a folder's config.json: {"backbone": {...}}, an ARMTForCausalLM's
    base_model_config, or a plain HF config."""
    if isinstance(config.get("backbone"), dict) and "model_type" in config["backbone"]:
        return dict(config["backbone"])
    if config.get("model_type") == formats.armt.MODEL_TYPE:
        stored = config.get("base_model_config")
        return dict(stored) if isinstance(stored, dict) and "model_type" in stored else None
    if "model_type" in config:
        return {k: v for k, v in config.items() if k != "rmt"}
    return None


def _backbone_folder(backbone: str | os.PathLike, download: bool) -> Path:
    """A backbone given as a folder or as a Hub name (from the local cache)."""
    path = Path(backbone).expanduser()
    if path.is_dir():
        return path
    if hub.looks_like_repo_id(str(backbone)):
        return hub.resolve_repo(str(backbone), download=download)
    raise CheckpointArgumentError(f"backbone '{backbone}' is neither a folder nor a Hugging Face model name.",
                                  problem=f"'{backbone}' is neither a folder nor a Hugging Face model name.",
                                  argument="backbone", value=str(backbone))


def _raise_if_missing(info: CheckpointInfo, trust_pickle: bool, explicit: dict[str, Any], backbone: str | None) -> None:
    """CheckpointArgumentError naming everything loading `info` still needs (CheckpointInfo.needs)."""
    needs = info.needs(trust_pickle, explicit, backbone)
    if needs:
        problem = f"{info.weights.source if info.weights else info.path} is {info.describe()}."
        raise CheckpointArgumentError(f"{problem} Loading it needs " + "; and ".join(n.text() for n in needs) + ".",
                                      problem=problem, needs=tuple(needs))


def _refuse_weights_options(memory: str, given: dict[str, Any], stored: dict[str, Any], source: object) -> None:
    """An RMT Lens folder's options that its weights were trained with (MemoryOption.by_weights) cannot
    be changed at load: CheckpointArgumentError for a given value other than the stored one."""
    specs = memory_class(memory).option_specs or {}
    for name, value in given.items():
        spec = specs.get(name)
        if spec is not None and spec.by_weights and value != stored.get(name, spec.default):
            kept = stored.get(name, spec.default)
            problem = (f"the weights were trained with {name}={kept!r} (stored in {source}): leave {name} out, "
                       "another value does not fit them.")
            raise CheckpointArgumentError(f"{source}: rmt_config's memory_options says {name}={value!r}, but {problem}",
                                          problem=problem, argument="memory_options", option=name, value=value)


def _checked_config(fields: dict[str, Any], given: dict[str, Any], source: object) -> RMTConfig:
    """RMTConfig.from_dict(fields). Its ConfigError is the caller's (CheckpointArgumentError naming
    memory_options, and the option when one alone is at fault) when the same fields with one, else all,
    of the caller's memory options back at the memory type's defaults are valid (e.g. n_heads=3 given
    for d_mem=4); else the file's (CheckpointError)."""
    try:
        return RMTConfig.from_dict(fields)
    except ConfigError as exc:
        error: Exception = exc
    if not given:
        raise CheckpointError(f"{source}: {error}") from error
    try:
        specs = memory_class(fields.get("memory", "tokens")).option_specs or {}
    except ConfigError:  # an unknown memory type: the file's (the message names the known ones)
        raise CheckpointError(f"{source}: {error}") from error

    def valid_without(names: list[str]) -> bool:
        options = {k: v for k, v in (fields.get("memory_options") or {}).items() if k not in names}
        options.update({k: specs[k].default for k in names if k in specs})
        try:
            RMTConfig.from_dict({**fields, "memory_options": options})
        except ConfigError:
            return False
        return True

    culprit = next((name for name in given if valid_without([name])), None)
    if culprit is not None or valid_without(list(given)):
        raise CheckpointArgumentError(f"{source}: {error}", problem=str(error), argument="memory_options",
                                      option=culprit, value=given.get(culprit)) from error
    raise CheckpointError(f"{source}: {error}") from error


def _load_foreign(path: Path, folder: Path, config: dict[str, Any] | None, trust_pickle: bool,
                  explicit: dict[str, Any], backbone: str | os.PathLike | None, download: bool) -> RMTModel:
    """A checkpoint not written by RMT Lens: the authors' RMT and ARMT are loaded, others refused by name."""
    info = inspect_checkpoint(path)
    if info.weights is None:
        if config is None:
            raise CheckpointError(f"{folder} has no config.json and no weights: this folder is not a checkpoint.")
        raise CheckpointError(
            f"{folder / 'config.json'} is not an RMT Lens config (no \"format\": \"rmt-lens\") and the folder holds "
            f"no weights ({WEIGHTS_FILE}, {formats.files.SAFETENSORS_INDEX}, {formats.files.PICKLE}, "
            f"{formats.files.PICKLE_INDEX} or a .pth file). Give the folder with the weights."
        )
    source = info.weights.source
    if info.format not in (formats.AUTHORS, formats.ARMT, "pickled"):  # known from the safetensors header
        formats.refuse_unsupported(info.format, source, (formats.tensor_shapes(info.weights) or {}).keys())
    backbone_name = str(backbone) if backbone else None
    if not info.needs_pickle_opt_in or not trust_pickle:  # say everything missing before reading anything
        _raise_if_missing(info, trust_pickle, explicit, backbone_name)
    state = formats.read_tensors(info.weights, trust_pickle=trust_pickle)
    info.format = formats.detect_format(state)
    formats.refuse_unsupported(info.format, source, state.keys())
    if info.format == formats.ARMT:
        info.armt = formats.armt.read_layout({k: tuple(t.shape) for k, t in state.items()}, source)
        info.num_mem_tokens = info.armt.num_mem_tokens
        _raise_if_missing(info, trust_pickle, explicit, backbone_name)  # a pickle's format is known only now
        check_given_options("associative", explicit, source)
        return _load_armt(state, info, folder, config, explicit, backbone, download)
    memory, backbone_state = authors.split_state(state, source)
    m = info.num_mem_tokens = int(memory.shape[0])
    _raise_if_missing(info, trust_pickle, explicit, backbone_name)  # a pickle's format is known only now
    check_given_options("tokens", explicit, source)
    stored = dict(config["rmt"]) if config is not None and isinstance(config.get("rmt"), dict) else {}
    fields = authors.rmt_fields(explicit, stored, m, source)
    backbone_dir, backbone_config, config_source = _foreign_backbone_config(backbone, download, config, folder)
    authors.check_positions(backbone_state, backbone_config, m, source)
    tensors = {"initial_memory": memory}
    return _build_foreign(fields, backbone_config, config_source, state, [folder, backbone_dir], tensors,
                          backbone_state, source, dict(explicit.get("memory_options") or {}))


def given_backbone_config(backbone: str | os.PathLike, download: bool = False) -> tuple[Path, dict[str, Any]]:
    """(its folder, its config.json) of a backbone given as a folder or a Hugging Face name (from the
    local cache; download=True may fetch it). Raises CheckpointArgumentError (argument "backbone") when
    it is neither, or has no config.json with a model_type; CheckpointError when a name is not cached."""
    backbone_dir = _backbone_folder(backbone, download)
    backbone_config = _read_config(backbone_dir)
    if backbone_config is None or "model_type" not in backbone_config:
        problem = (f"the backbone folder {backbone_dir} has no config.json with a model_type: give the folder "
                   "(or Hub name) of the model the RMT was built on.")
        raise CheckpointArgumentError(problem[0].upper() + problem[1:], problem=problem, argument="backbone",
                                      value=str(backbone))
    return backbone_dir, backbone_config


def _foreign_backbone_config(backbone: str | os.PathLike | None, download: bool, config: dict[str, Any] | None,
                             folder: Path) -> tuple[Path | None, dict[str, Any], Path]:
    """(the backbone's folder or None, its config, where that config came from) for a foreign
    checkpoint: the caller's `backbone` (a folder or a cached Hub name), else the folder's config.json."""
    if backbone:
        backbone_dir, backbone_config = given_backbone_config(backbone, download)
        return backbone_dir, backbone_config, backbone_dir / "config.json"
    backbone_config = _stored_backbone_config(config or {})
    assert backbone_config is not None  # info.missing() asked for it otherwise
    return None, backbone_config, folder / "config.json"


def _build_foreign(fields: dict[str, Any], backbone_config: dict[str, Any], config_source: Path,
                   state: dict[str, torch.Tensor], tokenizer_folders: list[Path | None], tensors: dict[str, torch.Tensor],
                   backbone_state: dict[str, torch.Tensor], source: object, given: dict[str, Any]) -> RMTModel:
    """Build the RMTModel of a foreign checkpoint's settings and copy its tensors in (RMT Lens's names:
    `tensors` as they are, the backbone's under "backbone."). given: the caller's memory_options."""
    rmt = _checked_config(fields, given, source)
    sizes.check_config_fits_weights(rmt, backbone_config, {k: tuple(t.shape) for k, t in state.items()},
                                    config_source, named=False)
    model = _build_model(rmt, backbone_config, config_source, [f for f in tokenizer_folders if f is not None])
    backbone_state = authors.drop_legacy_buffers(backbone_state, set(model.backbone.state_dict()))
    _load_weights_into(model, {**tensors, **{f"backbone.{k}": v for k, v in backbone_state.items()}}, source)
    return model


def _load_armt(state: dict[str, torch.Tensor], info: CheckpointInfo, folder: Path, config: dict[str, Any] | None,
               explicit: dict[str, Any], backbone: str | os.PathLike | None, download: bool) -> RMTModel:
    """The authors' ARMT (formats.armt): memory="associative" with the settings its weights show,
    its config stores, the caller gives, and the stated defaults for the rest."""
    source = info.weights.source
    layout = info.armt
    backbone_dir, backbone_config, config_source = _foreign_backbone_config(backbone, download, config, folder)
    reading = formats.armt.rmt_fields(layout, explicit, info.armt_config, backbone_config, source)
    own, backbone_state = formats.armt.rmt_lens_tensors(state, layout, source)
    return _build_foreign(reading.fields, backbone_config, config_source, state, [folder, backbone_dir], own,
                          backbone_state, source, dict(explicit.get("memory_options") or {}))
