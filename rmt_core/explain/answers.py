"""Ask a fact-recall model a question about any document, and find the model's answer.

The shipped fact-recall models were trained on one question format (see
:mod:`rmt_core.questions`): the text ends with ``"\\nQuestion: Where is Mary?\\nAnswer:"``
and the answer is the next token, one word with a leading space (``" office"``).
This module is the one place that knows where the answer of a document is predicted
and how a prediction is read off (the app's answer line, interventions and the guided
tour all use it):

* :func:`question_spec` — what a model can be asked (from its config's ``task``, or a
  ``questions`` entry in its model card or ``RMTConfig.extra``).
* :func:`prompt_text` — the document with the question appended in the exact training
  format (a document already ending with ``"Answer:"`` is taken as it is).
* :func:`answer_site` — the token after which a trace's answer is predicted.
* :func:`top_predictions` / :func:`stored_predictions` — top-k next tokens with probabilities.
* :func:`ask` — all of it: trace document + question, top-3 answers, and the earlier
  segment whose tokens most moved the answer through memory
  (:func:`rmt_core.explain.attribution.through_memory`).

What the answer's evidence lets one claim (right / wrong against the document's own sentences,
"memory carried it from", where to open the document) is rmt_core.explain.answer_evidence:
AskResult.verdict, .carrier and .evidence read it.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..errors import QuestionError
from ..questions import ANSWER_PREFIX, PLACES, QUESTION_PREFIX, QUESTION_TASKS, StatedPlace, stated_place
from ..operating_range import OperatingRange, read_operating_range
from .answer_evidence import (MIN_CARRIER_SHARE, NO_CARRIER_WARNINGS, CarrierClaim, carrier_claim, evidence_segment,
                              verdict_text)
from .answer_warnings import AnswerWarning, answer_warnings, find_facts, segment_of_char
from ..token_text import decode_token, encode_ids, token_label
from ..tracing.recorder import trace_document

ANSWER_MARK = "Answer:"
TOP_K = 3
_TRAILING_QUESTION = re.compile(r"(?:^|\n)Question:[ \t]*(?P<q>[^\n]*?)[ \t]*\nAnswer:\s*\Z")
_WHERE = re.compile(r"(?i)^\s*(?:question:\s*)?where\s+is\s+(?P<e>[a-z]+(?:\s+[a-z]+)?)\s*\??\s*$")


@dataclass(frozen=True)
class QuestionSpec:
    """What a model can be asked.

    answerable: False for models not trained on questions (language models, copy task).
    entities: who or what a question may ask about ("Mary", "the milk").
    answers: the words the model was trained to answer with (places).
    template: the question's form, with {} for the entity.
    description: one sentence for users: what this model can (or cannot) answer.
    """

    answerable: bool
    task: str
    entities: tuple[str, ...] = ()
    answers: tuple[str, ...] = ()
    template: str = "Where is {}?"
    description: str = ""

    def question(self, entity: str) -> str:
        """The question about `entity` in the model's training form, e.g. "Where is Mary?"."""
        return self.template.format(entity)

    @property
    def examples(self) -> list[str]:
        return [self.question(e) for e in self.entities]


def read_card(name_or_path: str | Path | None) -> dict[str, Any]:
    """The model card stored in a checkpoint's config.json ({} when there is none)."""
    if not name_or_path:
        return {}
    from ..io.checkpoint import resolve_checkpoint
    from ..errors import CheckpointError

    try:
        folder = resolve_checkpoint(name_or_path)
        return dict(json.loads((Path(folder) / "config.json").read_text()).get("card", {}))
    except (CheckpointError, OSError, ValueError):
        return {}


