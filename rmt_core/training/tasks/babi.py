"""bAbI-style fact recall in book noise: BABILong in miniature.

Format (fixed; other tools parse it):

* A fact is one plain sentence, e.g. ``"Mary travelled to the office."`` (qa2 adds
  ``"John got the football there."`` and ``"John dropped the football."``).  Facts are
  inserted at sentence boundaries of the haystack (see
  :func:`rmt_core.training.corpus.sentence_boundaries`), each followed by one space.
* The text ends with ``"\\nQuestion: Where is Mary?\\nAnswer:"``; the answer is one
  word with a leading space, ``" office"``, and is a single token of the project
  tokenizer.  ``input_ids`` = tokens(text) + [answer token].

Task levels (``task=``):

* ``"memorize"``: one fact at the very start of the text.
* ``"detect"``: one fact at a random sentence boundary.
* ``"qa1"``: 2-4 movement facts, actors may repeat; the question asks about an actor
  that appears; the answer is that actor's LAST place.  In about half the samples the
  last fact is about another actor and names a different place, so the shortcut
  "answer the last place mentioned" is right only about half the time.
* ``"qa2"``: two supporting facts: an object is picked up ("got ... there") where its
  carrier stands; its place is where the carrier last went while holding it, or
  where it was dropped.  Distractor moves make the shortcut right about half the time.
"""

from __future__ import annotations

import bisect
import dataclasses
import functools
import re
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

import numpy as np

from ...token_text import encode_ids, encode_with_offsets
from ..corpus import sentence_boundaries

# the question vocabulary and the fact sentences' parser have one home, rmt_core.questions
from ...questions import (ACTORS, ANSWER_PREFIX, DROP_RE, DROP_VERBS, FACT_RE, GET_RE, GET_VERBS, MOVE_RE, MOVE_VERBS,
                          OBJECTS, PLACES, QUESTION_PREFIX, QUESTION_RE, Fact, ParsedFact, World, parse_facts,
                          stated_place)

TASKS: tuple[str, ...] = ("memorize", "detect", "qa1", "qa2")

CHANCE: float = 1.0 / len(PLACES)
IGNORE_INDEX = -100
# A fact placed at a depth starts within this fraction of the eligible range (or 3 tokens) of it.
DEPTH_TOLERANCE = 0.05
# Rough token length used when no tokenizer is given.
CHARS_PER_TOKEN = 4

# --------------------------------------------------------------------------- facts


def solve(text: str) -> str:
    """Recompute the answer (``" place"``) of the LAST question in ``text`` from its facts."""
    qs = list(QUESTION_RE.finditer(text))
    if not qs:
        raise ValueError("no question found in text")
    q = qs[-1]
    place = stated_place(text[: q.start()], q.group(1)).place  # the one replay of the facts (rmt_core.questions)
    if place is None:
        raise ValueError(f"question {q.group(1)!r} is not answerable from the facts")
    return " " + place


def _last_place(facts: Sequence[Fact]) -> str:
    return next(f.target for f in reversed(facts) if f.kind == "move")


def _pick(rng: np.random.Generator, items: Sequence[str], exclude: Iterable[str] = ()) -> str:
    ex = set(exclude)
    pool = [x for x in items if x not in ex]
    return pool[int(rng.integers(len(pool)))]


def _move(rng: np.random.Generator, actor: str, place: str) -> Fact:
    return Fact("move", actor, _pick(rng, MOVE_VERBS), place)


def make_story(task: str, rng: np.random.Generator) -> tuple[list[Fact], str, str, str]:
    """Facts, question, answer place and shortcut place for one sample of ``task``."""
    if task in ("memorize", "detect"):
        actor, place = _pick(rng, ACTORS), _pick(rng, PLACES)
        return [_move(rng, actor, place)], f"Where is {actor}?", place, place
    if task == "qa1":
        return _qa1_story(rng)
    if task == "qa2":
        return _qa2_story(rng)
    raise ValueError(f"unknown task {task!r}; choose one of {', '.join(TASKS)}")


