"""The limits an answer carries: plain-language warnings, each with a code, computed from the
document, the answer and the model card's own measurements (rmt_core.operating_range).

Codes (WARNING_CODES):
    beyond_measured_range  the document is longer (segments) than any the card measured
    no_measurement         the card measured no accuracy: the range is unknown
    name_absent            the asked name does not occur in the document
    several_facts          several facts about the asked person, or facts about several people,
                           for a model trained on one fact
    no_fact_found          the name occurs, but in no fact sentence of the trained form
    question_outside       the question is not one the card says the model can be asked
    answer_outside         the top answer is not one of the answers the model was trained to give
    no_fact_credit         a confident answer (p >= HIGH_PROBABILITY) while the fact's segment gets
                           no positive through-memory credit, or was not scored
    question_format        the document asks its question in its own words before "Answer:", not in
                           the training format ("Question: ..." on its own line, then "Answer:")
    answer_word_mentioned  the document names a trained answer word outside its fact sentences
                           ("serving the office of high sheriff"): the shipped models take such a
                           mention for a fact about half the time (the card's answer-mentions table)
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from ..operating_range import OperatingRange
from ..questions import answer_word_mentions, name_mentions, parse_facts

HIGH_PROBABILITY = 0.5
WARNING_CODES: tuple[str, ...] = ("beyond_measured_range", "no_measurement", "name_absent", "several_facts",
                                  "no_fact_found", "question_outside", "answer_outside", "no_fact_credit",
                                  "question_format", "answer_word_mentioned")


@dataclass(frozen=True)
class AnswerWarning:
    """One limit of an answer: `code` (one of WARNING_CODES) and `text` (one or two sentences for users)."""

    code: str
    text: str

    def to_dict(self) -> dict[str, str]:
        return {"code": self.code, "text": self.text}


@dataclass(frozen=True)
class FactsFound:
    """The fact sentences of the trained form (rmt_core.questions.parse_facts) in a document:
    per person, their character starts; `last` the start of the asked person's last one (None: none)."""

    by_person: dict[str, list[int]]
    last: int | None


def find_facts(document: str, entity: str | None) -> FactsFound:
    """Fact sentences in `document` (without its question), per person; the asked `entity`'s last one."""
    by_person: dict[str, list[int]] = {}
    for found in parse_facts(document):
        by_person.setdefault(found.fact.actor, []).append(found.start)
    name = _bare(entity) if entity else None
    mine = by_person.get(name or "", [])
    return FactsFound(by_person, mine[-1] if mine else None)


def _bare(entity: str) -> str:
    return entity.removeprefix("the ")


def name_occurs(document: str, entity: str) -> bool:
    """Whether `entity` ("Mary", "the milk") occurs in `document` as a whole word (case-sensitive for
    names: "mary" in lower case is not the person; rmt_core.questions.name_mentions)."""
    return bool(name_mentions(document, entity))