def question_spec(model, card: dict[str, Any] | None = None) -> QuestionSpec:
    """What `model` can answer: from a ``questions`` entry of its card (or of ``config.extra``),
    else from ``config.task`` (memorize / detect / qa1: "Where is <actor>?"; qa2 also objects).

    A card entry looks like ``{"questions": {"template": "Where is {}?", "entities": ["Mary", ...],
    "answers": ["garden", ...]}}``. `card` defaults to the card of the checkpoint `model.name`.
    """
    cfg = model.config
    card = read_card(getattr(model, "name", None)) if card is None else card
    declared = card.get("questions") or cfg.extra.get("questions")
    if isinstance(declared, dict) and declared.get("entities"):
        entities = tuple(str(e) for e in declared["entities"])
        template = str(declared.get("template", "Where is {}?"))
        answers = tuple(str(a) for a in declared.get("answers", PLACES))
        return QuestionSpec(True, cfg.task, entities, answers, template,
                            f"This model answers questions of the form “{template.format(entities[0])}” about "
                            f"{_names(entities)} (its model card says so).")
    if cfg.task in QUESTION_TASKS:
        entities = QUESTION_TASKS[cfg.task]
        what = "the last place a person went" if cfg.task != "qa2" else "where a person or an object is"
        return QuestionSpec(True, cfg.task, entities, PLACES, "Where is {}?",
                            f"Trained on “{cfg.task}” fact recall: it answers “Where is Mary?” ({what}) about "
                            f"{_names(entities)}, with one of {_names(PLACES)}. It cannot answer other questions.")
    what = f"the “{cfg.task}” task" if cfg.task else "plain text (language modelling)"
    return QuestionSpec(False, cfg.task, description=f"This model was trained on {what}, not on questions: "
                                                      "it has nothing to answer with. Pick a fact-recall model.")


def _names(items: tuple[str, ...]) -> str:
    return ", ".join(items[:-1]) + " or " + items[-1] if len(items) > 1 else "".join(items)


def normalize_question(question: str, spec: QuestionSpec) -> str:
    """`question` in the model's training form ("mary", "where is mary" -> "Where is Mary?").

    Raises QuestionError when it is empty or not a question this model was trained on."""
    text = (question or "").strip()
    if not text:
        raise QuestionError("The question is empty: type a question such as “"
                            + (spec.examples[0] if spec.examples else "Where is Mary?") + "”.")
    if not spec.answerable:
        raise QuestionError(spec.description)
    match = _WHERE.match(text)
    wanted = (match.group("e") if match else text.rstrip("?")).strip().lower()
    for entity in spec.entities:
        if wanted in (entity.lower(), entity.lower().removeprefix("the ")):
            return spec.question(entity)
    raise QuestionError(f"“{text}” is not a question this model was trained on. It answers only "
                        f"“{spec.examples[0]}” about {_names(spec.entities)}; anything else gets a meaningless answer.")


def question_suffix(question: str) -> str:
    """The text appended to a document: ``"\\nQuestion: <question>\\nAnswer:"`` (the training format)."""
    return f"{QUESTION_PREFIX}{question}{ANSWER_PREFIX}"


def split_question(text: str) -> tuple[str, str | None]:
    """(document, question) when `text` already ends with "Question: ...\\nAnswer:" (trailing
    whitespace ignored), else (text, None).

    A text that ends with "Answer:" in another form ("... Where is Mary? Answer:") gives the
    sentence ending in "?" just before it as the question ("" when there is none), so the answer's
    verdict and warnings know who was asked; in_training_format tells the two forms apart."""
    stripped = text.rstrip()
    match = _TRAILING_QUESTION.search(stripped)
    if match is None:
        if stripped.endswith(ANSWER_MARK):
            before = stripped[: -len(ANSWER_MARK)].rstrip()
            loose = _LOOSE_QUESTION.search(before)
            if loose is None:
                return before, ""
            return before[: loose.start("q")].rstrip(), loose.group("q").strip()
        return text, None
    return stripped[: match.start()].rstrip(), match.group("q")


def in_training_format(text: str) -> bool:
    """Whether `text` ends with its question in the training format ("\\nQuestion: ...\\nAnswer:")."""
    return _TRAILING_QUESTION.search(text.rstrip()) is not None


# the last sentence before a trailing "Answer:" when it ends with "?" (a question asked in the text's own words)
_LOOSE_QUESTION = re.compile(r"(?:^|(?<=[.!?\n]))[ \t]*(?P<q>[^.!?\n]*\?)\s*\Z")


_ANSWERED = re.compile(r"(?:^|\n)Question:[ \t]*(?P<q>[^\n]*?)[ \t]*\nAnswer:[ \t]*(?P<a>[^\s]*)\s*\Z")


def split_asked(text: str) -> tuple[str, str | None, str | None]:
    """(document, question, answer) of a text that may end with a question: split_question's two,
    also when the answer word follows "Answer:" (a fact-recall sample ends "...Answer: garden"),
    and that word (None when there is none). The document is what a question is asked of."""
    match = _ANSWERED.search(text.rstrip())
    if match is None:
        body, question = split_question(text)
        return body, question, None
    return text.rstrip()[: match.start()].rstrip(), match.group("q"), match.group("a") or None


