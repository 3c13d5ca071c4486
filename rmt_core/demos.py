"""Demo inputs and the untrained fallback model: what a front end (the app, a notebook) shows
before the user brings their own document or checkpoint, as public names.

The data and the tasks live in the trainer (rmt_core.training: corpus, tokenizer, tasks/); this
module is the public door to the few pieces a front end needs, so that the app never imports
training code (tests/test_layers.py checks the app's imports).

* :data:`ALGORITHMIC_TASKS` — the symbolic tasks (copy, reverse, retrieval): a model trained on
  one reads symbols, not prose.
* :func:`make_task_batch` — a batch of one of those tasks (rmt_core.training.tasks.algorithmic).
* :func:`fact_recall_sample` — a bAbI-style sample in held-out book text whose fact sits in the
  first half of the document, so that memory must carry it to the question.
* :func:`book_excerpt` — a stretch of the held-out novel (Persuasion), starting at a sentence.
* :func:`copy_task_text` — a copy-task document ("a b c ... <sep> a b c ...").
* :func:`fallback_model` — a small untrained RMT with a tokenizer trained on the held-out text.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from .token_text import encode_ids
from .training.tasks.algorithmic import SYMBOLS, make_task_batch
from .training.tasks.algorithmic import TASKS as ALGORITHMIC_TASKS
from .training.tasks.babi import FactSample

FALLBACK_DESCRIPTION = "untrained fallback"


def fact_recall_sample(tokenizer: Any, segment_size: int, n_segments: int = 8, seed: int = 7,
                       task: str = "detect", tries: int = 50) -> FactSample:
    """A fact-recall sample of `n_segments` segments of `segment_size` tokens (text + answer, in
    tokens of `tokenizer`) cut from the held-out novel, its last segment kept free of facts.
    Up to `tries` samples are drawn (numpy generator seeded with `seed`); the first whose fact
    starts within the first half of the document (in tokens) is returned, else the last drawn.
    Returns a FactSample (text ends with the question; answer: " office"; facts: character spans).
    Raises ValueError for an unknown `task` (rmt_core.training.tasks.babi.TASKS)."""
    from .training.corpus import load_corpus
    from .training.tasks import babi

    rng = np.random.default_rng(seed)
    for _ in range(tries):
        sample = babi.build_sample(load_corpus("heldout"), n_segments * segment_size, task, rng, tokenizer,
                                   keep_out_tail=segment_size)
        prefix_tokens = len(encode_ids(tokenizer, sample.text[:sample.facts[0][0]]))
        if prefix_tokens < n_segments // 2 * segment_size:
            break
    return sample


def book_excerpt(start: int = 20_000, chars: int = 6_000) -> str:
    """`chars` characters of the held-out novel (Persuasion, never trained on), from the first
    sentence start at or after character `start`."""
    from .training.corpus import load_corpus, sentence_boundaries

    text = load_corpus("heldout")
    starts = sentence_boundaries(text)
    first = int(starts[np.searchsorted(starts, start)])
    return text[first:first + chars]


def copy_task_text(seed: int = 7, n_symbols: int = 24) -> str:
    """A copy-task document: `n_symbols` random symbols (SYMBOLS, numpy generator seeded with
    `seed`), the separator, then the same symbols again, space-separated."""
    rng = np.random.default_rng(seed)
    source = " ".join(rng.choice(list(SYMBOLS), n_symbols))
    return f"{source} <sep> {source}"


def fallback_model(vocab_size: int = 2048):
    """A small untrained RMTModel (GPT-2 backbone: 2 layers, hidden size 64, 128 positions; 4
    memory slots, segments of 32 tokens) with a byte-level BPE tokenizer of `vocab_size` trained
    on the first 300,000 characters of the held-out novel; seeded (torch.manual_seed(0)), in eval
    mode. For a front end that has no shipped checkpoint to show; its answers mean nothing."""
    import torch

    from .engine.backbones import backbone_from_config, gpt2_config
    from .engine.config import RMTConfig
    from .engine.model import RMTModel
    from .training.corpus import load_corpus
    from .training.tokenizer import train_tokenizer

    tokenizer = train_tokenizer([load_corpus("heldout")[:300_000]], vocab_size=vocab_size)
    torch.manual_seed(0)
    backbone = backbone_from_config(gpt2_config(len(tokenizer), n_layer=2, n_embd=64, n_positions=128))
    model = RMTModel.from_backbone(backbone, RMTConfig(num_mem_tokens=4, segment_size=32,
                                                       description=FALLBACK_DESCRIPTION), tokenizer=tokenizer)
    return model.eval()


__all__ = ["ALGORITHMIC_TASKS", "make_task_batch", "fact_recall_sample", "book_excerpt", "copy_task_text",
           "fallback_model", "FALLBACK_DESCRIPTION", "SYMBOLS"]
