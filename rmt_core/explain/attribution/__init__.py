"""Attributions for memory, one verb in captum's shape:

    attribute(trace, kind, segment, position=None, *, target=None, method="ig", baseline=None, n_steps=32)

kinds (KINDS): what is explained, and by what
    read     the read slots R_k of `segment` (its memory_in, (m, d)) -> log p(target) at `position`
    write    the tokens of `segment` (their embeddings, (L, d)) -> what each write slot W_k wrote:
             its output along its own update direction (see _write_problem)
    through  the tokens of `segment` and of up to `max_segments` earlier segments -> log p(target)
             at `position`, gradients flowing through the memory chain
methods (METHODS): name -> the captum class that computes it (ig, saliency, input_x_gradient, ablation)
baselines (KINDS[kind].baselines): what an input is compared with (read: the initial memory or
    zeros; write, through: zero or mean token embeddings)

Every call re-runs the needed segments from the trace's stored memory (captum, Kokhlikyan et
al., 2020), returns an Attribution that records how it was made and turns itself into rows and
files, and never changes the shared model (no hooks, no requires_grad toggles, no .grad writes).
read_slots / write_slots / through_memory are the former three signatures, kept as thin wrappers.

Modules: methods (the KINDS and METHODS tables, check_request), result (Attribution), compute
(attribute, the per-kind problems handed to captum, the former three signatures).
"""
from __future__ import annotations

from .compute import attribute, default_target, estimate_through_seconds, read_slots, through_memory, write_slots
from .methods import BASELINES, KINDS, MAX_THROUGH_SEGMENTS, METHODS, Kind, Method, check_request
from .result import Attribution

__all__ = ["attribute", "Attribution", "KINDS", "METHODS", "BASELINES", "MAX_THROUGH_SEGMENTS", "Kind", "Method",
           "check_request", "default_target", "estimate_through_seconds", "read_slots", "write_slots", "through_memory"]