def _qa1_story(rng: np.random.Generator) -> tuple[list[Fact], str, str, str]:
    n = int(rng.integers(2, 5))
    target = _pick(rng, ACTORS)
    shortcut_ok = bool(rng.random() < 0.5)
    k = n - 1 if shortcut_ok else int(rng.integers(0, n - 1))  # index of target's last fact
    answer = _pick(rng, PLACES)
    facts: list[Fact] = []
    repeat_at = int(rng.integers(0, k)) if k > 0 and rng.random() < 0.5 else -1
    for i in range(n):
        if i == k:
            facts.append(_move(rng, target, answer))
        elif i > k:  # later facts: other actors, other places (breaks the shortcut)
            facts.append(_move(rng, _pick(rng, ACTORS, [target]), _pick(rng, PLACES, [answer])))
        else:  # earlier facts: anyone; the target's earlier places differ from the answer
            actor = target if i == repeat_at else _pick(rng, ACTORS)
            place = _pick(rng, PLACES, [answer]) if actor == target else _pick(rng, PLACES)
            facts.append(_move(rng, actor, place))
    return facts, f"Where is {target}?", answer, facts[-1].target


def _qa2_story(rng: np.random.Generator) -> tuple[list[Fact], str, str, str]:
    want_shortcut = bool(rng.random() < 0.5)
    for _ in range(200):
        carrier = _pick(rng, ACTORS)
        obj = _pick(rng, OBJECTS)
        others = [a for a in ACTORS if a != carrier]
        facts: list[Fact] = []
        if rng.random() < 0.4:
            facts.append(_move(rng, _pick(rng, others), _pick(rng, PLACES)))
        facts.append(_move(rng, carrier, _pick(rng, PLACES)))
        if rng.random() < 0.3:
            facts.append(_move(rng, _pick(rng, others), _pick(rng, PLACES)))
        facts.append(Fact("get", carrier, _pick(rng, GET_VERBS), obj))
        holding = True
        for _ in range(int(rng.integers(1, 4))):
            r = rng.random()
            if holding and r < 0.25:
                facts.append(Fact("drop", carrier, _pick(rng, DROP_VERBS), obj))
                holding = False
            elif r < 0.6:
                facts.append(_move(rng, carrier, _pick(rng, PLACES, [_carrier_place(facts, carrier)])))
            else:
                facts.append(_move(rng, _pick(rng, others), _pick(rng, PLACES)))
        world = World()
        for f in facts:
            world.apply(f)
        answer = world.where(obj)
        assert answer is not None
        shortcut = _last_place(facts)
        if (shortcut == answer) == want_shortcut:
            return facts, f"Where is the {obj}?", answer, shortcut
    raise RuntimeError("could not generate a qa2 story")  # pragma: no cover


def _carrier_place(facts: Sequence[Fact], actor: str) -> str:
    return next(f.target for f in reversed(facts) if f.kind == "move" and f.actor == actor)


# -------------------------------------------------------------------- token counting


