"""Held-out evaluation: fact recall, the paper's algorithmic tasks, language modelling.

Every evaluation runs the same inputs twice: with memory carried from segment to
segment, and with the memory reset to its initial value before every segment (the
no-memory baseline).  The gap between the two is what the memory contributes.
Functions return plain rows (dicts) that :func:`format_table` and
:func:`markdown_table` print; nothing here prints.
"""
from __future__ import annotations

import math
from contextlib import contextmanager
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import RMTLensError
from ..token_text import encode_ids
from .tasks import algorithmic, babi
from ..engine.model import RMTModel
from ..engine.padding import row_spans

Progress = Callable[[int, int], Any]

FACT_TASKS: tuple[str, ...] = babi.TASKS
ALGORITHMIC_TASKS: tuple[str, ...] = algorithmic.TASKS

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


# What a fact-recall table shows (accuracy_memory repeats accuracy_random).
FACT_TABLE_COLUMNS: tuple[str, ...] = (
    "task", "segments", "samples", "accuracy_aligned", "accuracy_random", "accuracy_straddle",
    "accuracy_reset", "shortcut", "chance",
)


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


@contextmanager
def eval_mode(model: torch.nn.Module) -> Iterator[None]:
    """``model.eval()`` inside the block; the model's own train / eval mode restored after it."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def logits_with_and_without_memory(model: RMTModel, input_ids: torch.Tensor,
                                   attention_mask: torch.Tensor | None = None, segment_size: int | None = None,
                                   with_reset: bool = True) -> Iterator[tuple[bool, torch.Tensor]]:
    """The two runs every evaluation compares: yields (False, logits) with the memory carried from
    segment to segment, then (True, logits) with the memory reset to its initial value before
    every segment (the no-memory baseline; left out when ``with_reset`` is False).

    input_ids, attention_mask: (B, T) on the model's device; logits: (B, T, vocab).
    ``segment_size`` as in RMTModel.forward (default: the model's).
    """
    for reset in ((False, True) if with_reset else (False,)):
        yield reset, model(input_ids, attention_mask=attention_mask, reset_memory=reset,
                           segment_size=segment_size).logits


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
    offsets: Sequence[str] = ("aligned", "random", "straddle"),
) -> list[dict[str, Any]]:
    """Answer accuracy on held-out bAbI-in-book samples, per number of segments and layout.

    For each n in ``segments`` and each offset in ``offsets`` (see
    :func:`rmt_core.training.tasks.babi.last_segment_tokens`): ``samples`` samples of n segments
    whose question falls ``"aligned"`` (its end at the last segment's end), at a
    ``"random"`` offset of the last segment (uniform), or ``"straddle"`` (the segment
    boundary inside the question; not defined for n = 1).  Facts are kept out of the
    last segment when n > 1, so only memory can answer.  Accuracy = the argmax over
    the whole vocabulary at the position before the answer is the answer token.

    Rows hold task, segments, segment_size, samples, accuracy_<offset> for each offset
    (None where undefined), accuracy_memory (the random-offset accuracy, or the first
    offset's when "random" is not asked), accuracy_reset (the same samples with the
    memory reset before every segment: the no-memory baseline), shortcut (how often
    "the last place mentioned" is right) and chance.  Seeded per (seed, n, offset):
    a cell does not depend on the others.

    Raises :class:`EvaluationError` for an unknown task or offset, counts < 1, a model
    without a fitting tokenizer, an empty haystack, or samples that cannot be built.
    """
    counts, offsets, tokenizer, text, pad_id, seg = _fact_setup(model, task, segments, samples, batch_size, offsets,
                                                                haystack)
    main_offset = "random" if "random" in offsets else offsets[0]
    cells = [(n, o) for n in counts for o in offsets if not (o == "straddle" and n == 1)]
    tracker = _Tracker(progress, samples * len(cells))
    order = ["task", "segments", "segment_size", "samples", *(f"accuracy_{o}" for o in offsets),
             "accuracy_memory", "accuracy_reset", "shortcut", "chance"]
    rows = []
    with eval_mode(model):
        for n in counts:
            row: dict[str, Any] = dict.fromkeys(order)  # None where undefined (straddling one segment)
            row.update({"task": task, "segments": n, "segment_size": seg, "samples": samples, "chance": babi.CHANCE})
            for offset in offsets:
                if offset == "straddle" and n == 1:
                    continue
                # "aligned" keeps the seed of the first evaluations ([seed, n]): same samples as then.
                rng = np.random.default_rng([seed, n] if offset == "aligned" else [seed, n, 1 + babi.OFFSETS.index(offset)])
                with_reset = offset == main_offset
                hits, built = _offset_cell(model, text, n, seg, task, offset, rng, samples, batch_size, pad_id,
                                           with_reset, tracker)
                row[f"accuracy_{offset}"] = hits[False] / samples
                if with_reset:
                    row["accuracy_memory"] = hits[False] / samples
                    row["accuracy_reset"] = hits[True] / samples
                    row["shortcut"] = babi.shortcut_accuracy(built)
            rows.append(row)
    return rows


def _fact_setup(model: RMTModel, task: str, segments: Sequence[int], samples: int, batch_size: int,
                offsets: Sequence[str], haystack: str | None, extra_tokens: int = 0):
    """(counts, offsets, tokenizer, haystack text, pad id, segment size) of a fact-recall evaluation,
    every argument checked (EvaluationError naming the problem)."""
    counts, offsets = _fact_arguments(task, segments, samples, batch_size, offsets)
    tokenizer = _check_tokenizer(model)
    text = _default_haystack() if haystack is None else haystack
    if not text.strip():
        raise EvaluationError("the haystack text is empty")
    seg = model.config.segment_size
    _check_haystack_length(tokenizer, text, max(counts) * seg + extra_tokens, haystack is None)
    return counts, offsets, tokenizer, text, babi.pad_id(tokenizer), seg


def _fact_arguments(task: str, segments: Sequence[int], samples: int, batch_size: int,
                    offsets: Sequence[str]) -> tuple[list[int], list[str]]:
    """(segment counts, offsets) of evaluate_fact_recall, checked."""
    if task not in FACT_TASKS:
        raise EvaluationError(f"unknown fact task {task!r}; choose one of {', '.join(FACT_TASKS)}")
    if samples < 1 or batch_size < 1:
        raise EvaluationError("samples and batch_size must be >= 1")
    counts = [int(n) for n in segments]
    if not counts or min(counts) < 1:
        raise EvaluationError(f"segment counts must be >= 1, got {list(segments)}")
    offsets = list(offsets)
    unknown = [o for o in offsets if o not in babi.OFFSETS]
    if unknown or not offsets:
        raise EvaluationError(f"unknown offsets {unknown or offsets}; choose from {', '.join(babi.OFFSETS)}")
    return counts, offsets


def _check_haystack_length(tokenizer: Any, text: str, needed: int, default: bool) -> None:
    """Refuse a haystack shorter than one sample: it would repeat itself to fill the length."""
    have = len(encode_ids(tokenizer, text[: needed * 16]))
    if have < needed:
        what = "the default haystack" if default else "the haystack text"
        raise EvaluationError(
            f"{what} has {have} tokens, but samples of the largest segment count need {needed}: "
            "use a longer text (--haystack) or fewer segments (--segments)"
        )


def _offset_cell(model: RMTModel, text: str, n: int, seg: int, task: str, offset: str, rng: np.random.Generator,
                 samples: int, batch_size: int, pad_id: int, with_reset: bool,
                 tracker: _Tracker) -> tuple[dict[bool, int], list[Any]]:
    """({reset: hits}, the samples) over one cell's samples: hits with memory (reset False) and,
    with ``with_reset``, with the memory reset (reset True; else 0)."""
    tokenizer = model.tokenizer
    built: list[Any] = []
    hits = {False: 0, True: 0}
    for start in range(0, samples, batch_size):
        chunk = []
        for _ in range(min(batch_size, samples - start)):
            try:
                sample = babi.build_layout_sample(text, n, seg, task, rng, tokenizer, offset)
                chunk.append(babi.encode_sample(sample, tokenizer))
            except (ValueError, RuntimeError) as exc:
                raise EvaluationError(f"cannot build {task} samples of {n} segments of {seg} tokens: {exc}") from exc
            built.append(sample)
        answers = babi.collate(chunk, pad_id)["answer_ids"]
        for reset, predicted in _answer_predictions(model, chunk, pad_id, with_reset):
            hits[reset] += int((predicted == answers).sum())
        tracker.add(len(chunk))
    return hits, built


def _answer_predictions(model: RMTModel, encoded: Sequence[Any], pad_id: int,
                        with_reset: bool = False) -> Iterator[tuple[bool, torch.Tensor]]:
    """(reset, the argmax token id at each sample's answer position, (B,) on the CPU) for a batch of
    encoded fact samples: with memory, then (with_reset) with the memory reset before every segment."""
    batch = babi.collate(encoded, pad_id)
    ids = batch["input_ids"].to(model.device)
    mask = batch["attention_mask"].to(model.device)
    # The answer is each sample's last real token; the position before it predicts it
    # (wherever the padding is: engine/padding.row_spans).
    where = row_spans(mask).last - 1  # (B,)
    rows = torch.arange(ids.shape[0], device=ids.device)
    for reset, logits in logits_with_and_without_memory(model, ids, mask, with_reset=with_reset):
        yield reset, logits[rows, where].argmax(dim=-1).cpu()


MENTION_SEGMENTS: tuple[int, ...] = (8, 16)  # the document lengths a card measures answer-word mentions at


@torch.no_grad()
def evaluate_answer_mentions(
    model: RMTModel,
    task: str = "detect",
    segments: Sequence[int] = MENTION_SEGMENTS,
    samples: int = 200,
    haystack: str | None = None,
    seed: int = 0,
    batch_size: int = 16,
) -> list[dict[str, Any]]:
    """Does one trained answer word, named in the text but in no fact, take the answer?

    For each n in ``segments``: ``samples`` held-out fact-recall samples of n segments (question
    at a random offset of the last segment, facts before it, as the card's accuracy_random), each
    read as it is and with one sentence added that names ANOTHER trained answer word (a random
    one) but states no fact (rmt_core.training.tasks.babi.insert_mention: "The office was said to
    be very cold."), after the last fact (where = "after") or before the first ("before"). The
    same samples with and without the mention (a paired comparison); a sample whose text has no
    sentence start on that side is left out of that row (``samples`` says how many were kept).

    Rows: task, segments, where, samples, accuracy_without (the kept samples as they are),
    accuracy_with (with the mention), answered_mention (how often the answer is the mentioned
    word). Accuracy = the argmax over the whole vocabulary at the answer position. Seeded per
    (seed, n). Raises EvaluationError as :func:`evaluate_fact_recall` does.
    """
    counts, _, tokenizer, text, pad_id, seg = _fact_setup(model, task, segments, samples, batch_size, ("random",),
                                                          haystack, extra_tokens=64)  # room for the mention
    rows = []
    with eval_mode(model):
        for n in counts:
            rng = np.random.default_rng([seed, n, 101])
            pairs: dict[str, list[tuple[Any, Any, int]]] = {w: [] for w in babi.MENTION_PLACES}
            for _ in range(samples):
                try:
                    sample = babi.build_layout_sample(text, n, seg, task, rng, tokenizer, "random")
                except (ValueError, RuntimeError) as exc:
                    raise EvaluationError(f"cannot build {task} samples of {n} segments of {seg} tokens: {exc}") from exc
                others = [p for p in babi.PLACES if " " + p != sample.answer]
                place = others[int(rng.integers(len(others)))]
                for where in babi.MENTION_PLACES:
                    try:
                        mentioned, _span = babi.insert_mention(sample, place, where, rng)
                    except ValueError:
                        continue  # no sentence start on that side of the facts
                    pairs[where].append((babi.encode_sample(sample, tokenizer), babi.encode_sample(mentioned, tokenizer),
                                         babi.answer_token_id(tokenizer, " " + place)))
            for where, kept in pairs.items():
                hits = {"without": 0, "with": 0, "mention": 0}
                for start in range(0, len(kept), batch_size):
                    chunk = kept[start:start + batch_size]
                    answers = babi.collate([c[0] for c in chunk], pad_id)["answer_ids"]
                    mention_ids = torch.tensor([c[2] for c in chunk])
                    (_, plain), = _answer_predictions(model, [c[0] for c in chunk], pad_id)
                    (_, with_mention), = _answer_predictions(model, [c[1] for c in chunk], pad_id)
                    hits["without"] += int((plain == answers).sum())
                    hits["with"] += int((with_mention == answers).sum())
                    hits["mention"] += int((with_mention == mention_ids).sum())
                k = max(len(kept), 1)
                rows.append({"task": task, "segments": n, "where": where, "samples": len(kept),
                             "accuracy_without": hits["without"] / k, "accuracy_with": hits["with"] / k,
                             "answered_mention": hits["mention"] / k})
    return rows


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

    A whole sample is cut into exactly n segments (the segment size is given to each
    forward call; the model's config is left as it is).  Rows hold task, segments, segment_size,
    samples, accuracy_memory, accuracy_reset, chance, and the paper's no-memory
    baseline and RMT accuracy (paper_baseline, paper_rmt; None where the paper has
    no number or the sample size differs from the paper's).
    """
    try:
        task = algorithmic.canonical_task(task)
        n = algorithmic.resolve_n_symbols(task, n_symbols)
    except ValueError as exc:
        raise EvaluationError(str(exc)) from exc
    if samples < 1 or batch_size < 1:
        raise EvaluationError("samples and batch_size must be >= 1")
    tokenizer = _symbol_tokenizer(model, task)
    counts = [int(c) for c in segments]
    chance = 1.0 / (len(algorithmic.VALUES) if task == "retrieval" else len(algorithmic.SYMBOLS))
    tracker = _Tracker(progress, samples * len(counts))
    rows = []
    with eval_mode(model):
        for n_seg in counts:
            size = _algorithmic_segment_size(model, task, n, n_seg)
            accuracy = _target_accuracy(model, task, n, size, samples, batch_size, np.random.default_rng([seed, n_seg]),
                                        tokenizer, tracker)
            paper = PAPER_ALGORITHMIC.get((task, n_seg)) if n == PAPER_N_SYMBOLS[task] else None
            rows.append({
                "task": task,
                "segments": n_seg,
                "segment_size": size,
                "samples": samples,
                "accuracy_memory": accuracy[False],
                "accuracy_reset": accuracy[True],
                "chance": chance,
                "paper_baseline": paper[0] if paper else None,
                "paper_rmt": paper[1] if paper else None,
            })
    return rows


def _target_accuracy(model: RMTModel, task: str, n: int, size: int, samples: int, batch_size: int,
                     rng: np.random.Generator, tokenizer: Any, tracker: _Tracker) -> dict[bool, float]:
    """{reset: per-character accuracy on the target positions} over ``samples`` samples of ``task``
    run in ``size``-token segments, with memory (reset False) and with memory reset (True)."""
    right = {False: 0, True: 0}
    scored = 0
    for start in range(0, samples, batch_size):
        b = algorithmic.make_task_batch(task, n, min(batch_size, samples - start), rng, tokenizer)
        ids = b["input_ids"].to(model.device)
        target = b["labels"][:, 1:].to(model.device)
        keep = target != algorithmic.IGNORE_INDEX
        for reset, logits in logits_with_and_without_memory(model, ids, segment_size=size):
            right[reset] += int(((logits[:, :-1].argmax(dim=-1) == target) & keep).sum())
        scored += int(keep.sum())
        tracker.add(ids.shape[0])
    return {reset: hits / max(scored, 1) for reset, hits in right.items()}


def _symbol_tokenizer(model: RMTModel, task: str) -> Any:
    """The model's tokenizer (the tasks' symbol tokenizer when it has none), refused when it
    lacks the task's symbols."""
    tokenizer = model.tokenizer if model.tokenizer is not None else algorithmic.symbol_tokenizer()
    missing = [s for s in (*algorithmic.SYMBOLS, *algorithmic.VALUES, "<sep>") if s not in tokenizer.get_vocab()]
    if missing:
        raise EvaluationError(
            f"the model's tokenizer lacks the symbols of the {task} task ({', '.join(missing[:5])}...): "
            "evaluate algorithmic tasks with a model trained on them"
        )
    return tokenizer


def _algorithmic_segment_size(model: RMTModel, task: str, n: int, n_seg: int) -> int:
    """The segment size that cuts a sample into ``n_seg`` segments, refused when a row of it
    (with the memory slots) is longer than the backbone's positions."""
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
    return size


# ---------------------------------------------------------------------- language modelling
def _text_windows(model: RMTModel, text: str | None, segments_per_window: int, windows: int,
                  seed: int) -> tuple[torch.Tensor, np.ndarray, int]:
    """The tokens of ``text`` (default: the held-out novel), ``windows`` random start offsets
    and the window length (``segments_per_window`` segments, at most the whole text)."""
    ids = encode_ids(_check_tokenizer(model), _default_haystack() if text is None else text)
    length = min(segments_per_window * model.config.segment_size, len(ids))
    if length < 2:
        raise EvaluationError("the text is too short for language modelling (fewer than 2 tokens)")
    starts = np.random.default_rng(seed).integers(0, len(ids) - length + 1, size=windows)
    return torch.tensor(ids, dtype=torch.long), starts, length


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
    seg = model.config.segment_size
    all_ids, starts, length = _text_windows(model, text, segments_per_window, windows, seed)
    # Scored targets: positions 1..length-1; "later" = targets beyond the first segment.
    later = torch.arange(1, length) >= seg  # (length - 1,)
    sums = {(reset, part): 0.0 for reset in (False, True) for part in ("all", "later")}
    tracker = _Tracker(progress, windows)
    with eval_mode(model):
        for first in range(0, windows, batch_size):
            chunk = starts[first:first + batch_size]
            batch = torch.stack([all_ids[int(s):int(s) + length] for s in chunk]).to(model.device)
            for reset, logits in logits_with_and_without_memory(model, batch):
                logits = logits[:, :-1].float()  # (B, length-1, vocab)
                nll = F.cross_entropy(logits.transpose(1, 2), batch[:, 1:], reduction="none")  # (B, length-1)
                sums[reset, "all"] += float(nll.sum())
                sums[reset, "later"] += float(nll[:, later.to(nll.device)].sum())
            tracker.add(len(chunk))
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


def evaluate_lm_texts(
    model: RMTModel,
    texts: dict[str, str],
    segments_per_window: int = 8,
    windows: int = 64,
    seed: int = 0,
    progress: Progress | None = None,
) -> list[dict[str, Any]]:
    """:func:`evaluate_lm` on each of several named texts; one row per text (key ``text``).

    Typical use: the held-out part of every training source (``rmt_core.training.corpus.load_mix
    ("heldout")``) plus a text from none of them.
    """
    rows = []
    for name, text in texts.items():
        try:
            row = evaluate_lm(model, text, segments_per_window=segments_per_window, windows=windows, seed=seed)
        except EvaluationError as exc:
            raise EvaluationError(f"{name}: {exc}") from exc
        rows.append({"text": name, **row})
        if progress is not None:
            progress(len(rows), len(texts))
    return rows


@torch.no_grad()
def evaluate_slot_similarity(
    model: RMTModel,
    text: str | None = None,
    segments_per_window: int = 8,
    windows: int = 32,
    seed: int = 0,
) -> dict[str, Any]:
    """How alike the written memory slots are: mean pairwise cosine similarity.

    Runs random windows of ``text`` (default: the held-out novel) and, for every
    segment's written memory (m, d), takes the cosine similarity of each pair of slots
    (i < j).  Returns mean_pairwise_cosine (lower = more diverse slots),
    share_pairs_above_0_9 (pairs that are nearly the same vector), the number of
    memory states and pairs.  Slots that collapse onto a few directions waste memory.
    Raises :class:`EvaluationError` for a model without memory or a too-short text.
    """
    m = model.config.num_mem_tokens
    if m < 2:
        raise EvaluationError("slot similarity needs a model with at least two memory slots")
    all_ids, starts, length = _text_windows(model, text, segments_per_window, windows, seed)
    batch = torch.stack([all_ids[int(s):int(s) + length] for s in starts]).to(model.device)
    with eval_mode(model):
        states = model(batch).memory_out  # one (B, m, d) per segment
    mem = torch.stack([st.float() for st in states], dim=1).reshape(-1, m, states[0].shape[-1])  # (B*S, m, d)
    normed = F.normalize(mem, dim=-1)
    cos = normed @ normed.transpose(1, 2)  # (B*S, m, m)
    iu = torch.triu_indices(m, m, offset=1)
    pairs = cos[:, iu[0], iu[1]]  # (B*S, m(m-1)/2)
    return {
        "mean_pairwise_cosine": float(pairs.mean()),
        "share_pairs_above_0_9": float((pairs > 0.9).float().mean()),
        "memory_states": int(mem.shape[0]),
        "pairs": int(pairs.numel()),
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
    "FACT_TABLE_COLUMNS", "eval_mode", "logits_with_and_without_memory", "evaluate_fact_recall", "evaluate_algorithmic", "evaluate_lm", "evaluate_lm_texts", "evaluate_slot_similarity", "format_table", "markdown_table",
]
