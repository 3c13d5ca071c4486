"""Real tests of the shipped weights: each checkpoint answers held-out samples as its card claims,
and the default model's attributions and interventions find the fact it carries in memory."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import rmt_core
from rmt_core.explain import attribution, interventions
from rmt_core.training import evaluation
from rmt_core.io.checkpoint import list_checkpoints

SHIPPED = [c["name"] for c in list_checkpoints()]
SAMPLES = 100


def _card_results(model) -> dict:
    import json

    config = json.loads((rmt_core.io.checkpoint.SHIPPED_DIR / model.name / "config.json").read_text())
    return config["card"]["evaluation_results"]


def test_the_default_checkpoint_ships():
    assert rmt_core.DEFAULT_CHECKPOINT in SHIPPED


@pytest.mark.slow
@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_checkpoint_meets_its_card(name):
    model = rmt_core.load(name, device="cpu")
    claimed = _card_results(model)
    if "fact_recall" in claimed:
        from rmt_core.training.corpus import load_source

        task = claimed["fact_recall"][0]["task"]
        for key, source in (("fact_recall", "austen"), ("fact_recall_pydocs", "pydocs")):
            if key not in claimed:
                continue
            card = {r["segments"]: r for r in claimed[key]}
            # Fresh samples (another seed than the card's): the question at a random offset of the
            # last segment, and split by a segment boundary.
            rows = evaluation.evaluate_fact_recall(model, task, (2, 4), samples=SAMPLES, seed=12345,
                                                   haystack=load_source(source, "heldout"),
                                                   offsets=("random", "straddle"))
            for row in rows:
                claim = card[row["segments"]]
                for column in ("accuracy_random", "accuracy_straddle"):
                    assert row[column] >= claim[column] - 0.05, (source, column, row, claim)
                assert row["accuracy_reset"] <= row["chance"] + 0.1, row  # without memory: near chance
    else:
        rows = evaluation.evaluate_algorithmic(model, claimed["algorithmic"][0]["task"], (3, 6), samples=SAMPLES, seed=12345)
        card = {r["segments"]: r for r in claimed["algorithmic"]}
        for row in rows:
            assert row["accuracy_memory"] >= card[row["segments"]]["accuracy_memory"] - 0.05, row


@pytest.mark.slow
def test_default_checkpoint_card_reports_layouts_text_and_slot_diversity():
    model = rmt_core.load(rmt_core.DEFAULT_CHECKPOINT, device="cpu")
    claimed = _card_results(model)
    for row in claimed["fact_recall"]:
        assert {"accuracy_aligned", "accuracy_random", "accuracy_straddle", "accuracy_reset"} <= set(row)
    assert {r["text"].split(" ")[0] for r in claimed["lm_texts"]} >= {"austen", "pydocs"}
    for source, measured in claimed["slot_similarity"].items():
        assert 0.0 <= measured["share_pairs_above_0_9"] <= 1.0
        again = evaluation.evaluate_slot_similarity(
            model, __import__("rmt_core.training.corpus", fromlist=["x"]).load_source(source.split(" ")[0], "heldout"),
            windows=8, seed=3)
        # the card's number is a property of the weights: fresh windows land near it
        assert abs(again["mean_pairwise_cosine"] - measured["mean_pairwise_cosine"]) < 0.1, (again, measured)


# ---------------------------------------------------------------------- the default model's memory
@pytest.fixture(scope="module")
def recall_traces():
    """Held-out fact-recall samples of 4 segments, the question at a random offset, traced by the default model."""
    from rmt_core.training.corpus import load_corpus
    from rmt_core.training.tasks import babi

    model = rmt_core.load(rmt_core.DEFAULT_CHECKPOINT, device="cpu", dtype=torch.float32)
    seg = model.config.segment_size
    rng = np.random.default_rng(7)
    samples = []
    for _ in range(20):
        sample = babi.build_layout_sample(load_corpus("heldout"), 4, seg, "detect", rng, model.tokenizer, "random")
        encoded = babi.encode_sample(sample, model.tokenizer)
        trace = rmt_core.trace(model, np.array(encoded.input_ids))
        samples.append((trace, encoded.fact_token_spans[0], encoded.answer_id))
    return samples


def _answer_site(trace) -> tuple[int, int]:
    """(segment, position) of the token before the appended answer: it predicts the answer."""
    size = trace.segments[0].num_tokens
    return divmod(trace.num_tokens - 2, size)


@pytest.mark.slow
def test_default_model_answers_the_samples(recall_traces):
    correct = []
    for trace, _, answer in recall_traces:
        segment, position = _answer_site(trace)
        correct.append(int(trace.segments[segment].topk_ids[position, 0]) == answer)
    assert np.mean(correct) >= 0.9


@pytest.mark.slow
def test_write_attribution_of_the_fact_segment_lands_on_the_fact(recall_traces):
    # The memory also carries recent text for language modelling, so the fact does not get all
    # the mass; it must get far more than its share of the segment's tokens.
    shares, dense = [], []
    for trace, (start, end), _ in recall_traces:
        seg = trace.segments[(end - 1) // trace.segments[0].num_tokens]  # the write after the whole fact
        scores = np.clip(attribution.write_slots(trace, seg.index, n_steps=16).scores, 0, None).sum(axis=0)
        positions = np.arange(seg.start, seg.end)
        in_fact = (positions >= start) & (positions < end)
        share = scores[in_fact].sum() / scores.sum()
        shares.append(share)
        dense.append(share >= 2 * in_fact.mean())  # at least twice the mass a uniform spread gives
    assert np.mean(dense) >= 0.8, shares
    assert np.mean(shares) >= 0.5, shares


@pytest.mark.slow
def test_through_memory_ranks_the_fact_near_the_top(recall_traces):
    # The memory also carries recent text for language modelling, so a few other tokens get
    # attribution too; the fact must stay among the very first (chance would put it near the middle).
    ranks, hits = [], []
    for trace, (start, end), _ in recall_traces:
        result = attribution.through_memory(trace, *_answer_site(trace), n_steps=32)
        order = np.argsort(-np.nan_to_num(result.scores, nan=-np.inf))
        rank = min(int(np.nonzero(order == j)[0][0]) for j in range(start, end))
        ranks.append(rank)
        hits.append(rank < int(np.ceil(0.10 * trace.num_tokens)))
    assert np.mean(hits) >= 0.8, ranks
    assert np.median(ranks) <= 3, ranks


@pytest.mark.slow
def test_resetting_memory_after_the_fact_changes_the_answer_and_before_does_not(recall_traces):
    after, before = [], []
    size = recall_traces[0][0].segments[0].num_tokens
    for trace, (start, _), _ in recall_traces:
        fact_segment = start // size
        if fact_segment + 1 < trace.num_segments:
            after.append(interventions.reset_memory(trace, fact_segment + 1).answer_changed)
        if fact_segment > 0:
            before.append(interventions.reset_memory(trace, fact_segment).answer_changed)
    assert np.mean(after) > 0.5, after  # most samples
    assert np.mean(before) <= 0.1, before


@pytest.mark.slow
def test_read_attribution_is_complete_on_the_default_model(recall_traces):
    trace = recall_traces[0][0]
    result = attribution.read_slots(trace, *_answer_site(trace), n_steps=32)
    change = result.f_input - result.f_baseline
    assert abs(result.delta) < 0.05 * abs(change)


@pytest.mark.parametrize("name", SHIPPED)
def test_every_fact_recall_card_measured_answer_word_mentions(name):
    """A limit users meet in their own text (a trained answer word named outside the facts) is in
    every fact-recall card: the table, the operating range the warnings read, and the README."""
    import json

    from rmt_core.operating_range import read_operating_range

    folder = rmt_core.io.checkpoint.SHIPPED_DIR / name
    card = json.loads((folder / "config.json").read_text())["card"]
    if "fact_recall" not in card["evaluation_results"]:
        return  # an algorithmic model: it answers no questions
    rows = card["evaluation_results"]["answer_mentions"]
    assert {(r["segments"], r["where"]) for r in rows} == {(s, w) for s in evaluation.MENTION_SEGMENTS
                                                          for w in ("after", "before")}
    assert all(r["samples"] >= 100 and 0 <= r["answered_mention"] <= 1 for r in rows)
    op = read_operating_range(card, card["operating_range"]["task"])
    assert op.mention_effect(16) == {r["where"]: {k: float(r[k]) for k in ("segments", "samples", "accuracy_without",
                                                                           "accuracy_with", "answered_mention")}
                                     for r in rows if r["segments"] == 16}
    readme = (folder / "README.md").read_text()
    assert "One trained answer word named outside the facts" in readme
    assert f"{rows[0]['answered_mention']:.3f}" in readme


@pytest.mark.slow
def test_the_default_model_takes_a_mentioned_answer_word_as_its_card_says():
    model = rmt_core.load(rmt_core.DEFAULT_CHECKPOINT, device="cpu")
    claimed = {(r["segments"], r["where"]): r for r in _card_results(model)["answer_mentions"]}
    for row in evaluation.evaluate_answer_mentions(model, segments=(8,), samples=40, seed=12345):
        claim = claimed[(8, row["where"])]
        assert row["accuracy_without"] >= 0.9  # the plain samples are answered ...
        assert abs(row["answered_mention"] - claim["answered_mention"]) <= 0.25, (row, claim)  # ... the mention taken as often
