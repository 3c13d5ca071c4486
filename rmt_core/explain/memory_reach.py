"""How far back memory reaches in language modelling: a document's loss per segment with the full
memory, with none, and with the previous segment's only (Rodkin et al. 2024, arXiv 2407.04841,
Fig. 6 / App. K: the per-segment loss of an LM-trained ARMT, whose memory "keeps mostly the last
segment"; the authors log it as ce_loss_{i}, one cross-entropy per segment i).

Three runs of the same tokens, each segment's loss token-weighted (tracing.losses: nats/token over
the segment's tokens that have a prediction; a segment's first token is predicted by the previous
segment's last position, in the same condition):

    full      the trace as recorded: every segment reads what all earlier segments wrote;
    reset     memory reset before every segment (each starts from the model's initial state: the
              no-memory baseline, rmt_core.trace(..., carry_memory=False));
    previous  segment s reads only what segment s - 1 wrote when IT started from the initial state
              (the document read as two-segment windows, each scoring its second segment).

If `previous` is as low as `full`, what the loss uses of memory comes from the last segment;
the share (reset - previous) / (reset - full) says how much of memory's gain it holds. Segment 0
is the same in all three (it reads nothing). Any memory type; the paper's figure is of ARMT.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..errors import TraceError
from ..tracing.capabilities import Needs
from ..tracing.recorder import segment_loss, token_logprobs
from ..tracing.trace import Trace

NEEDS = Needs(model=True)
CONDITIONS = ("full", "reset", "previous")
NAMES = {"full": "full memory", "reset": "memory reset every segment", "previous": "previous segment's memory only"}


@dataclass
class MemoryReach:
    """Per-segment loss (nats/token) of one document in the three conditions (module docstring).

    full, reset, previous: (S,) float64 (NaN for a segment whose tokens have no prediction);
    counts: (S,) tokens with a prediction per segment (the weights of mean()); document and
    checkpoint: names, for captions."""

    full: np.ndarray
    reset: np.ndarray
    previous: np.ndarray
    counts: np.ndarray
    document: str = ""
    checkpoint: str = ""

    @property
    def num_segments(self) -> int:
        return int(len(self.full))

    def mean(self, condition: str, first: int = 1) -> float:
        """Token-weighted mean loss of `condition` over segments first.. (default 1..: the segments
        that can read memory); NaN when they have no token with a prediction."""
        values = getattr(self, condition)[first:]
        weights = self.counts[first:].astype(np.float64)
        keep = np.isfinite(values) & (weights > 0)
        if not keep.any():
            return float("nan")
        return float((values[keep] * weights[keep]).sum() / weights[keep].sum())

    @property
    def previous_share(self) -> float:
        """(reset - previous) / (reset - full) of the means over segments 1..: the share of memory's
        gain that the previous segment's memory alone gives (NaN when memory gains nothing)."""
        gain = self.mean("reset") - self.mean("full")
        if not np.isfinite(gain) or abs(gain) < 1e-12:
            return float("nan")
        return (self.mean("reset") - self.mean("previous")) / gain

    def to_rows(self) -> list[dict]:
        """One row per segment: segment, tokens (with a prediction), loss_full, loss_reset, loss_previous."""
        return [{"segment": s, "tokens": int(self.counts[s]), "loss_full": float(self.full[s]),
                 "loss_reset": float(self.reset[s]), "loss_previous": float(self.previous[s])}
                for s in range(self.num_segments)]


def reach_seconds(trace: Trace) -> float:
    """Rough seconds loss_per_segment needs: two replays per segment, about 10 ms each at the shipped
    models' size on one CPU core (measured here: 1.0 s for a 51-segment excerpt with the shipped ARMT)."""
    return 0.02 * trace.num_segments


@torch.no_grad()
def loss_per_segment(trace: Trace) -> MemoryReach:
    """The trace's per-segment loss with the full memory (as recorded), with memory reset before every
    segment, and with only the previous segment's memory (see the module docstring). Costs two
    replays per segment. Raises TraceError without the model, or for a trace made with memory reset
    (its full-memory curve is not there: trace the document with memory carried)."""
    missing = NEEDS.missing(trace)
    if missing:
        raise TraceError(f"The loss per segment with and without memory re-runs the document. {missing}")
    if not trace.carries_memory:
        raise TraceError("This trace was made with memory reset before every segment, so it has no full-memory "
                         "curve: trace the document with memory carried to compare the three.")
    if trace.num_segments == 0:
        raise TraceError("This trace has no segments yet: trace a document first.")
    model = trace.model
    S = trace.num_segments
    reset, previous = np.full(S, np.nan), np.full(S, np.nan)
    counts = np.zeros(S, dtype=np.int64)
    carry = None  # the previous segment's last log-softmax row, memory reset (= that of a window's first segment)
    alone = None  # the state segment s - 1 wrote from the initial state
    for seg in trace.segments:
        ids = torch.as_tensor(seg.token_ids, dtype=torch.long, device=model.device)
        out = trace.replay(seg.index, model.memory.initial_state(1))
        logprobs, token_lp = token_logprobs(out.logits[0], ids, carry)
        reset[seg.index] = segment_loss(token_lp)
        counts[seg.index] = int(torch.isfinite(token_lp).sum())
        if alone is None:  # segment 0 reads nothing in every condition
            previous[seg.index] = reset[seg.index]
        else:
            _, window_lp = token_logprobs(trace.replay(seg.index, alone).logits[0], ids, carry)
            previous[seg.index] = segment_loss(window_lp)
        alone = out.state_out if out.state_out is not None else out.state_in
        carry = logprobs[-1]
    return MemoryReach(trace.losses(), reset, previous, counts, str(trace.meta.get("document") or ""),
                       str(trace.model_info.get("name") or ""))


__all__ = ["loss_per_segment", "reach_seconds", "MemoryReach", "CONDITIONS", "NAMES", "NEEDS"]