def prompt_text(model, document: str, question: str | None = None, spec: QuestionSpec | None = None) -> str:
    """The text to run: `document` (right-stripped) + the question in the training format.

    With no question, `document` must already end with "Answer:" (trailing whitespace is
    removed, so the answer is the next token). Raises QuestionError for an empty document,
    an empty question (when the document asks none), a question this model was not trained
    on, a second question after one the document already ends with, or a question longer
    than one segment (the model reads the question inside one segment).
    """
    spec = question_spec(model) if spec is None else spec
    body, existing = split_question(document or "")
    if not body.strip():
        raise QuestionError("The document is empty: paste or upload a text first, then ask about it.")
    if question is None or not question.strip():
        if existing is not None:
            return document.rstrip()
        normalize_question("", spec)  # raises: the question is empty
    if existing is not None:
        raise QuestionError(f"The document already ends with a question (“{existing or 'Answer:'}”): clear the "
                            "question box to get its answer, or remove the question from the document.")
    _check_length(model, question)
    return body.rstrip() + question_suffix(normalize_question(question, spec))


def _check_length(model, question: str) -> None:
    if model.tokenizer is None:
        return
    n = len(encode_ids(model.tokenizer, question_suffix(question.strip())))
    size = model.config.segment_size
    if n > size:
        raise QuestionError(f"The question is {n} tokens with its “Question:/Answer:” frame, longer than one "
                            f"segment ({size} tokens): the model must read it within one segment. Shorten it.")


# ---------------------------------------------------------------------- where the answer is
@dataclass(frozen=True)
class AnswerSite:
    """Where a document's answer is predicted: the token ending "Answer:" (segment, position in it).

    expected: the word after "Answer:" when the document gives it (a demo sample), else None.
    question: the question before "Answer:" ("" when there is none), None for a plain next-token site.
    """

    segment: int
    position: int
    expected: str | None
    question: str | None

    @property
    def is_question(self) -> bool:
        return self.question is not None


def answer_site(trace, fallback: bool = False) -> AnswerSite | None:
    """The token whose next-token prediction is the document's answer.

    The document must end with "Answer:" or with "Answer: <word>" (then `expected` is the
    word); a trace made from token ids is read through its decoded tokens. Otherwise None, or with `fallback` the last token of the document (its prediction
    is the next token after the document).
    """
    text, all_spans = trace.text, None
    if text is None and trace.segments:  # traced from token ids: the decoded tokens stand in for the text
        pieces = [t for seg in trace.segments for t in seg.tokens]
        ends = np.cumsum([len(t) for t in pieces])
        all_spans = np.stack([ends - [len(t) for t in pieces], ends], axis=1)
        text = "".join(pieces)
    if text is not None and trace.segments:
        index = text.rfind(ANSWER_MARK)
        tail = text[index + len(ANSWER_MARK):] if index >= 0 else None
        if tail is not None and re.fullmatch(r"\s*\S*\s*", tail):
            end = index + len(ANSWER_MARK)  # the character after ':'
            for seg in reversed(trace.segments):
                spans = seg.char_spans if all_spans is None else all_spans[seg.start:seg.end]
                hit = np.nonzero((spans[:, 0] < end) & (spans[:, 1] >= end))[0]
                if hit.size:
                    before = text[:index]
                    asked = split_question(before + ANSWER_MARK)[1]  # the training format's, or the text's own
                    return AnswerSite(seg.index, int(hit[0]), tail.strip() or None, asked or "")
                if spans.size and spans[0, 0] < end:
                    break
    if fallback and trace.segments:
        last = trace.segments[-1]
        return AnswerSite(last.index, last.num_tokens - 1, None, None)
    return None


# ---------------------------------------------------------------------- reading predictions
@dataclass(frozen=True)
class Prediction:
    """One candidate next token: id, text (stripped of the leading space) and probability."""

    token_id: int
    text: str
    probability: float


def answer_text(tokenizer: Any, token_id: int) -> str:
    """The answer text of one token id: its decoded text stripped, or, for a whitespace token,
    drawn visibly (␣, \\n); the id as a number without a tokenizer (see token_text.decode_token)."""
    raw = decode_token(tokenizer, int(token_id))
    return raw.strip() or token_label(raw).replace(" ", "␣")


