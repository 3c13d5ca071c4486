"""Trace files: one safetensors file whose metadata holds a JSON header.

Per-token arrays are concatenated along the token axis, per-segment arrays stacked;
memory_in is not stored (it is the previous segment's memory_out, or the initial memory).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .errors import TraceError
from .token_text import token_pieces
from .trace import TRACE_FORMAT, TRACE_FORMAT_VERSION, SegmentRecord, Trace

PER_TOKEN = ("token_ids", "char_spans", "token_logprob", "topk_ids", "topk_logprobs")
PER_SEGMENT = ("memory_out", "read_hidden", "write_hidden", "block_attention")


def save_trace(trace: Trace, path: Path) -> Path:
    from safetensors.numpy import save_file

    if not trace.segments:
        raise TraceError("This trace has no segments to save.")
    segs = trace.segments
    arrays: dict[str, np.ndarray] = {"initial_memory": trace.initial_memory.astype(np.float32)}
    for name in PER_TOKEN:
        arrays[name] = np.ascontiguousarray(np.concatenate([getattr(s, name) for s in segs]))
    for name in PER_SEGMENT:
        arrays[name] = np.ascontiguousarray(np.stack([getattr(s, name) for s in segs]))
    # token axis first so segments of different lengths concatenate: (T, Y, H, m)
    arrays["write_to_tokens"] = np.ascontiguousarray(np.concatenate([s.write_to_tokens.transpose(3, 0, 1, 2) for s in segs]))
    arrays["tokens_to_read"] = np.ascontiguousarray(np.concatenate([s.tokens_to_read.transpose(2, 0, 1, 3) for s in segs]))
    missing_lens = [s.index for s in segs if s.lens_ids is None]
    if missing_lens and trace.model is not None:
        trace.compute_lens(missing_lens)
    if all(s.lens_ids is not None for s in segs):  # without the model the lens is left to recompute later
        arrays["lens_ids"] = np.ascontiguousarray(np.stack([s.lens_ids for s in segs]))
    arrays["bounds"] = np.array([[s.start, s.end] for s in segs], dtype=np.int64)
    arrays["loss"] = np.array([s.loss for s in segs], dtype=np.float64)
    header = {
        "format": TRACE_FORMAT,
        "format_version": TRACE_FORMAT_VERSION,
        "rmt_lens_version": trace.version,
        "model": trace.model_info,
        "settings": trace.settings,
        "complete": trace.complete,
        "seconds": trace.seconds,
        "text": trace.text,
        "tokens": None if trace.text is not None else [t for s in segs for t in s.tokens],
        "all_token_ids": None if trace.complete else trace.token_ids.tolist(),
        "meta": trace.meta,
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    save_file(arrays, str(tmp), metadata={"rmt_lens_trace": json.dumps(header)})
    tmp.replace(path)  # never leave a half-written trace under the real name
    return path


def load_trace(path: Path) -> Trace:
    from safetensors import SafetensorError, safe_open

    if not path.is_file():
        raise TraceError(f"No trace file at {path}.")
    try:
        with safe_open(str(path), framework="numpy") as handle:
            meta = handle.metadata() or {}
            arrays = {key: handle.get_tensor(key) for key in handle.keys()}
    except (SafetensorError, OSError, ValueError) as exc:
        raise TraceError(f"{path} is not a readable trace file ({exc}). Save traces with trace.save().") from exc
    if "rmt_lens_trace" not in meta:
        raise TraceError(f"{path} is a safetensors file but not an RMT Lens trace.")
    header = json.loads(meta["rmt_lens_trace"])
    if header.get("format_version", 0) > TRACE_FORMAT_VERSION:
        raise TraceError(f"{path} was written by a newer RMT Lens (trace format {header['format_version']}); upgrade.")
    text = header["text"]
    token_ids = arrays["token_ids"]
    if header.get("all_token_ids") is not None:
        token_ids = np.asarray(header["all_token_ids"], dtype=np.int32)
    trace = Trace(text, token_ids, header["model"], arrays["initial_memory"], header["settings"])
    trace.version = header["rmt_lens_version"]
    trace.complete = header["complete"]
    trace.seconds = header.get("seconds", 0.0)
    trace.meta = header.get("meta", {})
    display = header["tokens"]
    if text is not None:  # the same pieces as when traced: they join to the (traced part of the) text
        display = token_pieces(text, arrays["char_spans"], to_end=trace.complete)
    memory_in = arrays["initial_memory"]
    for index, (start, end) in enumerate(arrays["bounds"].tolist()):
        spans = arrays["char_spans"][start:end]
        tokens = display[start:end]
        record = SegmentRecord(
            index=index, start=start, end=end,
            token_ids=arrays["token_ids"][start:end], tokens=tokens, char_spans=spans,
            memory_in=memory_in, memory_out=arrays["memory_out"][index],
            read_hidden=arrays["read_hidden"][index], write_hidden=arrays["write_hidden"][index],
            token_logprob=arrays["token_logprob"][start:end], topk_ids=arrays["topk_ids"][start:end],
            topk_logprobs=arrays["topk_logprobs"][start:end], loss=float(arrays["loss"][index]),
            block_attention=arrays["block_attention"][index],
            write_to_tokens=arrays["write_to_tokens"][start:end].transpose(1, 2, 3, 0),
            tokens_to_read=arrays["tokens_to_read"][start:end].transpose(1, 2, 0, 3),
            lens_ids=arrays["lens_ids"][index] if "lens_ids" in arrays else None,
        )
        trace.segments.append(record)
        memory_in = record.memory_out
    return trace
