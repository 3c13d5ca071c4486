"""Per-trace series computed once and kept with the trace.

Pages rerun on every click; what they show about the whole document (memory states, PCA,
slot norms and churn, block masses, the logit-lens hover text of each step) depends only
on the trace. Each function here computes its result on first use and returns the same
object afterwards (the hover text: step by step, for the steps asked for so far), until the
trace grows (a streamed trace gets new segments): the key holds the number of segments
(explain.per_trace.cached: the cache lives beside the trace, a weak reference that goes with it).
Callers must not modify the arrays they get.
"""
from __future__ import annotations

from typing import Iterable

import numpy as np
import torch

from . import analysis, associative
from .per_trace import LOCK as _LOCK
from .per_trace import cached  # series.cached: the per-trace cache (its home: per_trace)
from ..token_text import decode_distinct
from ..tracing.trace import Trace


def memory_states(trace: Trace) -> np.ndarray:
    """(S + 1, m, d) float32: the initial memory, then each segment's memory_out."""
    return cached(trace, "memory_states", trace.memory_states)


def pca(trace: Trace, dims: int = 2) -> analysis.Projection:
    """analysis.pca_trajectory of the memory states, fitted once per trace and dims."""
    return cached(trace, ("pca", dims), lambda: analysis.pca_trajectory(memory_states(trace), dims))


def slot_norms(trace: Trace) -> np.ndarray:
    """(S + 1, m) L2 norm of every slot at every step."""
    return cached(trace, "slot_norms", lambda: analysis.slot_norms(memory_states(trace)))


def slot_churn(trace: Trace) -> np.ndarray:
    """(S, m) cosine distance between each slot's memory in and out, per segment."""
    return cached(trace, "slot_churn", lambda: analysis.slot_churn(memory_states(trace),
                                                                   reset=not trace.carries_memory))


def block_mass(trace: Trace, pair: str, layer: int | None = None) -> np.ndarray:
    """(S,) analysis.block_mass, once per trace, pair and layer."""
    return cached(trace, ("block_mass", pair, layer), lambda: analysis.block_mass(trace, pair, layer))


def associative_rows(trace: Trace, name: str) -> np.ndarray:
    """An associative memory's recorded row over the trace, once per trace (explain.associative:
    "state_norms", "z_norms", "write_strength", "novelty", "overwrite", "segment_read_ratio")."""
    if name not in ASSOCIATIVE_ROWS:
        raise ValueError(f"name must be one of {', '.join(ASSOCIATIVE_ROWS)}, got {name!r}")
    return cached(trace, ("associative", name), lambda: getattr(associative, name)(trace))


ASSOCIATIVE_ROWS = ("state_norms", "z_norms", "write_strength", "novelty", "overwrite", "segment_read_ratio")


def lens_hover(trace: Trace, tokenizer=None, top: int = 3) -> list[list[str]]:
    """hover[s][k]: the `top` tokens slot k's written memory decodes to after step s through
    the LM head at the last layer ("" for the initial memory), for every step 0..S
    (lens_hover_at for some steps only). Raises TraceError without a model when a lens is missing."""
    steps = range(trace.num_segments + 1)
    hover = lens_hover_at(trace, steps, tokenizer, top)
    return [hover[s] for s in steps]


def lens_hover_at(trace: Trace, steps: Iterable[int], tokenizer=None, top: int = 3) -> dict[int, list[str]]:
    """{s: hover[s]} (as lens_hover) for the given steps 0..S only: the work is O(len(steps)),
    and steps asked for before are reused. Segments whose full logit lens is not there yet get
    only this last layer, in batches (a quarter of Trace.compute_lens's work); each distinct
    token id is decoded once. Raises IndexError for a step outside 0..S, TraceError without a
    model when a lens is missing."""
    done: dict[int, list[str]] = cached(trace, ("lens_hover", id(tokenizer), top), dict)  # grows step by step
    wanted = sorted({int(s) for s in steps})
    if wanted and not 0 <= wanted[0] <= wanted[-1] <= trace.num_segments:
        raise IndexError(f"steps {wanted[0]}..{wanted[-1]} are not all in 0..{trace.num_segments}")
    with _LOCK:
        missing = [s for s in wanted if s not in done]
    if missing:
        m = trace.num_mem_tokens
        segments = [s - 1 for s in missing if s > 0]  # step s = the memory written by segment s - 1
        ids = np.zeros((len(segments), m, top), dtype=np.int64)
        unlensed = [j for j, i in enumerate(segments) if trace.segments[i].lens_ids is None]
        for j, i in enumerate(segments):
            if trace.segments[i].lens_ids is not None:
                ids[j] = trace.segments[i].lens_ids[-1, :, :top]
        if unlensed:
            ids[unlensed] = _last_layer_lens(trace, [segments[j] for j in unlensed], top)
        names = {i: repr(text) for i, text in decode_distinct(tokenizer, ids).items()}  # as analysis.logit_lens
        new = {0: ["" for _ in range(m)]} if missing[0] == 0 else {}
        for i, seg in zip(segments, ids.tolist()):
            new[i + 1] = ["decodes to: " + ", ".join(names[int(t)] for t in slot) for slot in seg]
        with _LOCK:
            done.update(new)
    with _LOCK:
        return {s: done[s] for s in wanted}


@torch.no_grad()
def _last_layer_lens(trace: Trace, indices: list[int], top: int, chunk: int = 512) -> np.ndarray:
    """(len(indices), m, top) top token ids of the write slots' last-layer states (stored after
    the final norm, as Trace.compute_lens uses them)."""
    model = trace.require_model("the logit lens")
    head = model.backbone.get_output_embeddings()
    out = []
    for first in range(0, len(indices), chunk):
        batch = indices[first:first + chunk]
        hidden = torch.as_tensor(np.stack([trace.segments[i].write_hidden[-1] for i in batch]),
                                 device=model.device).to(model.dtype)  # (B, m, d)
        out.append(torch.topk(head(hidden).float(), top, dim=-1).indices.cpu().numpy())
    return np.concatenate(out)
