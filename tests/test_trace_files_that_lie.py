"""Trace files that lie (issue 28 item 3, 10; issue 29 item 4): damaged or crafted .rmtrace files
get one TraceError naming what is wrong, before anything they declare is allocated; saving
survives a full disk and writes files with normal permissions."""
from __future__ import annotations

import errno
import json
import os
import stat
import time
import tracemalloc

import numpy as np
import pytest
import zstandard
from safetensors import safe_open
from safetensors.numpy import save_file

import rmt_core
from rmt_core import TraceError
from rmt_core.cli import main
from rmt_core.tracing import file_checks

from conftest import VOCAB, make_model


@pytest.fixture(scope="module")
def model():
    return make_model("gpt2", num_mem_tokens=3, segment_size=6)


@pytest.fixture(scope="module")
def ids_trace_file(model, tmp_path_factory):
    """A good trace of 40 token ids in 7 segments."""
    ids = np.random.default_rng(0).integers(0, VOCAB, 40)
    path = tmp_path_factory.mktemp("good") / "good.rmtrace"
    rmt_core.trace(model, ids).save(path)
    return path


def _parts(path):
    with safe_open(str(path), framework="numpy") as handle:
        return json.loads(handle.metadata()["rmt_lens_trace"]), {k: handle.get_tensor(k) for k in handle.keys()}


def _write(path, header, blobs, raw_header: str | None = None):
    save_file(blobs, str(path), metadata={"rmt_lens_trace": raw_header if raw_header is not None else json.dumps(header)})
    return path


def _edited(src, dst, edit):
    header, blobs = _parts(src)
    edit(header, blobs)
    return _write(dst, header, blobs)


