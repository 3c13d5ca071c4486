"""Memory interventions: edit the memory entering a segment and re-run the rest of the document.

Each returns the per-segment loss before and after and the answer before and after:
the prediction after "Answer:" on documents that end with a question (see
rmt_core.explain.answers.answer_site), else the next token predicted after the document.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from .answers import answer_site, answer_text, probability_of, stored_predictions, top_predictions
from ..checks import check_int
from ..errors import ArgumentError, TraceArgumentError, TraceError
from ..tracing.recorder import segment_loss, token_logprobs
from ..tracing.capabilities import Needs
from ..tracing.trace import Trace


# What each named intervention needs (capabilities): the memory type must support its edit.
NEEDS: dict[str, Needs] = {"reset": Needs(edit="reset"), "zero": Needs(edit="zero"), "shuffle": Needs(edit="shuffle"),
                           "replace": Needs(edit="replace")}


@dataclass
class InterventionResult:
    """Per-segment loss and the answer, before and after an edit of the memory entering `segment`.

    answer_*: the top prediction at the answer site (after "Answer:", else after the document's
    last token) and p_answer_*: the probability of THAT prediction. expected: the token the
    document actually has there (e.g. the demo's answer), None at the end of the document;
    p_expected_*: its probability before / after.
    """

    name: str
    segment: int
    loss_before: np.ndarray  # (S,)
    loss_after: np.ndarray  # (S,)
    answer_before: str | None
    answer_after: str | None
    p_answer_before: float | None
    p_answer_after: float | None
    expected: str | None = None
    p_expected_before: float | None = None
    p_expected_after: float | None = None

    @property
    def loss_change(self) -> np.ndarray:
        return self.loss_after - self.loss_before

    @property
    def answer_changed(self) -> bool:
        return self.answer_before != self.answer_after


@torch.no_grad()
def intervene(trace: Trace, segment: int, edit: "Callable[[np.ndarray], np.ndarray] | str", name: str,
              **edit_options) -> InterventionResult:
    """Replace the state entering `segment` by an edit of it and re-run to the end (Trace.replay).

    edit: a function of the memory entering the segment ((m, d) for TokenMemory, whose state has
    one array; for a memory type with several arrays, of the dict of named arrays) returning
    one of the same shape; or the name of an edit the memory type supports ("reset", "zero",
    "replace", "shuffle"; edit_options: part=, source=, seed=). Raises ArgumentError for an
    edit of another shape or one the memory type does not support."""
    model = trace.require_model("an intervention")
    segment = trace.check_segment(segment)
    state = trace.state_in(segment)
    if isinstance(edit, str):
        edited = model.memory.edit_state(state, edit, **edit_options)
    elif len(state) == 1:  # one array (TokenMemory's memory): the edit sees the array itself
        (key, value), = state.items()
        edited = {key: np.asarray(edit(value.copy()), dtype=np.float32)}
    else:
        edited = edit({key: value.copy() for key, value in state.items()})
    for key, value in state.items():
        got = np.shape(edited.get(key)) if isinstance(edited, dict) else None
        if got != value.shape:
            axes = ", ".join(model.memory.state_spec().get(key, ()))
            raise ArgumentError(f"edit must return memory of shape {value.shape} ({axes}) for {key!r}, got {got}.")
    before = trace.losses()
    after = before.copy()
    carry = None
    if segment > 0:  # the previous segment's last prediction is not affected by the edit
        out = trace.replay(segment - 1)
        carry = torch.log_softmax(out.logits[0, -1].float(), dim=-1)
    site = answer_site(trace, fallback=True)
    site_logprobs = None  # the log-probs at the answer site after the edit
    state = edited  # named arrays entering `segment`; then each segment's state in the memory type's form
    for seg in trace.segments[segment:]:
        out = trace.replay(seg.index, state)
        ids = torch.as_tensor(seg.token_ids, dtype=torch.long, device=model.device)
        logprobs, token_lp = token_logprobs(out.logits[0], ids, carry)
        after[seg.index] = segment_loss(token_lp)
        carry = logprobs[-1]
        if site is not None and seg.index == site.segment:
            site_logprobs = logprobs[site.position]
        state = out.state_out if out.state_out is not None else out.state_in
    result = InterventionResult(name, segment, before, after, None, None, None, None)
    if site is not None:
        _answers(trace, site, site_logprobs, result)
    return result


def _answers(trace: Trace, site, site_logprobs: torch.Tensor | None, result: InterventionResult) -> None:
    """Fill in the answers before / after (rmt_core.explain.answers reads the predictions)."""
    tokenizer = trace.model.tokenizer
    top_before = stored_predictions(trace, site, 1)[0]
    result.answer_before, result.p_answer_before = top_before.text, top_before.probability
    seg = trace.segments[site.segment]
    following = None  # the token the document has after the site
    if site.position + 1 < seg.num_tokens:
        following = int(seg.token_ids[site.position + 1]), float(seg.token_logprob[site.position + 1])
    elif site.segment + 1 < trace.num_segments:
        nxt = trace.segments[site.segment + 1]
        following = int(nxt.token_ids[0]), float(nxt.token_logprob[0])
    if following is not None:
        result.expected = answer_text(tokenizer, following[0])
        result.p_expected_before = float(np.exp(following[1]))
    if site_logprobs is None:  # the edit comes after the answer site: nothing there changes
        result.answer_after, result.p_answer_after = result.answer_before, result.p_answer_before
        result.p_expected_after = result.p_expected_before
        return
    top_after = top_predictions(site_logprobs, tokenizer, 1)[0]
    result.answer_after, result.p_answer_after = top_after.text, top_after.probability
    if following is not None:
        result.p_expected_after = probability_of(site_logprobs, following[0])


def reset_memory(trace: Trace, segment: int) -> InterventionResult:
    """State entering `segment` set to the model's initial state (TokenMemory: the learned initial memory)."""
    return intervene(trace, segment, "reset", f"reset memory before segment {segment}")


def zero_memory(trace: Trace, segment: int) -> InterventionResult:
    """Every array of the state entering `segment` set to zero."""
    return intervene(trace, segment, "zero", f"zero memory before segment {segment}")


def shuffle_slots(trace: Trace, segment: int, seed: int = 0) -> InterventionResult:
    """The parts (TokenMemory: slots) of the state entering `segment` permuted (seeded; never the identity)."""
    return intervene(trace, segment, "shuffle", f"shuffle slots before segment {segment}", seed=seed)


def replace_slot(trace: Trace, segment: int, slot: int, other: Trace, other_segment: int | None = None) -> InterventionResult:
    """Slot `slot` of the memory entering `segment` replaced by the same slot from another trace."""
    if other.num_mem_tokens != trace.num_mem_tokens:
        raise TraceError("The other trace comes from a model with another number of memory slots.")
    segment = trace.check_segment(segment)
    slot = check_int(slot, "slot", 0, trace.num_mem_tokens - 1, fix=f"The model has {trace.num_mem_tokens} memory slots.",
                     error=TraceArgumentError)
    if other_segment is not None:
        other_segment = other.check_segment(other_segment, "other_segment")
    source = other.state_in(min(segment if other_segment is None else other_segment, other.num_segments - 1))
    return intervene(trace, segment, "replace", f"slot {slot} from another trace before segment {segment}",
                     part=slot, source=source)
