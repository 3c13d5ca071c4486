"""What an answer's evidence shows, and only that: the three claims a front end makes about an
answer (rmt_core.explain.answers.AskResult reads them; the app, the CLI and the report word them).

* :func:`verdict_text` — right or wrong against what the document itself states: the asked
  person's (or object's) place as the document's own fact sentences of the trained form give it
  (rmt_core.questions.stated_place), and "cannot tell" when they give none. A verdict read off
  the document by a parser, never by the model.
* :func:`carrier_claim` — "memory carried it from segment N": named only for a segment whose
  through-memory credit is positive and at least MIN_CARRIER_SHARE of the answer's total
  attribution, and never while the answer's warnings say it is a guess or that memory gives the
  fact no credit (NO_CARRIER_WARNINGS); otherwise the claim says plainly that no earlier segment
  carries a clear credit.
* :func:`evidence_segment` — where the answer's evidence sits, for a view to open at: the
  segment of the document's last statement about the asked person, else the clear carrier,
  else the start; with a sentence saying why.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ..questions import StatedPlace

MIN_CARRIER_SHARE = 0.05
"""The least share of the answer's total attribution that a segment's through-memory credit must
reach to be named the segment memory carried the answer from. The total is the sum of |score| over
every token the through-memory attribution scored (the earlier segments' and the question's own
segment's). Measured on the default model (austen-pydocs-recall, held-out Austen, one fact "Sandra
went to the garden." 1-54 segments before the question, integrated gradients with 32 steps): where the
fact's segment carries the answer, its credit is 12-15% of the total; where it does not (the fact's
credit at or below 0), the largest credit of any earlier segment is 0.0-0.5%. 5% sits between them."""

NO_CARRIER_WARNINGS: dict[str, str] = {
    "name_absent": "the answer is a guess (the asked name does not occur in the document)",
    "question_outside": "the question is not one the model can be asked (the answer is likely meaningless)",
    "no_fact_credit": ("the through-memory attribution does not credit the fact (the fact's segment gets no "
                       "positive credit, or the window did not score it)"),
}
"""Answer warnings (rmt_core.explain.answer_warnings codes) under which no segment is named the one
memory carried the answer from, with what each says."""


@dataclass(frozen=True)
class CarrierClaim:
    """What the answer's through-memory attribution lets one say about where memory carried it from.

    segment: the segment named ("memory carried it from segment N"); None when none is named.
    largest: the scored earlier segment with the largest positive credit (None: none is positive).
    credit: largest's credit (nats of log p of the attributed answer). share: credit / total.
    total: sum of |score| over every scored token (the answer's total attribution).
    reason: when segment is None, why no earlier segment carries a clear credit (one clause to follow
    "No earlier segment carries a clear credit: "; "" otherwise).
    """

    segment: int | None
    largest: int | None
    credit: float | None
    share: float | None
    total: float | None
    reason: str = ""

    @property
    def statement(self) -> str:
        """The claim in one sentence for users when no segment is named ("" when one is)."""
        return "" if self.segment is not None else f"No earlier segment carries a clear credit: {self.reason}."


def carrier_claim(largest: int | None, segment_scores: np.ndarray, total: float | None,
                  warning_codes: Sequence[str]) -> CarrierClaim:
    """The carrier claim of one answer.

    largest: the scored earlier segment with the largest positive credit, or None
        (rmt_core.explain.answers.carrier_segment). segment_scores: (S,) per-segment through-memory
    credit, NaN where not scored. total: the answer's total attribution (sum of |score| over the
    scored tokens; None when unknown, then the share test is skipped). warning_codes: the codes of
    the answer's warnings."""
    if largest is None:
        return CarrierClaim(None, None, None, None, total,
                            "none of the scored earlier segments has a positive through-memory credit, so nothing here "
                            "shows which segment memory carried the answer from")
    credit = float(segment_scores[largest])
    share = credit / total if total else None
    blocked = [text for code, text in NO_CARRIER_WARNINGS.items() if code in warning_codes]
    if blocked:
        return CarrierClaim(None, largest, credit, share, total,
                            f"the answer's warnings say {'; '.join(blocked)}, so the largest positive through-memory "
                            f"credit (segment {largest}, {credit:+.3g}) is not named the segment memory carried the "
                            "answer from")
    if share is not None and share < MIN_CARRIER_SHARE:
        return CarrierClaim(None, largest, credit, share, total,
                            f"the largest positive through-memory credit (segment {largest}, {credit:+.3g}) is "
                            f"{100 * share:.1f}% of the answer's total attribution ({total:.2f}, the sum of |credit| over "
                            f"the scored tokens), under the {100 * MIN_CARRIER_SHARE:.0f}% a segment needs to be named "
                            "the one memory carried it from")
    return CarrierClaim(largest, largest, credit, share, total)


