"""attribute(): build the kind's problem from the trace (read / write / through), hand it to the
method's captum class, and wrap the scores in an Attribution. Also the former three signatures."""
from __future__ import annotations

import warnings
from typing import Any, Callable

import numpy as np
import torch

from ...checks import check_int, check_token_id
from ...errors import ArgumentError, TraceArgumentError, TraceError
from ...token_text import decode_token
from ...tracing.trace import Trace
from .methods import KINDS, MAX_THROUGH_SEGMENTS, METHODS, Method, Problem, check_request
from .result import Attribution

def _require(trace: Trace):
    return trace.require_model("attribution")


def default_target(trace: Trace, segment: int, position: int) -> int:
    """The token that actually follows `position` (the answer, on fact-recall samples)."""
    seg = trace.segments[segment]
    if position + 1 < seg.num_tokens:
        return int(seg.token_ids[position + 1])
    if segment + 1 < trace.num_segments:
        return int(trace.segments[segment + 1].token_ids[0])
    raise TraceError("The last token of the document has no next token: pass target= (a token id).")


def _tensor(array: np.ndarray, model) -> torch.Tensor:
    return torch.as_tensor(np.asarray(array, dtype=np.float32), device=model.device).to(model.dtype)


def _token_baseline(name: str, embeds: torch.Tensor, model) -> torch.Tensor:
    """A baseline for token embeddings (batch, L, d): zeros, or the vocabulary's mean embedding everywhere."""
    if name == "zeros":
        return torch.zeros_like(embeds)
    mean = model.backbone.get_input_embeddings().weight.detach().mean(0).to(embeds.dtype)
    return mean.expand_as(embeds).clone()


# ---------------------------------------------------------------------- the verb
def attribute(trace: Trace, kind: str, segment: int, position: int | None = None, *, target: int | None = None,
              method: str = "ig", baseline: str | None = None, n_steps: int = 32, max_segments: int | None = None,
              progress: Callable[[int, int], Any] | None = None) -> Attribution:
    """Attribute a prediction (read, through) or what the write slots wrote (write) to its inputs.

    kind: "read", "write" or "through" (KINDS; shapes of the scores: Attribution).
    segment: the segment of the prediction (read, through) or of the writing (write).
    position: token index inside `segment` whose next-token prediction is explained (read and
        through need it; write takes none: it explains every write slot over the whole segment).
    target: token id whose log-probability is explained (default: the token that actually
        follows `position`); write takes none (each slot's target is its own update).
    method: a name of METHODS (captum: IntegratedGradients, Saliency, InputXGradient, FeatureAblation).
    baseline: a name of KINDS[kind].baselines, or None for the default (check_request).
    n_steps: integration steps (ig). max_segments: earlier segments unrolled (through only;
        default: back to the document's start, up to the cost bound MAX_THROUGH_SEGMENTS; older ones
        enter through their stored memory and get no scores, and the note says so; a window longer
        than the document is clamped to its start, and the note says that too).
    progress(done, total): called after every forward pass (total: the passes this call makes).
    Raises ArgumentError (TraceArgumentError for a segment or position) naming the bad argument
    and the choices; TraceError without the model, or without memory slots for read and write.
    """
    baseline = check_request(kind, method, baseline)
    model = _require(trace)
    segment = trace.check_segment(segment)
    spec = KINDS[kind]
    if spec.needs_position:
        if position is None:
            raise ArgumentError(f"kind {kind!r} needs position: the token index in segment {segment} whose "
                                "next-token prediction is explained.")
        L = trace.segments[segment].num_tokens
        position = check_int(position, "position", 0, L - 1,
                             fix=f"It is a token's index inside segment {segment}, which holds {L} tokens.",
                             error=TraceArgumentError)
    elif position is not None or target is not None:
        raise ArgumentError(f"kind {kind!r} takes no {'position' if position is not None else 'target'}: it "
                            "explains every write slot over the whole segment (target: each slot's update "
                            "direction). Leave position and target out.")
    n_steps = check_int(n_steps, "n_steps", 1, fix="It is the number of integration steps (32 is a good default).")
    if max_segments is not None and kind != "through":
        raise ArgumentError(f"max_segments is for kind 'through' only (how many earlier segments are unrolled), "
                            f"got it with kind {kind!r}.")
    if target is not None:
        target = check_token_id(target, "target", int(trace.model_info["vocab_size"]))
    if spec.needs_position and target is None:
        target = default_target(trace, segment, position)
    missing = spec.needs.missing(trace)
    if missing:
        raise TraceError(f"Attribution of kind {kind!r} is not available for this trace. {missing}")
    clamp_note, asked = None, max_segments is not None
    if kind == "through":
        max_segments = check_int(MAX_THROUGH_SEGMENTS if max_segments is None else max_segments, "max_segments", 0,
                                 fix="It is how many earlier segments are unrolled (cost grows with it).")
        if asked and max_segments > segment:
            clamp_note = (f"A window of {max_segments} earlier segments was asked; segment {segment} has only "
                          f"{segment} before it, so the window is clamped to the document's start (segment 0).")
            max_segments = segment

    with torch.enable_grad():
        problem, labels = _PROBLEMS[kind](trace, model, segment, position, target, baseline, n_steps, max_segments)
        scores, delta, f_input, f_baseline = _run(METHODS[method], problem, progress)
    if kind == "through":
        labels["note"] = " ".join(n for n in (clamp_note, labels.get("note")) if n) or None
        start, end = labels["window"]
        full = np.full(trace.num_tokens, np.nan)
        full[start:end] = scores
        scores = full
    return Attribution(kind, method, segment, position, target,
                       None if target is None else decode_token(model.tokenizer, target), scores, baseline,
                       n_steps if method == "ig" else None, delta, f_input, f_baseline, **labels)


