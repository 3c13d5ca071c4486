"""What an answer's evidence lets one say: right / wrong against the document's own fact sentences
(rmt_core.questions.stated_place), "memory carried it from" only for a clear credit
(answer_evidence.MIN_CARRIER_SHARE, no guess / no-credit warning), where the evidence sits."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import rmt_core
from rmt_core.explain import answers
from rmt_core.explain.answer_evidence import (MIN_CARRIER_SHARE, CarrierClaim, carrier_claim, evidence_segment,
                                              verdict_text)
from rmt_core.questions import stated_place
from document_builders import austen_story

WRONG = "Sandra went to the garden. It rained all day and nobody went out. Mary went to the kitchen."


@pytest.fixture(scope="module")
def default():
    torch.set_num_threads(1)
    return rmt_core.load(rmt_core.DEFAULT_CHECKPOINT)


# ---------------------------------------------------------------------- what the document states
def test_the_document_states_a_persons_last_place_and_the_sentence_that_says_it():
    doc = "Sandra went to the garden. Mary moved to the office. Sandra journeyed to the hallway. It rained."
    said = stated_place(doc, "Sandra")
    assert said.place == "hallway" and [f.fact.sentence for f in said.evidence] == ["Sandra journeyed to the hallway."]
    assert doc[said.evidence[0].start:said.evidence[0].end] == "Sandra journeyed to the hallway."
    assert said.later_mentions == 0 and said.reason == ""
    later = stated_place(doc + " Then Sandra came back. Sandra smiled.", "Sandra")  # read by no parser
    assert later.place == "hallway" and later.later_mentions == 2
    absent = stated_place(doc, "Daniel")
    assert absent.place is None and absent.evidence == () and "no sentence of the form" in absent.reason
    assert "none of them" in stated_place(doc, "Ann").reason  # a name the parse does not know


def test_an_objects_place_comes_from_its_carrier():
    held = stated_place("John went to the garden. John got the milk there. John moved to the office.", "the milk")
    assert held.place == "office"
    assert [f.fact.sentence for f in held.evidence] == ["John got the milk there.", "John moved to the office."]
    dropped = stated_place("John went to the garden. John got the milk there. John moved to the office. "
                           "John dropped the milk. John went to the kitchen.", "the milk")
    assert dropped.place == "office"
    assert [f.fact.sentence for f in dropped.evidence] == ["John moved to the office.", "John dropped the milk."]
    assert stated_place("John got the milk there.", "the milk").place is None  # John's place is unknown


def test_the_verdict_says_right_or_wrong_and_where_it_comes_from():
    said = stated_place(WRONG, "Sandra")
    wrong = verdict_text("kitchen", said, 0, "Sandra")
    assert "“Sandra went to the garden.” (segment 0)" in wrong and "“kitchen” is wrong" in wrong
    assert "comes from parsing the document's sentences" in wrong
    assert "“garden” is right" in verdict_text("garden", said, 0, "Sandra")
    cannot = verdict_text("garden", stated_place(WRONG, "Daniel"), None, "Daniel")
    assert cannot.startswith("Cannot tell whether “garden” is right") and "where Daniel is" in cannot
    assert verdict_text("garden", None, None, None).startswith("Cannot tell")


def test_ask_checks_the_answer_against_the_documents_own_sentences(default):
    """The user's story: the model answers "kitchen" though the document says Sandra went to the garden."""
    result = rmt_core.ask(default, WRONG, "Where is Sandra?", attribute=False)
    assert result.answer == "kitchen" and result.site.expected is None  # the model is wrong here (measured)
    assert result.stated.place == "garden" and result.stated_segment == 0
    assert result.correct is False and "“kitchen” is wrong" in result.verdict
    assert "verdict: The document's last statement about Sandra" in "\n".join(answers.answer_lines(result))
    right = rmt_core.ask(default, "Sandra went to the garden. It rained all day and nobody went out.", "Sandra",
                         attribute=False)
    assert right.answer == "garden" and right.correct is True and "is right" in right.verdict
    none = rmt_core.ask(default, WRONG, "Where is Daniel?", attribute=False)
    assert none.correct is None and none.verdict.startswith("Cannot tell")


