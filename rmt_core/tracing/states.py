"""States rebuilt from stored writes: for a memory type whose trace keeps each segment's write
(MemoryType.write_spec, e.g. the associative memory: its memory tokens' block outputs) instead
of its state (an associative state is 30-50 times larger than one segment's write).

The state entering segment s is the initial state with the writes of segments 0..s-1 applied
by the memory type's own update (MemoryType.apply_write), so it equals the traced state (the
same code on the same inputs; tests/test_armt_trace.py: replay from it gives the traced logits).
Rebuilding walks forward from the nearest state kept: every `every`-th state is kept (at most
about MAX_KEPT of them), so reaching any segment costs at most `every` updates after the first walk.
"""
from __future__ import annotations

import threading
from typing import Any, Iterator

import numpy as np
import torch

from ..errors import TraceError

MAX_KEPT = 64  # states kept per trace (an associative state of the shipped size is about 0.6 MB)


class StateRebuilder:
    """State arrays of a trace whose segments hold `state_write` (see the module docstring)."""

    def __init__(self, trace, segments: int | None = None) -> None:
        """segments: how many segments the trace will have (a recorder knows it before they exist;
        default: the trace's own count at first use): it sets how often a state is kept."""
        self.trace = trace
        self._segments = segments
        self._kept: dict[int, Any] = {}  # segment index -> the state entering it (memory type's form, batch 1)
        self._lock = threading.Lock()  # app sessions share a trace

    def every(self) -> int:
        """Every how many segments a state is kept (at most about MAX_KEPT of them)."""
        if self._segments is None:
            self._segments = self.trace.num_segments
        return max(16, -(-self._segments // MAX_KEPT))

    def offer(self, index: int, state: Any) -> None:
        """The state entering segment `index` as it ran (a recorder's, batch 1): kept when it is one of
        the states kept anyway, so that a trace just recorded rebuilds nothing to reach it."""
        if index % self.every() == 0 and self.trace.carries_memory:
            with self._lock:
                self._kept[index] = state

    def check_writes(self, memory, index: int) -> dict[str, np.ndarray]:
        """Segment `index`'s write arrays, checked against the memory type's write_spec and the model's sizes."""
        writes = self.trace.segments[index].state_write
        spec = memory.write_spec()
        if writes is None or spec is None or set(writes) != set(spec):
            raise TraceError(f"Segment {index} of this trace holds no write of the {memory.name!r} memory "
                             f"(it has {sorted(writes or {})}, the memory type writes {sorted(spec or {})}).")
        return writes

    def steps_to(self, index: int) -> int:
        """How many writes state_in(index) applies now: from the nearest state kept at or before
        `index` (0 with memory reset: every segment enters the initial state)."""
        if not self.trace.carries_memory:
            return 0
        with self._lock:
            start = max((s for s in self._kept if s <= index), default=0)
        return max(0, int(index) - start)

    @torch.no_grad()
    def state_in(self, index: int) -> Any:
        """The state entering segment `index` (0..S-1; with carried memory also S, the state after the
        last segment), in the memory type's own form, batch 1: with memory reset (Trace.carries_memory
        False) the initial state. Raises TraceError without the model attached."""
        model = self.trace.require_model("rebuilding the memory state from its stored writes")
        memory = model.memory
        if not self.trace.carries_memory:
            return memory.initial_state(1)
        with self._lock:
            start = max((s for s in self._kept if s <= index), default=None)
            state = memory.initial_state(1) if start is None else self._kept[start]
            start = 0 if start is None else start
        every = self.every()
        for s in range(start, index):
            state = memory.apply_write(state, self.check_writes(memory, s))
            if (s + 1) % every == 0:
                with self._lock:
                    self._kept[s + 1] = state
        return state

    def prepare(self) -> Iterator[int]:
        """Rebuild ahead: the states kept anyway (every `every`-th) up to the last segment's, one chunk
        of `every` writes at a time (yields the segment reached after each chunk), so that a front
        end can do it in the background and let other work run between chunks. Afterwards reaching
        any segment costs at most `every` updates. Nothing to do with memory reset."""
        if not self.trace.carries_memory or not self.trace.segments:
            return
        every, last = self.every(), self.trace.num_segments - 1
        for end in range(every, last + every, every):
            self.state_in(min(end, last))
            yield min(end, last)

    def arrays_in(self, index: int) -> dict[str, np.ndarray]:
        """state_in(index) as named float32 arrays (MemoryType.state_to_arrays)."""
        return self.trace.require_model().memory.state_to_arrays(self.state_in(index))

    @torch.no_grad()
    def arrays_out(self, index: int) -> dict[str, np.ndarray]:
        """The state segment `index` wrote (its write applied to the state entering it), as named arrays."""
        memory = self.trace.require_model("rebuilding the memory state from its stored writes").memory
        if self.trace.carries_memory:
            return memory.state_to_arrays(self.state_in(index + 1))
        return memory.state_to_arrays(memory.apply_write(self.state_in(index), self.check_writes(memory, index)))

    def walk(self, first: int = 0, last: int | None = None):
        """Yield (s, state entering s, state after s) for s = first..last (default: the last segment),
        rebuilding each state once (with memory reset every segment enters the initial state). Grad is
        off while a state is rebuilt, never across a yield: the caller's grad mode stays its own, also
        with two walks interleaved (compare.state_distances)."""
        model = self.trace.require_model("rebuilding the memory state from its stored writes")
        last = self.trace.num_segments - 1 if last is None else last
        state = self.state_in(first)
        every = self.every()
        for s in range(first, last + 1):
            with torch.no_grad():
                after = model.memory.apply_write(state, self.check_writes(model.memory, s))
            if (s + 1) % every == 0 and self.trace.carries_memory:
                with self._lock:
                    self._kept[s + 1] = after
            yield s, state, after
            if self.trace.carries_memory:
                state = after
            else:
                with torch.no_grad():
                    state = model.memory.initial_state(1)