def estimate_through_seconds(trace: Trace, segment: int, max_segments: int | None = None,
                             n_steps: int = 32) -> tuple[int, float]:
    """(earlier segments the "through" attribution of `segment` would unroll, its estimated seconds).

    The estimate times one forward + backward pass of `segment` at the attribution's batch size (8)
    on this machine now, and scales it by the window's segments and the integration batches
    (ceil(n_steps / 8)); expect +-50%. Runs one segment (milliseconds for small models). Never changes
    the model (gradients go to a copy of the inputs only). Raises TraceError without the model,
    TraceArgumentError for a bad segment.
    """
    import math
    import time

    model = _require(trace)
    segment = trace.check_segment(segment)
    window = min(segment, MAX_THROUGH_SEGMENTS if max_segments is None else max(0, int(max_segments)))
    seg = trace.segments[segment]
    ids = torch.as_tensor(seg.token_ids, dtype=torch.long, device=model.device).unsqueeze(0).expand(8, -1)
    embeds = model.backbone.get_input_embeddings()(ids).detach().requires_grad_(True)
    start = time.perf_counter()
    with torch.enable_grad():
        out = trace.replay(segment, inputs_embeds=embeds)  # the stored state, repeated for the batch of 8
        torch.autograd.grad(out.logits[:, -1].float().logsumexp(-1).sum(), embeds)
    seconds = time.perf_counter() - start
    return window, seconds * (window + 1) * (math.ceil(n_steps / 8) + 1)


def _run(method: Method, problem: Problem, progress: Callable[[int, int], Any] | None):
    """captum over every target: (scores (F,) or (targets, F), delta, f(input), f(baseline))."""
    done = [0]
    total = len(problem.targets) * method.calls(problem) + (2 if problem.baseline is not None else 1)

    def forward(x: torch.Tensor) -> torch.Tensor:
        out = problem.forward(x)
        done[0] += 1
        if progress is not None:
            progress(min(done[0], total), total)
        return out

    explainer = method.captum(forward)
    options = method.options(problem)
    scores, deltas = [], []
    for target in problem.targets:
        with warnings.catch_warnings():  # captum sets requires_grad on its own copy of the inputs: as intended
            warnings.filterwarnings("ignore", message="Input Tensor .* did not already require gradients")
            out = explainer.attribute(problem.inputs, target=target, **options)
        attr, delta = out if method.convergence_delta else (out, None)
        values = attr[0, :, 0].float() if method.per_feature else attr[0].float().sum(-1)  # (F,)
        scores.append(values.detach().cpu().numpy())
        deltas.append(None if delta is None else float(delta))
    with torch.no_grad():
        f_input = forward(problem.inputs)[0].cpu().numpy()
        f_baseline = None if problem.baseline is None else forward(problem.baseline)[0].cpu().numpy()
    single = problem.targets == (None,)
    if single:
        return (scores[0], deltas[0], float(f_input),
                None if f_baseline is None else float(f_baseline))
    return (np.stack(scores), None if deltas[0] is None else np.array(deltas), f_input, f_baseline)


# ---------------------------------------------------------------------- kinds
# Each builds the captum problem of one kind and the labels of its scores (Attribution fields), from
# (trace, model, segment, position, target, baseline, n_steps, max_segments) checked by attribute().
def _read_problem(trace, model, segment, position, target, baseline, n_steps, max_segments):
    """Inputs: the read memory (1, m, d); output: log p(target) at `position` (batch,)."""
    seg = trace.segments[segment]

    def forward(memory: torch.Tensor) -> torch.Tensor:  # memory: (batch, m, d)
        out = trace.replay(segment, memory, write=False)
        return torch.log_softmax(out.logits[:, position].float(), dim=-1)[:, target]  # (batch,)

    memory = _tensor(seg.memory_in, model).unsqueeze(0)
    base = None
    if baseline == "initial":
        base = model.memory.initial_state(1).detach()
    elif baseline == "zeros":
        base = torch.zeros_like(memory)
    problem = Problem(forward, memory, base, n_steps, batch=16)
    return problem, {"slots": [f"R{k}" for k in range(trace.num_mem_tokens)]}


