"""RMT Lens core library: run, trace, explain and train Recurrent Memory Transformers.

Map (layers from the bottom; a module imports only from its own layer or the layers below,
never in a cycle: tests/test_layers.py fails otherwise):

    errors, checks, token_text, _version, questions, operating_range   shared ground: error types,
               argument checks, token display, what a fact-recall model can be asked (its cards'
               `questions`, the fact sentences' parser) and its card's operating range
    engine/    the model: RMTConfig, the memory seam (memory/: the MemoryType protocol, the
               register_memory registry, TokenMemory), the [read | tokens | write] layout
               (masks), padded batches (padding: any memory type), attention implementations
               and probes, RMTModel, backbones, devices, placement (device_map)
    io/        files in and out: checkpoints (ours and the authors' formats: formats/), the
               Hugging Face cache (hub), documents (txt / md / pdf / docx / html)
    tracing/   recording a run: SegmentRecord (records), the recorder, the Trace, its file
               format (trace_file), the observables table (observables), top-k, heap trimming
    training/  data and learning: corpus, tokenizer, tasks/ (bAbI-style facts, copy/reverse),
               recipes, the training loop, evaluation, shipping a checkpoint with its card
    explain/   what a trace means: analysis (PCA, norms, logit lens), series (cached per trace),
               attribution (one `attribute` verb over captum), interventions (and memory
               patching across documents), answers (ask), compare (two runs side by side),
               associative (ARMT rows, retrieved from), capacity (ARMT memory capacity, the
               paper's App. B), memory_reach (loss per segment with full / reset / previous memory)
    viz/       figures (plotly, pure data -> figure; comparison: two runs), document render, bertviz views, the HTML
               report, exports (CSV / JSON / images), paper figures, the guided tour, study figures
    studies/   many samples at once: sources (the BABILong grid, the user's documents), one row per
               traced sample (measures), rows.parquet + study.json (runner, rows), executors (in
               process, local processes, Ray Data), aggregates and a card's operating range,
               probes of memory, the report; above viz because its report draws viz figures
    cli.py     `python -m rmt_core` / `rmt-lens`, on top of everything
    demos.py   demo documents, the symbolic tasks' batches and the untrained fallback model: the
               public door for front ends (the app) to what lives in training/

Where memory is read and written (one seam: engine/memory/):
    engine/memory/base.py    MemoryType: a memory type's state (carried between segments), how a
                     segment runs with it (build_row / layer_hooks / read_state, driven by
                     run_segment), its state as named arrays, row labels, parts and edits
    engine/memory/registry.py  register_memory(name, cls) / memory_class(name): RMTConfig.memory
    engine/memory/tokens.py  TokenMemory ("tokens"): memory_in fills the read slots (and the write
                     slots' inputs); the write slots' last hidden states become memory_out
    engine/memory/associative.py  AssociativeMemory ("associative", ARMT): per-layer (A, z) read into every block's input, written from the memory tokens' outputs (layer hooks)
    engine/masks.py  segment_layout: the row [read slots R_k | tokens | write slots W_k] and who
                     may attend to whom (mask modes)
    engine/model.py  RMTModel: forward / iter_segments / generate carry the state on
    tracing/recorder.py  keeps memory_in / memory_out and every layer's R_k / W_k hidden states
                     (names and shapes: tracing/observables.py); another type's state by name
    tracing/trace.py Trace.replay: the one re-run of a traced segment from a stored or edited state

Public API (stable names here): RMTConfig, RMTModel, MemoryType, SegmentRow, TokenMemory, register_memory,
load, save, inspect_checkpoint, list_checkpoints, DEFAULT_CHECKPOINT, Trace, trace, trace_iter,
ask, the error types, and the modules analysis, series, figures, answers, attribution,
interventions, demos. The app imports only these and the public modules listed in
tests/test_layers.py (APP_PUBLIC_MODULES); never training/, never a name starting with "_".
"""
from __future__ import annotations

import importlib
from typing import Any

from ._version import __version__
from .engine.config import RMTConfig
from .errors import (ArgumentError, CheckpointArgumentError, CheckpointError, ConfigError, DocumentError,
                     QuestionError, RMTLensError, TraceCancelled, TraceError)

__all__ = [
    "RMTConfig", "RMTModel", "RMTOutput", "MemoryType", "SegmentRow", "TokenMemory", "register_memory", "load", "save", "inspect_checkpoint", "list_checkpoints",
    "DEFAULT_CHECKPOINT", "Trace", "trace", "trace_iter", "ask",
    "RMTLensError", "ArgumentError", "ConfigError", "CheckpointError", "CheckpointArgumentError", "TraceError", "TraceCancelled", "DocumentError",
    "QuestionError", "analysis", "series", "figures", "answers", "attribution", "interventions",
    "__version__",
]
__all__ += ["compare", "Comparison"]  # two runs side by side (explain/compare.py)
__all__ += ["demos"]  # demo inputs and the untrained fallback model, for front ends (demos.py)

# name -> (module, attribute or None for the module itself). Loaded on first use, so that
# `import rmt_core` stays cheap (no torch, transformers, plotly or captum until something needs
# them: `rmt-lens --help` answers in a fraction of a second).
_LAZY: dict[str, tuple[str, str | None]] = {
    "RMTModel": ("engine.model", "RMTModel"),
    "RMTOutput": ("engine.model", "RMTOutput"),
    "MemoryType": ("engine.memory", "MemoryType"),
    "SegmentRow": ("engine.memory", "SegmentRow"),
    "TokenMemory": ("engine.memory", "TokenMemory"),
    "register_memory": ("engine.memory", "register_memory"),
    "load": ("io.checkpoint", "load"),
    "save": ("io.checkpoint", "save_checkpoint"),
    "inspect_checkpoint": ("io.checkpoint", "inspect_checkpoint"),
    "list_checkpoints": ("io.checkpoint", "list_checkpoints"),
    "DEFAULT_CHECKPOINT": ("io.checkpoint", "DEFAULT_CHECKPOINT"),
    "Trace": ("tracing.trace", "Trace"),
    "trace": ("tracing.recorder", "trace_document"),
    "trace_iter": ("tracing.recorder", "iter_trace"),
    "ask": ("explain.answers", "ask"),
    "compare": ("explain.compare", "compare"),
    "Comparison": ("explain.compare", "Comparison"),
    "analysis": ("explain.analysis", None),
    "series": ("explain.series", None),
    "answers": ("explain.answers", None),
    "attribution": ("explain.attribution", None),
    "interventions": ("explain.interventions", None),
    "figures": ("viz.figures", None),
    "demos": ("demos", None),
}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'rmt_core' has no attribute {name!r}")
    module_name, attribute = _LAZY[name]
    module = importlib.import_module(f"{__name__}.{module_name}")
    return module if attribute is None else getattr(module, attribute)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