def top_predictions(logprobs, tokenizer, k: int = TOP_K) -> list[Prediction]:
    """Top-k of one (V,) row of log-probabilities (numpy or torch), most likely first."""
    row = np.asarray(logprobs.detach().float().cpu() if hasattr(logprobs, "detach") else logprobs, dtype=np.float64)
    order = np.argsort(-row)[:k]
    return [Prediction(int(i), answer_text(tokenizer, int(i)), float(np.exp(row[i]))) for i in order]


def probability_of(logprobs, token_id: int) -> float:
    """p(token_id) from one (V,) row of log-probabilities."""
    value = logprobs[int(token_id)]
    return float(np.exp(float(value.detach().float().cpu()) if hasattr(value, "detach") else float(value)))


def stored_predictions(trace, site: AnswerSite, k: int = TOP_K) -> list[Prediction]:
    """Top-k at `site` from the trace's stored top-k (k <= the trace's top_k)."""
    seg = trace.segments[site.segment]
    tokenizer = trace.model.tokenizer if trace.model is not None else None
    ids, lps = seg.topk_ids[site.position], seg.topk_logprobs[site.position].astype(np.float64)
    return [Prediction(int(i), answer_text(tokenizer, int(i)), float(np.exp(lp))) for i, lp in zip(ids[:k], lps[:k])]


# ---------------------------------------------------------------------- asking
@dataclass
class AskResult:
    """A model's answer to a document's question.

    predictions: top-k next tokens after "Answer:" over the whole vocabulary (most likely first).
    candidates: the model's trained answers (e.g. the six places) ranked by probability, when known.
    attributed: the answer explained by memory_segment: the top prediction, or the best trained
        answer when the top prediction is not one of them.
    memory_segment: the scored earlier segment whose tokens most RAISED log p(attributed) through
        memory (largest positive summed through-memory attribution), or None (question in segment 0,
        no attribution run, or no scored segment with a positive credit: `note` says which).
    segment_scores: (S,) that sum per segment; NaN outside the attributed window and for the
        question's own segment (its tokens act directly, not through memory).
    scored: (first, last) earlier segment scored by the attribution, None when none was.
    fact_segment: the segment of the asked person's last fact sentence (trained form), None if none.
    warnings: the answer's limits (rmt_core.explain.answer_warnings.AnswerWarning: code + text),
        from the document and the model card's own measurements; [] when none applies.
    total_credit: the answer's total through-memory attribution, the sum of |score| over every
        scored token (earlier segments and the question's own); None when no attribution was run.
    entity: the person or object the question asks about (None: none the model knows).
    stated: where the document's own fact sentences put `entity` (rmt_core.questions.stated_place;
        None without an entity). stated_segment: the segment of its last evidence sentence.
    """

    trace: Any
    site: AnswerSite
    predictions: list[Prediction]
    candidates: list[Prediction] | None = None  # the answers the model was trained on, most likely first
    attributed: Prediction | None = None  # the answer memory_segment explains
    memory_segment: int | None = None
    segment_scores: np.ndarray | None = None
    note: str | None = None
    scored: tuple[int, int] | None = None
    fact_segment: int | None = None
    warnings: list[AnswerWarning] = field(default_factory=list)
    total_credit: float | None = None
    entity: str | None = None
    stated: StatedPlace | None = None
    stated_segment: int | None = None

    @property
    def answer(self) -> str:
        return self.predictions[0].text

    @property
    def correct(self) -> bool | None:
        """Whether the top answer is right: against the word the document gives after "Answer:" when it
        gives one, else against the place its own fact sentences give (`stated`); None: cannot tell."""
        if self.site.expected is not None:
            return self.answer == self.site.expected
        return None if self.stated is None or self.stated.place is None else self.answer == self.stated.place

    @property
    def verdict(self) -> str | None:
        """The verdict in words when it comes from parsing the document (answer_evidence.verdict_text): the
        document's last statement about the asked person and right / wrong, or why it cannot tell. None
        when the document gives its own answer after "Answer:" or the site asks no question."""
        if self.site.expected is not None or not self.site.is_question:
            return None
        return verdict_text(self.answer, self.stated, self.stated_segment, self.entity)

    @property
    def carrier(self) -> CarrierClaim | None:
        """What may be said about where memory carried the answer from (answer_evidence.carrier_claim):
        the segment named only above MIN_CARRIER_SHARE and under no guess / no-credit warning. None when
        no attribution was run."""
        if self.segment_scores is None or self.scored is None:
            return None
        return carrier_claim(self.memory_segment, self.segment_scores, self.total_credit,
                             [w.code for w in self.warnings])

    @property
    def evidence(self) -> tuple[int, str]:
        """(segment, why): where a view of the document opens to show this answer's evidence
        (answer_evidence.evidence_segment: the document's statement, else the clear carrier, else 0)."""
        return evidence_segment(self.stated, self.stated_segment, self.fact_segment, self.carrier)