def answer_warnings(*, num_segments: int, document: str, entity: str | None, question: str | None,
                    question_ok: bool, top_text: str, top_probability: float, answers: tuple[str, ...],
                    operating_range: OperatingRange | None, fact_segment: int | None, question_segment: int,
                    segment_scores: np.ndarray | None, spec_description: str = "",
                    loose_question: bool = False,
                    segment_of: Callable[[int], int | None] | None = None) -> list[AnswerWarning]:
    """Every warning that applies to one answer (see the module docstring for the codes).

    num_segments: segments of the traced document + question. document: its text without the
    question. entity: the asked person or object (None when the question names none the model
    knows). question_ok: the question is one the model was trained on. top_text / top_probability:
    the top answer. answers: the answers it was trained to give. fact_segment: the segment of the
    asked person's last fact (None when none was found). segment_scores: (S,) through-memory credit
    per segment, NaN where not scored; None when no attribution was run (no_fact_credit is skipped).
    loose_question: the document asks `question` in its own words before "Answer:" (question_format).
    segment_of: the segment of a character of `document` (None: segments are not named).
    """
    out: list[AnswerWarning] = []
    if loose_question:
        out.append(AnswerWarning(
            "question_format",
            f"The document asks “{question}” in its own words before “Answer:”; the model was trained on "
            f"“Question: {question}” on a line of its own, then “Answer:” on the next. Its answer to another form "
            "was not measured: remove the question from the document and ask it in the question box (the training "
            "format) to get the answer the card measured."))
    op = operating_range
    if op is None or op.max_segments is None:
        out.append(AnswerWarning("no_measurement", f"The model card has no accuracy measurement for this model, so "
                                 f"how far its answers hold at {num_segments} segments is unknown."))
    elif num_segments > op.max_segments:
        near = op.accuracy_near(num_segments)
        where = "; ".join(f"{acc:.3f} in {text}" for text, acc in near[1].items()) if near else ""
        out.append(AnswerWarning(
            "beyond_measured_range",
            f"This document is {num_segments} segments long; the model card measured documents of "
            f"{min(op.measured_segments)}-{op.max_segments} segments only (accuracy at the nearest measured length, "
            f"{near[0]} segments: {where}). Nothing was measured at {num_segments} segments: the answer may be "
            "wrong however confident it looks."))
    if not question_ok:
        out.append(AnswerWarning("question_outside", f"“{question}” is not a question the model card says this model "
                                 f"can be asked: the answer is likely meaningless. {spec_description}".strip()))
    if entity is not None and not name_occurs(document, entity):
        out.append(AnswerWarning("name_absent", f"“{_bare(entity)}” does not occur in the document: there is nothing "
                                 f"to recall, so the answer (“{top_text}”, p = {top_probability:.2f}) is a guess."))
    facts = find_facts(document, entity)
    trained_one = op is not None and op.facts == "one"
    count = sum(len(v) for v in facts.by_person.values())
    mine = len(facts.by_person.get(_bare(entity), [])) if entity else 0
    if trained_one and (mine > 1 or len(facts.by_person) > 1):
        people = ", ".join(f"{name} ×{len(starts)}" for name, starts in facts.by_person.items())
        out.append(AnswerWarning(
            "several_facts",
            f"The document holds {count} fact sentences about {len(facts.by_person)} "
            f"{'person' if len(facts.by_person) == 1 else 'people'} ({people}); the model was trained (task "
            f"“{op.task}”) on documents with one fact about one person and was not measured on several: its answer "
            f"need not be {'the last place ' + _bare(entity) + ' went' if entity else 'the right one'}."))
    elif entity is not None and mine == 0 and name_occurs(document, entity):
        out.append(AnswerWarning("no_fact_found", f"“{_bare(entity)}” occurs in the document, but in no sentence of "
                                 f"the form the model was trained on (“{_bare(entity)} went to the kitchen.”): its "
                                 "answer may not come from what the document says."))
    mention = _mention_warning(document, answers, top_text, op, num_segments, segment_of)
    if mention is not None:
        out.append(mention)
    if answers and top_text not in answers:
        out.append(AnswerWarning("answer_outside", f"The top answer “{top_text}” is not one of the answers the model "
                                 f"was trained to give ({', '.join(answers)})."))
    if (segment_scores is not None and top_probability >= HIGH_PROBABILITY and fact_segment is not None
            and fact_segment < question_segment):
        credit = float(segment_scores[fact_segment])
        if not np.isfinite(credit):
            out.append(AnswerWarning(
                "no_fact_credit",
                f"The answer is confident (p = {top_probability:.2f}), but the fact's segment ({fact_segment}) was not "
                "scored by the through-memory attribution (its window starts after it), so the attribution cannot "
                "say whether the answer came from the fact. Widen the attribution window to score it, or compare with "
                "memory reset (Compare page) to test whether memory carries the answer."))
        elif credit <= 0:
            out.append(AnswerWarning(
                "no_fact_credit",
                f"The answer is confident (p = {top_probability:.2f}), but the fact's segment ({fact_segment}) gets no "
                f"positive through-memory credit ({credit:+.3g}): the attribution (integrated gradients through "
                "the recurrence) does not credit the fact. That alone does not show that memory did not carry it: "
                "compare with memory reset (Compare page) to test it directly."))
    return out


