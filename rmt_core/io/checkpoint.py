"""Checkpoints: safetensors weights + JSON config + tokenizer files + a model card.

A folder written by RMTModel.save_pretrained holds
    config.json        {"format": "rmt-lens", "rmt": RMTConfig, "backbone": HF config, "card": {...}}
    model.safetensors  "initial_memory" and "backbone.<name>" tensors (tied aliases stored once)
    tokenizer files    as PreTrainedTokenizerFast.save_pretrained writes them
    README.md          the model card
Other trainers' checkpoints (the authors' RMT in every layout) are read through
rmt_core.io.formats; a Hugging Face Hub name resolves through rmt_core.io.hub (local cache).
Nothing here unpickles, except pickled files behind an explicit opt-in (weights_only=True).
"""
from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from . import formats, hub
from . import sizes
from .atomic import written_whole
from ..engine.backbones import backbone_from_config
from ..engine.config import RMTConfig
from ..engine.devices import default_dtype, pick_device
from ..errors import CheckpointError, ConfigError
from .formats import authors
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
@dataclass
class CheckpointInfo:
    """What a checkpoint is and what loading it still needs, found without unpickling anything.

    format: "rmt-lens", one of rmt_core.io.formats.FORMAT_NAMES ("authors", "armt", "lucidrains",
        "backbone", "unknown"), "pickled" (a pickled file: unknown until trusted and read)
        or "none" (no weights found).
    """

    path: Path
    format: str
    weights: formats.WeightFiles | None = None
    num_mem_tokens: int | None = None  # from the memory tensor's shape, when readable
    has_backbone_config: bool = False  # a config.json with the backbone's model_type beside the weights
    has_segment_size: bool = False  # a stored RMT config with segment_size
    has_tokenizer: bool = False
    armt: formats.armt.ArmtLayout | None = None  # an ARMT's layout, from the safetensors header
    armt_config: dict[str, Any] | None = None  # an ARMTForCausalLM config.json's settings (armt.causal_lm_config)

    @property
    def needs_pickle_opt_in(self) -> bool:
        return self.weights is not None and self.weights.pickled

    @property
    def foreign(self) -> bool:
        """True for checkpoints not written by RMT Lens (their settings may be missing)."""
        return self.format not in ("rmt-lens", "none")

    def describe(self) -> str:
        """One line for people: the format found and the weights' layout."""
        if self.format == "rmt-lens":
            return "an RMT Lens checkpoint"
        if self.format == "none":
            return "no checkpoint (no config.json and no weights)"
        if self.format == "pickled" and self.weights is not None:
            return f"{self.weights.describe()}, whose RMT format shows once it is read"
        what = formats.FORMAT_NAMES[self.format]
        weights = self.weights.describe() if self.weights else "no weights"
        if self.armt is not None:
            assumed = self.assumed()
            return (f"{what} ({'ARMTForCausalLM' if self.armt_config else 'AssociativeRecurrentWrapper'}, "
                    f"{self.armt.describe()}): {weights}"
                    + (f"; not stored, so assumed unless given in memory_options: {assumed}" if assumed else ""))
        slots = f", {self.num_mem_tokens} memory slots" if self.num_mem_tokens is not None else ""
        return f"{what}{slots}: {weights}"

    def assumed(self, rmt_config: RMTConfig | dict[str, Any] | None = None) -> str:
        """An ARMT's maths switches that neither its files nor rmt_config's memory_options give, as
        "name=value, ... (why)" (rmt_core.io.formats.armt.default_maths); "" for other formats."""
        if self.armt is None:
            return ""
        given = {**(self.armt_config or {}).get("memory_options", {}),
                 **(_explicit_fields(rmt_config).get("memory_options") or {})}
        return formats.armt.default_maths(self.armt_config is not None, self.armt.written_by_experimental, given)[1]

    def missing(self, trust_pickle: bool = False, rmt_config: RMTConfig | dict[str, Any] | None = None,
                backbone: str | None = None) -> list[str]:
        """What loading a foreign checkpoint still needs, each with the argument or flag that supplies it."""
        if not self.foreign or self.format not in (formats.AUTHORS, formats.ARMT, "pickled"):
            return []
        needs = []
        explicit = _explicit_fields(rmt_config)
        if self.needs_pickle_opt_in and not trust_pickle:
            needs.append(f"the opt-in to read a pickled file: {formats.files.TRUST_HINT}")
        if not self.has_segment_size and "segment_size" not in explicit:
            needs.append(f"the segment size it was trained with: {authors.SEGMENT_SIZE_HINT}")
        if not self.has_backbone_config and not backbone:
            named = (self.armt_config or {}).get("base_model_name")
            needs.append(f"the backbone's config: {authors.BACKBONE_HINT}"
                         + (f" (config.json names base_model_name '{named}')" if named else ""))
        if (self.armt is not None and self.armt.n_heads is None
                and "n_heads" not in {**(self.armt_config or {}).get("memory_options", {}),
                                      **(explicit.get("memory_options") or {})}):
            needs.append(f"the number of heads, which gating hides (W_mb is d x d): {formats.armt.N_HEADS_HINT}")
        return needs


