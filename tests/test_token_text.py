"""Token display (rmt_core.token_text) and plotly escaping: text in, text out, exactly (issue 17)."""
from __future__ import annotations

import copy
import html
import re

import numpy as np
import pytest

import rmt_core
from rmt_core.viz import figures
from rmt_core.token_text import (CONTINUATION, decode_distinct, decode_token, encode_ids, encode_with_offsets, id_pieces,
                                 token_label, token_pieces)

from conftest import make_model

QUOTE = "“Yes,” she wrote: café 👋"


@pytest.fixture(scope="module")
def default_model():
    return rmt_core.load(rmt_core.DEFAULT_CHECKPOINT, device="cpu")


def all_tokens(trace) -> list[str]:
    return [t for seg in trace.segments for t in seg.tokens]


# ---------------------------------------------------------------------- the cases
def test_quote_with_multibyte_characters_joins_back(default_model):
    trace = rmt_core.trace(default_model, QUOTE)
    tokens = all_tokens(trace)
    assert "".join(tokens) == QUOTE
    # each character shown once: on the first piece that holds it, the other pieces are empty
    assert tokens.count("“") == 1 and tokens.count("👋") == 1 and tokens.count("é") == 1
    assert "" in tokens
    labels = trace.attention_labels(0)
    assert CONTINUATION in labels and "".join(labels).count("👋") == 1


def test_russian_letters_are_not_doubled(default_model):
    text = "Привет, мир! Это проверка."
    tokens = all_tokens(rmt_core.trace(default_model, text))
    assert "".join(tokens) == text
    assert sum(len(t) for t in tokens) == len(text)


def test_segment_boundary_inside_a_character(default_model):
    tok = default_model.tokenizer
    size = default_model.config.segment_size
    text = " the" * (size - 1) + "—x" + "👋 end."
    ids, spans = encode_with_offsets(tok, text)
    pieces = token_pieces(text, np.asarray(spans))
    assert pieces[size - 1] == "—" and pieces[size] == ""  # the boundary falls between the bytes of —
    assert len(ids) > size
    trace = rmt_core.trace(default_model, text)
    assert trace.num_segments == 2 and trace.segments[1].tokens[0] == ""
    assert "".join(all_tokens(trace)) == text
    from rmt_core.viz.render import document_html

    page, _ = document_html(trace)
    shown = html.unescape(re.sub(r"<[^>]+>", "", page))
    assert shown == "§0" + text[:text.index("—") + 1] + "§1" + text[text.index("—") + 1:]


def test_trace_from_ids_shows_decoded_text(default_model):
    ids = default_model.tokenizer(QUOTE, add_special_tokens=False)["input_ids"]
    trace = rmt_core.trace(default_model, np.asarray(ids))
    assert trace.text is None and "".join(all_tokens(trace)) == QUOTE


def test_saved_and_cancelled_traces_keep_the_pieces(default_model, tmp_path):
    text = "Café “déjà vu” 👋🏽 " * 40
    trace = rmt_core.trace(default_model, text)
    path = trace.save(tmp_path / "t.rmtrace")
    loaded = rmt_core.Trace.load(path)
    assert all_tokens(loaded) == all_tokens(trace) and "".join(all_tokens(loaded)) == text
    partial = rmt_core.trace(default_model, text, progress=lambda done, total: done < 2)
    assert not partial.complete and all_tokens(partial) == all_tokens(trace)[:partial.num_tokens]
    reloaded = rmt_core.Trace.load(partial.save(tmp_path / "p.rmtrace"))
    assert all_tokens(reloaded) == all_tokens(partial)


def test_predictions_of_partial_characters_show_bytes(default_model):
    tok = default_model.tokenizer
    ids = tok("é", add_special_tokens=False)["input_ids"]
    assert len(ids) == 2 and tok.decode([ids[0]]) == "\ufffd"
    assert decode_token(tok, ids[0]) == "<c3>" and decode_token(tok, ids[1]) == "<a9>"
    assert decode_token(tok, tok(" she", add_special_tokens=False)["input_ids"][0]) == " she"
    assert decode_token(None, 7) == "7"


def test_whitespace_the_tokenizer_drops_goes_to_the_next_token():
    from rmt_core.training.tokenizer import build_symbol_tokenizer

    model = make_model()
    model.tokenizer = build_symbol_tokenizer(list("abc"), ["<pad>", "<unk>"])
    text = "  a b\n\tc  "
    trace = rmt_core.trace(model, text)
    assert all_tokens(trace) == ["  a", " b", "\n\tc  "] and "".join(all_tokens(trace)) == text