def memory_segment(trace, site: AnswerSite, target: int, n_steps: int = 32, max_segments: int | None = None,
                   progress: Callable[[int, int], Any] | None = None) -> tuple[int | None, np.ndarray, str | None]:
    """(segment, per-segment scores (S,), note): the scored earlier segment whose tokens most RAISE
    log p(target) at `site` through memory (largest positive sum of integrated gradients through the
    recurrence, :func:`rmt_core.explain.attribution.through_memory`, summed per segment).

    max_segments: earlier segments unrolled (default: back to the document's start up to the cost
    bound attribution.MAX_THROUGH_SEGMENTS; a larger window is clamped to the start). Scores are NaN
    for segments not scored and for the question's own segment (its tokens act directly). The note
    says which segments were scored, when the window stops short of the start, and when no scored
    segment has a positive credit (then segment is None: a negative effect is never named the carrier).
    """
    segment, scores, note, _ = _through_credits(trace, site, target, n_steps, max_segments, progress)
    return segment, scores, note


def _through_credits(trace, site: AnswerSite, target: int, n_steps: int, max_segments: int | None,
                     progress: Callable[[int, int], Any] | None) -> tuple[int | None, np.ndarray, str, float | None]:
    """memory_segment's (segment, scores, note) and the total attribution (sum of |score| over every
    scored token, the question's own segment included; None when nothing was scored)."""
    from . import attribution

    scores = np.full(trace.num_segments, np.nan)
    if site.segment == 0:
        return None, scores, "The question is in the first segment: the answer cannot come through memory.", None
    result = attribution.through_memory(trace, site.segment, site.position, target=target, n_steps=n_steps,
                                        progress=progress, max_segments=max_segments)
    for seg in trace.segments[result.first_segment:site.segment]:
        scores[seg.index] = float(np.nansum(result.scores[seg.start:seg.end]))
    first = result.first_segment
    total = float(np.nansum(np.abs(result.scores)))
    return (carrier_segment(scores, first, site.segment), scores,
            _window_note(scores, first, site.segment, result.note), total)


def carrier_segment(scores: np.ndarray, first: int, question_segment: int) -> int | None:
    """The scored earlier segment (first..question_segment - 1) with the largest positive credit; None
    when none is positive.

    scores: (S,) per-segment through-memory credit, NaN where not scored."""
    earlier = np.full(len(scores), -np.inf)
    earlier[first:question_segment] = np.where(np.isfinite(scores[first:question_segment]),
                                                scores[first:question_segment], -np.inf)
    if not len(earlier):
        return None
    best = int(np.argmax(earlier))
    return best if earlier[best] > 0 else None


def _window_note(scores: np.ndarray, first: int, question_segment: int, note: str | None) -> str:
    last = question_segment - 1
    parts = [f"Scored: segments {first}..{last} (through memory); segment {question_segment}, the question's own, "
             "acts directly and is shown apart."]
    if first > 0:
        parts.append(f"The window stops short of the document's start: segments 0..{first - 1} were not scored "
                     "(widen the window to score them).")
    elif note and "clamped" in note:
        parts.append(note)
    if carrier_segment(scores, first, question_segment) is None:
        parts.append("No scored earlier segment has a positive credit: nothing shows which segment memory carried "
                     "the answer from.")
    return " ".join(parts)


def site_logprobs(trace, site: AnswerSite):
    """(V,) log-probabilities of the next token at `site`: the site's segment re-run from its
    stored memory (one segment; needs the model attached)."""
    import torch

    trace.require_model("re-running the answer's segment")
    seg = trace.segments[site.segment]
    with torch.no_grad():
        out = trace.replay(seg.index, token_ids=seg.token_ids[: site.position + 1])
        return torch.log_softmax(out.logits[0, -1].float(), dim=-1)