def inspect_checkpoint(name_or_path: str | os.PathLike, download: bool = False) -> CheckpointInfo:
    """Find what a folder, file or name holds (see CheckpointInfo) without reading pickled data.

    Raises CheckpointError for a missing path, unreadable config.json, incomplete shards,
    corrupt safetensors headers, or an ARMT variant RMT Lens does not run (named: ACT, sink
    token, sliding window; see rmt_core.io.formats.armt).
    """
    path = resolve_checkpoint(name_or_path, download=download)
    folder = path if path.is_dir() else path.parent
    config = _read_config(folder)
    if config is not None and config.get("format") == FORMAT:
        return CheckpointInfo(path, "rmt-lens", has_tokenizer=_has_tokenizer(folder))
    weights = formats.find_weights(path)
    armt_config = formats.armt.causal_lm_config(config, folder / "config.json")
    info = CheckpointInfo(
        path, "none" if weights is None else "pickled", weights=weights,
        has_backbone_config=config is not None and _stored_backbone_config(config) is not None,
        has_segment_size=config is not None and ((isinstance(config.get("rmt"), dict) and "segment_size" in config["rmt"])
                                                 or "segment_size" in (armt_config or {}).get("rmt", {})),
        has_tokenizer=_has_tokenizer(folder), armt_config=armt_config,
    )
    shapes = formats.tensor_shapes(weights) if weights is not None else None
    if shapes is not None:
        info.format = formats.detect_format(shapes)
        keys = formats.detect.memory_keys(shapes)
        if info.format in (formats.AUTHORS, formats.ARMT) and len(keys) == 1 and len(shapes[keys[0]]) == 2:
            info.num_mem_tokens = int(shapes[keys[0]][0])
        if info.format == formats.ARMT:
            info.armt = formats.armt.read_layout(shapes, weights.source)
    return info


def _explicit_fields(rmt_config: RMTConfig | dict[str, Any] | None) -> dict[str, Any]:
    """The RMT settings the caller set: an RMTConfig's explicit fields, or a dict (names checked)."""
    if rmt_config is None:
        return {}
    if isinstance(rmt_config, RMTConfig):
        return rmt_config.explicit_dict()
    if not isinstance(rmt_config, dict):
        raise CheckpointError(f"rmt_config must be an RMTConfig or a dict, got {type(rmt_config).__name__}.")
    known = {f.name for f in dataclasses.fields(RMTConfig)}
    unknown = sorted(set(rmt_config) - known)
    if unknown:
        raise CheckpointError(f"Unknown RMT config field(s) {unknown} in rmt_config; known fields are {sorted(known)}.")
    return dict(rmt_config)


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

    Raises CheckpointError naming the format found, what is missing and the argument that
    supplies it; the file is never read further than needed to say so.
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
    try:
        rmt = RMTConfig.from_dict({**config["rmt"], **explicit})
    except ConfigError as exc:
        raise CheckpointError(f"{path / 'config.json'}: {exc}") from exc
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
    raise CheckpointError(f"backbone '{backbone}' is neither a folder nor a Hugging Face model name.")


def _raise_if_missing(info: CheckpointInfo, trust_pickle: bool, explicit: dict[str, Any], backbone: str | None) -> None:
    needs = info.missing(trust_pickle, explicit, backbone)
    if needs:
        raise CheckpointError(f"{info.weights.source if info.weights else info.path} is {info.describe()}. "
                              "Loading it needs " + "; and ".join(needs) + ".")


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
        return _load_armt(state, info, folder, config, explicit, backbone, download)
    memory, backbone_state = authors.split_state(state, source)
    m = info.num_mem_tokens = int(memory.shape[0])
    _raise_if_missing(info, trust_pickle, explicit, backbone_name)  # a pickle's format is known only now
    stored = dict(config["rmt"]) if config is not None and isinstance(config.get("rmt"), dict) else {}
    fields = authors.rmt_fields(explicit, stored, m, source)
    backbone_dir, backbone_config, config_source = _foreign_backbone_config(backbone, download, config, folder)
    authors.check_positions(backbone_state, backbone_config, m, source)
    tensors = {"initial_memory": memory}
    return _build_foreign(fields, backbone_config, config_source, state, [folder, backbone_dir], tensors,
                          backbone_state, source)


def _foreign_backbone_config(backbone: str | os.PathLike | None, download: bool, config: dict[str, Any] | None,
                             folder: Path) -> tuple[Path | None, dict[str, Any], Path]:
    """(the backbone's folder or None, its config, where that config came from) for a foreign
    checkpoint: the caller's `backbone` (a folder or a cached Hub name), else the folder's config.json."""
    if backbone:
        backbone_dir = _backbone_folder(backbone, download)
        backbone_config = _read_config(backbone_dir)
        if backbone_config is None or "model_type" not in backbone_config:
            raise CheckpointError(f"The backbone folder {backbone_dir} has no config.json with a model_type: "
                                  "give the folder (or Hub name) of the model the RMT was built on.")
        return backbone_dir, backbone_config, backbone_dir / "config.json"
    backbone_config = _stored_backbone_config(config or {})
    assert backbone_config is not None  # info.missing() asked for it otherwise
    return None, backbone_config, folder / "config.json"


def _build_foreign(fields: dict[str, Any], backbone_config: dict[str, Any], config_source: Path,
                   state: dict[str, torch.Tensor], tokenizer_folders: list[Path | None], tensors: dict[str, torch.Tensor],
                   backbone_state: dict[str, torch.Tensor], source: object) -> RMTModel:
    """Build the RMTModel of a foreign checkpoint's settings and copy its tensors in (RMT Lens's names:
    `tensors` as they are, the backbone's under "backbone.")."""
    try:
        rmt = RMTConfig.from_dict(fields)
    except ConfigError as exc:
        raise CheckpointError(f"{source}: {exc}") from exc
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
                          backbone_state, source)
