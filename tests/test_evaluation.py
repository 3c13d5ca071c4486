"""Evaluation on tiny random models: row shapes, same samples for memory and reset, tables, training resume."""
from __future__ import annotations

import functools
import json
import math

import numpy as np
import pytest
import torch

from rmt_core import RMTConfig, RMTModel
from rmt_core.engine.backbones import backbone_from_config, gpt2_config
from rmt_core.training.evaluation import (
    PAPER_ALGORITHMIC,
    EvaluationError,
    evaluate_algorithmic,
    evaluate_fact_recall,
    evaluate_lm,
    format_table,
    markdown_table,
)
from rmt_core.training.tasks import babi

SEG = 32  # fact models: 32-token segments (a detect sample fits in one)


@functools.lru_cache(maxsize=1)
def tiny_tokenizer():
    """A 1024-token BPE on a slice of the held-out novel (+ bAbI words); trained once per process."""
    from rmt_core.training.corpus import load_corpus
    from rmt_core.training.tokenizer import train_tokenizer

    return train_tokenizer([load_corpus("heldout")[:200000]], vocab_size=1024)


def make_fact_model(num_mem_tokens: int = 4, seed: int = 0, segment_size: int = SEG) -> RMTModel:
    """A tiny random GPT-2 RMT with the tiny BPE tokenizer."""
    tok = tiny_tokenizer()
    torch.manual_seed(seed)
    cfg = gpt2_config(len(tok), n_layer=2, n_embd=32, n_head=4, n_positions=64)
    rmt = RMTConfig(num_mem_tokens=num_mem_tokens, segment_size=segment_size, task="detect")
    return RMTModel.from_backbone(backbone_from_config(cfg), rmt, tokenizer=tok).eval()


def make_symbol_model(num_mem_tokens: int = 3, seed: int = 0) -> RMTModel:
    """A tiny random GPT-2 RMT with the algorithmic tasks' symbol tokenizer."""
    from rmt_core.training.tasks.algorithmic import symbol_tokenizer

    tok = symbol_tokenizer()
    torch.manual_seed(seed)
    cfg = gpt2_config(len(tok), n_layer=2, n_embd=32, n_head=4, n_positions=64)
    return RMTModel.from_backbone(backbone_from_config(cfg), RMTConfig(num_mem_tokens=num_mem_tokens, segment_size=9),
                                  tokenizer=tok).eval()


@pytest.fixture(scope="module")
def fact_model() -> RMTModel:
    return make_fact_model()


FACT_KEYS = {"task", "segments", "segment_size", "samples", "accuracy_aligned", "accuracy_random",
             "accuracy_straddle", "accuracy_memory", "accuracy_reset", "shortcut", "chance"}


# ---------------------------------------------------------------------- fact recall
def test_fact_recall_rows(fact_model):
    calls = []
    rows = evaluate_fact_recall(fact_model, "detect", segments=(1, 2), samples=6, batch_size=4,
                                progress=lambda done, total: calls.append((done, total)))
    assert [r["segments"] for r in rows] == [1, 2]
    for row in rows:
        assert set(row) == FACT_KEYS
        assert row["segment_size"] == SEG
        assert row["samples"] == 6
        for key in ("accuracy_aligned", "accuracy_random", "accuracy_memory", "accuracy_reset", "shortcut"):
            assert 0.0 <= row[key] <= 1.0
        assert row["accuracy_memory"] == row["accuracy_random"]
        assert row["shortcut"] == 1.0  # detect: the only place mentioned is the answer
        assert row["chance"] == pytest.approx(1 / 6)
    # One segment: no boundary for the question to straddle.
    assert rows[0]["accuracy_straddle"] is None and 0.0 <= rows[1]["accuracy_straddle"] <= 1.0
    # 5 cells (1 segment: aligned, random; 2 segments: all three) of 2 batches each.
    assert calls[-1] == (30, 30) and len(calls) == 10
    # One segment: resetting before it changes nothing, so both columns agree (same samples).
    assert rows[0]["accuracy_memory"] == rows[0]["accuracy_reset"]


