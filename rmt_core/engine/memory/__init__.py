"""Memory types: the one seam every kind of recurrent memory plugs into.

    base.py      MemoryType (the protocol: state, running one segment, named arrays, labels,
                 edits, the memory_options it reads: MemoryOption), SegmentRow (what the backbone sees), SegmentOutput,
                 StateHistory (how forward may keep a type's states other than as a list)
    registry.py  register_memory(name, cls) / memory_class(name) / known_memories()
    tokens.py    TokenMemory ("tokens"): the RMT's m slots in [read | tokens | write]
    associative.py  AssociativeMemory ("associative"): ARMT, [tokens | memory tokens] and a
                 per-layer associative state (A, z) read into every token, written by the memory tokens

Add a memory type: subclass MemoryType in your own module, register_memory("name", cls), and
build the model with RMTConfig(memory="name"). Nothing inside rmt_core needs an edit.
"""
from __future__ import annotations

from .base import (EDITS, MEMORY_PROBE, REUSE_STATE, MemoryOption, MemoryProbe, MemoryType, SegmentOutput, SegmentRow,
                   State, StateArrays, StateHistory, concat_states, map_state, segment_keeps, state_sample,
                   state_tensors)
from .registry import known_memories, memory_class, register_memory
from .tokens import TokenMemory
from .associative import AssociativeMemory

register_memory("tokens", TokenMemory)
register_memory("associative", AssociativeMemory)

__all__ = ["AssociativeMemory", "EDITS", "MEMORY_PROBE", "MemoryOption", "MemoryProbe", "MemoryType", "REUSE_STATE",
           "SegmentOutput", "SegmentRow", "concat_states", "segment_keeps", "state_sample",
           "State", "StateArrays", "StateHistory", "TokenMemory", "known_memories", "map_state", "memory_class",
           "register_memory", "state_tensors"]
