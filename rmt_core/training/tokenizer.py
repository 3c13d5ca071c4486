"""Tokenizers: byte-level BPE for book text + bAbI facts, WordLevel for symbol tasks.

Both kinds are ``transformers`` fast tokenizers that save with ``save_pretrained(dir)``
and load back, offline, with ``AutoTokenizer.from_pretrained(dir)``.
"""

from __future__ import annotations

from typing import Iterable, Iterator, Sequence

import numpy as np
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from ..errors import ArgumentError, RMTLensError
from .tasks.babi import ACTORS, MOVE_VERBS, OBJECTS, PLACES, dense_story

EOS_TOKEN = "<|endoftext|>"
DEFAULT_VOCAB_SIZE = 4096
DEFAULT_SEED = 1234

# Strings that must each be exactly ONE token of a trained BPE tokenizer.  Actors
# occur after a space and at the start of a line; places and objects always after a
# space (answers are " office"); plus the words of the question block.
TASK_WORDS: tuple[str, ...] = (
    *(" " + a for a in ACTORS),
    *ACTORS,
    *(" " + p for p in PLACES),
    *(" " + o for o in OBJECTS),
    *(" " + v for v in MOVE_VERBS),
    "Question",
    "Answer",
    " Where",
    " is",
    " the",
    " to",
)


class TokenizerTrainingError(RMTLensError, RuntimeError):
    """A trained tokenizer failed its checks (e.g. a task word is not one token)."""


def task_text(n_chars: int, seed: int = DEFAULT_SEED) -> str:
    """About ``n_chars`` of deterministic bAbI text (qa1 and qa2 stories, inline Q/A)."""
    rng = np.random.default_rng(seed)
    parts: list[str] = []
    total = 0
    while total < n_chars:
        task = "qa2" if rng.random() < 0.5 else "qa1"
        story = dense_story(rng, task, n_facts=int(rng.integers(4, 12)), n_questions=int(rng.integers(1, 4)))
        parts.append(story)
        total += len(story) + 2
    return "\n\n".join(parts)


def _wrap_bpe(tok: Tokenizer) -> PreTrainedTokenizerFast:
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=EOS_TOKEN,
        eos_token=EOS_TOKEN,
        pad_token=EOS_TOKEN,
        unk_token=EOS_TOKEN,
        clean_up_tokenization_spaces=False,
        model_max_length=1 << 30,
    )


def task_word_problems(tokenizer: PreTrainedTokenizerFast, words: Sequence[str] = TASK_WORDS) -> dict[str, list[str]]:
    """Task words that are NOT single tokens, mapped to the pieces they split into."""
    backend = tokenizer.backend_tokenizer
    bad = {}
    for w in words:
        toks = backend.encode(w, add_special_tokens=False).tokens
        if len(toks) != 1:
            bad[w] = toks
    return bad


def _train_bpe(texts: Sequence[str], vocab_size: int) -> Tokenizer:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=[EOS_TOKEN],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_chunks(texts), trainer=trainer, length=None)
    return tok


def _chunks(texts: Iterable[str], size: int = 1 << 16) -> Iterator[str]:
    """Yield texts in pieces cut at newlines (keeps memory and batches small)."""
    for t in texts:
        i = 0
        while i < len(t):
            j = t.find("\n", i + size)
            j = len(t) if j < 0 else j + 1
            yield t[i:j]
            i = j


def train_tokenizer(
    texts: Iterable[str],
    vocab_size: int = DEFAULT_VOCAB_SIZE,
    seed: int = DEFAULT_SEED,
) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE tokenizer on ``texts`` plus generated bAbI text.

    The bAbI text (5% of the corpus size, at least 60k characters) is
    added so that every entry of :data:`TASK_WORDS` becomes a single token; if one
    is not after training, the bAbI share is doubled and training repeated (twice
    at most), then :class:`TokenizerTrainingError` is raised.  Byte-level, so any
    string that can be UTF-8 encoded round-trips through encode/decode.
    ``<|endoftext|>`` is the bos, eos, pad and unk token (id 0).  Deterministic
    for the same inputs and ``seed``.
    """
    texts = [t for t in texts]
    n_corpus = sum(len(t) for t in texts)
    if vocab_size < 256 + 1 + len(TASK_WORDS):
        raise ArgumentError(f"vocab_size={vocab_size} is too small for a byte-level BPE with the task words")
    share = max(60_000, n_corpus // 20)
    problems: dict[str, list[str]] = {}
    for _round in range(3):
        tok = _wrap_bpe(_train_bpe(texts + [task_text(share, seed)], vocab_size))
        problems = task_word_problems(tok)
        if not problems:
            return tok
        share *= 2
    raise TokenizerTrainingError(
        "after training, these task words are not single tokens: "
        + ", ".join(f"{w!r}->{p}" for w, p in problems.items())
        + f"; use a larger vocab_size than {vocab_size}"
    )


def train_default_tokenizer(vocab_size: int = DEFAULT_VOCAB_SIZE) -> PreTrainedTokenizerFast:
    """The project tokenizer: :func:`train_tokenizer` on the training novels (deterministic)."""
    from .corpus import load_corpus

    return train_tokenizer([load_corpus("train")], vocab_size=vocab_size, seed=DEFAULT_SEED)


_SPECIAL_ROLES = {
    "<pad>": "pad_token",
    "<unk>": "unk_token",
    "<sep>": "sep_token",
    "<eos>": "eos_token",
    "<bos>": "bos_token",
    "<mask>": "mask_token",
    "<cls>": "cls_token",
}


def build_symbol_tokenizer(symbols: list[str], specials: list[str]) -> PreTrainedTokenizerFast:
    """A WordLevel tokenizer over whitespace-separated symbols.

    Ids: ``specials`` first (in order), then ``symbols``.  Specials named
    ``<pad> <unk> <sep> <eos> <bos> <mask> <cls>`` take that role; ``<unk>`` is added
    if missing.  ``decode`` joins tokens with single spaces.
    """
    specials = list(dict.fromkeys(specials))
    if "<unk>" not in specials:
        specials.append("<unk>")
    vocab: dict[str, int] = {}
    for s in [*specials, *symbols]:
        if any(c.isspace() for c in s) or not s:
            raise ArgumentError(f"symbol {s!r} must be non-empty and contain no whitespace")
        if s in vocab:
            raise ArgumentError(f"duplicate symbol {s!r}")
        vocab[s] = len(vocab)
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.add_special_tokens(specials)  # already in the vocab: only marks them special
    roles = {role: s for s, role in _SPECIAL_ROLES.items() if s in specials}
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        clean_up_tokenization_spaces=False,
        model_max_length=1 << 30,
        **roles,
    )


__all__ = [
    "EOS_TOKEN",
    "DEFAULT_VOCAB_SIZE",
    "TASK_WORDS",
    "TokenizerTrainingError",
    "build_symbol_tokenizer",
    "task_text",
    "task_word_problems",
    "train_default_tokenizer",
    "train_tokenizer",
]
