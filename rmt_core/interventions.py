"""Memory interventions: edit the memory entering a segment and re-run the rest of the document.

Each returns the per-segment loss before and after and, on fact-recall documents, the
answer before and after (the prediction at the document's second-to-last token).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from .checks import check_int
from .errors import ArgumentError, TraceArgumentError, TraceError
from .token_text import decode_token
from .trace import Trace, segment_loss, token_logprobs


@dataclass
class InterventionResult:
    name: str
    segment: int
    loss_before: np.ndarray  # (S,)
    loss_after: np.ndarray  # (S,)
    answer_before: str | None
    answer_after: str | None
    p_answer_before: float | None  # probability of the document's final token (the answer) before / after
    p_answer_after: float | None

    @property
    def loss_change(self) -> np.ndarray:
        return self.loss_after - self.loss_before

    @property
    def answer_changed(self) -> bool:
        return self.answer_before != self.answer_after


@torch.no_grad()
def intervene(trace: Trace, segment: int, edit: Callable[[np.ndarray], np.ndarray], name: str) -> InterventionResult:
    """Replace the memory entering `segment` by edit(memory_in) and re-run to the end."""
    model = trace.model
    if model is None:
        raise TraceError("Interventions need the model the trace was made with: Trace.load(path, model=...).")
    segment = trace.check_segment(segment)
    edited = np.asarray(edit(trace.segments[segment].memory_in.copy()), dtype=np.float32)
    if edited.shape != trace.segments[segment].memory_in.shape:
        raise ArgumentError(f"edit must return memory of shape {trace.segments[segment].memory_in.shape} "
                            f"(slots, hidden size), got {edited.shape}.")
    memory = torch.as_tensor(edited, device=model.device).to(model.dtype).unsqueeze(0)
    before = trace.losses()
    after = before.copy()
    carry = None
    if segment > 0:  # the previous segment's last prediction is not affected by the edit
        prev = trace.segments[segment - 1]
        ids_prev = torch.as_tensor(prev.token_ids, dtype=torch.long, device=model.device).unsqueeze(0)
        out = model.run_segment(torch.as_tensor(prev.memory_in, device=model.device).to(model.dtype).unsqueeze(0),
                                ids_prev, segment_index=segment - 1)
        carry = torch.log_softmax(out.logits[0, -1].float(), dim=-1)
    last_logprobs = None
    for seg in trace.segments[segment:]:
        ids = torch.as_tensor(seg.token_ids, dtype=torch.long, device=model.device).unsqueeze(0)
        out = model.run_segment(memory, ids, segment_index=seg.index)
        logprobs, token_lp = token_logprobs(out.logits[0], ids[0], carry)
        after[seg.index] = segment_loss(token_lp)
        carry, last_logprobs = logprobs[-1], logprobs
        memory = out.memory_out if out.memory_out is not None else memory
    answer_before, p_before = _final_answer(trace, None)
    answer_after, p_after = _final_answer(trace, last_logprobs)
    return InterventionResult(name, segment, before, after, answer_before, answer_after, p_before, p_after)


def _final_answer(trace: Trace, logprobs: torch.Tensor | None) -> tuple[str | None, float | None]:
    """Top prediction at the second-to-last token and the probability of the last token."""
    last = trace.segments[-1]
    if last.num_tokens < 2:
        return None, None
    tokenizer = trace.model.tokenizer
    def decode(i: int) -> str:
        return decode_token(tokenizer, int(i)).strip()

    if logprobs is None:
        top = int(last.topk_ids[-2, 0])
        return decode(top), float(np.exp(last.token_logprob[-1]))
    row = logprobs[-2]
    return decode(int(row.argmax())), float(row[int(last.token_ids[-1])].exp())


def reset_memory(trace: Trace, segment: int) -> InterventionResult:
    """Memory entering `segment` set to the model's learned initial memory."""
    initial = trace.model.initial_memory.detach().float().cpu().numpy()
    return intervene(trace, segment, lambda _: initial, f"reset memory before segment {segment}")


def zero_memory(trace: Trace, segment: int) -> InterventionResult:
    return intervene(trace, segment, np.zeros_like, f"zero memory before segment {segment}")


def shuffle_slots(trace: Trace, segment: int, seed: int = 0) -> InterventionResult:
    order = np.random.default_rng(seed).permutation(trace.num_mem_tokens)
    if np.array_equal(order, np.arange(trace.num_mem_tokens)):  # a shuffle that moves nothing is no test
        order = np.roll(order, 1)
    return intervene(trace, segment, lambda mem: mem[order], f"shuffle slots before segment {segment}")


def replace_slot(trace: Trace, segment: int, slot: int, other: Trace, other_segment: int | None = None) -> InterventionResult:
    """Slot `slot` of the memory entering `segment` replaced by the same slot from another trace."""
    if other.num_mem_tokens != trace.num_mem_tokens:
        raise TraceError("The other trace comes from a model with another number of memory slots.")
    segment = trace.check_segment(segment)
    slot = check_int(slot, "slot", 0, trace.num_mem_tokens - 1, fix=f"The model has {trace.num_mem_tokens} memory slots.",
                     error=TraceArgumentError)
    if other_segment is not None:
        other_segment = other.check_segment(other_segment, "other_segment")
    source = other.segments[min(segment if other_segment is None else other_segment, other.num_segments - 1)].memory_in

    def edit(mem: np.ndarray) -> np.ndarray:
        mem[slot] = source[slot]
        return mem

    return intervene(trace, segment, edit, f"slot {slot} from another trace before segment {segment}")
