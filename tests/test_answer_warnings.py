"""An answer carries its limits: warnings (code + text) on documents the tests build, the card's
operating range read from its own tables, attribution windows, one token-weighted mean loss."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

import rmt_core
from rmt_core.explain import answers, attribution
from rmt_core.explain.answer_warnings import answer_warnings
from rmt_core.training.corpus import load_corpus
from rmt_core.operating_range import OperatingRange, read_operating_range


@pytest.fixture(scope="module")
def default():
    torch.set_num_threads(1)
    return rmt_core.load(rmt_core.DEFAULT_CHECKPOINT)


def _story(model, segments: int, fact: str = "Sandra went to the garden.", fact_word: int = 60) -> str:
    """Held-out Austen text of about `segments` segments with `fact` after sentence ~fact_word words in."""
    words = load_corpus("heldout")[20000:].split()
    text = " ".join(words[: segments * 32 * 3 // 4])
    cut = text.find(". ", len(" ".join(words[:fact_word]))) + 2
    return text[:cut] + fact + " " + text[cut:]


def _codes(result) -> list[str]:
    return [w.code for w in result.warnings]


def test_the_operating_range_comes_from_the_cards_own_tables(default):
    card = answers.read_card(default.name)
    op = read_operating_range(card, "detect")
    assert op.max_segments == 32 and op.facts == "one" and "Sandra" in op.names
    assert op.accuracy_near(105) == (32, {t: a[32] for t, a in op.accuracy.items()})
    assert "documents up to 32 segments" in op.sentence()
    # not a constant: a card that measured up to 16 segments warns from 17 on, and one with no table says so
    short = json.loads(json.dumps(card))
    for table in short["operating_range"]["accuracy"].values():
        table.pop("32")
    kw = dict(document="Sandra went to the garden.", entity="Sandra", question="Where is Sandra?", question_ok=True,
              top_text="garden", top_probability=0.9, answers=op.answers, fact_segment=0, question_segment=0,
              segment_scores=None)
    assert [w.code for w in answer_warnings(num_segments=20, operating_range=op, **kw)] == []
    warned = answer_warnings(num_segments=20, operating_range=read_operating_range(short, "detect"), **kw)
    assert [w.code for w in warned] == ["beyond_measured_range"] and "1-16 segments" in warned[0].text
    none = answer_warnings(num_segments=20, operating_range=read_operating_range({}, "lm"), **kw)
    assert [w.code for w in none] == ["no_measurement"]
    # derived from evaluation_results when a card has no operating_range entry: same numbers
    legacy = {k: v for k, v in card.items() if k != "operating_range"}
    assert read_operating_range(legacy, "detect").accuracy == op.accuracy


def test_a_long_document_warns_with_the_cards_accuracy_at_the_nearest_length(default):
    long = answers.ask(default, _story(default, 40), "Where is Sandra?", attribute=False)
    assert long.trace.num_segments > 32
    warning = next(w for w in long.warnings if w.code == "beyond_measured_range")
    assert f"{long.trace.num_segments} segments long" in warning.text and "32 segments: 0.992" in warning.text
    short = answers.ask(default, _story(default, 6), "Where is Sandra?", attribute=False)  # negative control
    assert short.trace.num_segments <= 32 and "beyond_measured_range" not in _codes(short)
    assert _codes(short) == [], short.warnings


def test_an_absent_name_and_several_facts_warn(default):
    absent = answers.ask(default, _story(default, 4), "Where is Mary?", attribute=False)
    assert "name_absent" in _codes(absent) and "“Mary” does not occur" in absent.warnings[0].text
    two = ("Mary went to the kitchen. John travelled to the hallway. It rained all day and nobody went out. "
           "Mary journeyed to the bedroom.")
    result = answers.ask(default, two, "Where is John?", attribute=False)
    warning = next(w for w in result.warnings if w.code == "several_facts")
    assert "3 fact sentences about 2 people" in warning.text and "one fact about one person" in warning.text
    same = answers.ask(default, "Mary went to the kitchen. Then Mary moved to the office.", "Mary", attribute=False)
    assert "several_facts" in _codes(same)
    one = answers.ask(default, "Mary went to the kitchen. It rained.", "Mary", attribute=False)  # control
    assert "several_facts" not in _codes(one) and "name_absent" not in _codes(one)


def test_questions_and_answers_outside_the_card_warn():
    op = OperatingRange("detect", "one", "where one named person last went", ("Mary",), ("garden",), {"x": {1: 1.0}})
    kw = dict(num_segments=1, document="Mary went to the garden.", entity=None, top_probability=0.9,
              answers=op.answers, operating_range=op, fact_segment=None, question_segment=0, segment_scores=None)
    codes = [w.code for w in answer_warnings(question="Who is Mary?", question_ok=False, top_text="the", **kw)]
    assert codes == ["question_outside", "answer_outside"]
    assert answer_warnings(question="Where is Mary?", question_ok=True, top_text="garden", **kw) == []


def test_a_confident_answer_whose_fact_gets_no_credit_warns():
    op = OperatingRange("detect", "one", "q", ("Mary",), ("garden",), {"x": {8: 1.0}})
    kw = dict(num_segments=4, document="Mary went to the garden.", entity="Mary", question="Where is Mary?",
              question_ok=True, top_text="garden", answers=op.answers, operating_range=op, fact_segment=1,
              question_segment=3)
    scores = np.array([0.5, -0.4, 0.2, np.nan])
    assert [w.code for w in answer_warnings(top_probability=0.9, segment_scores=scores, **kw)] == ["no_fact_credit"]
    assert answer_warnings(top_probability=0.3, segment_scores=scores, **kw) == []  # not confident: no claim
    scores[1] = 0.1
    assert answer_warnings(top_probability=0.9, segment_scores=scores, **kw) == []  # positive credit
    scores[1] = np.nan
    unscored = answer_warnings(top_probability=0.9, segment_scores=scores, **kw)
    assert [w.code for w in unscored] == ["no_fact_credit"] and "was not scored" in unscored[0].text


def test_attribution_reaches_the_start_names_a_positive_carrier_and_clamps(default):
    text = answers.prompt_text(default, _story(default, 5, fact_word=10), "Where is Sandra?")
    trace = rmt_core.trace(default, text)
    site = answers.answer_site(trace)
    target = int(trace.segments[site.segment].topk_ids[site.position][0])
    full = attribution.through_memory(trace, site.segment, site.position, target=target, n_steps=4)
    assert full.scored_segments == (0, site.segment) and full.reaches_start and full.note is None
    clamped = attribution.through_memory(trace, site.segment, site.position, target=target, n_steps=4,
                                         max_segments=1000)
    assert "clamped to the document's start" in clamped.note and clamped.scored_segments == full.scored_segments
    short = attribution.through_memory(trace, site.segment, site.position, target=target, n_steps=4, max_segments=2)
    assert short.scored_segments == (site.segment - 2, site.segment) and not short.reaches_start
    segment, scores, note = answers.memory_segment(trace, site, target, n_steps=4, max_segments=2)
    assert np.isnan(scores[: site.segment - 2]).all() and "stops short of the document's start" in note
    assert segment is None or scores[segment] == np.nanmax(scores) > 0
    n, seconds = attribution.estimate_through_seconds(trace, site.segment, None)
    assert n == site.segment and seconds > 0


def test_the_carrier_is_never_a_negative_credit():
    scores = np.array([-0.42, -0.1, np.nan])
    assert answers.carrier_segment(scores, 0, 2) is None
    scores[1] = 0.05
    assert answers.carrier_segment(scores, 0, 2) == 1
    assert answers.carrier_segment(np.array([3.0, 0.1, np.nan]), 1, 2) == 1  # unscored segment 0 is not named


def test_mean_loss_is_token_weighted_everywhere(default):
    text = _story(default, 3) + " A short tail."
    trace = rmt_core.trace(default, text)
    while trace.segments[-1].num_tokens > 8:  # a short last segment: segment means and token means differ
        text = text[:-20]
        trace = rmt_core.trace(default, text)
    lp = np.concatenate([s.token_logprob for s in trace.segments]).astype(np.float64)
    expected = float(-lp[np.isfinite(lp)].mean())
    assert trace.mean_loss() == pytest.approx(expected, rel=1e-9)
    assert trace.segments[-1].num_tokens < trace.segments[0].num_tokens  # a short last segment ...
    assert abs(trace.losses().mean() - expected) > 1e-4  # ... so the mean of segment means differs


def test_the_cli_prints_the_warnings(tmp_path, default):
    doc = tmp_path / "story.txt"
    doc.write_text("John travelled to the hallway. It rained. Mary went to the kitchen.")
    out = tmp_path / "answer.json"
    run = subprocess.run([sys.executable, "-m", "rmt_core", "ask", str(doc), "-q", "Where is Daniel?",
                          "--threads", "1", "--max-segments", "50", "--json", str(out)],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert "warning [name_absent]: “Daniel” does not occur" in run.stdout
    assert "warning [several_facts]" in run.stdout
    record = json.loads(out.read_text())
    assert {w["code"] for w in record["warnings"]} >= {"name_absent", "several_facts"}


def test_a_question_in_the_documents_own_words_is_read_and_warned(default):
    # "... Where is Sandra? Answer:" was read as no question at all ("" asked): the verdict said the
    # question names nobody, though it names Sandra.
    story = _story(default, 4)
    loose = answers.ask(default, story + "\nWhere is Sandra? Answer:", attribute=False)
    assert loose.site.question == "Where is Sandra?"
    assert loose.entity == "Sandra" and loose.stated is not None and loose.stated.place == "garden"
    warning = next(w for w in loose.warnings if w.code == "question_format")
    assert "“Question: Where is Sandra?” on a line of its own" in warning.text
    assert answers.split_question(story + "\nWhere is Sandra? Answer:") == (story, "Where is Sandra?")
    assert answers.split_question(story + " Answer:") == (story, "")  # no question sentence: none invented
    # controls: the training format, in the document or from the question box, carries no such warning
    trained = answers.ask(default, story + "\nQuestion: Where is Sandra?\nAnswer:", attribute=False)
    boxed = answers.ask(default, story, "Where is Sandra?", attribute=False)
    for result in (trained, boxed):
        assert result.site.question == "Where is Sandra?" and "question_format" not in _codes(result)


MENTIONS = ({"segments": 16, "where": "after", "samples": 40, "accuracy_without": 1.0, "accuracy_with": 0.6,
             "answered_mention": 0.4},
            {"segments": 16, "where": "before", "samples": 33, "accuracy_without": 1.0, "accuracy_with": 0.4,
             "answered_mention": 0.55})


def _op(mentions=MENTIONS) -> OperatingRange:
    return OperatingRange("detect", "one", "where one named person last went", ("Sandra",),
                          ("garden", "office", "kitchen"), {"held-out": {16: 1.0}}, mentions)


def _warn(document: str, top: str, op: OperatingRange):
    kw = dict(entity="Sandra", question="Where is Sandra?", question_ok=True, top_probability=0.99,
              answers=op.answers, fact_segment=0, question_segment=3, segment_scores=None)
    return {w.code: w.text for w in answer_warnings(num_segments=16, document=document, top_text=top,
                                                     operating_range=op, segment_of=lambda c: c // 100, **kw)}


def test_an_answer_the_text_names_outside_its_facts_warns_with_the_cards_numbers():
    document = ("Sandra went to the garden. " + "It rained. " * 20 + "He was serving the office of high sheriff, "
                "and more. The end.")
    at = document.index("office")
    warned = _warn(document, "office", _op())
    text = warned["answer_word_mentioned"]
    assert f"segment {at // 100}" in text and "serving the office of high sheriff" in text
    assert "1.00 → 0.60" in text and "40%" in text and "1.00 → 0.40" in text and "16 segments" in text
    # the same word only inside a fact sentence is no mention; a text without the word warns nothing
    assert "answer_word_mentioned" not in _warn("Sandra went to the garden. Mary went to the office. It rained.",
                                                "office", _op())
    assert "answer_word_mentioned" not in _warn("Sandra went to the garden. It rained.", "garden", _op())
    # another trained answer named: the warning names it and says the answer is not one of them
    other = _warn(document, "garden", _op())["answer_word_mentioned"]
    assert "“office” ×1" in other and "not one of those words" in other
    # a card that measured nothing says so instead of inventing numbers
    unmeasured = _warn(document, "office", _op(()))["answer_word_mentioned"]
    assert "measured nothing about it" in unmeasured and "%" not in unmeasured


def test_the_default_model_answers_a_mentioned_word_and_the_warning_says_so(default):
    """The case a new user met: 'office' in "serving the office of high sheriff" after the fact."""
    text = load_corpus("heldout")
    document = text[:1515] + "Sandra went to the garden. " + text[1515:2500]
    result = rmt_core.ask(default, document + "\nQuestion: Where is Sandra?\nAnswer:")
    assert result.predictions[0].text == "office"
    assert "answer_word_mentioned" in _codes(result)
    warning = next(w.text for w in result.warnings if w.code == "answer_word_mentioned")
    assert "serving the office of high sheriff" in warning and "accuracy" in warning
    # the control: the same document without that word is answered from the fact, and not warned
    fixed = rmt_core.ask(default, document.replace("office", "duty") + "\nQuestion: Where is Sandra?\nAnswer:")
    assert fixed.predictions[0].text == "garden" and "answer_word_mentioned" not in _codes(fixed)
