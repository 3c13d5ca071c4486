"""The vendored Austen corpus: loading, splits, sentence boundaries."""

from __future__ import annotations

import re

import numpy as np
import pytest

from rmt_core.training import corpus
from rmt_core.training.corpus import HELDOUT_NOVEL, NOVELS, load_corpus, load_novel, sentence_boundaries


def test_novels_load_and_are_cached() -> None:
    assert len(NOVELS) == 6 and HELDOUT_NOVEL == "persuasion" and HELDOUT_NOVEL in NOVELS
    for name in NOVELS:
        text = load_novel(name)
        assert isinstance(text, str) and len(text) > 300_000
        assert load_novel(name) is text  # lru_cache
    assert "Sir Walter Elliot, of Kellynch Hall" in load_novel("persuasion")


def test_data_files_and_provenance() -> None:
    for name in NOVELS:
        assert corpus.novel_path(name).name == f"austen_{name}.txt.gz"
        assert corpus.novel_path(name).is_file()
    prov = (corpus.DATA_DIR / "PROVENANCE.md").read_text(encoding="utf-8")
    assert "janeaustenr" in prov and "gzip" in prov


def test_splits_keep_heldout_novel_out_of_train() -> None:
    train, held, every = load_corpus("train"), load_corpus("heldout"), load_corpus("all")
    assert held == load_novel(HELDOUT_NOVEL)
    persuasion = load_novel("persuasion")
    for i in (1000, len(persuasion) // 2, len(persuasion) - 3000):
        assert persuasion[i : i + 300] not in train
    for name in NOVELS:
        if name != HELDOUT_NOVEL:
            assert load_novel(name)[5000:5300] in train
        assert load_novel(name)[5000:5300] in every
    sep = len(corpus.NOVEL_SEPARATOR)
    assert len(train) == sum(len(load_novel(n)) for n in corpus.TRAIN_NOVELS) + sep * 4
    assert len(every) == len(train) + len(held) + sep


def test_bad_names_raise() -> None:
    with pytest.raises(ValueError):
        load_corpus("test")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        load_novel("ulysses")


def test_sentence_boundaries_small_text() -> None:
    text = 'It was late.  She left! "Why?" he asked. Mr. Darcy and J. Smith came.\n\nNew part? yes.\nEnd'
    got = [text[p : p + 4] for p in sentence_boundaries(text)]
    # not after "Mr." or the initial "J.", never before a lower-case word
    assert got == ["It w", "She ", '"Why', "Mr. ", "New ", "End"]
    assert list(sentence_boundaries("  leading space. Then")) == [len("  leading space. ")]
    assert len(sentence_boundaries("")) == 0


def test_sentence_boundaries_on_corpus_are_sentence_starts() -> None:
    text = load_novel("emma")[20_000:120_000]
    b = sentence_boundaries(text)
    assert b.dtype == np.int64 and np.all(np.diff(b) > 0)
    assert len(b) > 300
    for p in b[1:]:
        p = int(p)
        assert not text[p].isspace() and text[p - 1].isspace()
        before = text[:p].rstrip()
        para = re.search(r"\n[ \t]*\n\s*$", text[:p]) is not None
        assert para or before[-1] in ".!?\"')]_", repr(text[p - 20 : p + 10])