# ---------------------------------------------------------------------- property: random Unicode
_POOLS = {
    "latin": list("abcdefghijklmnopqrstuvwxyz ABCXYZ,.;:!?'\"-") + ["the", " and", "ing"],
    "accents": list("éèêëàâäîïôöûüçñåøæœßÉÀ"),
    "combining": ["e\u0301", "a\u0308", "o\u0302\u0323", "n\u0303", "\u0301", "\u20dd"],
    "cyrillic": list("абвгдеёжзийклмнопрстуфхцчшщъыьэюяПРИВЕТ"),
    "greek": list("αβγδεζηθικλμνξοπρστυφχψωΑΩ"),
    "cjk": list("日本語中文漢字テスト한국어の。、「」"),
    "rtl": list("שלוםעולםمرحباالعالم") + ["\u200f", "\u200e"],
    "indic": ["क्", "षि", "न्दी", "ि", "्", "த", "மி"],
    "emoji": ["👋", "👋🏽", "👨\u200d👩\u200d👧", "🏳\ufe0f\u200d🌈", "🇫🇷", "❤\ufe0f", "🧑🏿\u200d💻", "\u200d", "\ufe0f"],
    "space": [" ", "  ", "\n", "\n\n", "\t", "\u00a0", "\u2003", "\u3000"],
    "symbols": list("“”‘’—–…€£¥©®™§¶•°±×÷∑∫√∞≠≤≥") + ["\U0001d400", "\U00010348"],
}


def random_texts(n: int, seed: int = 17) -> list[str]:
    rng = np.random.default_rng(seed)
    names = list(_POOLS)
    out = []
    for _ in range(n):
        chosen = rng.choice(names, size=int(rng.integers(1, 5)), replace=False)
        parts = [str(rng.choice(_POOLS[str(rng.choice(chosen))])) for _ in range(int(rng.integers(1, 60)))]
        out.append("".join(parts))
    return out


def test_random_unicode_joins_back_exactly(default_model):
    tok = default_model.tokenizer
    texts = random_texts(400)
    assert any("\u200d" in t for t in texts) and any("日" in t for t in texts) and any("ש" in t for t in texts)
    for text in texts:
        ids, spans = encode_with_offsets(tok, text)
        pieces = token_pieces(text, np.asarray(spans))
        assert "".join(pieces) == text, text
        assert len(pieces) == len(ids)
        assert "".join(id_pieces(tok, np.asarray(ids))) == text, text
        labels = [token_label(p) for p in pieces]
        assert all(labels) and all("\n" not in lab for lab in labels)


def test_encoding_gives_the_tokenizers_own_ids_and_offsets(default_model):
    """encode_with_offsets / encode_ids call a fast tokenizer's Rust backend directly: the same ids and
    offsets as the tokenizer's own call; a tokenizer without a backend goes through that call."""
    tok = default_model.tokenizer

    class NoBackend:  # a tokenizer without backend_tokenizer (a slow one)
        def __call__(self, *args, **kwargs):
            return tok(*args, **kwargs)

    for text in random_texts(100, seed=5) + [QUOTE, "", "  \n"]:
        enc = tok(text, add_special_tokens=False, return_offsets_mapping=True)
        expected = list(enc["input_ids"]), [tuple(span) for span in enc["offset_mapping"]]
        for t in (tok, NoBackend()):
            ids, spans = encode_with_offsets(t, text)
            assert (list(ids), [tuple(span) for span in spans]) == expected, text
            assert list(encode_ids(t, text)) == expected[0], text


def test_decode_distinct_decodes_each_id_once(default_model):
    tok = default_model.tokenizer
    ids = np.array([[5, 9, 5], [9, 300, 5]])
    calls = []

    class Counting:
        def decode(self, token_ids):
            calls.append(token_ids)
            return tok.decode(token_ids)

    names = decode_distinct(Counting(), ids)
    assert names == {i: decode_token(tok, i) for i in (5, 9, 300)} and len(calls) == 3
    assert decode_distinct(None, [3, 3]) == {3: "3"}


def test_random_unicode_traces_join_back(default_model):
    for text in random_texts(12, seed=3):
        if text.strip():
            assert "".join(all_tokens(rmt_core.trace(default_model, text))) == text, text


def test_token_label_makes_pieces_visible():
    assert token_label("") == CONTINUATION
    assert token_label("\n") == "\\n" and token_label(" a\tb\r") == " a\\tb\\r"
    assert token_label("\u200d") == "\\u200d" and token_label("👨\u200d👩") == "👨\u200d👩"
    assert token_label("\x07") == "\\u0007"
    assert token_label(token_label("\n")) == token_label("\n")  # idempotent: labels can be relabelled


