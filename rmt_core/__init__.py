"""RMT Lens core library: run, trace, analyse and train Recurrent Memory Transformers.

Public API (stable names): RMTConfig, RMTModel, RMTModel.from_backbone, load,
inspect_checkpoint, DEFAULT_CHECKPOINT, Trace, ask (rmt_core.answers), and the error types in rmt_core.errors.
"""
from __future__ import annotations

from .config import RMTConfig
from .errors import (ArgumentError, CheckpointError, ConfigError, DocumentError, QuestionError, RMTLensError,
                     TraceCancelled, TraceError)
from .model import RMTModel, RMTOutput

__version__ = "0.1.0"

__all__ = [
    "RMTConfig", "RMTModel", "RMTOutput", "load", "inspect_checkpoint", "DEFAULT_CHECKPOINT", "Trace",
    "RMTLensError", "ArgumentError", "ConfigError", "CheckpointError", "TraceError", "TraceCancelled", "DocumentError",
    "QuestionError", "ask",
    "__version__",
]


def __getattr__(name: str):
    # Lazy: importing rmt_core stays cheap; checkpoint and trace code load on first use.
    if name in ("load", "inspect_checkpoint", "DEFAULT_CHECKPOINT", "list_checkpoints"):
        from . import checkpoint
        return getattr(checkpoint, name)
    if name == "ask":
        from .answers import ask
        return ask
    if name == "Trace":
        from .trace import Trace
        return Trace
    raise AttributeError(f"module 'rmt_core' has no attribute {name!r}")
