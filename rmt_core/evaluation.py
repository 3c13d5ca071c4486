"""Held-out evaluation: fact recall, the paper's algorithmic tasks, language modelling.

Every evaluation runs the same inputs twice: with memory carried from segment to
segment, and with the memory reset to its initial value before every segment (the
no-memory baseline).  The gap between the two is what the memory contributes.
Functions return plain rows (dicts) that :func:`format_table` and
:func:`markdown_table` print; nothing here prints.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .errors import RMTLensError
from .model import RMTModel

Progress = Callable[[int, int], Any]

FACT_TASKS: tuple[str, ...] = ("memorize", "detect", "qa1", "qa2")
ALGORITHMIC_TASKS: tuple[str, ...] = ("copy", "reverse", "retrieval")

# Paper numbers (per-character test accuracy; docs/rmt-reference.md section 4), valid
# for the paper's sizes only: copy/reverse 24 symbols, retrieval 4 pairs.
# (task, segments) -> (no-memory baseline, RMT)
PAPER_ALGORITHMIC: dict[tuple[str, int], tuple[float, float]] = {
    ("copy", 3): (0.12, 1.0),
    ("copy", 6): (0.10, 1.0),
    ("copy", 9): (0.10, 1.0),
    ("reverse", 2): (0.10, 1.0),
    ("reverse", 4): (0.10, 1.0),
    ("reverse", 6): (0.10, 0.90),
    ("retrieval", 2): (0.50, 0.99),
    ("retrieval", 3): (0.50, 1.0),
    ("retrieval", 4): (0.10, 0.99),
    ("retrieval", 5): (0.10, 0.97),
}
PAPER_N_SYMBOLS: dict[str, int] = {"copy": 24, "reverse": 24, "retrieval": 4}


class EvaluationError(RMTLensError, ValueError):
    """An evaluation cannot run as asked (wrong task, model without tokenizer, too short...)."""


# ---------------------------------------------------------------------- helpers
def _check_tokenizer(model: RMTModel) -> Any:
    tokenizer = model.tokenizer
    if tokenizer is None:
        raise EvaluationError(
            "The model has no tokenizer: put the tokenizer files beside its weights (save_pretrained writes them)."
        )
    if len(tokenizer) > model.vocab_size:
        raise EvaluationError(
            f"The tokenizer has {len(tokenizer)} tokens but the model's vocabulary holds {model.vocab_size}."
        )
    return tokenizer


def _encode(tokenizer: Any, text: str) -> list[int]:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        return list(backend.encode(text, add_special_tokens=False).ids)
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def _default_haystack() -> str:
    from .corpus import load_corpus

    return load_corpus("heldout")


class _Tracker:
    """Counts finished units and calls progress(done, total)."""

    def __init__(self, progress: Progress | None, total: int) -> None:
        self.progress, self.total, self.done = progress, total, 0

    def add(self, n: int) -> None:
        self.done += n
        if self.progress is not None:
            self.progress(self.done, self.total)


# ---------------------------------------------------------------------- fact recall
@torch.no_grad()
def evaluate_fact_recall(
    model: RMTModel,
    task: str = "detect",
    segments: Sequence[int] = (1, 2, 4, 8, 16, 32),
    samples: int = 500,
    haystack: str | None = None,
    seed: int = 0,
    batch_size: int = 16,
    progress: Progress | None = None,
) -> list[dict[str, Any]]:
    """Answer accuracy on held-out bAbI-in-book samples, per number of segments.

    For each n in ``segments``: ``samples`` samples of n x segment_size tokens (facts
    kept out of the last segment when n > 1), each run with memory and with the memory
    reset before every segment (same samples).  Accuracy = the argmax over the whole
    vocabulary at the position before the answer is the answer token.  Rows hold
    task, segments, tokens, samples, accuracy_memory, accuracy_reset, shortcut (how
    often "the last place mentioned" is right) and chance.
    """
    from .tasks import babi

    if task not in FACT_TASKS:
        raise EvaluationError(f"unknown fact task {task!r}; choose one of {', '.join(FACT_TASKS)}")
    if samples < 1 or batch_size < 1:
        raise EvaluationError("samples and batch_size must be >= 1")
    counts = [int(n) for n in segments]
    if not counts or min(counts) < 1:
        raise EvaluationError(f"segment counts must be >= 1, got {list(segments)}")
    tokenizer = _check_tokenizer(model)
    text = _default_haystack() if haystack is None else haystack
    if not text.strip():
        raise EvaluationError("the haystack text is empty")
    pad_id = babi._pad_id(tokenizer)
    seg = model.config.segment_size
    was_training = model.training
    model.eval()
    tracker = _Tracker(progress, samples * len(counts))
    rows = []
    try:
        for n in counts:
            rng = np.random.default_rng([seed, n])  # a row's samples do not depend on the other rows
            n_tokens = n * seg
            built: list[Any] = []
            hits_memory = hits_reset = 0
            for start in range(0, samples, batch_size):
                chunk = []
                for _ in range(min(batch_size, samples - start)):
                    try:
                        sample = babi.build_sample(text, n_tokens, task, rng, tokenizer, keep_out_tail=seg if n > 1 else 0)
                        chunk.append(babi.encode_sample(sample, tokenizer))
                    except (ValueError, RuntimeError) as exc:
                        raise EvaluationError(f"cannot build {task} samples of {n_tokens} tokens: {exc}") from exc
                    built.append(sample)
                batch = babi.collate(chunk, pad_id)
                hits_memory += _answer_hits(model, batch, reset=False)
                hits_reset += _answer_hits(model, batch, reset=True)
                tracker.add(len(chunk))
            rows.append({
                "task": task,
                "segments": n,
                "tokens": n_tokens,
                "samples": samples,
                "accuracy_memory": hits_memory / samples,
                "accuracy_reset": hits_reset / samples,
                "shortcut": babi.shortcut_accuracy(built),
                "chance": babi.CHANCE,
            })
    finally:
        model.train(was_training)
    return rows


def _answer_hits(model: RMTModel, batch: dict[str, torch.Tensor], reset: bool) -> int:
    """How many samples of a collated batch get the answer token as the argmax."""
    ids = batch["input_ids"].to(model.device)
    mask = batch["attention_mask"].to(model.device)
    logits = model(ids, attention_mask=mask, reset_memory=reset).logits  # (B, T, vocab)
    # The answer is each sample's last real token; the position before it predicts it.
    where = mask.sum(dim=1) - 2  # (B,)
    rows = torch.arange(ids.shape[0], device=ids.device)
    predicted = logits[rows, where].argmax(dim=-1)
    return int((predicted == batch["answer_ids"].to(model.device)).sum())


# ---------------------------------------------------------------------- algorithmic
@torch.no_grad()
def evaluate_algorithmic(
    model: RMTModel,
    task: str = "copy",
    segments: Sequence[int] = (3, 6),
    samples: int = 500,
    n_symbols: int | None = None,
    seed: int = 0,
    batch_size: int = 64,
    progress: Progress | None = None,
) -> list[dict[str, Any]]:
    """Per-character accuracy on the target positions of copy / reverse / retrieval.

    A whole sample is cut into exactly n segments (the segment size is set for the
    run, see training.segment_size_as).  Rows hold task, segments, segment_size,
    samples, accuracy_memory, accuracy_reset, chance, and the paper's no-memory
    baseline and RMT accuracy (paper_baseline, paper_rmt; None where the paper has
    no number or the sample size differs from the paper's).
    """
    from .tasks import algorithmic
    from .training import segment_size_as

    try:
        task = algorithmic.canonical_task(task)
        n = algorithmic._resolve_n(task, n_symbols)
    except ValueError as exc:
        raise EvaluationError(str(exc)) from exc
    if samples < 1 or batch_size < 1:
        raise EvaluationError("samples and batch_size must be >= 1")
    tokenizer = model.tokenizer if model.tokenizer is not None else algorithmic.symbol_tokenizer()
    missing = [s for s in (*algorithmic.SYMBOLS, *algorithmic.VALUES, "<sep>") if s not in tokenizer.get_vocab()]
    if missing:
        raise EvaluationError(
            f"the model's tokenizer lacks the symbols of the {task} task ({', '.join(missing[:5])}...): "
            "evaluate algorithmic tasks with a model trained on them"
        )
    counts = [int(c) for c in segments]
    chance = 1.0 / (len(algorithmic.VALUES) if task == "retrieval" else len(algorithmic.SYMBOLS))
    was_training = model.training
    model.eval()
    tracker = _Tracker(progress, samples * len(counts))
    rows = []
    try:
        for n_seg in counts:
            try:
                size = algorithmic.segment_size_for(task, n, n_seg)
            except ValueError as exc:
                raise EvaluationError(str(exc)) from exc
            limit = model.max_positions
            if limit is not None and model.config.reset_positions and size + 2 * model.config.num_mem_tokens > limit:
                raise EvaluationError(
                    f"{n_seg} segments of a {task} sample need {size}-token segments; with "
                    f"{model.config.num_mem_tokens} memory slots a row is longer than the backbone's {limit} positions"
                )
            rng = np.random.default_rng([seed, n_seg])
            right = {False: 0, True: 0}
            scored = 0
            with segment_size_as(model, size):
                for start in range(0, samples, batch_size):
                    b = algorithmic.make_task_batch(task, n, min(batch_size, samples - start), rng, tokenizer)
                    ids = b["input_ids"].to(model.device)
                    target = b["labels"][:, 1:].to(model.device)
                    keep = target != algorithmic.IGNORE_INDEX
                    for reset in (False, True):
                        predicted = model(ids, reset_memory=reset).logits[:, :-1].argmax(dim=-1)
                        right[reset] += int(((predicted == target) & keep).sum())
                    scored += int(keep.sum())
                    tracker.add(ids.shape[0])
            paper = PAPER_ALGORITHMIC.get((task, n_seg)) if n == PAPER_N_SYMBOLS[task] else None
            rows.append({
                "task": task,
                "segments": n_seg,
                "segment_size": size,
                "samples": samples,
                "accuracy_memory": right[False] / max(scored, 1),
                "accuracy_reset": right[True] / max(scored, 1),
                "chance": chance,
                "paper_baseline": paper[0] if paper else None,
                "paper_rmt": paper[1] if paper else None,
            })
    finally:
        model.train(was_training)
    return rows


# ---------------------------------------------------------------------- language modelling
@torch.no_grad()
def evaluate_lm(
    model: RMTModel,
    text: str | None = None,
    segments_per_window: int = 8,
    windows: int = 64,
    seed: int = 0,
    batch_size: int = 8,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Perplexity on random windows of held-out text, with memory vs memory reset.

    Windows are ``segments_per_window`` x segment_size tokens of ``text`` (default:
    the held-out novel) tokenised with the model's tokenizer.  Returns
    perplexity_memory, perplexity_reset, relative_improvement (1 - memory/reset),
    and the same over the segments after the first (where memory can help:
    perplexity_memory_later, perplexity_reset_later), plus the window facts.
    """
    if segments_per_window < 1 or windows < 1 or batch_size < 1:
        raise EvaluationError("segments_per_window, windows and batch_size must be >= 1")
    tokenizer = _check_tokenizer(model)
    ids = _encode(tokenizer, _default_haystack() if text is None else text)
    seg = model.config.segment_size
    length = min(segments_per_window * seg, len(ids))
    if length < 2:
        raise EvaluationError("the text is too short for language modelling (fewer than 2 tokens)")
    rng = np.random.default_rng(seed)
    starts = rng.integers(0, len(ids) - length + 1, size=windows)
    all_ids = torch.tensor(ids, dtype=torch.long)
    # Scored targets: positions 1..length-1; "later" = targets beyond the first segment.
    later = torch.arange(1, length) >= seg  # (length - 1,)
    sums = {(reset, part): 0.0 for reset in (False, True) for part in ("all", "later")}
    was_training = model.training
    model.eval()
    tracker = _Tracker(progress, windows)
    try:
        for first in range(0, windows, batch_size):
            chunk = starts[first:first + batch_size]
            batch = torch.stack([all_ids[int(s):int(s) + length] for s in chunk]).to(model.device)
            for reset in (False, True):
                logits = model(batch, reset_memory=reset).logits[:, :-1].float()  # (B, length-1, vocab)
                nll = F.cross_entropy(logits.transpose(1, 2), batch[:, 1:], reduction="none")  # (B, length-1)
                sums[reset, "all"] += float(nll.sum())
                sums[reset, "later"] += float(nll[:, later.to(nll.device)].sum())
            tracker.add(len(chunk))
    finally:
        model.train(was_training)
    n_all = windows * (length - 1)
    n_later = windows * int(later.sum())

    def ppl(reset: bool, part: str, count: int) -> float | None:
        return math.exp(sums[reset, part] / count) if count else None

    p_mem, p_reset = ppl(False, "all", n_all), ppl(True, "all", n_all)
    return {
        "segments_per_window": math.ceil(length / seg),
        "segment_size": seg,
        "windows": windows,
        "tokens_scored": n_all,
        "perplexity_memory": p_mem,
        "perplexity_reset": p_reset,
        "relative_improvement": 1.0 - p_mem / p_reset,
        "perplexity_memory_later": ppl(False, "later", n_later),
        "perplexity_reset_later": ppl(True, "later", n_later),
    }


# ---------------------------------------------------------------------- tables
def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (float, np.floating)):
        v = float(value)
        if math.isnan(v):
            return "nan"
        if v != 0 and (abs(v) >= 1e5 or abs(v) < 1e-3):
            return f"{v:.3g}"
        return f"{v:.3f}" if abs(v) < 100 else f"{v:.1f}"
    return str(value)