def _write_problem(trace, model, segment, position, target, baseline, n_steps, max_segments):
    """Inputs: the segment's token embeddings (1, L, d); outputs, one per write slot k:

        f_k(x) = < mem_out_k(x), u_k >,  u_k = (mem_out_k - mem_in_k) / ||mem_out_k - mem_in_k||,

    with u_k fixed at the actual input. Why: a slot's output is mostly carried-over content
    (mem_in) plus what this segment adds; projecting on the update direction asks which tokens
    produced the change (what the slot WROTE here) rather than what it kept.
    """
    seg = trace.segments[segment]
    ids = torch.as_tensor(seg.token_ids, dtype=torch.long, device=model.device).unsqueeze(0)
    memory = _tensor(seg.memory_in, model).unsqueeze(0)
    update = torch.as_tensor(seg.memory_out - seg.memory_in, dtype=torch.float32, device=model.device)
    directions = update / update.norm(dim=-1, keepdim=True).clamp(min=1e-12)  # (m, d)

    def forward(embeds: torch.Tensor) -> torch.Tensor:  # embeds: (batch, L, d) -> (batch, m)
        out = trace.replay(segment, memory, inputs_embeds=embeds, compute_logits=False)
        return (out.state_out.float() * directions).sum(-1)

    embeds = model.backbone.get_input_embeddings()(ids).detach()
    base = None if baseline is None else _token_baseline(baseline, embeds, model)
    problem = Problem(forward, embeds, base, n_steps, batch=16, targets=tuple(range(trace.num_mem_tokens)))
    n = seg.num_tokens
    return problem, {"slots": [f"W{k}" for k in range(trace.num_mem_tokens)], "tokens": list(seg.tokens),
                     "window": (seg.start, seg.end), "token_segment": np.full(n, segment),
                     "token_position": np.arange(n)}


def _through_problem(trace, model, segment, position, target, baseline, n_steps, max_segments):
    """Inputs: the token embeddings of segments first..segment (1, W, d); output: log p(target)
    at `position`, the earlier segments reaching it only through the memory they write."""
    first = max(0, segment - max_segments)
    window = trace.segments[first:segment + 1]
    lengths = [s.num_tokens for s in window]
    ids = torch.as_tensor(np.concatenate([s.token_ids for s in window]), dtype=torch.long, device=model.device)
    start_state = model.memory.state_from_arrays(trace.state_in(first))  # the stored state, batch 1

    def forward(embeds: torch.Tensor) -> torch.Tensor:  # (batch, window tokens, d) -> (batch,)
        state = start_state
        offset = 0
        for i, length in enumerate(lengths):
            last = i == len(lengths) - 1
            out = trace.replay(first + i, state, token_ids=ids[offset:offset + length],
                               inputs_embeds=embeds[:, offset:offset + length], write=not last,
                               compute_logits=last)
            offset += length
            state = trace.next_state(out)  # memory reset: nothing reaches the next segment through memory
        return torch.log_softmax(out.logits[:, position].float(), dim=-1)[:, target]

    embeds = model.backbone.get_input_embeddings()(ids).detach().unsqueeze(0)
    base = None if baseline is None else _token_baseline(baseline, embeds, model)
    note = None
    if first > 0:
        note = (f"Only the last {max_segments} segments before segment {segment} are unrolled; "
                f"segments 0..{first - 1} enter through their stored memory and get no scores.")
    return Problem(forward, embeds, base, n_steps, batch=8), {
        "tokens": [t for s in window for t in s.tokens], "window": (window[0].start, window[-1].end),
        "token_segment": np.concatenate([np.full(s.num_tokens, s.index) for s in window]),
        "token_position": np.concatenate([np.arange(s.num_tokens) for s in window]), "note": note}


_PROBLEMS = {"read": _read_problem, "write": _write_problem, "through": _through_problem}


# ---------------------------------------------------------------------- the former three signatures
def read_slots(trace: Trace, segment: int, position: int, target: int | None = None, method: str = "ig",
               n_steps: int = 32, baseline: str | None = None) -> Attribution:
    """attribute(trace, "read", segment, position, ...): scores (m,), one per read slot R_k."""
    return attribute(trace, "read", segment, position, target=target, method=method, baseline=baseline,
                     n_steps=n_steps)


def write_slots(trace: Trace, segment: int, method: str = "ig", n_steps: int = 32,
                baseline: str | None = None) -> Attribution:
    """attribute(trace, "write", segment, ...): scores (m, L), write slot W_k x the segment's tokens."""
    return attribute(trace, "write", segment, method=method, baseline=baseline, n_steps=n_steps)


def through_memory(trace: Trace, segment: int, position: int, target: int | None = None, n_steps: int = 32,
                   max_segments: int | None = None, progress: Callable[[int, int], Any] | None = None,
                   method: str = "ig", baseline: str | None = None) -> Attribution:
    """attribute(trace, "through", segment, position, ...): scores (T,) per document token, NaN
    outside the segments unrolled."""
    return attribute(trace, "through", segment, position, target=target, method=method, baseline=baseline,
                     n_steps=n_steps, max_segments=max_segments, progress=progress)
