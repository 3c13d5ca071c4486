"""Captions computed from the numbers a figure draws: every finding a caption states is read off
the same arrays the figure plots, and a caption says so plainly when the pattern one would expect
(the fact segment moves memory most, write memory reads the fact's tokens, ...) is absent.

Pure functions: data in, one string out (tour, paper figures, app and report share them).
"""
from __future__ import annotations

import numpy as np


def _rank(values: np.ndarray, index: int) -> int:
    """1-based rank of values[index] from the largest (ties share the better rank)."""
    return int(np.sum(values > values[index])) + 1


def churn_caption(churn: np.ndarray, fact_segment: int | None) -> str:
    """What a per-segment churn bar chart shows. churn: (S,) mean cosine distance of memory in -> out
    per segment; fact_segment: the segment holding the fact (None: no fact)."""
    churn = np.asarray(churn, dtype=np.float64)
    top = int(np.argmax(churn))
    text = f"Segment {top} moves memory most ({churn[top]:.2f})"
    if fact_segment is None:
        return text + "; the document has no fact segment to compare with."
    f = int(fact_segment)
    if top == f:
        rest = np.delete(churn, f)
        second = f"; the next is {float(rest.max()):.2f}" if rest.size else ""
        return (f"The fact segment ({f}) moves memory most ({churn[f]:.2f}){second}: the expected pattern, "
                "memory moving where the fact comes in, is present.")
    return (f"{text}; the fact segment {f} moves it {churn[f]:.2f} (rank {_rank(churn, f)} of {len(churn)}). "
            "The expected pattern (memory moves most where the fact comes in) is absent here.")


def write_attribution_caption(scores: np.ndarray, fact_positions: np.ndarray, segment: int) -> str:
    """What a write-slot attribution over one segment shows about the fact's tokens.

    scores: (m, L) write slot x token attribution; fact_positions: indices (in the segment) of the
    fact sentence's tokens (empty: the fact is not in this segment)."""
    scores = np.asarray(scores, dtype=np.float64)
    positive = np.clip(np.nan_to_num(scores), 0.0, None).sum(axis=0)  # (L,) positive mass per token
    total = float(positive.sum())
    fact = np.asarray(fact_positions, dtype=int)
    if total <= 0:
        return f"No token of segment {segment} has a positive write attribution: nothing shows what was written."
    if not fact.size:
        top = int(np.argmax(positive))
        return (f"The fact is not in segment {segment}; its largest positive write attribution is on token {top} "
                f"({100 * positive[top] / total:.0f}% of the positive mass).")
    share = float(positive[fact].sum()) / total
    token_share = len(fact) / positive.size
    text = (f"{100 * share:.0f}% of the positive write attribution of segment {segment} sits on the fact sentence's "
            f"tokens, which are {100 * token_share:.0f}% of its tokens")
    if share > 0.5:
        return text + ": most of it, where the fact enters memory."
    if share > token_share:
        return text + ": more than their share, though not most of it."
    return text + ": no more than their share. The expected pattern (the fact's tokens written most) is absent."


def keep_rewrite_caption(keep: np.ndarray, write_new: np.ndarray, fact_segment: int | None) -> str:
    """What the keep / rewrite figure shows. keep: (S,) write->read mass; write_new: (S,) write->tokens
    mass; fact_segment: the fact's segment (None: no fact)."""
    keep, write_new = np.asarray(keep, dtype=np.float64), np.asarray(write_new, dtype=np.float64)
    lo, hi = float(np.min(write_new)), float(np.max(write_new))
    top = int(np.argmax(write_new))
    text = (f"Write memory's attention to the tokens ranges {lo:.2f}-{hi:.2f} over the segments, highest in "
            f"segment {top}; to the read memory (keeping) {float(np.min(keep)):.2f}-{float(np.max(keep)):.2f}")
    if fact_segment is None:
        return text + "."
    f = int(fact_segment)
    text += (f". In the fact segment ({f}) write→tokens is {write_new[f]:.2f} (rank {_rank(write_new, f)} of "
             f"{len(write_new)}) and write→read {keep[f]:.2f}")
    if top == f:
        return text + ": write memory reads the tokens most where the fact is, as expected."
    return text + ". The expected pattern (write memory reads the tokens most where the fact is) is absent."


def write_pattern_caption(sharpness: float, injectivity: float, diagonal: float, segments: int) -> str:
    """What the copy model's write pattern shows (rmt_core.viz.paper.PatternResult numbers)."""
    text = f"Copy model, 24 symbols in {segments} segments. "
    if sharpness >= 0.5 and injectivity >= 0.75:
        text += (f"Each write slot attends mostly to one source token (sharpness {sharpness:.2f}, "
                 f"{100 * injectivity:.0f}% distinct tokens). ")
    else:
        text += (f"The write slots do not each attend to one distinct token here (sharpness {sharpness:.2f}, "
                 f"{100 * injectivity:.0f}% distinct tokens): the paper's one-slot-one-token pattern is absent. ")
    return text + ("Slots are exchangeable, so the model writes them in its own order; the figure orders slots by "
                   f"the token they attend to (before ordering: diagonal score {diagonal:.2f}).")