def test_fact_recall_with_straddle_first_leaves_one_segment_undefined(fact_model):
    """The columns of the main offset are None where it is undefined (straddling one segment), not a KeyError;
    the model's train / eval mode is restored after an evaluation."""
    fact_model.train()
    rows = evaluate_fact_recall(fact_model, "detect", segments=(1, 2), samples=2, offsets=("straddle", "aligned"))
    assert fact_model.training
    fact_model.eval()
    assert [list(r) for r in rows] == [["task", "segments", "segment_size", "samples", "accuracy_straddle",
                                        "accuracy_aligned", "accuracy_memory", "accuracy_reset", "shortcut", "chance"]] * 2
    assert [rows[0][k] for k in ("accuracy_straddle", "accuracy_memory", "accuracy_reset", "shortcut")] == [None] * 4
    assert 0.0 <= rows[0]["accuracy_aligned"] <= 1.0
    assert rows[1]["accuracy_memory"] == rows[1]["accuracy_straddle"] and rows[1]["shortcut"] == 1.0


def test_fact_recall_offsets_put_the_question_where_they_say():
    from rmt_core.training.corpus import load_corpus

    tok = make_fact_model().tokenizer
    q = babi.question_tokens(tok)
    rng = np.random.default_rng(3)
    seen = {"aligned": set(), "random": set(), "straddle": set()}
    for _ in range(40):
        for offset in seen:
            sample = babi.build_layout_sample(load_corpus("heldout"), 3, SEG, "detect", rng, tok, offset)
            enc = babi.encode_sample(sample, tok)
            r = len(enc.input_ids) - 2 * SEG  # tokens after two segments, answer included
            assert 2 <= r <= SEG + 1  # the ':' that predicts the answer lies in the third segment
            seen[offset].add(r)
            # facts stay out of the segment that predicts the answer
            assert all(end <= 2 * SEG for _, end in enc.fact_token_spans)
            if offset == "straddle":  # the question block starts before the boundary, its ':' after it
                assert 2 <= r <= q
    assert seen["aligned"] == {SEG}
    assert len(seen["random"]) > 10
    assert seen["straddle"] <= set(range(2, q + 1)) and len(seen["straddle"]) > 3


def test_fact_recall_aligned_offset_keeps_the_first_evaluations_samples(fact_model):
    """The aligned column is the evaluation shipped cards were measured with: same samples, same hits."""
    rows = evaluate_fact_recall(fact_model, "detect", segments=(2,), samples=4, batch_size=4, seed=5,
                                offsets=("aligned",))
    rng = np.random.default_rng([5, 2])
    tok = fact_model.tokenizer
    hits = 0
    for _ in range(4):
        enc = babi.encode_sample(babi.build_sample(babi_haystack(), 2 * SEG, "detect", rng, tok, keep_out_tail=SEG), tok)
        with torch.no_grad():
            logits = fact_model(torch.tensor([enc.input_ids])).logits
        hits += int(logits[0, -2].argmax()) == enc.answer_id
    assert rows[0]["accuracy_aligned"] == rows[0]["accuracy_memory"] == hits / 4


def test_fact_recall_is_seeded_and_matches_unbatched_forward(fact_model):
    rows = evaluate_fact_recall(fact_model, "qa1", segments=(2,), samples=5, batch_size=3, seed=7)
    again = evaluate_fact_recall(fact_model, "qa1", segments=(2,), samples=5, batch_size=5, seed=7)
    assert rows == again  # batch size does not change the result (right padding is masked)
    # Recompute the random-offset column by hand, one sample at a time without padding.
    rng = np.random.default_rng([7, 2, 1 + babi.OFFSETS.index("random")])
    tok = fact_model.tokenizer
    hits = {False: 0, True: 0}
    shortcut = []
    for _ in range(5):
        sample = babi.build_layout_sample(babi_haystack(), 2, SEG, "qa1", rng, tok, "random")
        shortcut.append(sample)
        enc = babi.encode_sample(sample, tok)
        ids = torch.tensor([enc.input_ids])
        for reset in (False, True):
            with torch.no_grad():
                logits = fact_model(ids, reset_memory=reset).logits
            hits[reset] += int(logits[0, -2].argmax()) == enc.answer_id
    assert rows[0]["accuracy_memory"] == hits[False] / 5
    assert rows[0]["accuracy_reset"] == hits[True] / 5
    assert rows[0]["shortcut"] == babi.shortcut_accuracy(shortcut)