def _columns(rows: Sequence[dict[str, Any]], columns: Iterable[str] | None) -> list[str]:
    if columns is not None:
        return list(columns)
    out: list[str] = []
    for row in rows:
        out.extend(k for k in row if k not in out)
    return out


def format_table(rows: Sequence[dict[str, Any]], columns: Iterable[str] | None = None) -> str:
    """A plain, aligned text table (numbers right-aligned; floats to 3 decimals; None as '-')."""
    cols = _columns(rows, columns)
    if not cols:
        return ""
    cells = [[_cell(row.get(c)) for c in cols] for row in rows]
    numeric = [all(isinstance(row.get(c), (int, float, np.number)) or row.get(c) is None for row in rows) for c in cols]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(cols)]

    def line(values: Sequence[str]) -> str:
        parts = [v.rjust(w) if num else v.ljust(w) for v, w, num in zip(values, widths, numeric)]
        return "  ".join(parts).rstrip()

    out = [line(cols), "  ".join("-" * w for w in widths)]
    out.extend(line(r) for r in cells)
    return "\n".join(out)


def markdown_table(rows: Sequence[dict[str, Any]], columns: Iterable[str] | None = None) -> str:
    """The same table as GitHub Markdown (for model cards and reports)."""
    cols = _columns(rows, columns)
    if not cols:
        return ""
    numeric = [all(isinstance(row.get(c), (int, float, np.number)) or row.get(c) is None for row in rows) for c in cols]
    out = ["| " + " | ".join(cols) + " |", "|" + "|".join("---:" if num else "---" for num in numeric) + "|"]
    for row in rows:
        out.append("| " + " | ".join(_cell(row.get(c)).replace("|", "\\|") for c in cols) + " |")
    return "\n".join(out)


__all__ = [
    "FACT_TASKS", "ALGORITHMIC_TASKS", "PAPER_ALGORITHMIC", "EvaluationError",
    "evaluate_fact_recall", "evaluate_algorithmic", "evaluate_lm", "format_table", "markdown_table",
]
