"""The Trace: continuity, attention summaries, recompute, files, cancellation, threads, determinism."""
from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

import rmt_core
from rmt_core import TraceCancelled, TraceError
from rmt_core.tracing.trace import BLOCK_PAIRS

from conftest import VOCAB, make_model

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="module")
def model():
    return make_model("gpt2", num_mem_tokens=3, segment_size=6)


@pytest.fixture(scope="module")
def ids():
    return np.random.default_rng(0).integers(0, VOCAB, 40)  # 7 segments, the last one short


@pytest.fixture(scope="module")
def trace(model, ids):
    return rmt_core.trace(model, ids)


def test_segments_cover_the_document(trace, ids):
    assert trace.complete and trace.num_segments == 7
    assert np.array_equal(np.concatenate([s.token_ids for s in trace.segments]), ids)
    assert trace.segments[-1].num_tokens == 4


def test_memory_continuity(trace):
    assert np.array_equal(trace.segments[0].memory_in, trace.initial_memory)
    for before, after in zip(trace.segments, trace.segments[1:]):
        assert np.array_equal(after.memory_in, before.memory_out)


def test_memory_out_equals_the_forward_pass(model, trace, ids):
    with torch.no_grad():
        out = model(torch.as_tensor(ids).unsqueeze(0))
    for seg, state in zip(trace.segments, out.memory_out):  # tracing runs the model's own attention: bit for bit
        np.testing.assert_array_equal(seg.memory_out, state[0].numpy())
    logprobs = torch.log_softmax(out.logits[0], -1)
    expected = logprobs[:-1].gather(1, torch.as_tensor(ids[1:]).unsqueeze(1)).squeeze(1).numpy()
    recorded = np.concatenate([s.token_logprob for s in trace.segments])
    assert np.isnan(recorded[0])
    np.testing.assert_allclose(recorded[1:], expected, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(trace.segments[2].loss, -recorded[12:18].mean(), rtol=1e-5)


def test_attention_rows_sum_to_one_over_allowed_positions(trace):
    att = trace.attention(3)  # (Y, H, n, n)
    assert att.shape == (2, 4, 12, 12)
    np.testing.assert_allclose(att.sum(-1), 1.0, atol=1e-5)
    from rmt_core.engine.masks import allowed_attention

    allowed = allowed_attention(3, 6, "paper")[0].numpy()
    assert np.abs(att[..., ~allowed]).max() == 0


def test_recompute_reproduces_recorded_summaries(trace):
    for index in (0, 3, 6):
        seg = trace.segments[index]
        att = trace.attention(index)
        m, L = 3, seg.num_tokens
        R, T, W = slice(0, m), slice(m, m + L), slice(m + L, m + L + m)
        np.testing.assert_allclose(seg.write_to_tokens, att[:, :, W, T], atol=2e-3)
        np.testing.assert_allclose(seg.tokens_to_read, att[:, :, T, R], atol=2e-3)
        blocks = {"tokens->read": (T, R), "write->tokens": (W, T), "write->read": (W, R),
                  "write->write": (W, W), "read->read": (R, R), "tokens->tokens": (T, T)}
        for p, name in enumerate(BLOCK_PAIRS):
            rows, cols = blocks[name]
            np.testing.assert_allclose(seg.block_attention[..., p], att[:, :, rows, cols].sum(-1).mean(-1), atol=2e-3)
    labels = trace.attention_labels(6)
    assert labels[:3] == ["R0", "R1", "R2"] and labels[-3:] == ["W0", "W1", "W2"] and len(labels) == 10


def _per_layer_scaled_gpt2():
    """A GPT-2 that scales each layer's attention by 1 / (layer + 1): its layers' weights need
    different scalings (the recorder batches them per scaling)."""
    from rmt_core import RMTConfig, RMTModel
    from rmt_core.engine.backbones import backbone_from_config, gpt2_config

    torch.manual_seed(3)
    config = gpt2_config(VOCAB, n_layer=3, n_embd=32, n_head=4, n_positions=64, scale_attn_by_inverse_layer_idx=True)
    return RMTModel.from_backbone(backbone_from_config(config), RMTConfig(num_mem_tokens=2, segment_size=5)).eval()


@pytest.mark.parametrize("build", [
    lambda: make_model("gpt2", "eager"), lambda: make_model("llama"), lambda: make_model("llama", "eager"),
    _per_layer_scaled_gpt2, lambda: make_model("gpt2", num_mem_tokens=0),
], ids=["gpt2-eager", "llama-gqa", "llama-eager", "gpt2-per-layer-scaling", "gpt2-no-memory"])
def test_recorded_attention_and_memory_match_the_model_on_other_backbones(build, ids):
    """Tracing keeps the model's own attention path (memory bit for bit as forward) and builds the
    attention summaries from each layer's queries and keys afterwards: they must equal the weights an
    eager pass hands out (trace.attention), on grouped-query attention and per-layer scalings too."""
    model = build()
    trace = rmt_core.trace(model, ids[:23])  # 4 segments of 5 or 6 tokens, the last one short
    m = model.config.num_mem_tokens
    with torch.no_grad():
        out = model(torch.as_tensor(ids[:23]).unsqueeze(0))
    for seg, state in zip(trace.segments, out.memory_out):
        np.testing.assert_array_equal(seg.memory_out, state[0].numpy())
    for seg in trace.segments:
        att = trace.attention(seg.index)  # (Y, H, n, n), recomputed eagerly
        L = seg.num_tokens
        R, T, W = slice(0, m), slice(m, m + L), slice(m + L, m + L + m)
        np.testing.assert_allclose(seg.write_to_tokens, att[:, :, W, T], atol=1e-3)
        np.testing.assert_allclose(seg.tokens_to_read, att[:, :, T, R], atol=1e-3)
        np.testing.assert_allclose(seg.block_attention[..., BLOCK_PAIRS.index("tokens->tokens")],
                                   att[:, :, T, T].sum(-1).mean(-1), atol=1e-3)
        if m:
            np.testing.assert_allclose(seg.block_attention[..., BLOCK_PAIRS.index("write->read")],
                                       att[:, :, W, R].sum(-1).mean(-1), atol=1e-3)


EXACT_FIELDS = ("token_ids", "char_spans", "token_logprob", "topk_ids", "topk_logprobs", "memory_in", "memory_out",
                "block_attention", "lens_ids")


def assert_same_trace(a, b):
    """b is a saved and reloaded a: exact where the file is exact, within the stated bounds elsewhere."""
    assert a.num_segments == b.num_segments and a.text == b.text and a.complete == b.complete
    for x, y in zip(a.segments, b.segments):
        for name in EXACT_FIELDS:
            u, v = getattr(x, name), getattr(y, name)
            assert u.dtype == v.dtype and np.array_equal(u, v, equal_nan=u.dtype.kind == "f"), name
        assert x.tokens == y.tokens and (x.loss == y.loss or (np.isnan(x.loss) and np.isnan(y.loss)))
        for name in ("write_to_tokens", "tokens_to_read"):  # uint8 steps of 1/255
            u, v = getattr(x, name), getattr(y, name)
            assert u.shape == v.shape and v.dtype == np.float16, name
            assert np.abs(u.astype(np.float32) - v.astype(np.float32)).max() <= 1 / 510 + 1 / 2048, name
        for name in ("read_hidden", "write_hidden"):  # int8 with a scale per vector
            u, v = getattr(x, name).astype(np.float32), getattr(y, name)
            assert v.shape == u.shape and v.dtype == np.float16, name
            bound = np.abs(u).max(-1, keepdims=True) * (1 / 254 + 1 / 2048)
            assert (np.abs(u - v.astype(np.float32)) <= bound).all(), name


@pytest.mark.parametrize("m", [3, 0])
def test_device_attention_summaries_equal_the_host_ones(m):
    """The reductions an accelerator runs (torch, here on CPU tensors) give the numpy results."""
    from rmt_core.engine.masks import segment_layout
    from rmt_core.tracing.recorder import _device_attention_summaries, attention_summaries

    n_tokens = 6
    n = n_tokens + 2 * m
    weights = torch.softmax(torch.randn(2, 2, 4, n, n, generator=torch.Generator().manual_seed(0)), dim=-1)
    host = attention_summaries(weights, m, n_tokens)
    device = _device_attention_summaries(weights, *segment_layout(m, n_tokens, write=m > 0))
    for a, b in zip(host, device):
        assert a.dtype == b.dtype == np.float16 and a.shape == b.shape
        np.testing.assert_allclose(a.astype(np.float32), b.astype(np.float32), atol=1e-3)


def test_save_load_round_trip(tmp_path, model, trace):
    path = trace.save(tmp_path / "doc.rmtrace")
    loaded = rmt_core.Trace.load(path, model=model)
    assert loaded.complete
    assert_same_trace(trace, loaded)
    np.testing.assert_allclose(loaded.attention(2), trace.attention(2))
    assert loaded.model_info["weights_hash"] == model.weights_hash()
    # saving a loaded trace again changes nothing (the quantised codes are stable)
    again = rmt_core.Trace.load(loaded.save(tmp_path / "again.rmtrace"))
    for x, y in zip(loaded.segments, again.segments):
        for name in EXACT_FIELDS + ("write_to_tokens", "tokens_to_read", "read_hidden", "write_hidden"):
            assert np.array_equal(getattr(x, name), getattr(y, name), equal_nan=True), name


def test_trace_files_are_compressed(tmp_path, trace):
    from safetensors import safe_open

    path = trace.save(tmp_path / "doc.rmtrace")
    with safe_open(str(path), framework="numpy") as handle:
        header = json.loads(handle.metadata()["rmt_lens_trace"])
        assert {handle.get_tensor(k).dtype for k in handle.keys()} == {np.dtype(np.uint8)}  # compressed blobs
    assert header["format_version"] == 2
    encodings = {name: entry["encoding"] for name, entry in header["arrays"].items()}
    assert encodings["read_hidden"] == "int8-vector-absmax" and encodings["tokens_to_read"] == "uint8-unit"
    assert encodings["token_ids"] == encodings["token_logprob"] == encodings["memory_out"] == "exact"


def test_format_1_files_still_load(tmp_path):
    """A file written by the format-1 writer (uncompressed arrays) of the default model."""
    old = rmt_core.Trace.load(DATA / "trace_v1.rmtrace")
    assert old.complete and old.num_segments == 2 and old.num_tokens == 34
    first = old.segments[0]
    assert "".join(first.tokens).startswith("Anne Elliot")
    assert first.read_hidden.dtype == np.float16 and first.write_to_tokens.shape[-1] == first.num_tokens
    assert np.array_equal(old.segments[1].memory_in, first.memory_out)
    assert_same_trace(old, rmt_core.Trace.load(old.save(tmp_path / "now.rmtrace")))


# What the format-2 loader as it stood before tracing/observables.py (commit 8fafd32) decoded from
# tests/data/trace_v2.rmtrace: sha256 (first 16 hex) of each field's dtype, shape and bytes, segment by segment.
TRACE_V2_DIGESTS = {
    "token_ids": "89a6e9c7c87a3062", "char_spans": "5da2186aa009ff9a", "memory_in": "5aed47b1ea4a8568",
    "memory_out": "d7da29a867d3667e", "read_hidden": "5478748784cf4ada", "write_hidden": "2109075ab40c4e93",
    "token_logprob": "15b8b72ccaa74974", "topk_ids": "0f9f8654a5dc74e0", "topk_logprobs": "18673932f7fc84d3",
    "block_attention": "d4f85836138159d2", "write_to_tokens": "37d9ab797944129a", "tokens_to_read": "d412b87c6cff40c9",
    "lens_ids": "2d9859541653d2b6",
}


def _digest(segments, name):
    import hashlib

    h = hashlib.sha256()
    for seg in segments:
        values = np.ascontiguousarray(getattr(seg, name))
        h.update(values.dtype.str.encode())
        h.update(str(values.shape).encode())
        h.update(values.tobytes())
    return h.hexdigest()[:16]


def _raw_file(path):
    """A format-2 file's header and its arrays' bytes as stored before compression."""
    import zstandard
    from safetensors import safe_open

    unpack = zstandard.ZstdDecompressor().decompress
    with safe_open(str(path), framework="numpy") as handle:
        return (json.loads(handle.metadata()["rmt_lens_trace"]),
                {k: unpack(handle.get_tensor(k).tobytes()) for k in handle.keys()})


def test_format_2_files_written_before_the_observables_table_still_load(model, tmp_path):
    """tests/data/trace_v2.rmtrace was written by the format-2 writer of commit 8fafd32:
    make_model("gpt2", num_mem_tokens=3, segment_size=6) (this module's model), 20 token ids from
    default_rng(2), stopped after 3 of 4 segments, saved with the model attached (logit lens stored)."""
    old = rmt_core.Trace.load(DATA / "trace_v2.rmtrace", model=model)
    ids = np.random.default_rng(2).integers(0, VOCAB, 20)
    assert not old.complete and old.num_segments == 3 and np.array_equal(old.token_ids, ids)
    assert old.meta == {"document": "fixture"} and old.segments[0].tokens == [str(i) for i in ids[:6]]
    assert {name: _digest(old.segments, name) for name in TRACE_V2_DIGESTS} == TRACE_V2_DIGESTS
    # the writer of today writes it again byte for byte: the same header, the same arrays
    assert _raw_file(old.save(tmp_path / "again.rmtrace")) == _raw_file(DATA / "trace_v2.rmtrace")
    # and it is what the model does (within float tolerance: another CPU may round differently)
    fresh = rmt_core.trace(model, ids, progress=lambda done, total: done < 3)
    for x, y in zip(fresh.segments, old.segments):
        np.testing.assert_allclose(x.memory_out, y.memory_out, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(x.token_logprob, y.token_logprob, rtol=1e-4, atol=1e-5)


def _rewrite_header(src, dst, edit):
    from safetensors import safe_open
    from safetensors.numpy import save_file

    with safe_open(str(src), framework="numpy") as handle:
        header = json.loads(handle.metadata()["rmt_lens_trace"])
        arrays = {k: handle.get_tensor(k) for k in handle.keys()}
    edit(header)
    save_file(arrays, str(dst), metadata={"rmt_lens_trace": json.dumps(header)})
    return dst


def test_unknown_or_damaged_trace_formats_are_refused(tmp_path, trace):
    path = trace.save(tmp_path / "doc.rmtrace")
    newer = _rewrite_header(path, tmp_path / "newer.rmtrace", lambda h: h.update(format_version=7))
    with pytest.raises(TraceError, match="trace format 7 .*newer RMT Lens"):
        rmt_core.Trace.load(newer)
    damaged = _rewrite_header(path, tmp_path / "damaged.rmtrace",
                              lambda h: h["arrays"]["memory_out"].update(shape=[1, 2, 3]))
    with pytest.raises(TraceError, match="damaged trace file"):
        rmt_core.Trace.load(damaged)
    lacking = _rewrite_header(path, tmp_path / "lacking.rmtrace", lambda h: h["arrays"].pop("token_logprob"))
    with pytest.raises(TraceError, match="damaged trace file .it lacks token_logprob"):
        rmt_core.Trace.load(lacking)


def test_loading_with_a_foreign_model_is_refused(tmp_path, trace):
    path = trace.save(tmp_path / "doc.rmtrace")
    other = make_model("gpt2", seed=5)
    with pytest.raises(TraceError, match="made with"):
        rmt_core.Trace.load(path, model=other)
    detached = rmt_core.Trace.load(path)
    with pytest.raises(TraceError, match="no model attached"):
        detached.attention(0)
    # every recompute says what needs the model and which checkpoint to load (no AttributeError on None)
    for run in (rmt_core.interventions.reset_memory, rmt_core.interventions.zero_memory):
        with pytest.raises(TraceError, match=f"an intervention needs it.*'{trace.model_info['name']}'"):
            run(detached, 1)
    with pytest.raises(TraceError, match="the logit lens needs it"):
        detached.compute_lens([0])


def test_corrupt_trace_file(tmp_path):
    bad = tmp_path / "bad.rmtrace"
    bad.write_bytes(b"\x00garbage" * 10)
    with pytest.raises(TraceError, match="not a readable trace"):
        rmt_core.Trace.load(bad)


def test_cancellation_keeps_the_segments_done(model, ids):
    calls = []

    def stop_after_three(done, total):
        calls.append((done, total))
        return done < 3

    partial = rmt_core.trace(model, ids, progress=stop_after_three)
    assert partial.num_segments == 3 and not partial.complete
    assert calls[-1] == (3, 7)

    def raise_cancel(done, total):
        if done == 2:
            raise TraceCancelled()

    assert rmt_core.trace(model, ids, progress=raise_cancel).num_segments == 2


def test_streaming_yields_each_segment(model, ids):
    stream = rmt_core.trace_iter(model, ids)
    seen = []
    for record in stream:
        seen.append(record.index)
        assert stream.trace.num_segments == record.index + 1
    assert seen == list(range(7)) and stream.trace.complete


def test_two_threads_on_one_model_give_what_each_gives_alone(model):
    docs = [np.random.default_rng(s).integers(0, VOCAB, 60) for s in (1, 2)]
    alone = [rmt_core.trace(model, d) for d in docs]
    results = [None, None]

    def run(i):
        results[i] = rmt_core.trace(model, docs[i])

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for a, b in zip(alone, results):
        for sa, sb in zip(a.segments, b.segments):
            assert np.array_equal(sa.memory_out, sb.memory_out)
            assert np.array_equal(sa.write_to_tokens, sb.write_to_tokens)


def test_determinism_bit_identical(model, ids):
    a, b = rmt_core.trace(model, ids), rmt_core.trace(model, ids)
    for sa, sb in zip(a.segments, b.segments):
        assert np.array_equal(sa.memory_out, sb.memory_out)
        assert np.array_equal(sa.token_logprob, sb.token_logprob, equal_nan=True)
        assert np.array_equal(sa.block_attention, sb.block_attention)


@pytest.mark.parametrize("bad", ["", "   \n\t  "])
def test_empty_text_gets_a_clear_error(bad):
    from rmt_core.training.tokenizer import build_symbol_tokenizer

    model = make_model()
    model.tokenizer = build_symbol_tokenizer(list("abc"), ["<pad>"])
    with pytest.raises(TraceError, match="empty"):
        rmt_core.trace(model, bad)


def test_text_trace_keeps_character_offsets():
    from rmt_core.training.tokenizer import build_symbol_tokenizer

    model = make_model()
    model.tokenizer = build_symbol_tokenizer(list("abcdefgh"), ["<pad>", "<unk>"])
    text = "a b c d e f g h a b c"
    trace = rmt_core.trace(model, text)
    for seg in trace.segments:
        for token, (s, e) in zip(seg.tokens, seg.char_spans.tolist()):
            assert text[s:e] == token.lstrip(" ")  # the offsets are the token's own characters
    # the displayed tokens join to the text: the spaces the tokenizer drops go to the next token
    assert trace.segments[0].tokens[:3] == ["a", " b", " c"]
    assert "".join(t for seg in trace.segments for t in seg.tokens) == text


def test_analysis_functions(trace):
    from rmt_core.explain import analysis

    states = trace.memory_states()
    assert states.shape == (8, 3, 32)
    proj = analysis.pca_trajectory(states, 3)
    assert proj.coords.shape == (8, 3, 3) and 0 < proj.explained_variance_ratio.sum() <= 1 + 1e-9
    churn = analysis.slot_churn(states)
    assert churn.shape == (7, 3) and np.all(churn >= -1e-9) and np.all(churn <= 2 + 1e-9)
    assert np.allclose(np.diag(analysis.slot_similarity(states[1])), 1.0)
    assert analysis.block_mass(trace, "write->tokens").shape == (7,)
    assert analysis.block_grid(trace, 0, "tokens->read").shape == (2, 4)
    tops = analysis.tokens_write_slots_attend_to(trace, 0, k=2)
    assert len(tops) == 3 and len(tops[0]) == 2
    lens = analysis.logit_lens(trace, 0)
    assert len(lens) == 3 and len(lens[0]) == 3 and len(lens[0][0]) == 5
    np.testing.assert_allclose(analysis.segment_perplexity(trace), np.exp(trace.losses()))


def test_logit_lens_of_the_written_memory_decodes_through_the_lm_head(trace, model):
    assert trace.segments[4].lens_ids is None or trace.segments[4].lens_ids.shape == (3, 3, 5)
    lens = trace.lens_ids(4)  # computed on demand for every segment still missing it
    assert lens.shape == (3, 3, 5) and all(s.lens_ids is not None for s in trace.segments)
    with torch.no_grad():
        logits = model.backbone.get_output_embeddings()(torch.as_tensor(trace.segments[4].memory_out))
    expected = torch.topk(logits, 5, dim=-1).indices.numpy()
    assert np.array_equal(lens[-1][:, 0], expected[:, 0])  # top-1 of the last layer = the memory itself


def test_a_model_without_memory_traces_with_empty_memory_blocks(ids):
    plain = make_model("gpt2", num_mem_tokens=0, segment_size=6)
    trace = rmt_core.trace(plain, ids)
    record = trace.segments[0]
    layers, heads = plain.num_layers, plain.num_heads
    assert record.memory_out.shape == (0, plain.hidden_size)
    assert record.write_to_tokens.shape == (layers, heads, 0, 6)
    assert record.tokens_to_read.shape == (layers, heads, 6, 0)
    tokens_to_tokens = BLOCK_PAIRS.index("tokens->tokens")
    for seg in trace.segments:
        assert np.allclose(seg.block_attention[..., tokens_to_tokens], 1.0, atol=1e-3)
        others = np.delete(seg.block_attention, tokens_to_tokens, axis=-1)
        assert not others.any()
    # without memory each segment is the backbone alone: its loss does not depend on what came before
    alone = rmt_core.trace(plain, ids[6:12])
    assert np.allclose(alone.segments[0].token_logprob[1:], trace.segments[1].token_logprob[1:], atol=1e-5)


def test_a_bf16_model_traces_with_its_own_logits_buffer(ids):
    """bf16 logits go through a buffer of their own into the float32 log-probs: the same numbers
    as forward's logits, normalised in float32."""
    model = make_model("gpt2").to(torch.bfloat16)
    trace = rmt_core.trace(model, ids)
    with torch.no_grad():
        logits = model(torch.as_tensor(ids).unsqueeze(0)).logits[0]
    expected = torch.log_softmax(logits.float(), -1)[:-1].gather(1, torch.as_tensor(ids[1:]).unsqueeze(1)).squeeze(1)
    recorded = np.concatenate([s.token_logprob for s in trace.segments])
    np.testing.assert_allclose(recorded[1:], expected.numpy(), rtol=1e-6, atol=1e-6)
    top = torch.topk(torch.log_softmax(logits.float(), -1), 5).values.half().numpy()
    np.testing.assert_array_equal(np.concatenate([s.topk_logprobs for s in trace.segments]), top)