def babi_haystack() -> str:
    from rmt_core.training.corpus import load_corpus

    return load_corpus("heldout")


def test_no_memory_slots_means_memory_equals_reset():
    model = make_fact_model(num_mem_tokens=0)
    rows = evaluate_fact_recall(model, "detect", segments=(2, 3), samples=6, batch_size=6)
    for row in rows:
        assert row["accuracy_memory"] == row["accuracy_reset"]


def test_custom_haystack_and_errors(fact_model):
    text = "It was a fine morning. The ship left the harbour at dawn. Nobody spoke of it again. " * 200
    rows = evaluate_fact_recall(fact_model, "memorize", segments=(2,), samples=3, haystack=text)
    assert rows[0]["samples"] == 3
    with pytest.raises(EvaluationError, match="unknown fact task"):
        evaluate_fact_recall(fact_model, "qa9", segments=(1,), samples=1)
    with pytest.raises(EvaluationError, match="too small"):  # question + fact do not fit in 8 tokens
        evaluate_fact_recall(make_fact_model(segment_size=8), "detect", segments=(1,), samples=1)
    with pytest.raises(EvaluationError, match="empty"):
        evaluate_fact_recall(fact_model, "detect", segments=(1,), samples=1, haystack="  ")
    with pytest.raises(EvaluationError, match="has 4 tokens.*need 64.*longer text"):  # it would repeat itself
        evaluate_fact_recall(fact_model, "detect", segments=(2,), samples=1, haystack="Short.")
    with pytest.raises(EvaluationError, match="unknown offsets"):
        evaluate_fact_recall(fact_model, "detect", segments=(2,), samples=1, offsets=("middle",))
    no_tok = make_fact_model()
    no_tok.tokenizer = None
    with pytest.raises(EvaluationError, match="no tokenizer"):
        evaluate_fact_recall(no_tok, "detect", segments=(1,), samples=1)
    with pytest.raises(EvaluationError, match="lacks the symbols"):
        evaluate_algorithmic(fact_model, "copy", segments=(3,), samples=1)


# ---------------------------------------------------------------------- language modelling
def test_lm_perplexities_are_finite(fact_model):
    result = evaluate_lm(fact_model, segments_per_window=3, windows=4, batch_size=3)
    for key in ("perplexity_memory", "perplexity_reset", "perplexity_memory_later", "perplexity_reset_later"):
        assert math.isfinite(result[key]) and result[key] > 1.0
    assert result["tokens_scored"] == 4 * (3 * SEG - 1)
    assert result["relative_improvement"] == pytest.approx(1 - result["perplexity_memory"] / result["perplexity_reset"])
    # One segment per window: memory never comes into play.
    single = evaluate_lm(fact_model, segments_per_window=1, windows=3)
    assert single["perplexity_memory"] == pytest.approx(single["perplexity_reset"], rel=1e-6)
    assert single["perplexity_memory_later"] is None
    # A text shorter than a window is used whole.
    short = evaluate_lm(fact_model, text="Anne walked to the garden and back again.", windows=2)
    assert short["segments_per_window"] == 1 and math.isfinite(short["perplexity_memory"])


# ---------------------------------------------------------------------- algorithmic
def test_algorithmic_rows():
    model = make_symbol_model()
    rows = evaluate_algorithmic(model, "copy", segments=(3, 6), samples=8)
    assert [r["segment_size"] for r in rows] == [17, 9]
    assert model.config.segment_size == 9  # restored
    for row in rows:
        assert 0.0 <= row["accuracy_memory"] <= 1.0 and 0.0 <= row["accuracy_reset"] <= 1.0
        assert (row["paper_baseline"], row["paper_rmt"]) == PAPER_ALGORITHMIC[("copy", row["segments"])]
        assert row["chance"] == 1 / 8
    small = evaluate_algorithmic(model, "retrieval", segments=(2,), samples=4, n_symbols=3)
    assert small[0]["paper_rmt"] is None  # the paper used 4 pairs
    assert small[0]["chance"] == 1 / 10
    assert evaluate_algorithmic(make_symbol_model(num_mem_tokens=0), "reverse", (2,), samples=4)[0]["accuracy_memory"] == \
        evaluate_algorithmic(make_symbol_model(num_mem_tokens=0), "reverse", (2,), samples=4)[0]["accuracy_reset"]
    with pytest.raises(EvaluationError, match="exactly 7"):
        evaluate_algorithmic(model, "retrieval", segments=(7,), samples=1)
    with pytest.raises(EvaluationError, match="unknown algorithmic task"):
        evaluate_algorithmic(model, "sort", segments=(2,), samples=1)