def _single_token_ids(tokenizer, words: tuple[str, ...]) -> dict[str, int]:
    """{word: id} for the words that are one token with a leading space (the answer format)."""
    if tokenizer is None:
        return {}
    found = {}
    for word in words:
        ids = encode_ids(tokenizer, " " + word)
        if len(ids) == 1:
            found[word] = int(ids[0])
    return found


def answer_from_trace(trace, k: int = TOP_K, attribute: bool = True, n_steps: int = 32,
                      progress: Callable[[int, int], Any] | None = None, max_segments: int | None = None,
                      card: dict[str, Any] | None = None) -> AskResult | None:
    """The answer a finished trace gives at its "Answer:" (None when the document asks nothing),
    with its warnings (AskResult.warnings).

    With `attribute` (needs the model attached) also the segment where memory most raised it,
    unrolling `max_segments` earlier segments (default: back to the start up to the cost bound).
    card: the model card (default: read from the checkpoint the trace's model or model_info names)."""
    site = answer_site(trace)
    if site is None:
        return None
    if trace.model is None:
        result = AskResult(trace, site, stored_predictions(trace, site, k))
    else:
        row = site_logprobs(trace, site)
        tokenizer = trace.model.tokenizer
        result = AskResult(trace, site, top_predictions(row, tokenizer, k))
        spec = question_spec(trace.model)
        ids = _single_token_ids(tokenizer, spec.answers)
        if ids:
            result.candidates = sorted((Prediction(i, w, probability_of(row, i)) for w, i in ids.items()),
                                       key=lambda p: -p.probability)
    # Attribute the top answer, or the best trained answer when the top one is none of them.
    result.attributed = result.predictions[0]
    if result.candidates and result.predictions[0].token_id not in {c.token_id for c in result.candidates}:
        result.attributed = result.candidates[0]
    if attribute and trace.model is not None:
        result.memory_segment, result.segment_scores, result.note, result.total_credit = _through_credits(
            trace, site, result.attributed.token_id, n_steps, max_segments, progress)
        scored = np.nonzero(np.isfinite(result.segment_scores))[0]
        result.scored = (int(scored[0]), int(scored[-1])) if scored.size else None
    add_warnings(result, card)
    return result


def operating_range_of(trace_or_model, card: dict[str, Any] | None = None) -> OperatingRange | None:
    """The operating range on the model card of a model (or of the model a trace was made with)."""
    model = getattr(trace_or_model, "model", None) if hasattr(trace_or_model, "segments") else trace_or_model
    info = getattr(trace_or_model, "model_info", None) or {}
    name = getattr(model, "name", None) or info.get("name")
    task = model.config.task if model is not None else str((info.get("rmt") or {}).get("task", ""))
    return read_operating_range(read_card(name) if card is None else card, task)


def add_warnings(result: AskResult, card: dict[str, Any] | None = None) -> AskResult:
    """Fill result.warnings (and result.fact_segment, .entity, .stated, .stated_segment) from its trace,
    question, answer and the model card."""
    trace, site = result.trace, result.site
    text = trace.text if trace.text is not None else "".join(t for seg in trace.segments for t in seg.tokens)
    index = text.rfind(ANSWER_MARK)
    document, asked = split_question(text[: index + len(ANSWER_MARK)] if index >= 0 else text)
    question = site.question if site.question is not None else asked
    op = operating_range_of(trace, card)
    model = trace.model
    spec = question_spec(model, card) if model is not None else None
    entity, question_ok = None, True
    if question:
        if spec is not None:
            try:
                entity = _entity_of(normalize_question(question, spec), spec)
            except QuestionError:
                question_ok = False
        elif op is not None:
            match = _WHERE.match(question)
            wanted = (match.group("e") if match else "").lower()
            entity = next((n for n in op.names if wanted in (n.lower(), n.lower().removeprefix("the "))), None)
            question_ok = entity is not None
    facts = find_facts(document, entity)
    result.fact_segment = None if facts.last is None else segment_of_char(trace, facts.last)
    result.entity = entity
    result.stated = None if entity is None else stated_place(document, entity)
    evidence = result.stated.evidence if result.stated is not None else ()
    result.stated_segment = segment_of_char(trace, evidence[-1].start) if evidence else None
    # without the model a trace shows stored answers as token ids: no comparison with the trained words
    answers = () if model is None else op.answers if op is not None else (spec.answers if spec.answerable else ())
    tail = text[: index + len(ANSWER_MARK)] if index >= 0 else text
    result.warnings = answer_warnings(
        loose_question=bool(question) and not in_training_format(tail),
        num_segments=trace.num_segments, document=document, entity=entity, question=question,
        question_ok=question_ok, top_text=result.predictions[0].text, top_probability=result.predictions[0].probability,
        answers=answers, operating_range=op, fact_segment=result.fact_segment, question_segment=site.segment,
        segment_scores=result.segment_scores, spec_description=spec.description if spec is not None else "",
        segment_of=lambda char: segment_of_char(trace, char))
    return result