# ---------------------------------------------------------------------- the carrier claim
def test_a_carrier_needs_a_share_of_the_total_and_no_guess_warning():
    scores = np.array([0.04, 1.5, -0.2, np.nan])
    named = carrier_claim(1, scores, total=10.0, warning_codes=[])
    assert named.segment == 1 and named.credit == 1.5 and named.share == pytest.approx(0.15)
    weak = carrier_claim(0, np.array([0.04, -0.3, np.nan]), total=10.0, warning_codes=[])
    assert weak.segment is None and weak.largest == 0  # 0.4% of the total: below the minimum
    assert weak.statement.startswith("No earlier segment carries a clear credit") and "0.4%" in weak.statement
    edge = 10.0 * MIN_CARRIER_SHARE  # the minimum itself is enough, a hair under it is not
    assert carrier_claim(0, np.array([edge, np.nan]), 10.0, []).segment == 0
    assert carrier_claim(0, np.array([edge * 0.99, np.nan]), 10.0, []).segment is None
    for code in ("name_absent", "question_outside", "no_fact_credit"):
        blocked = carrier_claim(1, scores, total=10.0, warning_codes=[code])
        assert blocked.segment is None and blocked.largest == 1 and "warnings say" in blocked.statement
    assert carrier_claim(1, scores, 10.0, ["several_facts"]).segment == 1  # not a guess warning
    none = carrier_claim(None, np.array([-0.1, np.nan]), 5.0, [])
    assert none.segment is None and "positive" in none.statement


def test_the_shipped_model_names_the_fact_segment_or_no_carrier(default):
    """Fact 4 segments in, question after 8 segments: the fact's segment carries it clearly (measured 12%);
    after 16 segments the fact gets no credit and the largest (about +0.04) is not headlined."""
    near = rmt_core.ask(default, austen_story(8), "Where is Sandra?")
    claim = near.carrier
    assert near.fact_segment == near.stated_segment
    assert claim.segment == near.fact_segment == near.memory_segment and claim.share >= MIN_CARRIER_SHARE
    assert claim.total == pytest.approx(near.total_credit) and near.total_credit > 0
    far = rmt_core.ask(default, austen_story(16), "Where is Sandra?")
    codes = [w.code for w in far.warnings]
    assert far.memory_segment is not None  # a largest positive credit exists ...
    assert far.carrier.segment is None  # ... but it is not named the carrier
    assert "no_fact_credit" in codes or far.carrier.share < MIN_CARRIER_SHARE
    lines = "\n".join(answers.answer_lines(far))
    assert "No earlier segment carries a clear credit" in lines and "memory carried it from segment" not in lines
    guessed = rmt_core.ask(default, austen_story(16), "Where is Daniel?")
    assert "name_absent" in [w.code for w in guessed.warnings] and guessed.carrier.segment is None


# ---------------------------------------------------------------------- where the evidence sits
def test_the_evidence_is_the_statement_then_the_carrier_then_the_start():
    said = stated_place("Noise. Sandra went to the garden.", "Sandra")
    clear = CarrierClaim(6, 6, 2.0, 0.2, 10.0)
    segment, why = evidence_segment(said, 4, 4, clear)
    assert segment == 4 and "“Sandra went to the garden.”" in why and "parsing" in why
    segment, why = evidence_segment(stated_place("Noise.", "Sandra"), None, None, clear)
    assert segment == 6 and "memory carried the answer from there" in why
    unclear = CarrierClaim(None, 6, 0.01, 0.001, 10.0, "too small")
    segment, why = evidence_segment(stated_place("Noise.", "Sandra"), None, None, unclear)
    assert segment == 0 and why.startswith("Opened at the start")
