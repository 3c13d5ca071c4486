"""Attributions for memory: which read slots a prediction used, what each write slot
took from which tokens, and which earlier tokens a prediction uses through memory.

Every function re-runs the needed segments from the trace's stored memory with
gradients (captum), returns an Attribution that records how it was made, and never
changes the shared model (no hooks, no requires_grad toggles, no .grad writes).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch

from ..checks import check_choice, check_int, check_token_id
from ..errors import TraceArgumentError, TraceError
from ..token_text import decode_token
from ..tracing.trace import Trace

METHODS = ("ig", "saliency", "input_x_gradient")
BASELINES = ("initial", "zeros")  # read_slots: the learned initial memory, or zero vectors
MAX_THROUGH_SEGMENTS = 8  # through_memory unrolls at most this many earlier segments


@dataclass
class Attribution:
    """Scores with how they were made (method, steps, baseline, target, convergence delta)."""

    kind: str  # "read", "write" or "through"
    scores: np.ndarray  # read: (m,); write: (m, L); through: (T,) with NaN outside the window
    method: str
    n_steps: int
    baseline: str
    segment: int
    position: int | None = None
    target_id: int | None = None
    target_token: str | None = None
    delta: float | np.ndarray | None = None  # IG: sum(attr) - (f(x) - f(baseline)); per slot for write
    f_input: float | np.ndarray | None = None  # the target's value at the input (and below, at the baseline)
    f_baseline: float | np.ndarray | None = None
    note: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def _require(trace: Trace):
    if trace.model is None:
        raise TraceError("Attribution needs the model the trace was made with: Trace.load(path, model=...).")
    return trace.model


def _check_position(trace: Trace, segment: int, position: int) -> tuple[int, int]:
    segment = trace.check_segment(segment)
    L = trace.segments[segment].num_tokens
    position = check_int(position, "position", 0, L - 1,
                         fix=f"It is a token's index inside segment {segment}, which holds {L} tokens.",
                         error=TraceArgumentError)
    return segment, position


def _check_common(trace: Trace, method: str, n_steps: int, target: int | None) -> tuple[int, int | None]:
    """Checks shared by every attribution: method, n_steps and an optional target token id."""
    check_choice(method, "method", METHODS)
    n_steps = check_int(n_steps, "n_steps", 1, fix="It is the number of integration steps (32 is a good default).")
    if target is not None:
        target = check_token_id(target, "target", int(trace.model_info["vocab_size"]))
    return n_steps, target


def default_target(trace: Trace, segment: int, position: int) -> int:
    """The token that actually follows `position` (the answer, on fact-recall samples)."""
    seg = trace.segments[segment]
    if position + 1 < seg.num_tokens:
        return int(seg.token_ids[position + 1])
    if segment + 1 < trace.num_segments:
        return int(trace.segments[segment + 1].token_ids[0])
    raise TraceError("The last token of the document has no next token: pass target= (a token id).")


def _decode(model, token_id: int) -> str:
    return decode_token(model.tokenizer, token_id)


def _tensor(array: np.ndarray, model) -> torch.Tensor:
    return torch.as_tensor(np.asarray(array, dtype=np.float32), device=model.device).to(model.dtype)


def _attribute(method: str, forward: Callable, inputs: torch.Tensor, baseline: torch.Tensor, n_steps: int,
               target: int | None = None, batch: int = 16):
    """One captum call; returns (attributions, delta or None)."""
    from captum.attr import InputXGradient, IntegratedGradients, Saliency

    if method == "ig":
        attr, delta = IntegratedGradients(forward).attribute(
            inputs, baselines=baseline, target=target, n_steps=n_steps, internal_batch_size=batch,
            return_convergence_delta=True)
        return attr, delta
    if method == "saliency":
        return Saliency(forward).attribute(inputs, target=target, abs=False), None
    if method == "input_x_gradient":
        return InputXGradient(forward).attribute(inputs, target=target), None
    raise ValueError(f"method must be one of {METHODS}, got {method!r}")


# ---------------------------------------------------------------------- read slots
def read_slots(trace: Trace, segment: int, position: int, target: int | None = None, method: str = "ig",
               n_steps: int = 32, baseline: str = "initial") -> Attribution:
    """Attribution of log p(target | position) in a segment to the read memory, one score per slot.

    Baseline "initial" is the model's learned initial memory (what the slot would hold if
    nothing had been written); "zeros" is the zero vector. Scores are summed over the hidden size.
    Raises ArgumentError for a segment, position, target (token id), method, n_steps or
    baseline out of range, TraceError without the model.
    """
    model = _require(trace)
    segment, position = _check_position(trace, segment, position)
    n_steps, target = _check_common(trace, method, n_steps, target)
    check_choice(baseline, "baseline", BASELINES)
    target = default_target(trace, segment, position) if target is None else target
    seg = trace.segments[segment]
    ids = torch.as_tensor(seg.token_ids, dtype=torch.long, device=model.device).unsqueeze(0)

    def forward(memory: torch.Tensor) -> torch.Tensor:  # memory: (batch, m, d)
        out = model.run_segment(memory, ids.expand(memory.shape[0], -1), write=False, segment_index=segment)
        return torch.log_softmax(out.logits[:, position].float(), dim=-1)[:, target]  # (batch,)

    with torch.enable_grad():
        memory = _tensor(seg.memory_in, model).unsqueeze(0)
        base = model.initial_memory.detach().unsqueeze(0) if baseline == "initial" else torch.zeros_like(memory)
        attr, delta = _attribute(method, forward, memory, base, n_steps)
        with torch.no_grad():
            f_in, f_base = float(forward(memory)), float(forward(base))
    return Attribution("read", attr[0].float().sum(-1).detach().cpu().numpy(), method, n_steps, baseline, segment,
                       position, target, _decode(model, target),
                       delta=float(delta) if delta is not None else None, f_input=f_in, f_baseline=f_base)


# ---------------------------------------------------------------------- write slots
def write_slots(trace: Trace, segment: int, method: str = "ig", n_steps: int = 32) -> Attribution:
    """For each write slot k, attribution over the segment's token embeddings (scores (m, L)).

    Target for slot k: the component of the written vector along its own update,
        f_k(x) = < mem_out_k(x), u_k >,  u_k = (mem_out_k - mem_in_k) / ||mem_out_k - mem_in_k||,
    with u_k fixed at the actual input. Why: a slot's output is mostly carried-over content
    (mem_in) plus what this segment adds; projecting on the update direction asks which
    tokens produced the change — what the slot WROTE here — rather than what it kept.
    Baseline: zero token embeddings (no token content; positions and memory unchanged).
    Raises ArgumentError for a segment, method or n_steps out of range.
    """
    model = _require(trace)
    segment = trace.check_segment(segment)
    n_steps, _ = _check_common(trace, method, n_steps, None)
    seg = trace.segments[segment]
    m = trace.num_mem_tokens
    if m == 0:
        raise TraceError("This model has no memory slots to attribute.")
    ids = torch.as_tensor(seg.token_ids, dtype=torch.long, device=model.device).unsqueeze(0)
    memory = _tensor(seg.memory_in, model).unsqueeze(0)
    update = torch.as_tensor(seg.memory_out - seg.memory_in, dtype=torch.float32, device=model.device)
    directions = update / update.norm(dim=-1, keepdim=True).clamp(min=1e-12)  # (m, d)

    def forward(embeds: torch.Tensor) -> torch.Tensor:  # embeds: (batch, L, d) -> (batch, m)
        out = model.run_segment(memory.expand(embeds.shape[0], -1, -1), ids.expand(embeds.shape[0], -1),
                                segment_index=segment, inputs_embeds=embeds)
        return (out.memory_out.float() * directions).sum(-1)

    scores, deltas, f_in, f_base = [], [], [], []
    with torch.enable_grad():
        embeds = model.backbone.get_input_embeddings()(ids).detach()
        base = torch.zeros_like(embeds)
        with torch.no_grad():
            values_in, values_base = forward(embeds)[0], forward(base)[0]
        for k in range(m):
            attr, delta = _attribute(method, forward, embeds, base, n_steps, target=k)
            scores.append(attr[0].float().sum(-1).detach().cpu().numpy())
            deltas.append(float(delta) if delta is not None else np.nan)
    return Attribution("write", np.stack(scores), method, n_steps, "zero embeddings", segment,
                       delta=np.array(deltas), f_input=values_in.cpu().numpy(), f_baseline=values_base.cpu().numpy())


# ---------------------------------------------------------------------- through memory
def through_memory(trace: Trace, segment: int, position: int, target: int | None = None, n_steps: int = 32,
                   max_segments: int = MAX_THROUGH_SEGMENTS, progress: Callable[[int, int], Any] | None = None
                   ) -> Attribution:
    """Attribution of log p(target | position) in `segment` to the tokens of earlier segments,
    through the memory chain (integrated gradients over the token embeddings of the window,
    gradients flowing through the recurrence). Scores: one per document token, NaN outside
    the window; the segment's own tokens (direct path) are included.

    The window holds at most `max_segments` earlier segments (cost grows with the distance);
    older segments enter through their stored memory and get no scores (the note says so).
    progress(done, total) is called per batch of integration steps.
    Raises ArgumentError for a segment, position, target, n_steps or max_segments out of range.
    """
    model = _require(trace)
    segment, position = _check_position(trace, segment, position)
    n_steps, target = _check_common(trace, "ig", n_steps, target)
    max_segments = check_int(max_segments, "max_segments", 0,
                             fix="It is how many earlier segments are unrolled (cost grows with it).")
    target = default_target(trace, segment, position) if target is None else target
    first = max(0, segment - max_segments)
    window = trace.segments[first:segment + 1]
    lengths = [s.num_tokens for s in window]
    ids = torch.as_tensor(np.concatenate([s.token_ids for s in window]), dtype=torch.long, device=model.device)
    start_memory = _tensor(window[0].memory_in, model).unsqueeze(0)
    batch = 8
    total_calls = -(-n_steps // batch) + 2
    calls = [0]

    def forward(embeds: torch.Tensor) -> torch.Tensor:  # (batch, window tokens, d) -> (batch,)
        b = embeds.shape[0]
        memory = start_memory.expand(b, -1, -1)
        offset = 0
        for i, length in enumerate(lengths):
            piece = embeds[:, offset:offset + length]
            out = model.run_segment(memory, ids[offset:offset + length].unsqueeze(0).expand(b, -1),
                                    segment_index=first + i, inputs_embeds=piece, write=i < len(lengths) - 1)
            offset += length
            if out.memory_out is not None:
                memory = out.memory_out
        calls[0] += 1
        if progress is not None:
            progress(min(calls[0], total_calls), total_calls)
        return torch.log_softmax(out.logits[:, position].float(), dim=-1)[:, target]

    with torch.enable_grad():
        embeds = model.backbone.get_input_embeddings()(ids).detach().unsqueeze(0)
        base = torch.zeros_like(embeds)
        attr, delta = _attribute("ig", forward, embeds, base, n_steps, batch=batch)
        with torch.no_grad():
            f_in, f_base = float(forward(embeds)), float(forward(base))
    scores = np.full(trace.num_tokens, np.nan)
    scores[window[0].start:window[-1].end] = attr[0].float().sum(-1).detach().cpu().numpy()
    note = None
    if first > 0:
        note = (f"Only the last {max_segments} segments before segment {segment} are unrolled; "
                f"segments 0..{first - 1} enter through their stored memory and get no scores.")
    return Attribution("through", scores, "ig", n_steps, "zero embeddings", segment, position, target,
                       _decode(model, target), delta=float(delta), f_input=f_in, f_baseline=f_base, note=note,
                       extra={"window": (window[0].start, window[-1].end), "first_segment": first})