def read_slots_caption(scores: np.ndarray, slots: list[str]) -> str:
    """Which read slot a prediction drew on most. scores: (m,) read-slot attribution."""
    scores = np.asarray(scores, dtype=np.float64)
    top = int(np.argmax(np.abs(scores)))
    total = float(np.abs(scores).sum()) or 1.0
    return (f"Slot {slots[top]} moves the prediction most ({scores[top]:+.2f}, {100 * abs(scores[top]) / total:.0f}% "
            "of the absolute attribution).")


def state_size_caption(norms: np.ndarray, ranks: np.ndarray | None = None, rank_bound: int | None = None) -> str:
    """What an associative memory's state-size figure shows. norms: (S, Y) |A_l|_F after each
    segment's write; ranks: (S, Y) effective ranks (None: not computed); rank_bound: A's largest rank."""
    norms = np.asarray(norms, dtype=np.float64)
    steps, layers = norms.shape
    grow = norms[-1] - norms[0]
    top = int(np.argmax(norms[-1]))
    text = (f"After the last segment ({steps - 1}) layer {top}'s state is the largest (‖A‖_F = {norms[-1, top]:.3g}; "
            f"{norms[0, top]:.3g} after segment 0)")
    if steps >= 4:
        quarter = max(1, steps // 4)
        late = norms[-1, top] - norms[-1 - quarter, top]
        share = late / max(abs(norms[-1, top]), 1e-30)
        text += (f"; over the last {quarter} segments it changed by {100 * share:+.0f}%"
                 + (": it has stopped growing." if abs(share) < 0.05 else "."))
    else:
        text += "."
    if layers > 1:
        text += f" Growth from segment 0 to the end per layer: {', '.join(f'{g:+.3g}' for g in grow)}."
    if ranks is not None:
        ranks = np.asarray(ranks, dtype=np.float64)
        bound = f" of at most {rank_bound}" if rank_bound else ""
        text += f" Layer {top}'s effective rank goes from {ranks[0, top]:.1f} to {ranks[-1, top]:.1f}{bound}."
    return text


def write_caption(beta: np.ndarray, gamma: np.ndarray, layer: int) -> str:
    """What one layer's write-strength and novelty heatmaps show. beta, gamma: (S, M) per segment
    and memory token (gamma is 1 in the first segment by definition: nothing is stored yet)."""
    beta, gamma = np.asarray(beta, dtype=np.float64), np.asarray(gamma, dtype=np.float64)
    steps, tokens = beta.shape
    strongest = int(np.argmax(beta.mean(axis=0)))
    text = (f"Layer {layer}: memory token P{strongest} writes strongest on average (mean β {beta[:, strongest].mean():.2f}; "
            f"all tokens: {beta.min():.2f}-{beta.max():.2f}).")
    if steps < 2:
        return text + " Novelty γ is 1 in the first segment (nothing is stored yet); later segments show how new the keys are."
    later = gamma[1:]
    low = int(np.argmin(later.mean(axis=1))) + 1
    text += (f" Novelty γ is 1 in segment 0 (nothing stored yet), then {later.mean():.2f} on average, lowest in "
             f"segment {low} ({gamma[low].mean():.2f})")
    if later.min() > 0.99:
        return text + ": the keys stay new to the state (z adds almost all of every key; the correction does little)."
    return text + ": lower γ means a key the state already holds, so z grows less for it."


def retrieved_from_caption(shares: np.ndarray, segment: int, position: int, token: str, layer: int,
                           read_ratio: float | None = None) -> str:
    """Where one token's read comes from. shares: (segment, M) each earlier segment's and memory
    token's share of the read (they sum to 1; explain.associative.Retrieval.shares); empty when the
    segment reads nothing. read_ratio: |y| / |h| of the token (None: not known)."""
    shares = np.asarray(shares, dtype=np.float64)
    where = f"Token {position} ({token!r}) of segment {segment} at layer {layer}"
    if shares.size == 0 or not np.any(shares):
        return f"{where} reads nothing: the state is empty until a segment has written (segment 0 reads nothing)."
    per_segment = shares.sum(axis=1)
    top = int(np.argmax(per_segment))
    s, i = np.unravel_index(int(np.argmax(shares)), shares.shape)
    text = (f"{where} retrieves most from segment {top}{' (the one before)' if top == segment - 1 else ''}: "
            f"{100 * per_segment[top]:.0f}% of its read; the largest single write is memory token P{i} of segment {s} "
            f"({100 * shares[s, i]:.0f}%)")
    if per_segment[top] < 0.5:
        text += ". No earlier segment holds most of it"
    if read_ratio is not None:
        text += f". The read is {100 * read_ratio:.1f}% of the token's hidden state (|y| / |h|)"
    return text + "."


__all__ = ["churn_caption", "write_attribution_caption", "keep_rewrite_caption", "write_pattern_caption",
           "read_slots_caption", "state_size_caption", "write_caption", "retrieved_from_caption"]
