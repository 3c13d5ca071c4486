"""Task generators: bAbI facts in book noise, dense stories, algorithmic tasks.

Answers are recomputed here with an independent parser of the text.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from rmt_core.training.corpus import load_corpus, load_novel
from rmt_core.training.tasks import algorithmic, babi
from rmt_core.training.tasks.babi import ACTORS, PLACES
from rmt_core.training.tokenizer import train_tokenizer

torch.set_num_threads(1)

MOVE = re.compile(r"\b(Mary|John|Daniel|Sandra) (?:moved|went|journeyed|travelled) to the (\w+)\.")
GET = re.compile(r"\b(Mary|John|Daniel|Sandra) (?:got|grabbed|picked up|took) the (football|apple|milk) there\.")
DROP = re.compile(r"\b(Mary|John|Daniel|Sandra) (?:dropped|discarded|put down|left) the (football|apple|milk)\.")
ANY_FACT = re.compile("|".join(p.pattern for p in (MOVE, GET, DROP)))
SUFFIX = re.compile(r"\nQuestion: Where is (the )?(\w+)\?\nAnswer:$")


@pytest.fixture(scope="module")
def tok():
    return train_tokenizer([load_corpus("train")[:200_000]], vocab_size=1024)


@pytest.fixture(scope="module")
def hay() -> str:
    return load_novel("persuasion")


def expected_answer(text: str) -> str:
    """Independent bAbI solver: simulate every fact in order."""
    m = SUFFIX.search(text)
    assert m, repr(text[-80:])
    who = m.group(2)
    events = sorted(
        [(x.start(), "move", x.group(1), x.group(2)) for x in MOVE.finditer(text)]
        + [(x.start(), "get", x.group(1), x.group(2)) for x in GET.finditer(text)]
        + [(x.start(), "drop", x.group(1), x.group(2)) for x in DROP.finditer(text)]
    )
    loc: dict[str, str] = {}
    holder: dict[str, str] = {}
    lying: dict[str, str] = {}
    for _, kind, actor, x in events:
        if kind == "move":
            loc[actor] = x
        elif kind == "get":
            assert actor in loc, "picked up before the actor is anywhere"
            holder[x] = actor
        else:
            assert holder.get(x) == actor, "dropped by someone not holding it"
            lying[x] = loc[holder.pop(x)]
    if who in ACTORS:
        return " " + loc[who]
    return " " + (loc[holder[who]] if who in holder else lying[who])


def at_sentence_start(text: str, s: int) -> bool:
    if s == 0:
        return True
    if not text[s - 1].isspace():
        return False
    before = text[:s].rstrip()
    return before.endswith((".", "!", "?", '"', "'", ")", "_")) or re.search(r"\n[ \t]*\n\s*$", text[:s]) is not None


def check_sample(s: babi.FactSample, task: str, n_tokens: int, tok, keep_out_tail: int = 0) -> babi.EncodedSample:
    assert s.task == task
    assert s.text.endswith(f"\nQuestion: {s.question}\nAnswer:")
    assert s.answer.startswith(" ") and s.answer[1:] in PLACES
    # The facts the sample reports are exactly the fact sentences in the text.
    found = [(m.start(), m.end()) for m in ANY_FACT.finditer(s.text)]
    assert found == s.facts
    n_facts = {"memorize": 1, "detect": 1, "qa1": (2, 3, 4), "qa2": tuple(range(3, 8))}[task]
    assert len(s.facts) in (n_facts if isinstance(n_facts, tuple) else (n_facts,))
    assert s.answer == expected_answer(s.text) == babi.solve(s.text)
    for a, b in s.facts:
        assert at_sentence_start(s.text, a), repr(s.text[a - 20 : b])
        assert s.text[b] == " "
    if task == "memorize":
        assert s.facts[0][0] == 0
    moves = list(MOVE.finditer(s.text))
    assert s.shortcut_answer == " " + moves[-1].group(2)
    e = babi.encode_sample(s, tok)
    assert len(e.input_ids) == len(e.labels) == n_tokens
    assert [i for i, x in enumerate(e.labels) if x != -100] == [n_tokens - 1]
    assert e.labels[-1] == e.input_ids[-1] == e.answer_id
    assert tok.decode([e.answer_id]) == s.answer
    assert len(e.fact_token_spans) == len(s.facts)
    for (i, j), (a, b) in zip(e.fact_token_spans, s.facts):
        assert tok.decode(e.input_ids[i:j]).strip() == s.text[a:b]
        assert j <= n_tokens - keep_out_tail
    return e


@pytest.mark.parametrize("task", babi.TASKS)
def test_samples_are_valid(task: str, tok, hay: str) -> None:
    rng = np.random.default_rng(1)
    for n_tokens, keep in [(96, 0), (256, 64), (640, 128)]:
        for _ in range(8):
            s = babi.build_sample(hay, n_tokens, task, rng, tok, keep_out_tail=keep)
            check_sample(s, task, n_tokens, tok, keep)


def test_keep_out_tail_near_limit(tok, hay: str) -> None:
    rng = np.random.default_rng(2)
    for _ in range(10):
        s = babi.build_sample(hay, 200, "qa2", rng, tok, keep_out_tail=150)
        check_sample(s, "qa2", 200, tok, 150)


def test_deterministic_for_seeded_rng(tok, hay: str) -> None:
    for task in babi.TASKS:
        a = [babi.build_sample(hay, 128, task, np.random.default_rng(7), tok) for _ in range(2)]
        assert a[0] == a[1]
    b1 = babi.make_batch(hay, tok, 128, "qa1", 3, np.random.default_rng(3), keep_out_tail=32)
    b2 = babi.make_batch(hay, tok, 128, "qa1", 3, np.random.default_rng(3), keep_out_tail=32)
    assert all(torch.equal(b1[k], b2[k]) for k in b1)
    assert babi.dense_story(np.random.default_rng(4), "qa2", 9, 3) == babi.dense_story(np.random.default_rng(4), "qa2", 9, 3)


def test_shortcut_is_right_only_some_of_the_time() -> None:
    rng = np.random.default_rng(5)
    for task in ("qa1", "qa2"):
        stories = [babi.make_story(task, rng) for _ in range(400)]
        rate = np.mean([answer == shortcut for _, _, answer, shortcut in stories])
        assert 0.35 < rate < 0.65, (task, rate)
    # qa1: the queried actor sometimes has several facts, and the answer is the last one
    multi = 0
    for facts, question, answer, _ in (babi.make_story("qa1", rng) for _ in range(200)):
        actor = question.removeprefix("Where is ").removesuffix("?")
        mine = [f.target for f in facts if f.actor == actor]
        assert mine[-1] == answer
        multi += len(mine) > 1 and mine[0] != answer
    assert multi > 20
    samples = [babi.build_sample("Some noise. " * 300, 80, "detect", rng) for _ in range(10)]
    assert babi.shortcut_accuracy(samples) == 1.0
    assert babi.CHANCE == pytest.approx(1 / 6)


def test_without_tokenizer_approximates_length(hay: str) -> None:
    rng = np.random.default_rng(6)
    for task in babi.TASKS:
        s = babi.build_sample(hay, 500, task, rng, keep_out_tail=100)
        assert abs(len(s.text + s.answer) - 4 * 500) <= 12
        assert s.answer == expected_answer(s.text)
        assert s.facts[-1][1] <= len(s.text) - 4 * 100 + 8


def test_short_haystack_wraps_and_too_short_raises(tok) -> None:
    rng = np.random.default_rng(8)
    s = babi.build_sample("It rained. The end came.", 300, "qa1", rng, tok)
    check_sample(s, "qa1", 300, tok)
    with pytest.raises(ValueError):
        babi.build_sample(load_corpus("heldout"), 12, "qa2", rng, tok)
    with pytest.raises(ValueError):
        babi.build_sample(load_corpus("heldout"), 100, "qa3", rng, tok)


def test_make_batch(tok, hay: str) -> None:
    b = babi.make_batch(hay, tok, 192, "qa2", 4, np.random.default_rng(9), keep_out_tail=64)
    assert b["input_ids"].shape == b["labels"].shape == (4, 192) and b["input_ids"].dtype == torch.long
    assert b["answer_ids"].shape == (4,)
    assert torch.equal(b["labels"][:, -1], b["answer_ids"])
    assert int((b["labels"] != -100).sum()) == 4
    assert bool(b["attention_mask"].all())


def test_dense_story_labels_every_answer(tok) -> None:
    rng = np.random.default_rng(10)
    for task in ("qa1", "qa2"):
        for _ in range(10):
            text = babi.dense_story(rng, task, n_facts=10, n_questions=4)
            assert text.count("\nQuestion: ") == 4 and "Answer: " in text
            e = babi.encode_dense_story(text, tok)
            labelled = [(i, x) for i, x in enumerate(e.labels) if x != -100]
            answers = list(re.finditer(r"\nAnswer:( \w+)", text))
            assert len(labelled) == len(answers) == 4
            for (i, x), m in zip(labelled, answers):
                assert e.input_ids[i] == x and tok.decode([x]) == m.group(1)
                assert m.group(1) == expected_answer(text[: m.start()] + "\nAnswer:")
            assert len(e.fact_token_spans) == 10
    b = babi.make_dense_batch(tok, "qa2", 3, rng, n_facts=6, n_questions=2)
    assert b["input_ids"].shape[0] == 3 and int((b["labels"] != -100).sum()) == 6


# ------------------------------------------------------------------ algorithmic


def test_algorithmic_formats() -> None:
    st = algorithmic.symbol_tokenizer()
    sep = st.convert_tokens_to_ids("<sep>")
    rng = np.random.default_rng(11)
    for task in ("copy", "reverse"):
        b = algorithmic.make_task_batch(task, 24, 5, rng)
        ids, labels = b["input_ids"], b["labels"]
        assert ids.shape == labels.shape == (5, 49) and ids.dtype == torch.long
        assert bool((ids[:, 24] == sep).all())
        src, tgt = ids[:, :24], ids[:, 25:]
        assert torch.equal(tgt, src if task == "copy" else src.flip(1))
        assert bool((labels[:, :25] == -100).all()) and torch.equal(labels[:, 25:], tgt)
        assert set(st.convert_ids_to_tokens(src.flatten().tolist())) <= set(algorithmic.SYMBOLS)
    b = algorithmic.make_task_batch("retrieval", 4, 6, rng)
    ids, labels = b["input_ids"], b["labels"]
    assert ids.shape == (6, 10)
    for row, lab in zip(ids.tolist(), labels.tolist()):
        toks = st.convert_ids_to_tokens(row)
        keys, vals = toks[0:8:2], toks[1:8:2]
        assert len(set(keys)) == 4 and set(keys) <= set(algorithmic.SYMBOLS) and set(vals) <= set(algorithmic.VALUES)
        assert toks[9] == vals[keys.index(toks[8])]
        assert lab[:9] == [-100] * 9 and lab[9] == row[9]


def test_algorithmic_deterministic_and_aliases() -> None:
    a = algorithmic.make_task_batch("ar", None, 4, np.random.default_rng(12))
    b = algorithmic.make_task_batch("retrieval", 4, 4, np.random.default_rng(12))
    assert torch.equal(a["input_ids"], b["input_ids"])
    with pytest.raises(ValueError):
        algorithmic.make_task_batch("sort", 4, 4, np.random.default_rng(0))
    with pytest.raises(ValueError):
        algorithmic.make_task_batch("retrieval", 9, 4, np.random.default_rng(0))


@pytest.mark.parametrize(
    "task,n,segments",
    [("copy", 24, (3, 6, 9)), ("reverse", 24, (2, 4, 6)), ("retrieval", 4, (2, 3, 4, 5))],
)
def test_segment_size_spans_exact_segments(task: str, n: int, segments: tuple[int, ...]) -> None:
    T = algorithmic.sequence_length(task, n)
    for k in segments:
        size = algorithmic.segment_size_for(task, n, k)
        assert -(-T // size) == k and size * (k - 1) < T <= size * k


def test_segment_size_impossible_raises() -> None:
    with pytest.raises(ValueError):
        algorithmic.segment_size_for("copy", 4, 6)  # 9 tokens cannot make exactly 6 segments


def test_a_dense_stage_sets_facts_and_questions_per_story(tok) -> None:
    from rmt_core.training.recipes import Stage
    from rmt_core.training.loop import make_batch

    class Model:  # make_batch needs the tokenizer and the segment size only
        tokenizer = tok
        config = type("Config", (), {"segment_size": 32})()

    stage = Stage("short stories", "dense", "qa1", (1,), max_steps=1, batch_size=5, dense_facts=(3, 1))
    batch = make_batch(stage, Model(), np.random.default_rng(0), None)
    assert int((batch.labels != -100).sum()) == 5  # one question per story
    texts = [tok.decode(row[mask.bool()]) for row, mask in zip(batch.input_ids, batch.attention_mask)]
    assert all(len(babi.parse_facts(t)) == 3 for t in texts), texts
