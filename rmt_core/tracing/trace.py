"""The Trace: what an RMT did on one document, segment by segment.

Recorded per segment (cheap summaries; full attention is recomputed on demand):
token ids and display strings, character offsets, memory_in / memory_out, the hidden
states of the read slots R_k and write slots W_k at every layer, per-token log-probabilities
and top-k predictions, the segment loss, block-to-block attention mass, how much each write
slot attends to each token and each token to each read slot, and a logit lens of the written
memory: one table, observables.OBSERVABLES, names them all (axes, dtypes, meanings).
Recording is recorder.trace_document; files are trace_file.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import token_text
from .._version import __version__
from ..checks import check_int
from ..errors import TraceArgumentError, TraceError
from . import trace_file
from .losses import mean_token_loss
from .records import BLOCK_PAIRS, LENS_K, SegmentRecord

__all__ = ["Trace", "SegmentRecord", "BLOCK_PAIRS"]


class Trace:
    """A recorded run; see SegmentRecord for the per-segment fields."""

    def __init__(self, text: str | None, token_ids: np.ndarray, model_info: dict[str, Any],
                 initial_memory: np.ndarray, settings: dict[str, Any], model=None) -> None:
        self.text = text
        self.token_ids = token_ids
        self.model_info = model_info
        self.initial_memory = initial_memory
        self.settings = settings
        self.version = __version__
        self.segments: list[SegmentRecord] = []
        self.complete = False
        self.seconds = 0.0
        self._model = model
        self.meta: dict[str, Any] = {}  # free-form facts (e.g. a fact-recall sample's answer)

    # ------------------------------------------------------------------ facts
    @property
    def num_segments(self) -> int:
        return len(self.segments)

    @property
    def num_tokens(self) -> int:
        return int(sum(s.num_tokens for s in self.segments))

    @property
    def num_mem_tokens(self) -> int:
        return int(self.model_info["rmt"]["num_mem_tokens"])

    @property
    def model(self):
        return self._model

    def check_segment(self, index: Any, name: str = "segment") -> int:
        """`index` as an int when it is one of this trace's segments; else ArgumentError."""
        if self.num_segments == 0:
            raise TraceError("This trace has no segments yet: trace a document first.")
        return check_int(index, name, 0, self.num_segments - 1,
                         fix=f"The trace has {self.num_segments} segments, numbered from 0.", error=TraceArgumentError)

    def check_view(self, segment: Any = None, layer: Any = -1, head: Any = 0, prefix: str = "") -> tuple[int, int, int]:
        """(segment, layer, head) of one attention view, checked against this trace's model.

        segment None is the last segment; a negative layer counts from the end (-1 the last) and
        comes back as 0..layers-1. Raises TraceArgumentError naming the argument (``prefix`` +
        name, e.g. "--segment" for a command line) and its allowed range.
        """
        segment = self.check_segment(self.num_segments - 1 if segment is None and self.segments else segment,
                                     f"{prefix}segment")
        n_layers, n_heads = int(self.model_info["num_layers"]), int(self.model_info["num_heads"])
        layer = check_int(layer, f"{prefix}layer", -n_layers, n_layers - 1,
                          fix=f"The model has {n_layers} layers (-1 is the last).", error=TraceArgumentError)
        head = check_int(head, f"{prefix}head", 0, n_heads - 1,
                         fix=f"The model has {n_heads} attention heads per layer.", error=TraceArgumentError)
        return segment, layer % n_layers, head

    def memory_states(self) -> np.ndarray:
        """(S + 1, m, d) float32 memory states: memory_in of segment 0 (the initial memory), then
        every segment's memory_out; row s is memory_in of segment s and row s + 1 its memory_out."""
        return np.stack([self.initial_memory] + [s.memory_out for s in self.segments])

    def losses(self) -> np.ndarray:
        """(S,) per-segment mean loss (nats/token over each segment's tokens); not the document's mean:
        that is mean_loss()."""
        return np.array([s.loss for s in self.segments], dtype=np.float64)

    def mean_loss(self) -> float:
        """The document's mean loss (nats/token), token-weighted over every token with a prediction
        (tracing.losses.mean_token_loss: the one definition app, CLI, report and card share)."""
        if not self.segments:
            return float("nan")
        return mean_token_loss(np.concatenate([s.token_logprob for s in self.segments]))

    # ------------------------------------------------------------------ logit lens
    def lens_ids(self, index: int) -> np.ndarray:
        """(Y+1, m, LENS_K) logit-lens token ids of segment `index`'s write slots (computed once,
        for this segment only: a page showing one segment of a long book must not pay for all;
        compute_lens batches many)."""
        index = self.check_segment(index)
        if self.segments[index].lens_ids is None:
            self.compute_lens([index])
        return self.segments[index].lens_ids

    @torch.no_grad()
    def compute_lens(self, indices: list[int], chunk: int = 256) -> None:
        """Fill lens_ids for these segments from their stored write-slot hidden states, in batches."""
        model = self.require_model("the logit lens")
        norm, head = _final_norm(model), model.backbone.get_output_embeddings()
        for first in range(0, len(indices), chunk):
            batch = indices[first:first + chunk]
            hidden = torch.as_tensor(np.stack([self.segments[i].write_hidden for i in batch]),
                                     device=model.device).to(model.dtype)  # (B, Y+1, m, d)
            if norm is not None:  # the last layer is stored after the final norm already
                hidden[:, :-1] = norm(hidden[:, :-1])
            ids = torch.topk(head(hidden).float(), LENS_K, dim=-1).indices.cpu().numpy().astype(np.int32)
            for i, lens in zip(batch, ids):
                self.segments[i].lens_ids = lens

    # ------------------------------------------------------------------ recompute
    def attach(self, model) -> None:
        """Re-attach the model this trace was made with (checked by weight hash)."""
        if model.weights_hash() != self.model_info["weights_hash"]:
            raise TraceError(
                f"This trace was made with '{self.model_info['name']}' (weights {self.model_info['weights_hash']}), "
                f"not with '{model.name}' (weights {model.weights_hash()}). Load the checkpoint it was made with."
            )
        self._model = model

    def require_model(self, purpose: str = "recomputing attention"):
        """The attached model (an RMTModel); TraceError when none is attached.

        purpose: what needs the model, named in the message ("an intervention", "the logit lens").
        The message says how to attach it: Trace.load(path, model=...) with the checkpoint the
        trace was made with.
        """
        if self._model is None:
            raise TraceError(
                f"This trace has no model attached, and {purpose} needs it: load the trace with "
                f"Trace.load(path, model=rmt_core.load(...)) using checkpoint '{self.model_info['name']}'."
            )
        return self._model

    @torch.no_grad()
    def attention(self, index: int) -> np.ndarray:
        """Exact (layers, heads, q, k) attention of segment `index`, recomputed from its memory_in.

        Rows and columns follow attention_labels(index): read slots, tokens, write slots.
        """
        index = self.check_segment(index)
        model = self.require_model()
        seg = self.segments[index]
        captured: dict[int, torch.Tensor] = {}
        memory = torch.as_tensor(seg.memory_in, dtype=model.dtype, device=model.device).unsqueeze(0)
        ids = torch.as_tensor(seg.token_ids, dtype=torch.long, device=model.device).unsqueeze(0)
        model.run_segment(memory, ids, segment_index=index,
                          attention_probe=lambda layer, w: captured.__setitem__(layer, w[0].float().cpu()))
        return torch.stack([captured[y] for y in sorted(captured)]).numpy()

    def attention_labels(self, index: int) -> list[str]:
        """Row/column labels of attention(index): R0.., the segment's tokens, W0...

        Tokens are shown with token_text.token_label: visible newlines, and the continuation
        mark for a piece whose character is shown on the piece before."""
        seg = self.segments[self.check_segment(index)]
        m = self.num_mem_tokens
        return [f"R{k}" for k in range(m)] + [token_text.token_label(t) for t in seg.tokens] + [f"W{k}" for k in range(m)]

    # ------------------------------------------------------------------ files
    def save(self, path: str | os.PathLike) -> Path:
        """One safetensors file: arrays + a JSON header (text, settings, model identity, version)."""
        return trace_file.save_trace(self, Path(path))

    @classmethod
    def load(cls, path: str | os.PathLike, model=None) -> "Trace":
        """Read a trace file; with `model`, re-attach it (refused if it is another model)."""
        header, arrays = trace_file.read_trace_file(Path(path))
        trace = cls(header["text"], trace_file.all_token_ids(header, arrays), header["model"],
                    arrays["initial_memory"], header["settings"])
        trace.version = header["rmt_lens_version"]
        trace.complete = header["complete"]
        trace.seconds = header.get("seconds", 0.0)
        trace.meta = header.get("meta", {})
        trace.segments = trace_file.stored_records(header, arrays)
        if model is not None:
            trace.attach(model)
        return trace

    def __repr__(self) -> str:
        state = "complete" if self.complete else "partial"
        return (f"Trace({self.num_tokens} tokens, {self.num_segments} segments, {state}, "
                f"model={self.model_info['name']!r})")


def _final_norm(model) -> torch.nn.Module | None:
    base = model.backbone.base_model
    for name in ("ln_f", "norm", "final_layernorm"):
        if hasattr(base, name):
            return getattr(base, name)
    return None
