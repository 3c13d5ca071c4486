"""Capabilities, not assumptions: what an explain component, figure, tour step or app page
needs of a trace's memory, and a sentence saying why it is missing.

A component declares a Needs (which memory types, whether it needs slots in the row, the
model attached, an edit the memory type supports); Needs.missing(trace) is None when the
trace has all of it, else the reason, in words a user can act on. The app shows only what
works for the loaded model and says why the rest is missing (e.g. a toy or ARMT memory has no
read / write slots, so read / write attribution and the slots' logit lens are not offered).
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Needs:
    """memory_types: the memory types supported (None: every type). slots: needs read / write
    slots in the segment row (TokenMemory with m > 0; Trace.has_slots). vectors: needs the memory
    state as vectors (Trace.memory_states: not a memory whose state is a matrix per layer, the
    associative one). model: needs the model attached (to recompute). edit: an edit the memory
    type must support (MemoryType.supported_edits)."""

    memory_types: tuple[str, ...] | None = None
    slots: bool = False
    model: bool = False
    edit: str | None = None
    vectors: bool = False

    def missing(self, trace) -> str | None:
        """None when `trace` (a Trace) has what this needs; else one sentence saying what is missing."""
        kind = trace.memory_type
        if self.memory_types is not None and kind not in self.memory_types:
            return (f"It supports the memory types {', '.join(self.memory_types)}; this model's memory is "
                    f"{kind!r}.")
        if self.slots and not trace.has_slots:
            why = "it has no memory slots (num_mem_tokens = 0)" if kind == "tokens" else \
                f"its memory type {kind!r} has no read / write slots in the segment row"
            return f"It reads the read / write memory slots, and {why}."
        if self.vectors and trace.stores_writes:
            return (f"It shows memory as vectors, and the {kind!r} memory's state is a matrix per layer (see its "
                    "state size, write strength and novelty on the Memory page).")
        if (self.model or self.edit) and trace.model is None:
            return "It recomputes the model: load the trace with the checkpoint it was made with."
        if self.edit is not None and self.edit not in trace.model.memory.supported_edits:
            return (f"The memory type {kind!r} supports the edits {list(trace.model.memory.supported_edits)}, "
                    f"not {self.edit!r}.")
        return None

    def supports(self, trace) -> bool:
        return self.missing(trace) is None


ANY = Needs()
SLOTS = Needs(slots=True)
VECTORS = Needs(vectors=True)