def _entity_of(question: str, spec: QuestionSpec) -> str | None:
    return next((e for e in spec.entities if spec.question(e) == question), None)


def ask(model, document: str, question: str | None = None, k: int = TOP_K, attribute: bool = True,
        progress: Callable[[int, int], Any] | None = None, max_segments: int | None = None) -> AskResult:
    """Run `model` on `document` + `question` and return its answer with its limits.

    question: e.g. "Where is Mary?" (or just "Mary"); None when the document already ends
        with "Answer:". Appended in the training format (see prompt_text).
    max_segments: earlier segments the through-memory attribution unrolls (default: back to the
        document's start up to attribution.MAX_THROUGH_SEGMENTS; more is clamped to the start).
    Returns an AskResult: top-k answers with probabilities, the trace of document + question,
    the earlier segment whose tokens most raised the answer through memory, which segments were
    scored, and `warnings` (code + plain text: the document is longer than the card measured, the
    name is absent, several facts, a question or answer outside the card, a confident answer whose
    fact gets no credit, no measurement on the card).
    Raises QuestionError (bad or empty question, see prompt_text), TraceError (empty document),
    TraceCancelled when `progress` stopped the run.
    """
    from ..errors import TraceCancelled

    text = prompt_text(model, document, question)
    trace = trace_document(model, text, progress=progress)
    if not trace.complete:
        raise TraceCancelled(f"The run stopped after {trace.num_segments} segments, before the question.")
    result = answer_from_trace(trace, k=k, attribute=attribute, max_segments=max_segments)
    assert result is not None  # prompt_text always ends the text with "Answer:"
    return result


def answer_lines(result: AskResult) -> list[str]:
    """An AskResult as plain-text lines (CLI, report): the answer, the verdict against the document's
    own sentences (``verdict: ...``), its warnings (``warning [code]: text``), where memory carried it
    from (only a clear carrier, AskResult.carrier) and which segments were scored."""
    top = result.predictions
    lines = [f"answer: {top[0].text!r} (p = {top[0].probability:.2f}; then "
             + ", ".join(f"{p.text!r} {p.probability:.2f}" for p in top[1:]) + ")"]
    if result.site.expected is not None:
        lines.append(f"verdict: the document's answer is {result.site.expected!r}: "
                     f"{'right' if result.correct else 'wrong'}")
    elif result.verdict is not None:
        lines.append(f"verdict: {result.verdict}")
    lines += [f"warning [{w.code}]: {w.text}" for w in result.warnings]
    claim = result.carrier
    if claim is not None:
        window = f"scored segments {result.scored[0]}..{result.scored[1]}"
        if claim.segment is not None:
            share = "" if claim.share is None else f"{100 * claim.share:.0f}% of the answer's total attribution, "
            lines.append(f"memory carried it from segment {claim.segment} ({claim.credit:+.2f}, {share}the largest "
                         f"positive credit of the {window})")
        else:
            lines.append(f"{claim.statement[:-1]} ({window})")
    if result.note:
        lines.append(f"note: {result.note}")
    return lines


__all__ = ["QuestionSpec", "question_spec", "normalize_question", "question_suffix", "split_question", "prompt_text",
           "AnswerSite", "answer_site", "Prediction", "answer_text", "top_predictions", "probability_of", "stored_predictions",
           "site_logprobs", "AskResult", "memory_segment", "carrier_segment", "answer_from_trace", "add_warnings",
           "operating_range_of", "AnswerWarning", "answer_lines", "ask", "read_card", "MIN_CARRIER_SHARE",
           "NO_CARRIER_WARNINGS", "CarrierClaim", "StatedPlace"]
