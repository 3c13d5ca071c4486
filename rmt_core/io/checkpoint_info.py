"""What a checkpoint is and what loading it still needs, found without unpickling anything
(rmt_core.inspect_checkpoint returns a CheckpointInfo; rmt_core.load asks it what is missing).

For checkpoints written by other code (the authors' RMT and ARMT, rmt_core.io.formats) it says:
the format and the weight files; what the files store (segment size, backbone config, tokenizer,
an ARMTForCausalLM's settings); what the weights show (memory tokens; an ARMT's d_mem, heads,
gating, wrap_pos); what is missing, each a CheckpointNeed (Python argument, CLI flag, app box);
which memory options neither the files nor the weights decide (OpenOption, with the default the
loader takes and why); and which of those were assumed for a given rmt_config.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import formats
from ..engine.config import RMTConfig
from ..engine.memory import memory_class
from ..engine.memory.associative import OPTIONS as ASSOCIATIVE_OPTIONS
from ..errors import CheckpointArgumentError, CheckpointNeed, ConfigError
from .formats import authors


@dataclass(frozen=True)
class OpenOption:
    """A memory option that neither a checkpoint's files nor its weights decide (the caller may set it).

    name, kind (bool or int), meaning: as the memory type declares it (MemoryOption);
    default: what rmt_core.load takes when it is not given, None when it has none (it must be given:
        an ARMT with gating hides n_heads); why: where that default comes from, in words.
    """

    name: str
    kind: type
    meaning: str
    default: Any
    why: str

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind.__name__, "meaning": self.meaning, "default": self.default,
                "why": self.why}


@dataclass
class CheckpointInfo:
    """What a checkpoint is and what loading it still needs, found without unpickling anything
    (unless inspect_checkpoint was told to trust the pickle).

    format: "rmt-lens", one of rmt_core.io.formats.FORMAT_NAMES ("authors", "armt", "lucidrains",
        "backbone", "unknown"), "pickled" (a pickled file: unknown until trusted and read)
        or "none" (no weights found).
    stored_backbone: the backbone config stored beside the weights (None without one): with it, the
        weights' position table says whether an ARMT uses wrap_pos.
    rmt: an RMT Lens folder's stored RMT config (its config.json "rmt"), else None.
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
    stored_backbone: dict[str, Any] | None = field(default=None, repr=False)
    rmt: dict[str, Any] | None = None

    @property
    def needs_pickle_opt_in(self) -> bool:
        return self.weights is not None and self.weights.pickled

    @property
    def foreign(self) -> bool:
        """True for checkpoints not written by RMT Lens (their settings may be missing)."""
        return self.format not in ("rmt-lens", "none")

    @property
    def wrapper(self) -> str | None:
        """An ARMT's wrapper class: "ARMTForCausalLM" (a config.json of model_type armt) or
        "AssociativeRecurrentWrapper"; None for other formats."""
        if self.armt is None:
            return None
        return "ARMTForCausalLM" if self.armt_config else "AssociativeRecurrentWrapper"

    @property
    def memory_type(self) -> str | None:
        """The memory type loading it gives ("tokens", "associative", an RMT Lens folder's own), None
        while unknown (a pickled file not read yet, no weights, a format RMT Lens refuses)."""
        if self.format == "rmt-lens":
            return str((self.rmt or {}).get("memory", "tokens"))
        return {formats.ARMT: "associative", formats.AUTHORS: "tokens"}.get(self.format)

    def check_options(self, rmt_config: RMTConfig | dict[str, Any] | None,
                      backbone_config: dict[str, Any] | None = None) -> None:
        """rmt_config's memory_options checked as rmt_core.load checks them: against this checkpoint's memory
        type (check_given_options) and, for an ARMT, against what its weights show (with `backbone_config`
        or the stored one, wrap_pos too). CheckpointArgumentError naming the first one refused; nothing is
        checked while the type is unknown."""
        if self.memory_type is None:
            return
        given = check_given_options(self.memory_type, explicit_fields(rmt_config), self.path)
        if self.armt is not None:
            config = backbone_config if backbone_config is not None else self.stored_backbone
            source = self.weights.source if self.weights else self.path
            formats.armt.check_against_weights(formats.armt.shown_options(self.armt, config, source), given, source,
                                               given=True)

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
            return (f"{what} ({self.wrapper}, {self.armt.describe()}): {weights}"
                    + (f"; not stored, so assumed unless given in memory_options: {assumed}" if assumed else ""))
        slots = f", {self.num_mem_tokens} memory slots" if self.num_mem_tokens is not None else ""
        return f"{what}{slots}: {weights}"

    def _stored_options(self) -> dict[str, Any]:
        return dict((self.armt_config or {}).get("memory_options", {}))

    def assumed(self, rmt_config: RMTConfig | dict[str, Any] | None = None) -> str:
        """An ARMT's maths switches that neither its files nor rmt_config's memory_options give, as
        "name=value, ... (why)" (rmt_core.io.formats.armt.default_maths); "" for other formats."""
        if self.armt is None:
            return ""
        given = {**self._stored_options(), **(explicit_fields(rmt_config).get("memory_options") or {})}
        return formats.armt.default_maths(self.armt_config is not None, self.armt.written_by_experimental, given)[1]

    def shown(self, backbone_config: dict[str, Any] | None = None) -> dict[str, Any]:
        """What the weights show (tensor names and shapes): the authors' RMT {"num_mem_tokens"}; an ARMT
        {"num_mem_tokens", "hidden_size", "layers", "layers_attr", "d_mem", "n_heads" (None: gating hides
        it), "gating", "wrap_pos"}; {} for other formats. wrap_pos is read off GPT-2's position table
        against `backbone_config` (else the stored one): None when neither is there, False without a
        position table. Raises CheckpointError when the table fits neither (a backbone of other weights)."""
        if self.armt is None:
            return {} if self.num_mem_tokens is None else {"num_mem_tokens": self.num_mem_tokens}
        layout = self.armt
        config = backbone_config if backbone_config is not None else self.stored_backbone
        if layout.wpe_rows is None:
            wrap_pos: bool | None = False
        elif config is None:
            wrap_pos = None
        else:
            wrap_pos = formats.armt.wrap_pos_from_weights(layout, config, self.weights.source if self.weights else
                                                          self.path)
        return {"num_mem_tokens": layout.num_mem_tokens, "hidden_size": layout.d_model, "layers": layout.n_layers,
                "layers_attr": layout.layers_attr, "d_mem": layout.d_mem, "n_heads": layout.n_heads,
                "gating": layout.gating, "wrap_pos": wrap_pos}

    def open_options(self) -> list[OpenOption]:
        """The memory options neither the files nor the weights decide, with the default rmt_core.load
        takes for each (an ARMT: the maths switches no tensor shows, normalize_features, correction and
        use_denom, unless an ARMTForCausalLM config stores them; n_heads where gating hides it and no
        config stores it, with no default). [] for other formats."""
        if self.armt is None:
            return []
        stored = self._stored_options()
        defaults, note = formats.armt.default_maths(self.armt_config is not None, self.armt.written_by_experimental,
                                                    stored)
        why = note[note.index("(") + 1:-1] if note else ""
        open_ = []
        if self.armt.n_heads is None and "n_heads" not in stored:
            spec = ASSOCIATIVE_OPTIONS["n_heads"]
            open_.append(OpenOption("n_heads", spec.kind, spec.meaning, None,
                                    "no default: gating (W_mb is d x d) hides the number of heads"))
        for name, value in defaults.items():
            spec = ASSOCIATIVE_OPTIONS[name]
            open_.append(OpenOption(name, spec.kind, spec.meaning, value, why))
        return open_

    def needs(self, trust_pickle: bool = False, rmt_config: RMTConfig | dict[str, Any] | None = None,
              backbone: str | None = None) -> list[CheckpointNeed]:
        """What loading a foreign checkpoint still needs, in order (CheckpointNeed: the argument, flag
        and app box that give each); [] when nothing is missing."""
        if not self.foreign or self.format not in (formats.AUTHORS, formats.ARMT, "pickled"):
            return []
        needs = []
        explicit = explicit_fields(rmt_config)
        if self.needs_pickle_opt_in and not trust_pickle:
            needs.append(formats.files.TRUST)
        if not self.has_segment_size and "segment_size" not in explicit:
            needs.append(authors.SEGMENT_SIZE)
        if not self.has_backbone_config and not backbone:
            named = (self.armt_config or {}).get("base_model_name")
            needs.append(dataclasses.replace(authors.BACKBONE, detail=f" (config.json names base_model_name '{named}')")
                         if named else authors.BACKBONE)
        if (self.armt is not None and self.armt.n_heads is None
                and "n_heads" not in {**self._stored_options(), **(explicit.get("memory_options") or {})}):
            needs.append(formats.armt.N_HEADS)
        return needs

    def missing(self, trust_pickle: bool = False, rmt_config: RMTConfig | dict[str, Any] | None = None,
                backbone: str | None = None) -> list[str]:
        """What loading a foreign checkpoint still needs, each with the argument or flag that supplies it
        (the texts of needs())."""
        return [need.text() for need in self.needs(trust_pickle, rmt_config, backbone)]

    def to_dict(self, trust_pickle: bool = False, rmt_config: RMTConfig | dict[str, Any] | None = None,
                backbone: str | None = None, backbone_config: dict[str, Any] | None = None) -> dict[str, Any]:
        """Everything above as JSON-ready data (rmt-lens inspect --json): path, format (and its name, the
        wrapper), description, files, what the files store, what the weights show, what is still needed
        for these arguments, the open options and which of them would be assumed."""
        weights = self.weights
        return {
            "path": str(self.path), "format": self.format,
            "format_name": formats.FORMAT_NAMES.get(self.format, self.describe()),
            "wrapper": self.wrapper, "description": self.describe(),
            "files": None if weights is None else {
                "layout": weights.layout, "description": weights.describe(), "pickled": weights.pickled,
                "files": [str(f) for f in weights.files], "index": None if weights.index is None else str(weights.index),
                "missing_shards": list(weights.missing)},
            "stores": {"segment_size": self.has_segment_size, "backbone_config": self.has_backbone_config,
                       "tokenizer": self.has_tokenizer, "memory_options": self._stored_options(), "rmt": self.rmt},
            "shown": self.shown(backbone_config),
            "needs": [dataclasses.asdict(n) for n in self.needs(trust_pickle, rmt_config, backbone)],
            "open_options": [o.to_dict() for o in self.open_options()],
            "assumed": self.assumed(rmt_config),
        }


