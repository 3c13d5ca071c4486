"""Byte-level BPE (book text + task words) and the WordLevel symbol tokenizer."""

from __future__ import annotations

import numpy as np
import pytest
from transformers import AutoTokenizer

from rmt_core.training.corpus import load_corpus
from rmt_core.training.tasks.babi import ACTORS, OBJECTS, PLACES
from rmt_core.training.tokenizer import (
    EOS_TOKEN,
    TASK_WORDS,
    TokenizerTrainingError,
    build_symbol_tokenizer,
    task_word_problems,
    train_tokenizer,
)

SMALL_CORPUS_CHARS = 200_000


@pytest.fixture(scope="module")
def tok():
    return train_tokenizer([load_corpus("train")[:SMALL_CORPUS_CHARS]], vocab_size=1024)


def _roundtrip(tok, s: str) -> bool:
    return tok.decode(tok.encode(s, add_special_tokens=False)) == s


def test_task_words_are_single_tokens(tok) -> None:
    for a in ACTORS:
        assert " " + a in TASK_WORDS and a in TASK_WORDS
    for w in (*PLACES, *OBJECTS):
        assert " " + w in TASK_WORDS
    assert {"Question", "Answer"} <= set(TASK_WORDS)
    assert task_word_problems(tok) == {}
    for w in TASK_WORDS:
        assert len(tok.encode(w, add_special_tokens=False)) == 1, w
    toks = tok.tokenize("Mary went to the office.\nQuestion: Where is Mary?\nAnswer: office")
    assert "Mary" in toks and "ĠMary" in toks and "Question" in toks and "Answer" in toks


def test_special_tokens_and_size(tok) -> None:
    assert len(tok) == 1024
    assert tok.eos_token == tok.pad_token == tok.bos_token == EOS_TOKEN
    assert tok.eos_token_id == tok.pad_token_id == 0
    assert tok.encode(EOS_TOKEN, add_special_tokens=False) == [0]


def test_roundtrip_arbitrary_text(tok) -> None:
    rng = np.random.default_rng(0)
    samples = [
        "",
        "Plain Austen sentence, with punctuation -- and 'quotes'!",
        "héllo wörld 世界 🎉 Ωμέγα ﷽ \u200b\u00a0 tab\there\r\nCRLF  double  spaces   ",
        "\x00\x01\x02\x7f control chars \x1b[0m",
        bytes(range(256)).decode("latin-1"),
        bytes(rng.integers(0, 256, 500, dtype=np.uint8)).decode("latin-1"),
        bytes(rng.integers(0, 256, 500, dtype=np.uint8)).decode("utf-8", errors="replace"),
        " <|endoftext|> inside text",
    ]
    # random code points (no surrogates: those cannot be UTF-8 encoded at all)
    cps = rng.integers(1, 0x10FFFF, 400)
    samples.append("".join(chr(c) for c in cps if not 0xD800 <= c <= 0xDFFF))
    for s in samples:
        assert _roundtrip(tok, s), repr(s[:40])


def test_save_and_load_offline(tok, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    tok.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path, local_files_only=True)
    text = "Sandra journeyed to the hallway. «Ünïcode» 🎉\nQuestion: Where is Sandra?\nAnswer:"
    assert loaded.encode(text, add_special_tokens=False) == tok.encode(text, add_special_tokens=False)
    assert _roundtrip(loaded, text)
    assert loaded.pad_token == EOS_TOKEN and len(loaded) == len(tok)


def test_training_is_deterministic(tok) -> None:
    again = train_tokenizer([load_corpus("train")[:SMALL_CORPUS_CHARS]], vocab_size=1024)
    assert again.backend_tokenizer.to_str() == tok.backend_tokenizer.to_str()


def test_too_small_vocab_raises() -> None:
    with pytest.raises(ValueError):
        train_tokenizer(["some text"], vocab_size=200)
    with pytest.raises(TokenizerTrainingError):
        train_tokenizer([load_corpus("train")[:20_000]], vocab_size=300)


def test_symbol_tokenizer(tmp_path) -> None:
    st = build_symbol_tokenizer(list("abcd") + ["10"], ["<pad>", "<sep>"])
    assert st.convert_ids_to_tokens([0, 1, 2, 3]) == ["<pad>", "<sep>", "<unk>", "a"]
    assert st.pad_token == "<pad>" and st.sep_token == "<sep>" and st.unk_token == "<unk>"
    ids = st.encode("a b <sep> 10 zz", add_special_tokens=False)
    assert ids == [3, 4, 1, 7, 2]
    assert st.decode(ids[:4]) == "a b <sep> 10"
    st.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path, local_files_only=True)
    assert loaded.encode("a b <sep> 10 zz", add_special_tokens=False) == ids
    assert loaded.pad_token_id == 0
    with pytest.raises(ValueError):
        build_symbol_tokenizer(["a b"], ["<pad>"])
