"""The RMT configuration: one JSON-serialisable dataclass read everywhere."""
from __future__ import annotations

import dataclasses
import functools
import json
from dataclasses import dataclass, field
from typing import Any

from ..errors import ConfigError

MASK_MODES = ("paper", "causal")


@dataclass
class RMTConfig:
    """How a backbone is run as a Recurrent Memory Transformer.

    num_mem_tokens: memory slots m; each segment is run as [read m | tokens L | write m].
    segment_size: tokens per segment L (the last segment may be shorter).
    mask_mode: "paper" (memory blocks see themselves fully, tokens causal, write sees all)
        or "causal" (the backbone's plain causal mask over the whole row, as the
        official Hugging Face wrapper does). See docs in rmt_core/engine/masks.py.
    bptt_depth: None = backpropagate through all segments; k >= 1 = only the last k
        segments are unrolled (memory leaving earlier segments is detached).
    reset_positions: positions restart at 0 in every segment (the authors' wrapper).
        If False, positions continue from segment to segment (needs a backbone whose
        position range covers the whole input, e.g. RoPE).
    attn_implementation: the backbone attention used outside tracing, "sdpa" or "eager".
    task / description: free text for model cards and the app (what it was trained on).
    memory: the memory type, a name registered with rmt_core.engine.memory.register_memory
        ("tokens", the default: the RMT's m slots; configs written before this field load as it).
    memory_options: settings of the memory type beyond the fields above (a JSON object; the
        memory type reads and checks them: MemoryType.check_config; "associative": d_mem, nu, ...).

    Each config remembers which fields its caller set (``explicit_fields``): a loader that
    has its own defaults for a format (the authors' checkpoints use ``mask_mode="causal"``)
    takes only those from a caller's config, never this class's defaults.
    """

    num_mem_tokens: int = 8
    segment_size: int = 64
    mask_mode: str = "paper"
    bptt_depth: int | None = None
    reset_positions: bool = True
    attn_implementation: str = "sdpa"
    task: str = ""
    description: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    memory: str = "tokens"
    memory_options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ConfigError naming the first field that is out of range or of the wrong type
        (true / false is not a number here, nor 8.0 an integer)."""
        if not _is_int(self.num_mem_tokens) or self.num_mem_tokens < 0:
            raise ConfigError(f"num_mem_tokens must be an integer >= 0, got {self.num_mem_tokens!r}.")
        if not _is_int(self.segment_size) or self.segment_size < 1:
            raise ConfigError(f"segment_size must be an integer >= 1, got {self.segment_size!r}.")
        if self.mask_mode not in MASK_MODES:
            raise ConfigError(f"mask_mode must be one of {MASK_MODES}, got {self.mask_mode!r}.")
        if self.bptt_depth is not None and (not _is_int(self.bptt_depth) or self.bptt_depth < 1):
            raise ConfigError(f"bptt_depth must be None (full BPTT) or an integer >= 1, got {self.bptt_depth!r}.")
        if self.attn_implementation not in ("sdpa", "eager"):
            raise ConfigError(
                f"attn_implementation must be 'sdpa' or 'eager', got {self.attn_implementation!r}."
            )
        if not isinstance(self.reset_positions, bool):
            raise ConfigError(f"reset_positions must be true or false, got {self.reset_positions!r}.")
        for name in ("task", "description"):
            if not isinstance(getattr(self, name), str):
                raise ConfigError(f"{name} must be a string, got {getattr(self, name)!r}.")
        if not isinstance(self.extra, dict):
            raise ConfigError(f"extra must be a JSON object, got {self.extra!r}.")
        if not isinstance(self.memory_options, dict):
            raise ConfigError(f"memory_options must be a JSON object (dict), got {type(self.memory_options).__name__}.")
        from .memory.registry import memory_class  # the registry lists the known names

        memory_class(self.memory).check_config(self)  # the memory type checks its own memory_options

    @property
    def explicit_fields(self) -> frozenset[str]:
        """Names of the fields given to the constructor (or present in from_dict's dict)."""
        return getattr(self, "_explicit", frozenset(f.name for f in dataclasses.fields(self)))

    def explicit_dict(self) -> dict[str, Any]:
        """Only the fields the caller set: what should override a checkpoint format's defaults."""
        return {name: value for name, value in self.to_dict().items() if name in self.explicit_fields}

    def segment_length(self) -> int:
        """Length of one full segment row as the backbone sees it, as the memory type lays it out
        (tokens: m + L + m; associative: L + M)."""
        from .memory.registry import memory_class

        return memory_class(self.memory).segment_length(self)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "RMTConfig":
        """Build from a dict; unknown fields are an error (a typo must not pass silently)."""
        if not isinstance(data, dict):
            raise ConfigError(f"RMT config must be a JSON object, got {type(data).__name__}.")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(
                f"Unknown RMT config field(s) {unknown}; known fields are {sorted(known)}. "
                "Remove them or upgrade RMT Lens."
            )
        required = {"num_mem_tokens", "segment_size"}
        missing = sorted(required - set(data))
        if missing:
            raise ConfigError(f"RMT config is missing required field(s) {missing}.")
        try:
            return cls(**data)
        except TypeError as exc:  # wrong value types
            raise ConfigError(f"RMT config has invalid values: {exc}") from exc


def _is_int(value: Any) -> bool:
    """An int that is not a bool (JSON true would pass isinstance(value, int))."""
    return isinstance(value, int) and not isinstance(value, bool)


def _record_explicit_fields(init):
    """Wrap the dataclass __init__ so each config knows which fields were passed to it."""
    names = [f.name for f in dataclasses.fields(RMTConfig)]

    @functools.wraps(init)
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        init(self, *args, **kwargs)
        self._explicit = frozenset(names[: len(args)]) | frozenset(kwargs)

    return __init__


RMTConfig.__init__ = _record_explicit_fields(RMTConfig.__init__)  # type: ignore[method-assign]