def verdict_text(answer: str, stated: StatedPlace | None, stated_segment: int | None,
                 entity: str | None) -> str:
    """One or two sentences: the document's last statement about the asked `entity`, and whether
    the model's `answer` matches it (right / wrong), said to come from parsing the document's
    sentences; or that it cannot tell, and why.

    stated: rmt_core.questions.stated_place of the document (None when the question names no
    person or object the model knows). stated_segment: the segment of its last evidence sentence."""
    source = "(this verdict comes from parsing the document's sentences of the form the model was trained on)"
    if stated is None:
        return (f"Cannot tell whether “{answer}” is right: the question names no person or object the model was "
                "trained on, so there is nothing to look up in the document's sentences.")
    name = stated.entity.removeprefix("the ")
    if stated.place is None:
        return (f"Cannot tell whether “{answer}” is right: parsing the document's sentences, {stated.reason}, so "
                f"nothing in it says where {'the ' + name if stated.entity.startswith('the ') else name} is.")
    sentences = [f"“{f.fact.sentence}”" for f in stated.evidence]
    where = f" (segment {stated_segment})" if stated_segment is not None else ""
    said = (f"The document's last statement about {name} is {sentences[0]}{where}" if len(sentences) == 1 else
            f"The document's last statements about the {name} are {' and '.join(sentences)}{where}")
    verdict = "right" if answer == stated.place else "wrong"
    text = (f"{said}: {name} is in the {stated.place}, so the model's answer “{answer}” is {verdict} {source}.")
    if stated.later_mentions:
        text += (f" “{name}” occurs {stated.later_mentions} more time{'s' if stated.later_mentions > 1 else ''} after "
                 "it, in sentences the parse does not read: if one of them moves "
                 f"{'the ' + name if stated.entity.startswith('the ') else name}, this verdict is out of date.")
    return text


def evidence_segment(stated: StatedPlace | None, stated_segment: int | None, fact_segment: int | None,
                     carrier: CarrierClaim | None) -> tuple[int, str]:
    """(segment, why): where a view of the document should open to show the answer's evidence —
    the segment of the document's last statement about the asked person (from the parse), else
    of the asked person's last fact sentence, else the clear carrier (carrier_claim), else 0."""
    if stated is not None and stated.place is not None and stated_segment is not None:
        return stated_segment, (f"Opened at segment {stated_segment}: the document's last statement about "
                                f"{stated.entity.removeprefix('the ')}, “{stated.evidence[-1].fact.sentence}”, is there "
                                "(found by parsing the document's sentences).")
    if fact_segment is not None:
        who = stated.entity.removeprefix("the ") if stated is not None else "the asked person"
        return fact_segment, (f"Opened at segment {fact_segment}: the last sentence about {who} of the form the model "
                              "was trained on is there (found by parsing the document's sentences).")
    if carrier is not None and carrier.segment is not None:
        return carrier.segment, (f"Opened at segment {carrier.segment}: memory carried the answer from there "
                                 f"(through-memory credit {carrier.credit:+.3g}, "
                                 f"{100 * (carrier.share or 0):.0f}% of the answer's total attribution).")
    return 0, ("Opened at the start: nothing locates the answer's evidence (the parse found no statement about "
               "the asked person, and no earlier segment carries a clear through-memory credit).")


__all__ = ["MIN_CARRIER_SHARE", "NO_CARRIER_WARNINGS", "CarrierClaim", "carrier_claim", "verdict_text",
           "evidence_segment"]