def explicit_fields(rmt_config: RMTConfig | dict[str, Any] | None) -> dict[str, Any]:
    """The RMT settings the caller set: an RMTConfig's explicit fields, or a dict (names checked:
    CheckpointArgumentError for a field RMTConfig does not have)."""
    if rmt_config is None:
        return {}
    if isinstance(rmt_config, RMTConfig):
        return rmt_config.explicit_dict()
    if not isinstance(rmt_config, dict):
        raise CheckpointArgumentError(f"rmt_config must be an RMTConfig or a dict, got {type(rmt_config).__name__}.",
                                      argument="rmt_config")
    known = {f.name for f in dataclasses.fields(RMTConfig)}
    unknown = sorted(set(rmt_config) - known)
    if unknown:
        raise CheckpointArgumentError(
            f"Unknown RMT config field(s) {unknown} in rmt_config; known fields are {sorted(known)}.",
            argument="rmt_config", value=unknown)
    if "memory_options" in rmt_config and not isinstance(rmt_config["memory_options"], dict):
        raise CheckpointArgumentError(f"rmt_config's memory_options must be a dict, got "
                                      f"{type(rmt_config['memory_options']).__name__}.", argument="memory_options")
    return dict(rmt_config)


def check_given_options(memory: str, explicit: dict[str, Any], source: object) -> dict[str, Any]:
    """The caller's memory_options (rmt_config's), checked against what memory type `memory` declares
    (MemoryType.option_problem); returns them. Raises CheckpointArgumentError naming the first it
    refuses (an unknown name, with the known ones; a value outside what is allowed; a variant it does
    not implement): argument "memory_options", option and value set."""
    given = dict(explicit.get("memory_options") or {})
    try:
        cls = memory_class(memory)
    except ConfigError:
        return given  # an unknown memory type: RMTConfig names it (and the known ones) when it is built
    for name, value in given.items():
        why = cls.option_problem(name, value)
        if why:
            raise CheckpointArgumentError(f"{source}: rmt_config's memory_options: {why}.", problem=f"{why}.",
                                          argument="memory_options", option=name, value=value)
    return given
