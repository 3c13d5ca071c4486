"""The RMT paper's algorithmic tasks: copy, reverse, associative retrieval.

Token formats (whitespace-separated symbols of :func:`symbol_tokenizer`):

* ``copy``, N symbols from the 8-symbol vocab ``a``..``h``::

      s1 s2 ... sN <sep> s1 s2 ... sN            length 2N + 1

* ``reverse``::

      s1 s2 ... sN <sep> sN ... s2 s1            length 2N + 1

* ``retrieval`` (associative retrieval), N = number of key-value pairs; keys are
  distinct letters ``a``..``h``, values digits ``0``..``9``; then a query key (one of
  the keys) and its value::

      k1 v1 k2 v2 ... kN vN q v(q)               length 2N + 2

``labels`` equal ``input_ids`` on the target positions (the N symbols after
``<sep>``; the final value for retrieval) and -100 elsewhere; the model's loss shifts
them, as for a causal LM.  Reference settings: copy/reverse N=24, retrieval N=4.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import numpy as np

SYMBOLS: tuple[str, ...] = tuple("abcdefgh")
VALUES: tuple[str, ...] = tuple("0123456789")
SPECIALS: tuple[str, ...] = ("<pad>", "<sep>", "<unk>")
TASKS: tuple[str, ...] = ("copy", "reverse", "retrieval")
DEFAULT_N: dict[str, int] = {"copy": 24, "reverse": 24, "retrieval": 4}
_ALIASES = {"associative_retrieval": "retrieval", "ar": "retrieval", "assoc": "retrieval"}
IGNORE_INDEX = -100


def canonical_task(task: str) -> str:
    """Task name with aliases resolved ("ar", "associative_retrieval" -> "retrieval")."""
    t = _ALIASES.get(task, task)
    if t not in TASKS:
        raise ValueError(f"unknown algorithmic task {task!r}; choose one of {', '.join(TASKS)}")
    return t


@functools.lru_cache(maxsize=1)
def symbol_tokenizer() -> Any:
    """WordLevel tokenizer of these tasks: ``<pad>`` 0, ``<sep>`` 1, ``<unk>`` 2, letters, digits."""
    from ..tokenizer import build_symbol_tokenizer

    return build_symbol_tokenizer(list(SYMBOLS) + list(VALUES), list(SPECIALS))


def resolve_n_symbols(task: str, n_symbols: int | None) -> int:
    """N of the module docstring for a canonical ``task``: ``n_symbols``, or the task's default
    (:data:`DEFAULT_N`) when None.

    Raises ``ValueError`` for N < 1, or more retrieval pairs than there are distinct keys (8).
    """
    n = DEFAULT_N[task] if n_symbols is None else int(n_symbols)
    if n < 1:
        raise ValueError("n_symbols must be >= 1")
    if task == "retrieval" and n > len(SYMBOLS):
        raise ValueError(f"retrieval needs distinct keys: at most {len(SYMBOLS)} pairs, got {n}")
    return n


def sequence_length(task: str, n_symbols: int | None = None) -> int:
    """Tokens in one sample: 2N+1 for copy/reverse, 2N+2 for retrieval."""
    task = canonical_task(task)
    n = resolve_n_symbols(task, n_symbols)
    return 2 * n + 2 if task == "retrieval" else 2 * n + 1


def segment_size_for(task: str, n_symbols: int | None, n_segments: int) -> int:
    """Segment size that cuts one whole sample into exactly ``n_segments`` segments.

    Returns ceil(T / n_segments) for a sample of T tokens (the last segment may be
    shorter); raises ValueError when no segment size gives exactly that many.
    """
    if n_segments < 1:
        raise ValueError("n_segments must be >= 1")
    T = sequence_length(task, n_symbols)
    size = math.ceil(T / n_segments)
    if math.ceil(T / size) != n_segments:
        raise ValueError(f"a {T}-token {task} sample cannot be cut into exactly {n_segments} equal-size segments")
    return size


def make_task_batch(
    task: str,
    n_symbols: int | None = None,
    batch_size: int = 32,
    rng: np.random.Generator | None = None,
    tokenizer: Any | None = None,
) -> dict[str, Any]:
    """A batch of ``task`` samples: ``input_ids`` and ``labels``, torch.long (B, T).

    ``n_symbols`` is N of the module docstring (default 24, or 4 pairs for
    retrieval); ``tokenizer`` defaults to :func:`symbol_tokenizer`.  All rows have
    the same length :func:`sequence_length`; no padding.
    """
    import torch

    task = canonical_task(task)
    n = resolve_n_symbols(task, n_symbols)
    rng = rng if rng is not None else np.random.default_rng()
    tok = tokenizer if tokenizer is not None else symbol_tokenizer()
    sym = np.asarray(tok.convert_tokens_to_ids(list(SYMBOLS)), dtype=np.int64)
    val = np.asarray(tok.convert_tokens_to_ids(list(VALUES)), dtype=np.int64)
    sep = int(tok.convert_tokens_to_ids("<sep>"))
    B = batch_size
    if task in ("copy", "reverse"):
        src = sym[rng.integers(0, len(SYMBOLS), size=(B, n))]
        tgt = src if task == "copy" else src[:, ::-1]
        ids = np.concatenate([src, np.full((B, 1), sep), tgt], axis=1)
        n_target = n
    else:
        keys = np.argsort(rng.random((B, len(SYMBOLS))), axis=1)[:, :n]
        vals = rng.integers(0, len(VALUES), size=(B, n))
        q = rng.integers(0, n, size=B)
        pairs = np.stack([sym[keys], val[vals]], axis=2).reshape(B, 2 * n)
        rows = np.arange(B)
        ids = np.concatenate([pairs, sym[keys[rows, q]][:, None], val[vals[rows, q]][:, None]], axis=1)
        n_target = 1
    labels = np.full_like(ids, IGNORE_INDEX)
    labels[:, -n_target:] = ids[:, -n_target:]
    return {"input_ids": torch.from_numpy(np.ascontiguousarray(ids)), "labels": torch.from_numpy(labels)}


__all__ = [
    "SYMBOLS", "VALUES", "SPECIALS", "TASKS", "DEFAULT_N", "IGNORE_INDEX",
    "canonical_task", "resolve_n_symbols", "symbol_tokenizer", "sequence_length", "segment_size_for", "make_task_batch",
]