MAX_MENTIONS_NAMED = 4  # mentions a warning quotes or lists (the rest are counted)


def _mention_warning(document: str, answers: tuple[str, ...], top_text: str, op: OperatingRange | None,
                     num_segments: int, segment_of: Callable[[int], int | None] | None) -> AnswerWarning | None:
    """answer_word_mentioned: trained answer words the document names outside its fact sentences."""
    found = answer_word_mentions(document, answers)
    if not found:
        return None
    where = (lambda char: "" if segment_of is None or segment_of(char) is None
             else f"segment {segment_of(char)}: ")  # noqa: E731
    measured = _mention_measured(op, num_segments)
    mine = [char for word, char in found if word == top_text]
    if mine:
        quotes = "; ".join(f"{where(c)}“…{_context(document, c, len(top_text))}…”" for c in mine[:MAX_MENTIONS_NAMED])
        more = f" and {len(mine) - MAX_MENTIONS_NAMED} more" if len(mine) > MAX_MENTIONS_NAMED else ""
        return AnswerWarning(
            "answer_word_mentioned",
            f"The answer “{top_text}” is also in the document's own text, outside any fact sentence ({quotes}{more}). "
            f"{measured} This answer may come from that mention, not from a fact: replace the word and ask again to "
            "test it.")
    counts: dict[str, int] = {}
    for word, _ in found:
        counts[word] = counts.get(word, 0) + 1
    named = ", ".join(f"“{w}” ×{n}" for w, n in counts.items())
    return AnswerWarning(
        "answer_word_mentioned",
        f"The document names trained answers outside its fact sentences ({named}; first {where(found[0][1])}"
        f"“…{_context(document, found[0][1], len(found[0][0]))}…”). {measured} The answer “{top_text}” is not one of "
        "those words.")


def _mention_measured(op: OperatingRange | None, num_segments: int) -> str:
    """What the card measured about answer-word mentions, in one sentence."""
    effect = op.mention_effect(num_segments) if op is not None else None
    if not effect:
        return ("Models of this kind may take such a mention for a fact; this model card measured nothing about it, "
                "so how often this one does is unknown.")
    parts = [f"{where} the fact: accuracy {e['accuracy_without']:.2f} → {e['accuracy_with']:.2f}, the answer was the "
             f"mentioned word in {100 * e['answered_mention']:.0f}% of {e['samples']:.0f} samples"
             for where, e in effect.items()]
    segments = int(next(iter(effect.values()))["segments"])
    return (f"The model does not reliably tell such a mention from a fact: its model card added one such word to "
            f"held-out documents of {segments} segments ({'; '.join(parts)}).")


def _context(document: str, char: int, length: int, width: int = 30) -> str:
    """The whole words around `document[char:char + length]`, on one line."""
    start, end = max(0, char - width), min(len(document), char + length + width)
    words = document[start:end].split()
    if start > 0 and not document[start - 1].isspace() and len(words) > 1:
        words = words[1:]  # a word cut at the left edge
    if end < len(document) and not document[end].isspace() and len(words) > 1:
        words = words[:-1]
    return " ".join(words)


def segment_of_char(trace: Any, char: int) -> int | None:
    """The segment holding character `char` of the trace's text (None when no token covers it)."""
    for seg in trace.segments:
        spans = seg.char_spans
        if spans.size and int(spans[:, 1].max()) > char:
            return seg.index
    return None


__all__ = ["AnswerWarning", "WARNING_CODES", "HIGH_PROBABILITY", "answer_warnings", "find_facts", "name_occurs",
           "segment_of_char", "FactsFound"]
