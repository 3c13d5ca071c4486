"""The one definition of a loss in RMT Lens: mean negative log-likelihood per token (nats/token),
TOKEN-WEIGHTED: the sum of -log p over every token that has a prediction, divided by their count.

A document's mean loss (Trace.mean_loss: app, CLI, report) and a segment's (SegmentRecord.loss, the
per-segment curves) are both this mean, over the document's or the segment's tokens; the mean of
per-segment means weights short segments as much as full ones and is a different number: RMT Lens
never shows it as "mean loss". The model card's held-out number (training.evaluation.evaluate_lm,
perplexity = exp of this mean over random 8-segment windows) is the same definition on other text.
"""
from __future__ import annotations

from typing import Any

import numpy as np


def segment_losses(token_lp: np.ndarray, starts: Any) -> np.ndarray:
    """Token-weighted mean loss of consecutive runs of token_lp (T,) (log-probabilities, NaN where a
    token has no prediction) that begin at `starts` (S,): (S,) float64, NaN for a run with none.

    One pass for a chunk of segments (a trace records thousands); the sums run in float64."""
    token_lp = np.asarray(token_lp).reshape(-1)
    finite = np.isfinite(token_lp)
    sums = np.add.reduceat(np.where(finite, token_lp, 0.0).astype(np.float64), starts)
    counts = np.add.reduceat(finite.astype(np.int64), starts)
    return np.divide(-sums, counts, out=np.full(len(counts), np.nan), where=counts > 0)


def mean_token_loss(token_lp: np.ndarray) -> float:
    """Token-weighted mean loss (nats/token) of token_lp (T,) log-probabilities; NaN when no token
    has a prediction."""
    values = np.asarray(token_lp).reshape(-1)
    return float(segment_losses(values, [0])[0]) if values.size else float("nan")


__all__ = ["segment_losses", "mean_token_loss"]