class _Counter:
    """Token offsets of a text: the tokenizer's, or ~4-character pseudo tokens."""

    def __init__(self, tokenizer: Any | None) -> None:
        self.tok = tokenizer

    def offsets(self, text: str) -> list[tuple[int, int]]:
        if self.tok is None:
            n = len(text)
            return [(i, min(i + CHARS_PER_TOKEN, n)) for i in range(0, n, CHARS_PER_TOKEN)]
        return encode_with_offsets(self.tok, text)[1]

    def count(self, text: str) -> int:
        if self.tok is None:
            return -(-len(text) // CHARS_PER_TOKEN)
        return len(self.offsets(text))


# ------------------------------------------------------------------------- samples


@dataclass
class FactSample:
    """A haystack with facts inserted, ending in a question.

    ``facts`` are character spans (start, end) of each fact sentence in ``text``;
    ``shortcut_answer`` is what "answer the last place named in a fact" would say.
    """

    text: str
    answer: str
    question: str
    facts: list[tuple[int, int]]
    task: str
    shortcut_answer: str


@dataclass
class EncodedSample:
    """Token form of a sample: what training and evaluation consume.

    ``labels`` is -100 everywhere except the answer position(s), where it equals the
    input token (labels are aligned with ``input_ids``; the loss shifts them).
    """

    input_ids: list[int]
    labels: list[int]
    answer_id: int
    fact_token_spans: list[tuple[int, int]] = field(default_factory=list)


@functools.lru_cache(maxsize=8)
def _haystack_is_clean(haystack: str) -> bool:
    return FACT_RE.search(haystack) is None and "\nQuestion:" not in haystack


def _window(haystack: str, start: int, n_chars: int) -> str:
    """``n_chars`` of ``haystack`` from ``start``, wrapping around when it runs out."""
    if len(haystack) == 0:
        raise ValueError("haystack is empty")
    out, pos = [], start
    while n_chars > 0:
        piece = haystack[pos : pos + n_chars]
        out.append(piece)
        n_chars -= len(piece)
        pos = 0
        if n_chars > 0:
            out.append("\n\n")
            n_chars -= 2
    return "".join(out)


def build_sample(
    haystack: str,
    n_tokens: int,
    task: str = "qa1",
    rng: np.random.Generator | None = None,
    tokenizer: Any | None = None,
    keep_out_tail: int = 0,
    after_answer_prefix: str = "",
    fact_depth: float | None = None,
) -> FactSample:
    """Cut a piece of ``haystack`` at a random sentence start, insert facts, ask.

    ``n_tokens`` is the length of text + answer in tokens of ``tokenizer`` (exact in
    practice, at worst within 2 tokens); without a tokenizer lengths are estimated
    at 4 characters per token.  No fact may lie in the final ``keep_out_tail``
    tokens (e.g. the last segment when ``n_tokens`` is a multiple of the segment
    size).  The haystack wraps around if it is shorter than needed.  Deterministic
    for a seeded ``rng``.  ``after_answer_prefix`` (``""``, ``" "`` or ``"\n"``) is
    whitespace a user may leave after ``"Answer:"``; the answer token follows it.
    ``fact_depth`` (0..1, BABILong's and needle-in-a-haystack's "depth"): the facts go together,
    in story order, at the sentence start nearest to that fraction of the tokens where a fact
    may start (0 = the first, 1 = the last before the kept-out tail), within DEPTH_TOLERANCE of that
    range (or 3 tokens; another haystack window is drawn until one fits); None = random places.
    """
    if fact_depth is not None and not 0.0 <= float(fact_depth) <= 1.0:
        raise ValueError(f"fact_depth must lie in [0, 1], got {fact_depth}")
    if after_answer_prefix.strip():
        raise ValueError("after_answer_prefix may only hold whitespace")
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; choose one of {', '.join(TASKS)}")
    rng = rng if rng is not None else np.random.default_rng()
    counter = _Counter(tokenizer)
    clean = _haystack_is_clean(haystack)
    last_err = "no attempt"
    # a depth needs a sentence start near it: short samples may need many windows to find one
    attempts, exact_attempts = (200, 180) if fact_depth is not None else (30, 20)
    for attempt in range(attempts):
        facts, question, place, shortcut = make_story(task, rng)
        result = _try_build(
            haystack, n_tokens, task, rng, counter, keep_out_tail, facts, question, place, shortcut, clean,
            exact=attempt < exact_attempts, after_answer_prefix=after_answer_prefix, fact_depth=fact_depth,
        )
        if isinstance(result, FactSample):
            return result
        last_err = result
        if result.startswith("!"):
            raise ValueError(result[1:])
    raise RuntimeError(f"could not build a {task} sample of {n_tokens} tokens: {last_err}")


def _try_build(
    haystack: str,
    n_tokens: int,
    task: str,
    rng: np.random.Generator,
    counter: _Counter,
    keep_out_tail: int,
    facts: list[Fact],
    question: str,
    place: str,
    shortcut: str,
    clean: bool,
    exact: bool = True,
    after_answer_prefix: str = "",
    fact_depth: float | None = None,
) -> FactSample | str:
    """One attempt; returns a sample, or a reason string ('!' prefix = give up)."""
    suffix = f"{QUESTION_PREFIX}{question}{ANSWER_PREFIX}{after_answer_prefix}"
    answer = " " + place
    sentences = [f.sentence for f in facts]
    n_suffix = counter.count(suffix)
    n_fact_tok = sum(counter.count(" " + s + " ") - 1 for s in sentences)
    margin = 2
    budget = n_tokens - n_suffix - 1 - n_fact_tok
    if budget < 1 or n_tokens - keep_out_tail < n_fact_tok + margin:
        return (
            f"!n_tokens={n_tokens} is too small for task {task!r} "
            f"(facts {n_fact_tok}, question {n_suffix + 1}, keep_out_tail {keep_out_tail} tokens)"
        )

    window, offs = _haystack_window(haystack, budget, rng, counter)
    if not clean and (FACT_RE.search(window) or "\nQuestion:" in window):
        return "haystack window holds a fact-like sentence"
    positions = _fact_positions(window, offs, budget, task, len(facts), n_suffix + 1, keep_out_tail + margin, rng,
                                fact_depth)
    if positions is None:
        return "no sentence boundary outside the kept-out tail"
    fitted = _fit_length(window, offs, budget, n_tokens, positions, sentences, suffix, counter)
    if fitted is None:
        return "piece shrank below a fact position"
    diff, text, spans = fitted
    if abs(diff) > (0 if exact else 2):
        return f"length off by {diff} tokens"
    if keep_out_tail > 0 and _last_fact_token(text, spans, counter) > n_tokens - diff - keep_out_tail:
        return "a fact fell into the kept-out tail"  # checked exactly, on the final tokenisation
    return FactSample(text=text, answer=answer, question=question, facts=spans, task=task, shortcut_answer=" " + shortcut)


def _haystack_window(haystack: str, budget: int, rng: np.random.Generator,
                     counter: _Counter) -> tuple[str, list[tuple[int, int]]]:
    """A window of ``haystack`` at a random place, from a sentence start, holding more than
    ``budget`` tokens (+ 64); and its token offsets. The haystack wraps around (see _window)."""
    n_chars = budget * 6 + 400
    start = int(rng.integers(0, max(1, len(haystack) - n_chars)))
    head = _window(haystack, start, 2000)
    hb = sentence_boundaries(head)
    hb = hb[hb > 0]  # 0 counts only when the text itself starts there
    if len(hb):
        start = (start + int(hb[0])) % len(haystack)
    while True:
        window = _window(haystack, start, n_chars)
        offs = counter.offsets(window)
        if len(offs) > budget + 64:
            return window, offs
        n_chars *= 2


def _fact_positions(window: str, offs: list[tuple[int, int]], budget: int, task: str, n_facts: int, n_after: int,
                    tail: int, rng: np.random.Generator, depth: float | None = None) -> list[int] | None:
    """Character positions (sentence starts in the first ``budget`` tokens of ``window``, sorted)
    where ``n_facts`` facts go; None when no sentence start is outside the kept-out tail.

    A fact may start at a boundary only when the tokens after it (haystack up to ``budget`` +
    ``n_after``, the question and answer) number at least ``tail`` (keep_out_tail + a margin);
    "memorize" puts its fact at the very start. With ``depth`` (0..1) every fact goes to the one
    eligible start nearest to that fraction of the eligible token range (a block, in story order),
    or None when the nearest is further than DEPTH_TOLERANCE of the range (or 3 tokens) from it.
    """
    starts = [s for s, _ in offs]
    bounds = sentence_boundaries(window[: offs[budget - 1][1]])
    tok_idx = np.array([bisect.bisect_left(starts, int(p)) for p in bounds], dtype=np.int64)
    if task == "memorize":
        eligible = bounds[:1] if len(bounds) and bounds[0] == 0 else np.array([0])
    else:
        eligible = bounds[(budget - tok_idx) + n_after >= tail]
    if len(eligible) == 0:
        return None
    if depth is not None and task != "memorize":
        idx = tok_idx[(budget - tok_idx) + n_after >= tail]
        span = float(budget + n_after - tail)  # the last token a fact may start at
        nearest = int(np.argmin(np.abs(idx - depth * span)))
        if abs(idx[nearest] - depth * span) > max(3.0, DEPTH_TOLERANCE * span):
            return None  # no sentence starts near that depth in this window: the caller draws another
        return [int(eligible[nearest])] * n_facts
    replace = len(eligible) < n_facts
    return sorted(int(p) for p in rng.choice(eligible, size=n_facts, replace=replace))


def _fit_length(window: str, offs: list[tuple[int, int]], budget: int, n_tokens: int, positions: list[int],
                sentences: list[str], suffix: str,
                counter: _Counter) -> tuple[int, str, list[tuple[int, int]]] | None:
    """(n_tokens - tokens of the sample, text, fact spans) for the haystack length h (in window
    tokens, searched from ``budget``) that makes the sample ``n_tokens`` long: exact if possible,
    else the closest, preferring shorter (it pads) to longer. None when every piece tried
    ended before the last fact position."""

    def attempt(h: int) -> tuple[int, str, list[tuple[int, int]]] | None:
        piece = window[: offs[h - 1][1]].rstrip()
        if positions[-1] >= len(piece) and len(piece) > 0:
            return None
        text, spans = _assemble(piece, positions, sentences, suffix)
        return n_tokens - (counter.count(text) + 1), text, spans

    tried: dict[int, tuple[int, str, list[tuple[int, int]]] | None] = {}
    h = budget
    for _fix in range(12):
        tried[h] = res = attempt(h)
        if res is not None and res[0] == 0:
            break
        step = res[0] if res is not None else -1
        cands = [h + step] + [h + step + d for k in range(1, 6) for d in (k, -k)]
        nxt = [c for c in cands if 1 <= c <= len(offs) and c not in tried]
        if not nxt:
            break
        h = nxt[0]
    ok = [r for r in tried.values() if r is not None]
    return min(ok, key=lambda r: (abs(r[0]), r[0] < 0)) if ok else None


def _last_fact_token(text: str, spans: list[tuple[int, int]], counter: _Counter) -> int:
    """Index after the last token of the last fact in ``text`` (its tokens are 0..index-1)."""
    ends = [e for _, e in counter.offsets(text)]
    return bisect.bisect_left(ends, spans[-1][1]) + 1


def _assemble(piece: str, positions: list[int], sentences: list[str], suffix: str) -> tuple[str, list[tuple[int, int]]]:
    parts: list[str] = []
    spans: list[tuple[int, int]] = []
    cur, length = 0, 0
    for p, s in zip(positions, sentences):
        chunk = piece[cur:p]
        parts.append(chunk)
        length += len(chunk)
        spans.append((length, length + len(s)))
        parts.append(s + " ")
        length += len(s) + 1
        cur = p
    parts.append(piece[cur:])
    parts.append(suffix)
    return "".join(parts), spans


# ------------------------------------------------------------------------- layouts
#
# Users' documents do not end where a segment ends, and their line breaks are their own.
# A layout fixes where the question falls in the last segment and how the haystack is
# broken into lines; training on random layouts is what lets a model answer anywhere.

LINE_LAYOUTS: tuple[str, ...] = ("original", "one_line", "paragraphs", "wrapped")
OFFSETS: tuple[str, ...] = ("aligned", "random", "straddle")
_PARAGRAPH_BREAK_RE = re.compile(r"\n[ \t\r]*\n\s*")


@functools.lru_cache(maxsize=16)
def reflow(text: str, layout: str) -> str:
    """``text`` with its line breaks redone: one of :data:`LINE_LAYOUTS`.

    ``"original"`` as is; ``"one_line"`` every whitespace run becomes one space;
    ``"paragraphs"`` lines inside a paragraph are joined, paragraphs separated by one
    blank line; ``"wrapped"`` those paragraphs hard-wrapped at 72 columns.  Cached
    (the corpus texts are reflowed once per process).
    """
    if layout == "original":
        return text
    if layout == "one_line":
        return re.sub(r"\s+", " ", text).strip()
    if layout not in LINE_LAYOUTS:
        raise ValueError(f"unknown line layout {layout!r}; choose one of {', '.join(LINE_LAYOUTS)}")
    paragraphs = [re.sub(r"\s+", " ", p).strip() for p in _PARAGRAPH_BREAK_RE.split(text)]
    paragraphs = [p for p in paragraphs if p]
    if layout == "wrapped":
        import textwrap

        paragraphs = [textwrap.fill(p, 72, break_long_words=False, break_on_hyphens=False) for p in paragraphs]
    return "\n\n".join(paragraphs)


def question_tokens(tokenizer: Any, question: str = "Where is Mary?") -> int:
    """Tokens of the question block ``"\nQuestion: ...\nAnswer:"`` in ``tokenizer``."""
    return len(encode_ids(tokenizer, f"{QUESTION_PREFIX}{question}{ANSWER_PREFIX}"))


def last_segment_tokens(offset: str, segment_size: int, question_len: int, rng: np.random.Generator) -> int:
    """How many tokens (answer included) a sample puts after its first n - 1 segments.

    A sample of n segments has ``(n - 1) * segment_size + r`` tokens, answer last; the
    ``":"`` that predicts the answer is at position r - 2 of the last segment.
    ``"aligned"``: r = segment_size (the answer fills the segment's last position, the
    layout the first models were trained on); ``"random"``: r uniform in
    [2, segment_size + 1], so the ``":"`` falls at any position of the last segment
    with equal chance (at r = segment_size + 1 the appended answer token alone spills
    into one more segment, which no prediction reads); ``"straddle"``: r in
    [2, question_len], so the segment boundary falls inside the question block (its
    first token in the segment before, the ``":"`` in the last one).
    """
    if offset == "aligned":
        return segment_size
    if offset == "random":
        return int(rng.integers(2, segment_size + 2))
    if offset == "straddle":
        hi = min(question_len, segment_size)
        return int(rng.integers(2, hi + 1)) if hi >= 2 else 1
    raise ValueError(f"unknown offset {offset!r}; choose one of {', '.join(OFFSETS)}")


def build_layout_sample(
    haystack: str,
    n_segments: int,
    segment_size: int,
    task: str,
    rng: np.random.Generator,
    tokenizer: Any,
    offset: str = "random",
    facts_before_last_segment: bool = True,
    after_answer_prefix: str = "",
) -> FactSample:
    """A :func:`build_sample` of ``n_segments`` whose question falls as ``offset`` says.

    Total length ``(n_segments - 1) * segment_size + r`` tokens with r from
    :func:`last_segment_tokens`; with ``facts_before_last_segment`` (and n > 1) every
    fact lies in an earlier segment than the question, so only memory can answer.
    ``after_answer_prefix`` as in :func:`build_sample`.  When the story does not fit
    the drawn length (several facts in a short document), r is drawn again.
    Raises ``ValueError`` when it cannot fit at all.
    """
    if n_segments < 1 or segment_size < 1:
        raise ValueError("n_segments and segment_size must be >= 1")
    q = question_tokens(tokenizer)
    for attempt in range(20):
        r = last_segment_tokens(offset, segment_size, q, rng)
        n_tokens = (n_segments - 1) * segment_size + r
        if n_segments == 1:
            n_tokens = max(n_tokens, min(segment_size, 3 * q))
        keep = r if (facts_before_last_segment and n_segments > 1) else 0
        try:
            return build_sample(haystack, n_tokens, task, rng, tokenizer, keep_out_tail=keep,
                                after_answer_prefix=after_answer_prefix)
        except ValueError as exc:
            # A story of several facts may not fit a short document: draw another offset
            # (this favours longer last segments only where nothing else fits).
            if "too small" not in str(exc) or offset == "aligned" or attempt == 19:
                raise
    raise AssertionError("unreachable")  # pragma: no cover


# ------------------------------------------------------------------------ encoding


def _token_spans(offsets: Sequence[tuple[int, int]], spans: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    """Token index spans [i, j) of tokens overlapping each character span."""
    ends = [e for _, e in offsets]
    starts = [s for s, _ in offsets]
    out = []
    for s, e in spans:
        i = bisect.bisect_right(ends, s)
        j = bisect.bisect_left(starts, e)
        out.append((i, max(i, j)))
    return out


def answer_token_id(tokenizer: Any, answer: str) -> int:
    """Id of ``answer`` (e.g. ``" office"``); raises if it is not a single token."""
    ids = encode_ids(tokenizer, answer)
    if len(ids) != 1:
        raise ValueError(f"answer {answer!r} is {len(ids)} tokens in this tokenizer; it must be one")
    return ids[0]


def encode_sample(sample: FactSample, tokenizer: Any) -> EncodedSample:
    """Tokenise a sample: ``input_ids`` = tokens(text) + [answer]; label only the answer."""
    ids, offs = encode_with_offsets(tokenizer, sample.text)
    aid = answer_token_id(tokenizer, sample.answer)
    return EncodedSample(
        input_ids=ids + [aid],
        labels=[IGNORE_INDEX] * len(ids) + [aid],
        answer_id=aid,
        fact_token_spans=_token_spans(offs, sample.facts),
    )


def pad_id(tokenizer: Any) -> int:
    """The id :func:`collate` pads with: the tokenizer's pad token, else its end-of-text token.

    Raises ``ValueError`` when it has neither.
    """
    pid = getattr(tokenizer, "pad_token_id", None)
    if pid is None:
        pid = getattr(tokenizer, "eos_token_id", None)
    if pid is None:
        raise ValueError("tokenizer has neither a pad nor an eos token")
    return int(pid)


def collate(encoded: Sequence[EncodedSample], pad_id: int) -> dict[str, Any]:
    """Right-pad encoded samples into tensors.

    Returns ``input_ids``, ``labels`` (-100 on padding), ``attention_mask`` (B, T)
    and ``answer_ids`` (B,) (the last answer of each sample), all ``torch.long``.
    """
    import torch

    T = max(len(e.input_ids) for e in encoded)
    B = len(encoded)
    ids = torch.full((B, T), pad_id, dtype=torch.long)
    labels = torch.full((B, T), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((B, T), dtype=torch.long)
    for b, e in enumerate(encoded):
        n = len(e.input_ids)
        ids[b, :n] = torch.tensor(e.input_ids, dtype=torch.long)
        labels[b, :n] = torch.tensor(e.labels, dtype=torch.long)
        mask[b, :n] = 1
    answer_ids = torch.tensor([e.answer_id for e in encoded], dtype=torch.long)
    return {"input_ids": ids, "labels": labels, "attention_mask": mask, "answer_ids": answer_ids}


def make_batch(
    haystack: str,
    tokenizer: Any,
    n_tokens: int,
    task: str,
    batch_size: int,
    rng: np.random.Generator,
    keep_out_tail: int = 0,
) -> dict[str, Any]:
    """A batch of :func:`build_sample` samples as tensors (see :func:`collate`).

    All rows normally have exactly ``n_tokens`` tokens; a row that came out up to 2
    tokens shorter is right-padded with the pad id (label -100).
    """
    encoded = [
        encode_sample(build_sample(haystack, n_tokens, task, rng, tokenizer, keep_out_tail), tokenizer)
        for _ in range(batch_size)
    ]
    return collate(encoded, pad_id(tokenizer))


# -------------------------------------------------------------------- dense stories


def _random_fact(rng: np.random.Generator, world: World, task: str) -> Fact:
    """A random valid fact; qa2 mixes in pick-ups and drops."""
    if task == "qa2":
        r = rng.random()
        held = [o for o in OBJECTS if o in world.holder]
        free = [o for o in OBJECTS if o not in world.holder]
        located = [a for a in ACTORS if a in world.loc]
        if r < 0.25 and free and located:
            return Fact("get", _pick(rng, located), _pick(rng, GET_VERBS), _pick(rng, free))
        if r < 0.4 and held:
            o = _pick(rng, held)
            return Fact("drop", world.holder[o], _pick(rng, DROP_VERBS), o)
    actor = _pick(rng, ACTORS)
    return _move(rng, actor, _pick(rng, PLACES, [world.loc.get(actor, "")]))


def _random_question(rng: np.random.Generator, world: World, task: str) -> tuple[str, str] | None:
    objs = [o for o in OBJECTS if world.where(o) is not None]
    if task == "qa2" and objs and rng.random() < 0.7:
        o = _pick(rng, objs)
        return f"Where is the {o}?", world.where(o)  # type: ignore[return-value]
    actors = [a for a in ACTORS if a in world.loc]
    if not actors:
        return None
    a = _pick(rng, actors)
    return f"Where is {a}?", world.loc[a]


def dense_story(rng: np.random.Generator, task: str, n_facts: int, n_questions: int) -> str:
    """A bAbI story without haystack, questions inline (curriculum stage 1).

    Facts are joined by spaces; each question block is
    ``"\\nQuestion: Where is X?\\nAnswer: place"`` and the next facts start on a new
    line.  The story ends with the last answer.  ``task`` "qa2" mixes object
    pick-ups/drops and asks about objects too; the other tasks use moves only.
    Encode it with :func:`encode_dense_story`.
    """
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; choose one of {', '.join(TASKS)}")
    if n_facts < 1 or n_questions < 1:
        raise ValueError("n_facts and n_questions must be >= 1")
    n_questions = min(n_questions, n_facts)
    # Questions after distinct fact indices; the last one after the final fact.
    q_after = set(int(i) for i in rng.choice(n_facts - 1, size=n_questions - 1, replace=False)) if n_questions > 1 else set()
    q_after.add(n_facts - 1)
    world = World()
    out: list[str] = []
    line: list[str] = []
    for i in range(n_facts):
        f = _random_fact(rng, world, task)
        world.apply(f)
        line.append(f.sentence)
        if i in q_after:
            qa = _random_question(rng, world, task)
            assert qa is not None  # a move always precedes: the first fact is a move
            out.append(" ".join(line) + f"{QUESTION_PREFIX}{qa[0]}{ANSWER_PREFIX} {qa[1]}")
            line = []
    return "\n".join(out)


_ANSWER_RE = re.compile(r"\nAnswer:( [a-z]+)")


def encode_dense_story(text: str, tokenizer: Any) -> EncodedSample:
    """Tokenise a :func:`dense_story`, labelling every answer token.

    ``answer_id`` is the last answer's id; ``fact_token_spans`` covers every fact.
    """
    ids, offs = encode_with_offsets(tokenizer, text)
    labels = [IGNORE_INDEX] * len(ids)
    aid = -1
    for m in _ANSWER_RE.finditer(text):
        aid = answer_token_id(tokenizer, m.group(1))
        (i, j), = _token_spans(offs, [m.span(1)])
        if j - i != 1 or ids[i] != aid:
            raise ValueError(f"answer {m.group(1)!r} at {m.start(1)} does not tokenise to one token")
        labels[i] = aid
    if aid < 0:
        raise ValueError("no answer found in the story")
    spans = _token_spans(offs, [(pf.start, pf.end) for pf in parse_facts(text)])
    return EncodedSample(input_ids=ids, labels=labels, answer_id=aid, fact_token_spans=spans)


def make_dense_batch(
    tokenizer: Any,
    task: str,
    batch_size: int,
    rng: np.random.Generator,
    n_facts: int = 8,
    n_questions: int = 4,
) -> dict[str, Any]:
    """A batch of dense stories (see :func:`collate`; every answer is labelled)."""
    encoded = [encode_dense_story(dense_story(rng, task, n_facts, n_questions), tokenizer) for _ in range(batch_size)]
    return collate(encoded, pad_id(tokenizer))


def shortcut_accuracy(samples: Iterable[FactSample]) -> float:
    """Fraction of samples where "answer the last place mentioned" is right."""
    s = list(samples)
    if not s:
        return float("nan")
    return sum(x.shortcut_answer == x.answer for x in s) / len(s)


__all__ = [
    "ACTORS", "PLACES", "MOVE_VERBS", "OBJECTS", "GET_VERBS", "DROP_VERBS", "TASKS", "CHANCE",
    "QUESTION_PREFIX", "ANSWER_PREFIX", "FACT_RE", "QUESTION_RE", "IGNORE_INDEX",
    "Fact", "ParsedFact", "World", "FactSample", "EncodedSample",
    "parse_facts", "solve", "make_story", "build_sample", "encode_sample", "answer_token_id",
    "collate", "pad_id", "make_batch", "dense_story", "LINE_LAYOUTS", "OFFSETS", "reflow", "question_tokens",
    "last_segment_tokens", "build_layout_sample", "encode_dense_story", "make_dense_batch", "shortcut_accuracy",
]


# ------------------------------------------------------------------------ answer-word mentions
# Sentences that name a place but state no fact (no actor moves there: rmt_core.questions.FACT_RE
# finds none of them), for measuring whether a model answers with a trained answer word it merely saw.
MENTION_SENTENCES: tuple[str, ...] = ("Nobody had entered the {place} since the spring.",
                                      "The {place} was said to be very cold.",
                                      "There was some talk of painting the {place} again.")
MENTION_PLACES: tuple[str, ...] = ("after", "before")  # where the mention goes: after the last fact, before the first


def insert_mention(sample: FactSample, place: str, where: str, rng: np.random.Generator) -> tuple[FactSample, tuple[int, int]]:
    """A copy of `sample` with one sentence that names `place` (a trained answer word) but states no
    fact, inserted at a random sentence start after the last fact sentence (`where` = "after") or
    before the first (`where` = "before"), and always before the question.

    Returns (the new sample, the mention's character span in its text). The facts, question and
    answer are unchanged (fact spans shifted where the mention precedes them). Raises ValueError for
    an unknown `where`, a `place` that is not a trained answer word, or when no sentence start lies
    on that side of the facts.
    """
    if where not in MENTION_PLACES:
        raise ValueError(f"where must be one of {', '.join(MENTION_PLACES)}, got {where!r}")
    if place not in PLACES:
        raise ValueError(f"{place!r} is not a trained answer word ({', '.join(PLACES)})")
    question_at = sample.text.rfind(QUESTION_PREFIX)
    first, last = sample.facts[0][0], sample.facts[-1][1]
    low, high = (last, question_at) if where == "after" else (0, first)
    starts = [int(s) for s in sentence_boundaries(sample.text) if low <= s < high and s != first]
    if not starts:
        raise ValueError(f"no sentence start {where} the facts to put a mention at")
    at = starts[int(rng.integers(len(starts)))]
    sentence = MENTION_SENTENCES[int(rng.integers(len(MENTION_SENTENCES)))].format(place=place) + " "
    text = sample.text[:at] + sentence + sample.text[at:]
    shift = len(sentence)
    facts = [(s + shift, e + shift) if s >= at else (s, e) for s, e in sample.facts]
    return dataclasses.replace(sample, text=text, facts=facts), (at, at + len(sentence) - 1)
