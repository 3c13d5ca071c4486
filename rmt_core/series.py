"""Per-trace series computed once and kept with the trace.

Pages rerun on every click; what they show about the whole document (memory states, PCA,
slot norms and churn, block masses, the logit-lens hover text of every segment) depends only
on the trace. Each function here computes its result on first use and returns the same
object afterwards, until the trace grows (a streamed trace gets new segments): the key holds
the number of segments. The cache lives beside the trace (a weak reference: it goes with it).
Callers must not modify the arrays they get.
"""
from __future__ import annotations

import threading
import weakref
from typing import Any, Callable

import numpy as np

from . import analysis
from .trace import Trace

_CACHE: "weakref.WeakKeyDictionary[Trace, dict[Any, Any]]" = weakref.WeakKeyDictionary()
_LOCK = threading.Lock()  # the app's sessions run in threads


def cached(trace: Trace, key: Any, compute: Callable[[], Any]) -> Any:
    """compute() once per (trace, key, number of segments)."""
    full_key = (key, trace.num_segments)
    with _LOCK:
        entry = _CACHE.setdefault(trace, {})
        if full_key in entry:
            return entry[full_key]
    value = compute()
    with _LOCK:
        return entry.setdefault(full_key, value)


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
    return cached(trace, "slot_churn", lambda: analysis.slot_churn(memory_states(trace)))


def block_mass(trace: Trace, pair: str, layer: int | None = None) -> np.ndarray:
    """(S,) analysis.block_mass, once per trace, pair and layer."""
    return cached(trace, ("block_mass", pair, layer), lambda: analysis.block_mass(trace, pair, layer))


def lens_hover(trace: Trace, tokenizer=None, layer: int = -1, top: int = 3) -> list[list[str]]:
    """hover[s][k]: the `top` logit-lens tokens of slot k after step s ("" for the initial
    memory), at `layer` (default: the last). The lens of every segment is computed in one batch
    (Trace.lens_ids) and each distinct token id is decoded once."""
    def compute() -> list[list[str]]:
        trace.lens_ids(0) if trace.num_segments else None  # fills every segment's lens in batches
        ids = np.stack([s.lens_ids[layer, :, :top] for s in trace.segments]) if trace.num_segments else \
            np.zeros((0, trace.num_mem_tokens, top), dtype=np.int64)
        decode = (lambda i: tokenizer.decode([int(i)])) if tokenizer is not None else str
        names = {int(i): repr(decode(i)) for i in np.unique(ids)}
        hover = [["" for _ in range(trace.num_mem_tokens)]]
        hover += [["decodes to: " + ", ".join(names[int(i)] for i in slot) for slot in seg] for seg in ids.tolist()]
        return hover

    return cached(trace, ("lens_hover", id(tokenizer), layer, top), compute)
