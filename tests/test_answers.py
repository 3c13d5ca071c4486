"""rmt_core.explain.answers: the question format, the answer site, asking the shipped fact-recall model."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import rmt_core
from rmt_core import QuestionError
from rmt_core.explain import answers, interventions
from rmt_core.training.corpus import load_corpus
from rmt_core.training.tasks import babi

from conftest import make_model


@pytest.fixture(scope="module")
def default():
    torch.set_num_threads(1)
    return rmt_core.load(rmt_core.DEFAULT_CHECKPOINT)


def _sample(model, seed: int, segments: int = 6):
    seg = model.config.segment_size
    return babi.build_sample(load_corpus("heldout"), segments * seg, "detect", np.random.default_rng(seed),
                             model.tokenizer, keep_out_tail=seg)


def test_questions_are_put_in_the_training_format(default):
    spec = answers.question_spec(default)
    assert spec.answerable and spec.task == "detect" and "Mary" in spec.entities and "garden" in spec.answers
    for asked in ("Where is Mary?", "where is mary", "Mary", "  Question: Where is MARY ? "):
        assert answers.normalize_question(asked, spec) == "Where is Mary?"
    text = answers.prompt_text(default, "Mary went to the garden. It rained.  \n\n", "Mary")
    assert text == "Mary went to the garden. It rained.\nQuestion: Where is Mary?\nAnswer:"
    assert text.endswith(babi.QUESTION_PREFIX + "Where is Mary?" + babi.ANSWER_PREFIX)
    assert babi.QUESTION_RE.search(text)  # what the training data and the evaluation parse


@pytest.mark.parametrize("question, message", [
    ("", "question is empty"), ("   \n", "question is empty"),
    ("What is the meaning of life?", "not a question this model was trained on"),
    ("Where is Bob?", "not a question this model was trained on"),
    ("Where is " + "the very long-winded and extraordinarily verbose " * 6 + "Mary?", "longer than one segment"),
])
def test_bad_questions_get_clear_errors(default, question, message):
    with pytest.raises(QuestionError, match=message):
        answers.prompt_text(default, "Mary went to the garden.", question)


def test_documents_that_already_ask(default):
    doc = "Mary went to the garden.\nQuestion: Where is Mary?\nAnswer:  \n"
    assert answers.split_question(doc) == ("Mary went to the garden.", "Where is Mary?")
    assert answers.prompt_text(default, doc) == doc.rstrip()  # no question needed: trailing space stripped
    with pytest.raises(QuestionError, match="already ends with a question"):
        answers.prompt_text(default, doc, "Where is John?")
    with pytest.raises(QuestionError, match="document is empty"):
        answers.prompt_text(default, "  ", "Mary")
    assert answers.split_question("Just a story.") == ("Just a story.", None)


def test_models_not_trained_on_questions_say_so():
    model = make_model()  # task "" (language modelling)
    spec = answers.question_spec(model, card={})
    assert not spec.answerable and "not on questions" in spec.description
    with pytest.raises(QuestionError, match="not on questions"):
        answers.normalize_question("Where is Mary?", spec)
    declared = answers.question_spec(model, card={"questions": {"entities": ["Ann"], "template": "Where is {}?"}})
    assert declared.answerable and declared.examples == ["Where is Ann?"]


def test_the_answer_site_is_the_token_ending_answer(default):
    sample = _sample(default, seed=2)
    for suffix, expected in (("", None), (sample.answer, sample.answer.strip()), ("\n\n", None)):
        trace = rmt_core.trace(default, sample.text + suffix)
        site = answers.answer_site(trace)
        seg = trace.segments[site.segment]
        start, end = seg.char_spans[site.position]
        assert trace.text[start:end].endswith(":") and trace.text[:end].endswith("Answer:")
        assert site.expected == expected and site.question == sample.question
    plain = rmt_core.trace(default, "It was a fine day. Nothing happened.")
    assert answers.answer_site(plain) is None
    fallback = answers.answer_site(plain, fallback=True)
    assert (fallback.segment, fallback.position) == (plain.num_segments - 1, plain.segments[-1].num_tokens - 1)


@pytest.mark.parametrize("seed", [2, 4, 5])
def test_ask_the_shipped_model_on_held_out_samples(default, seed):
    """Samples whose fact sits segments before the question: the answer is right, and the
    segment memory carried it from is the fact's segment."""
    sample = _sample(default, seed)
    document, question = answers.split_question(sample.text)
    start, end = babi.encode_sample(sample, default.tokenizer).fact_token_spans[0]
    size = default.config.segment_size
    fact_segments = set(range(start // size, (end - 1) // size + 1))  # a fact may straddle a boundary
    assert max(fact_segments) < 5
    result = rmt_core.ask(default, document, question)
    assert result.trace.text == sample.text  # exactly the training format
    assert len(result.predictions) == 3
    probs = [p.probability for p in result.predictions]
    assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1 + 1e-6
    assert result.answer == sample.answer.strip(), result.predictions
    assert result.candidates[0].text == result.answer and len(result.candidates) == len(babi.PLACES)
    # the carrier is the largest POSITIVE credit of the scored earlier segments, or none is named
    scores = result.segment_scores
    scored = np.isfinite(scores)
    assert result.scored == (0, result.site.segment - 1) and scored[:result.site.segment].all()
    if result.memory_segment is None:
        assert not (scores[scored] > 0).any() and "No scored earlier segment has a positive credit" in result.note
    else:
        assert scores[result.memory_segment] == np.nanmax(scores) > 0
    fact_credit = max(scores[s] for s in fact_segments)
    codes = [w.code for w in result.warnings]
    assert ("no_fact_credit" in codes) == (fact_credit <= 0 and result.predictions[0].probability >= 0.5), codes
    assert result.fact_segment in fact_segments
    assert np.isnan(result.segment_scores[result.site.segment])  # the question's own segment is not memory
    # the stored top-k (float16) agrees with the re-run of the answer's segment
    stored = answers.stored_predictions(result.trace, result.site, 1)[0]
    assert stored.token_id == result.predictions[0].token_id
    assert stored.probability == pytest.approx(result.predictions[0].probability, abs=2e-3)


def test_interventions_report_the_probability_of_their_own_answer(default):
    sample = _sample(default, seed=5)
    trace = rmt_core.trace(default, sample.text + sample.answer)
    fact_segment = babi.encode_sample(sample, default.tokenizer).fact_token_spans[0][0] // default.config.segment_size
    result = interventions.reset_memory(trace, fact_segment + 1)
    assert result.expected == sample.answer.strip() and result.answer_before == result.expected
    assert result.answer_changed
    site = answers.answer_site(trace)
    # re-run by hand: memory reset before the segment after the fact, up to the answer's row
    model = trace.model
    with torch.no_grad():
        memory = model.initial_memory_batch(1)
        for seg in trace.segments[fact_segment + 1:site.segment + 1]:
            ids = torch.as_tensor(seg.token_ids, dtype=torch.long).unsqueeze(0)
            out = model.run_segment(memory, ids, segment_index=seg.index)
            memory = out.memory_out
        row = torch.log_softmax(out.logits[0, site.position].float(), dim=-1)
    top = int(row.argmax())
    assert result.answer_after == default.tokenizer.decode([top]).strip()
    assert result.p_answer_after == pytest.approx(float(row[top].exp()), rel=1e-4)
    answer_id = babi.answer_token_id(default.tokenizer, sample.answer)
    assert result.p_expected_after == pytest.approx(float(row[answer_id].exp()), rel=1e-4)
    assert result.p_expected_after < 0.5 < result.p_expected_before
    unchanged = interventions.reset_memory(trace, 0)  # the memory entering segment 0 is the initial memory
    assert not unchanged.answer_changed and unchanged.p_answer_after == pytest.approx(unchanged.p_answer_before, abs=2e-3)


def test_answer_text_shows_whitespace_tokens(default):
    tok = default.tokenizer
    (office,) = tok(" office", add_special_tokens=False)["input_ids"]
    (newline,) = tok("\n", add_special_tokens=False)["input_ids"]
    assert answers.answer_text(tok, office) == "office" and answers.answer_text(tok, newline) == "\\n"
    assert answers.answer_text(None, 7) == "7"


def test_the_intervention_figure_shows_both_losses():
    from rmt_core.viz import figures

    fig = figures.intervention_losses(np.array([1.0, 2.0, 3.0]), np.array([1.0, 2.5, 4.0]), "zero <memory>")
    before, after = fig.data
    assert list(before.y) == [1.0, 2.0, 3.0] and list(after.y) == [1.0, 2.5, 4.0] and list(after.x) == [0, 1, 2]
    assert before.name == "original" and after.name == "zero &lt;memory&gt;" and after.line.dash == "dash"
    assert fig.layout.yaxis.title.text == "loss (nats/token)" and fig.layout.xaxis.title.text == "segment"


def test_the_answer_site_of_a_trace_made_from_token_ids(default):
    sample = _sample(default, seed=4)
    encoded = babi.encode_sample(sample, default.tokenizer)
    from_ids = rmt_core.trace(default, np.array(encoded.input_ids))
    from_text = rmt_core.trace(default, sample.text + sample.answer)
    site = answers.answer_site(from_ids)
    assert site == answers.answer_site(from_text)
    assert site.expected == sample.answer.strip() and site.question == sample.question
