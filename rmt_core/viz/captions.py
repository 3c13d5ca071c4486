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


def _leading(flags: np.ndarray) -> int:
    """How many of the first entries of `flags` are all True."""
    flags = np.asarray(flags, dtype=bool)
    return int(len(flags) if flags.all() else np.argmin(flags))


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


def _size(x: float) -> str:
    """A state norm for a caption: whole numbers with thousands separators from 1,000 on."""
    return f"{x:,.0f}" if abs(x) >= 1000 else f"{x:.3g}"


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
        before = norms[-1 - quarter, top]
        share = (norms[-1, top] - before) / max(abs(before), 1e-30)  # relative to where it stood then
        text += (f"; over the last {quarter} segments it went from {_size(before)} to {_size(norms[-1, top])} "
                 f"({100 * share:+.0f}%)" + (": it has stopped growing." if abs(share) < 0.05 else "."))
    else:
        text += "."
    if steps >= 2:
        jumps = np.diff(norms[:, top])
        at = int(np.argmax(np.abs(jumps)))
        text += f" Its largest change in one segment is in segment {at + 1} ({'+' if jumps[at] >= 0 else '−'}{_size(abs(jumps[at]))})."
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


def _last_note(segment: int, steps: int) -> str:
    return ", the last: no token reads its write" if segment == steps - 1 else ""


def fact_write_caption(beta: np.ndarray, gamma: np.ndarray, fact_segment: int, layer: int) -> str:
    """How one layer's fact segment writes compared with the other segments. beta, gamma: (S,) mean
    write strength and novelty over the memory tokens per segment (gamma is 1 in segment 0 by
    definition: nothing is stored yet)."""
    beta, gamma = np.asarray(beta, dtype=np.float64), np.asarray(gamma, dtype=np.float64)
    steps, f = len(beta), fact_segment
    top = int(np.argmax(beta))
    rank = _rank(beta, f)
    text = (f"At layer {layer} the fact segment {f} writes with mean β {beta[f]:.2f}, rank {rank} of {steps} segments "
            f"(median {np.median(beta):.2f}" + ("" if top == f else f"; the strongest is segment {top}, {beta[top]:.2f}"
                                                 + _last_note(top, steps)) + ").")
    if f == 0:
        text += " Its novelty γ is 1 by definition (segment 0: nothing is stored yet)."
    elif steps > 1:
        later = gamma[1:]
        text += (f" Its novelty γ is {gamma[f]:.3f}, rank {_rank(later, f - 1)} of the {steps - 1} segments after "
                 f"segment 0 (median {np.median(later):.3f})"
                 + (": its keys are newer to the state than most." if gamma[f] > np.median(later) else "."))
    if rank > 2 or beta[f] <= np.median(beta):
        text += " The expected pattern (the fact segment among the strongest writers) is absent here."
    return text


def state_growth_caption(norms: np.ndarray, fact_segment: int, layer: int) -> str:
    """How much one layer's state grows at the fact segment compared with the others. norms: (S, Y)
    |A_l|_F after each segment's write; growth at s is norms[s] - norms[s - 1] (the state starts at 0)."""
    values = np.asarray(norms, dtype=np.float64)[:, layer]
    growth = np.diff(values, prepend=0.0)
    f, steps = fact_segment, len(values)
    top = int(np.argmax(growth))
    rank = _rank(growth, f)
    text = (f"Layer {layer}'s ‖A‖_F grows by {growth[f]:.3g} at the fact segment {f}, rank {rank} of {steps} segments "
            f"(median growth {np.median(growth):.3g}" + ("" if top == f else f"; the largest, {growth[top]:.3g}, at "
                                                          f"segment {top}" + _last_note(top, steps)) + ").")
    if rank > 2 or growth[f] <= np.median(growth):
        text += " The expected pattern (the fact segment among the largest growths) is absent here."
    return text


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


