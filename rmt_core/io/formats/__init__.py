"""Checkpoints written by other RMT code, read into RMT Lens's own tensor names.

    files.py    where the weights of a folder or file are and how they are stored
                (safetensors, sharded safetensors, pickled .bin / sharded .bin, a .pth
                training dict), read behind the pickle opt-in
    detect.py   which trainer wrote a state dict (from its tensor names), and the
                refusal for the ones RMT Lens cannot run (lucidrains, a plain backbone, ...)
    authors.py  the authors' MemoryCell + RecurrentWrapper (booydar/recurrent-memory-transformer):
                memory and backbone tensors, their defaults, legacy buffers, wrap_pos
    armt.py     the authors' ARMT (AssociativeRecurrentWrapper, ARMTForCausalLM): layout read off
                the tensor names and shapes, RMT Lens's names, the settings shown / asked / assumed,
                the variants refused by name (ACT, sink token, sliding window)

rmt_core.io.checkpoint.load is the one entry point that uses them.
"""
from __future__ import annotations

from . import armt
from .detect import ARMT, AUTHORS, FORMAT_NAMES, detect_format, refuse_unsupported
from .files import WeightFiles, find_weights, read_tensors, tensor_shapes

__all__ = [
    "ARMT", "AUTHORS", "FORMAT_NAMES", "armt", "detect_format", "refuse_unsupported",
    "WeightFiles", "find_weights", "read_tensors", "tensor_shapes",
]