# ---------------------------------------------------------------------- plotly markup
MARKUP = ["she", "<b>smiled</b>", "<br>", "&lt;3", "x<sup>2</sup>", "a&amp;b"]


def test_plotly_text_escapes_markup_and_entities():
    assert figures.plotly_text("<b>smiled</b>") == "&lt;b&gt;smiled&lt;/b&gt;"
    assert figures.plotly_text("&lt;3") == "&amp;lt;3"
    # plotly turns &amp; &lt; &gt; back into characters once: what it draws is the original text
    for text in MARKUP:
        escaped = figures.plotly_text(text)
        assert "<" not in escaped and ">" not in escaped
        assert re.sub(r"&(amp|lt|gt);", lambda m: {"amp": "&", "lt": "<", "gt": ">"}[m.group(1)], escaped) == text


def test_token_text_reaching_figures_is_escaped():
    from rmt_core.training.tokenizer import build_symbol_tokenizer

    model = make_model()
    model.tokenizer = build_symbol_tokenizer(MARKUP, ["<pad>", "<unk>"])
    trace = rmt_core.trace(model, " ".join(MARKUP))
    att = trace.attention(0)
    fig = figures.attention_heatmap(att[0, 0], trace.attention_labels(0), trace.num_mem_tokens, "<b>title</b>")
    ticks = list(fig.data[0].x)
    assert "4: &lt;b&gt;smiled&lt;/b&gt;" in ticks and "5: &lt;br&gt;" in ticks and "6: &amp;lt;3" in ticks
    assert fig.layout.title.text == "&lt;b&gt;title&lt;/b&gt;"
    seg = trace.segments[0]
    heat = figures.slot_token_heatmap(seg.write_to_tokens[0, 0].astype(float), seg.tokens, "t")
    assert all("<" not in t for t in heat.data[0].x)
    for fig in figures.standard_figures(trace, 0).values():
        for text in _figure_strings(fig):
            assert not re.search(r"<(?!br>|extra>|/extra>)", text), text  # only our own line breaks
    states = trace.memory_states()
    hover = [["<b>x</b>"] * trace.num_mem_tokens for _ in range(states.shape[0])]
    traj = figures.memory_trajectory(rmt_core.explain.analysis.pca_trajectory(states, 2), hover)
    assert "&lt;b&gt;x&lt;/b&gt;" in traj.data[0].text[0]
    bar = figures.slot_bar(np.ones(3), "log p('<br>')")
    assert bar.layout.title.text == "log p('&lt;br&gt;')"


def _figure_strings(fig) -> list[str]:
    """Every user-visible string of a figure except hovertemplates: ticks, text, titles, annotations."""
    out = [fig.layout.title.text or ""]
    for trace in fig.data:
        for attr in ("x", "y", "text"):
            values = getattr(trace, attr, None)
            if values is not None and len(values) and isinstance(np.asarray(values, dtype=object).flat[0], str):
                out += [str(v) for v in np.asarray(values, dtype=object).ravel()]
    out += [a.text or "" for a in fig.layout.annotations or ()]
    return out


def test_bertviz_labels_keep_text_and_mark_continuations(default_model):
    from rmt_core.viz.bertviz_views import head_view_html

    trace = rmt_core.trace(default_model, QUOTE)
    view = head_view_html(trace.attention(0), trace.attention_labels(0))
    assert CONTINUATION in view.html and "👋" in view.html


def test_encoding_ignores_truncation_and_padding_switched_on_in_a_tokenizer_file(default_model, tmp_path):
    """A user's tokenizer.json may carry truncation / padding settings: the bare Rust backend would
    cut or pad the document silently, so such tokenizers go through the wrapper (whole document)."""
    from transformers import PreTrainedTokenizerFast

    backend = copy.deepcopy(default_model.tokenizer.backend_tokenizer)
    backend.enable_truncation(max_length=8)
    backend.enable_padding(length=64, pad_id=0, pad_token="<pad>")
    path = tmp_path / "tokenizer.json"
    backend.save(str(path))
    tok = PreTrainedTokenizerFast(tokenizer_file=str(path))
    text = QUOTE * 3
    expected = default_model.tokenizer(text, add_special_tokens=False)["input_ids"]
    assert len(expected) > 8
    assert list(encode_ids(tok, text)) == list(expected)
    assert list(encode_with_offsets(tok, text)[0]) == list(expected)