def capacity_caption(pairs: np.ndarray, accuracy: np.ndarray, estimate: np.ndarray, n_values: int, layer: int,
                     keys: str, feature_size: int | None = None) -> str:
    """What a memory-capacity figure shows (explain.capacity.CapacityResult's arrays): pairs (P,) the
    numbers n of written pairs, accuracy (P,) alpha, estimate (P,) k = n (v alpha - 1) / (v - 1),
    n_values v; keys "model" (through the layer's W_mk) or "random"; feature_size: features per head."""
    pairs, accuracy, estimate = (np.asarray(a, dtype=np.float64) for a in (pairs, accuracy, estimate))
    how = "keys through its own W_mk" if keys == "model" else "random keys in d_mem"
    text = f"Layer {layer}, {how}: "
    exact = _leading(accuracy >= 1.0)  # how many of the first n's read back every pair
    held = _leading(estimate >= 0.9 * pairs)
    text += (f"every pair is read back right up to n = {int(pairs[exact - 1])} written pairs" if exact else
             f"even n = {int(pairs[0])} pair{'s' if pairs[0] > 1 else ''} is not always read back right "
             f"(accuracy {accuracy[0]:.3f})")
    if held:
        text += (f"; the estimate k = n(vα − 1)/(v − 1) (v = {n_values} values) keeps at least 90% of the pairs up to "
                 f"n = {int(pairs[held - 1])} (k = {estimate[held - 1]:.1f})")
    last = len(pairs) - 1
    chance = 1.0 / n_values
    text += (f". At n = {int(pairs[last])}, accuracy {accuracy[last]:.3f} (chance {chance:.3f}) gives k = "
             f"{estimate[last]:.1f}")
    if estimate.max() <= 0.5:
        text += ": the memory holds nothing beyond chance here"
    elif last >= 1 and estimate[last - 1] > 0:
        growth = estimate[last] / estimate[last - 1] - 1.0
        if growth < 0.05:
            text += f"; it has levelled off (largest estimate {estimate.max():.1f} pairs)"
        else:
            text += (f", still {100 * growth:+.0f}% over the previous n: no plateau within the range measured, so the "
                     f"capacity is at least {estimate.max():.1f} pairs")
    text += "."
    if feature_size:
        text += f" The state has {feature_size} features per head (A has that many rows)."
    return text


def memory_reach_caption(full: np.ndarray, reset: np.ndarray, previous: np.ndarray, counts: np.ndarray) -> str:
    """What a loss-per-segment figure (full memory / memory reset / previous segment's memory only)
    shows; the arrays of explain.memory_reach.MemoryReach, each (S,). Means are token-weighted over
    segments 1.. (segment 0 reads nothing in every condition)."""
    full, reset, previous = (np.asarray(a, dtype=np.float64) for a in (full, reset, previous))
    weights = np.asarray(counts, dtype=np.float64)
    steps = len(full)
    if steps < 2:
        return "One segment only: it reads nothing, so the three conditions are the same run."

    def mean(values: np.ndarray) -> float:
        keep = np.isfinite(values[1:]) & (weights[1:] > 0)
        return float((values[1:][keep] * weights[1:][keep]).sum() / max(weights[1:][keep].sum(), 1e-30))

    f, r, p = mean(full), mean(reset), mean(previous)
    text = (f"Over segments 1–{steps - 1} (token-weighted) the loss is {f:.3f} nats/token with the full memory, "
            f"{r:.3f} with memory reset every segment and {p:.3f} with the previous segment's memory only")
    gain = r - f
    if gain <= 1e-6:
        return text + f": memory does not lower the loss here (gain {gain:+.3f}), so there is no gain to split."
    share = (r - p) / gain
    text += f": the previous segment alone gives {100 * share:.0f}% of memory's gain ({gain:.3f} nats/token)"
    if share >= 0.75:
        return text + ", so memory carries mostly the last segment (as the paper found for its LM-trained ARMT)."
    if share >= 0.5:
        return text + "; earlier segments add the rest."
    return text + ": most of the gain comes from earlier segments, so memory reaches back further than one segment."


__all__ = ["churn_caption", "write_attribution_caption", "keep_rewrite_caption", "write_pattern_caption",
           "read_slots_caption", "state_size_caption", "write_caption", "retrieved_from_caption", "capacity_caption",
           "fact_write_caption", "state_growth_caption",
           "memory_reach_caption"]