# ---------------------------------------------------------------------- tables
def test_tables():
    rows = [{"task": "detect", "segments": 1, "acc": 0.5, "paper": None},
            {"task": "qa1", "segments": 16, "acc": 1 / 3, "paper": 0.99}]
    text = format_table(rows)
    lines = text.splitlines()
    assert lines[0].split() == ["task", "segments", "acc", "paper"]
    assert set(lines[1]) <= {"-", " "}
    assert lines[2].split() == ["detect", "1", "0.500", "-"]
    assert lines[3].split() == ["qa1", "16", "0.333", "0.990"]
    assert len({len(line) for line in lines[:2]}) == 1  # header and rule aligned
    assert lines[2].index("0.500") + 5 == lines[3].index("0.333") + 5  # numbers right-aligned
    assert format_table(rows, columns=["acc"]).splitlines()[2].strip() == "0.500"
    md = markdown_table(rows).splitlines()
    assert md[0] == "| task | segments | acc | paper |"
    assert md[1] == "|---|---:|---:|---:|"
    assert md[2] == "| detect | 1 | 0.500 | - |"
    assert format_table([]) == "" and markdown_table([]) == ""


# ---------------------------------------------------------------------- training resume
def test_train_three_steps_then_resume(tmp_path):
    from rmt_core.io import checkpoint
    from rmt_core.training.recipes import Recipe, Stage
    from rmt_core.training.loop import train

    recipe = Recipe(
        name="tiny-copy", summary="test", tokenizer="symbols",
        backbone={"kind": "gpt2", "n_layer": 1, "n_embd": 16, "n_head": 2, "n_positions": 16},
        rmt={"num_mem_tokens": 2, "segment_size": 3},
        stages=[Stage("copy", "algorithmic", "copy", (3,), max_steps=3, batch_size=4, n_symbols=4,
                      eval_every=100, eval_samples=4)],
        warmup_steps=1,
    )
    out = tmp_path / "run"
    logs: list[str] = []
    first = train(recipe, out, max_minutes=0, threads=1, log=logs.append)  # stops after one step
    state = json.loads((out / "state.json").read_text())
    assert first == out / "latest" and (state["stage"], state["step"], state["total_steps"]) == (0, 1, 1)
    final = train(recipe, out, threads=1, log=logs.append)
    state = json.loads((out / "state.json").read_text())
    assert any(line.startswith("resumed tiny-copy") for line in logs)
    assert (state["stage"], state["total_steps"]) == (1, 3)
    assert state["stages"][0]["steps"] == 3
    assert final == out / "final" and checkpoint.load(final, device="cpu").config.segment_size == 3
    logs.clear()
    assert train(recipe, out, log=logs.append) == out / "final" and "all stages done" in logs[0]


def test_a_stage_can_move_the_model_to_another_segment_size(tmp_path):
    from rmt_core.io import checkpoint
    from rmt_core.training.recipes import Recipe, Stage
    from rmt_core.training.loop import segment_size_at, train

    stages = [Stage("copy", "algorithmic", "copy", (3,), max_steps=1, batch_size=2, n_symbols=4, eval_every=100),
              Stage("copy again", "algorithmic", "copy", (3,), max_steps=1, batch_size=2, n_symbols=4, eval_every=100,
                    segment_size=5)]
    recipe = Recipe(name="tiny-resize", summary="test", tokenizer="symbols",
                    backbone={"kind": "gpt2", "n_layer": 1, "n_embd": 16, "n_head": 2, "n_positions": 16},
                    rmt={"num_mem_tokens": 2, "segment_size": 3}, stages=stages, warmup_steps=1)
    assert [segment_size_at(recipe, i) for i in range(2)] == [3, 5]
    final = train(recipe, tmp_path / "run", threads=1, log=lambda _: None)
    assert checkpoint.load(final, device="cpu").config.segment_size == 5


