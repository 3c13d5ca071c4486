"""Task generators: bAbI-style fact recall in book noise, and the algorithmic tasks."""

from __future__ import annotations

from . import algorithmic, babi
from .algorithmic import make_task_batch, segment_size_for, sequence_length, symbol_tokenizer
from .babi import (CHANCE, EncodedSample, FactSample, build_sample, dense_story, encode_dense_story, encode_sample, make_batch, make_dense_batch, shortcut_accuracy, solve)

__all__ = [
    "algorithmic", "babi",
    "make_task_batch", "segment_size_for", "sequence_length", "symbol_tokenizer",
    "CHANCE", "EncodedSample", "FactSample", "build_sample", "dense_story", "encode_dense_story",
    "encode_sample", "make_batch", "make_dense_batch", "shortcut_accuracy", "solve",
]