def _frame(nbytes: int) -> np.ndarray:
    """A real zstd frame of `nbytes` zero bytes that declares its content size (made in 1 MB pieces)."""
    compressor = zstandard.ZstdCompressor(level=1)
    chunk = bytes(1 << 20)
    out = compressor.compressobj(size=nbytes)
    parts = [out.compress(chunk) for _ in range(nbytes // len(chunk))] + [out.flush()]
    return np.frombuffer(b"".join(parts), dtype=np.uint8)


def test_a_good_file_loads(ids_trace_file):
    assert rmt_core.Trace.load(ids_trace_file).num_segments == 7


def test_a_header_cut_short(ids_trace_file, tmp_path):
    header, blobs = _parts(ids_trace_file)
    cut = _write(tmp_path / "cut.rmtrace", header, blobs, raw_header=json.dumps(header)[:200])
    with pytest.raises(TraceError, match="header is not valid JSON"):
        rmt_core.Trace.load(cut)
    listed = _write(tmp_path / "list.rmtrace", header, blobs, raw_header="[1, 2]")
    with pytest.raises(TraceError, match="header is a JSON list"):
        rmt_core.Trace.load(listed)


@pytest.mark.parametrize("edit, words", [
    (lambda h, b: h.update(format_version="2"), "format_version is '2' .str., not an integer"),
    (lambda h, b: h.update(format_version=True), "format_version is True"),
    (lambda h, b: h.update(complete="yes"), "field 'complete' is 'yes', not true or false"),
    (lambda h, b: h.update(model=[]), "field 'model' is \\[\\], not an object"),
    (lambda h, b: h["model"].update(num_layers="2"), "model.num_layers is '2'"),
    (lambda h, b: h["arrays"]["memory_out"].update(stored="|O"), "memory_out declares stored '|O'"),
    (lambda h, b: h["arrays"]["memory_out"].update(encoding="gzip"), "memory_out declares encoding 'gzip'"),
    (lambda h, b: h["arrays"]["memory_out"].update(shape=[7, 3, "32"]), "memory_out declares shape"),
    (lambda h, b: h["arrays"]["memory_out"].update(shape=[7, -3, 32]), "memory_out declares shape"),
    (lambda h, b: h["arrays"].update(evil={}), "declares an array 'evil' that no trace has"),
    (lambda h, b: b.pop("loss"), "declares loss but holds no data for it"),
    (lambda h, b: h["model"].update(num_heads=8), "block_attention has shape .* needs 7 x 2 x 8 x 6"),
])
def test_wrong_typed_or_inconsistent_fields(ids_trace_file, tmp_path, edit, words):
    bad = _edited(ids_trace_file, tmp_path / "bad.rmtrace", edit)
    with pytest.raises(TraceError, match=f"damaged trace file .*{words}"):
        rmt_core.Trace.load(bad)


def _declare_huge(header, blobs, n=10**12):
    entry = header["arrays"]["token_logprob"]
    entry["shape"] = [n]


def test_a_declared_shape_of_10_to_the_12_is_refused_before_allocating(ids_trace_file, tmp_path):
    bad = _edited(ids_trace_file, tmp_path / "huge.rmtrace", _declare_huge)
    tracemalloc.start()
    start = time.perf_counter()
    try:
        with pytest.raises(TraceError, match=r"declare 4 TB once decoded \(token_logprob: 4 TB\).*nothing was decoded"):
            rmt_core.Trace.load(bad)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert time.perf_counter() - start < 1.0 and peak < 5 << 20  # numpy allocations are traced: none large


def test_a_1_5e9_element_array_in_a_4_mb_file_is_refused_quickly(ids_trace_file, tmp_path):
    """Issue 29 item 4: a 4.1 MB .rmtrace declaring a 1.5e9-element array took 12 GB and 71 s."""
    header, blobs = _parts(ids_trace_file)
    header["arrays"]["token_logprob"]["shape"] = [1_500_000_000]
    blobs["token_logprob"] = np.random.default_rng(0).integers(0, 255, 4_100_000, dtype=np.uint8)  # 4.1 MB of noise
    bad = _write(tmp_path / "big.rmtrace", header, blobs)
    start = time.perf_counter()
    with pytest.raises(TraceError, match="6 GB once decoded.*at most 64x"):
        rmt_core.Trace.load(bad)
    assert time.perf_counter() - start < 1.0


def test_a_small_file_declaring_a_1_gb_frame_is_refused_before_decoding(ids_trace_file, tmp_path):
    """A real 1 GB zstd frame of zeros (~40 kB) in place of token_logprob, its shape declaring
    the same 1 GB: refused by the budget; with the true small shape: refused by the frame's own
    declared size. Neither decodes a byte (numpy's allocations stay small)."""
    frame = _frame(1 << 30)
    assert frame.nbytes < 100_000
    header, blobs = _parts(ids_trace_file)
    blobs["token_logprob"] = frame
    small = _write(tmp_path / "frame_small_shape.rmtrace", header, blobs)
    header["arrays"]["token_logprob"]["shape"] = [(1 << 30) // 4]
    honest = _write(tmp_path / "frame_1gb_shape.rmtrace", header, blobs)
    for path, words in ((honest, "declare 1.07 GB once decoded"),
                        (small, "token_logprob's compressed frame declares 1.07 GB but its shape needs 160 bytes")):
        tracemalloc.start()
        try:
            with pytest.raises(TraceError, match=words):
                rmt_core.Trace.load(path)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert peak < 5 << 20, peak


def test_overlapping_or_gapped_bounds_are_refused(ids_trace_file, tmp_path):
    header, blobs = _parts(ids_trace_file)
    bounds = zstandard.ZstdDecompressor().decompress(blobs["bounds"].tobytes())
    good = np.frombuffer(bounds, dtype=np.int64).reshape(-1, 2)
    for name, edit in (("overlap", lambda b: b.__setitem__((2, 0), b[2, 0] - 2)),
                       ("gap", lambda b: b.__setitem__((2, 0), b[2, 0] + 1)),
                       ("short", lambda b: b.__setitem__((-1, 1), b[-1, 1] - 1))):
        changed = good.copy()
        edit(changed)
        blobs["bounds"] = np.frombuffer(zstandard.ZstdCompressor().compress(changed.tobytes()), dtype=np.uint8)
        bad = _write(tmp_path / f"{name}.rmtrace", header, blobs)
        with pytest.raises(TraceError, match="segment bounds do not cover the 40 traced tokens"):
            rmt_core.Trace.load(bad)


def test_token_ids_outside_the_vocabulary_are_refused(ids_trace_file, tmp_path):
    header, blobs = _parts(ids_trace_file)
    ids = np.full(40, VOCAB + 5, dtype=np.int32)
    blobs["token_ids"] = np.frombuffer(zstandard.ZstdCompressor().compress(ids.tobytes()), dtype=np.uint8)
    bad = _write(tmp_path / "ids.rmtrace", header, blobs)
    with pytest.raises(TraceError, match=f"token ids run {VOCAB + 5}..{VOCAB + 5}, outside the model's vocabulary of {VOCAB}"):
        rmt_core.Trace.load(bad)


def test_a_swapped_text_is_refused(tmp_path):
    """A text trace stores its text's sha256: a file whose text was replaced is refused; one
    whose text no longer holds the spans (an older file, without the digest) too."""
    model = _text_model()
    trace = rmt_core.trace(model, "Mary went to the kitchen. John went to the garden. " * 3)
    path = trace.save(tmp_path / "text.rmtrace")
    header, blobs = _parts(path)
    assert header["text_sha256"] == file_checks.text_digest(header["text"])
    assert rmt_core.Trace.load(path).text == trace.text
    header["text"] = header["text"].replace("kitchen", "cellars")  # same length: the spans still fit
    swapped = _write(tmp_path / "swapped.rmtrace", header, blobs)
    with pytest.raises(TraceError, match="its text is not the text that was traced"):
        rmt_core.Trace.load(swapped)
    del header["text_sha256"]
    header["text"] = "short"
    old = _write(tmp_path / "old.rmtrace", header, blobs)
    with pytest.raises(TraceError, match="spans do not lie inside its text of 5 characters"):
        rmt_core.Trace.load(old)


def _text_model():
    from rmt_core.io.checkpoint import DEFAULT_CHECKPOINT

    return rmt_core.load(DEFAULT_CHECKPOINT, device="cpu")


def test_the_report_command_refuses_a_lying_file_with_one_line(ids_trace_file, tmp_path, capsys):
    header, blobs = _parts(ids_trace_file)
    header["model"]["hidden_size"] = 64
    bad = _write(tmp_path / "bad.rmtrace", header, blobs)
    assert main(["report", str(bad), "--out", str(tmp_path / "r.html")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "initial_memory has hidden size 32 but the model's is 64" in err
    assert len(err.strip().splitlines()) == 1 and "bug" not in err
    assert not (tmp_path / "r.html").exists()


# ---------------------------------------------------------------------- saving
def test_a_full_disk_while_saving_is_a_clear_error_and_loses_nothing(model, tmp_path, monkeypatch):
    import safetensors.numpy

    trace = rmt_core.trace(model, np.arange(20) % VOCAB)
    path = trace.save(tmp_path / "kept.rmtrace")
    before = path.read_bytes()

    def disk_full(tensors, filename, metadata=None):
        with open(filename, "wb") as fh:
            fh.write(b"partial")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), filename)

    monkeypatch.setattr(safetensors.numpy, "save_file", disk_full)
    with pytest.raises(TraceError, match="The disk is full: the trace could not be written to .*kept.rmtrace "
                                         r"\(nothing there was changed\)") as caught:
        trace.save(path)
    assert "bug" not in str(caught.value)
    assert path.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["kept.rmtrace"]
    assert trace.num_segments == 4  # the trace in memory is whole: saving it elsewhere works
    monkeypatch.undo()
    assert rmt_core.Trace.load(trace.save(tmp_path / "elsewhere.rmtrace")).num_segments == 4


def test_safetensors_own_disk_full_error_is_recognised():
    from rmt_core.io.atomic import is_disk_full

    assert is_disk_full(OSError(errno.ENOSPC, "No space left on device"))
    assert is_disk_full(Exception('Error while serializing: IoError(Os { code: 28, kind: StorageFull, '
                                  'message: "No space left on device" })'))
    assert not is_disk_full(OSError(errno.EACCES, "Permission denied"))
    assert not is_disk_full(ValueError("code: 2"))


def test_trace_files_get_normal_permissions(model, tmp_path):
    old = os.umask(0o022)
    try:
        path = rmt_core.trace(model, np.arange(12) % VOCAB).save(tmp_path / "shared.rmtrace")
        assert stat.S_IMODE(path.stat().st_mode) == 0o644
        os.umask(0o077)
        private = rmt_core.trace(model, np.arange(12) % VOCAB).save(tmp_path / "private.rmtrace")
        assert stat.S_IMODE(private.stat().st_mode) == 0o600  # the umask is respected, both ways
    finally:
        os.umask(old)


# ---------------------------------------------------------------------- inputs to trace (item 10)
@pytest.mark.parametrize("bad, words", [
    (None, "Nothing to trace \\(got None\\)"),
    (b"Mary went to the kitchen.", "Got bytes, not text: decode it first"),
    ([1.5, 2.7], "Token ids must be integers, got float64 values \\(1.5, 2.7\\).*never rounded"),
    (np.array([1.0, 2.0], dtype=np.float32), "Token ids must be integers, got float32"),
    ([[1, 2, 3], [4, 5, 6]], "Token ids must be one-dimensional \\(one document\\), got shape \\(2, 3\\)"),
    (np.zeros((1, 4), dtype=np.int64), "got shape \\(1, 4\\)"),
    ([[1, 2], [3]], "not one flat list of integers"),
    ([True, False], "Token ids must be integers, got bool"),
    ({"ids": [1, 2]}, "Cannot trace an object of type dict"),
    (3, "Cannot trace an object of type int"),
])
def test_inputs_that_are_not_a_document_are_refused(model, bad, words):
    with pytest.raises(TraceError, match=words):
        rmt_core.trace(model, bad)


def test_tensors_of_floats_are_refused_and_of_ints_traced(model):
    import torch

    with pytest.raises(TraceError, match="a tensor of torch.float32"):
        rmt_core.trace(model, torch.tensor([1.5, 2.7]))
    ids = torch.arange(10) % VOCAB
    assert rmt_core.trace(model, ids).token_ids.tolist() == ids.tolist()  # negative control: ints are traced


def test_a_lone_surrogate_in_text_is_refused():
    model = _text_model()
    with pytest.raises(TraceError, match="character 4 is a lone surrogate \\(U\\+D800\\)"):
        rmt_core.trace(model, "Mary\ud800 went to the kitchen.")


def test_a_model_with_nan_weights_or_inf_memory_never_gives_a_nan_trace():
    """A model built in Python (rmt_core.load refuses such weights: test_checkpoint_configs_that_lie)."""
    import torch

    broken = make_model("gpt2", num_mem_tokens=3, segment_size=6)
    with torch.no_grad():
        broken.initial_memory[0, 0] = float("inf")
    with pytest.raises(TraceError, match="initial memory holds NaN or infinite values"):
        rmt_core.trace(broken, np.arange(20) % VOCAB)
    nan = make_model("gpt2", num_mem_tokens=3, segment_size=6)
    with torch.no_grad():
        nan.backbone.transformer.h[1].mlp.c_fc.weight[0, 0] = float("nan")
    with pytest.raises(TraceError, match="(predictions are NaN from token 1 \\(segment 0\\)|NaN or infinite memory "
                                         "in segment 0)"):
        rmt_core.trace(nan, np.arange(20) % VOCAB)