def test_a_stage_cut_short_keeps_its_learning_rate_schedule():
    from rmt_core.training.recipes import Stage
    from rmt_core.training.loop import _lr_at

    planned = Stage("s", "fact", "detect", (1,), max_steps=2400)
    cut = Stage("s", "fact", "detect", (1,), max_steps=600, schedule_steps=2400)
    assert [_lr_at(s, cut, 50) for s in (0, 100, 599)] == [_lr_at(s, planned, 50) for s in (0, 100, 599)]
    assert _lr_at(599, cut, 50) > 0.85 * cut.lr  # not decayed as a 600-step schedule would be
    assert _lr_at(599, Stage("s", "fact", "detect", (1,), max_steps=600), 50) < 0.2 * cut.lr


# ---------------------------------------------------------------------- answer-word mentions
def test_insert_mention_names_a_place_and_states_no_fact():
    from rmt_core.questions import parse_facts

    tok = tiny_tokenizer()
    rng = np.random.default_rng(5)
    for _ in range(10):
        sample = babi.build_layout_sample(babi_haystack(), 4, SEG, "qa1", rng, tok, "random")
        for where in babi.MENTION_PLACES:
            try:
                mentioned, (start, end) = babi.insert_mention(sample, "office", where, rng)
            except ValueError as exc:
                assert "no sentence start" in str(exc)
                continue
            sentence = mentioned.text[start:end]
            assert "office" in sentence and sentence.endswith(".")
            facts_before = [f.fact for f in parse_facts(sample.text)]
            assert [f.fact for f in parse_facts(mentioned.text)] == facts_before  # no fact added
            assert [mentioned.text[s:e] for s, e in mentioned.facts] == [sample.text[s:e] for s, e in sample.facts]
            assert babi.solve(mentioned.text) == babi.solve(sample.text) == sample.answer
            if where == "after":
                assert start >= mentioned.facts[-1][1]
            else:
                assert end <= mentioned.facts[0][0]
            assert end < mentioned.text.rfind(babi.QUESTION_PREFIX)
    with pytest.raises(ValueError, match="not a trained answer word"):
        babi.insert_mention(sample, "attic", "after", rng)
    with pytest.raises(ValueError, match="where must be one of"):
        babi.insert_mention(sample, "office", "inside", rng)


def test_answer_mentions_rows_match_one_sample_at_a_time(fact_model):
    from rmt_core.training.evaluation import evaluate_answer_mentions

    rows = evaluate_answer_mentions(fact_model, segments=(4,), samples=6, batch_size=4, seed=3)
    assert [r["where"] for r in rows] == list(babi.MENTION_PLACES)
    # recompute by hand, one sample at a time without padding, with the evaluation's own seed
    rng = np.random.default_rng([3, 4, 101])
    tok = fact_model.tokenizer
    counts = {w: [0, 0, 0, 0] for w in babi.MENTION_PLACES}  # kept, without, with, answered mention

    def top(sample) -> int:
        with torch.no_grad():
            return int(fact_model(torch.tensor([babi.encode_sample(sample, tok).input_ids])).logits[0, -2].argmax())

    for _ in range(6):
        sample = babi.build_layout_sample(babi_haystack(), 4, SEG, "detect", rng, tok, "random")
        others = [p for p in babi.PLACES if " " + p != sample.answer]
        place = others[int(rng.integers(len(others)))]
        for where in babi.MENTION_PLACES:
            try:
                mentioned, _ = babi.insert_mention(sample, place, where, rng)
            except ValueError:
                continue
            c = counts[where]
            c[0] += 1
            c[1] += top(sample) == babi.answer_token_id(tok, sample.answer)
            c[2] += top(mentioned) == babi.answer_token_id(tok, sample.answer)
            c[3] += top(mentioned) == babi.answer_token_id(tok, " " + place)
    for row in rows:
        kept, without, with_, said = counts[row["where"]]
        assert row["samples"] == kept and kept > 0
        assert (row["accuracy_without"], row["accuracy_with"], row["answered_mention"]) == (
            without / kept, with_ / kept, said / kept)
