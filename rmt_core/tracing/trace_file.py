"""Trace files: one safetensors file whose metadata holds a JSON header.

What goes in, and how, comes from the observables table (observables.py): per-token arrays
are concatenated along the token axis (moved to the front), per-segment arrays stacked,
per-trace arrays kept as they are; `stored` says which are exact, which quantised, which not
stored (memory_in: the previous segment's memory_out, or the initial memory in a trace with
memory reset, whose settings say "carry_memory": false) and which live in the header (tokens:
the text). Beside them the file keeps what no table row holds: each segment's [start, end)
token range ("bounds"), the model identity, settings and, for a partial trace, every token id.

Format 2 (written now) stores every array as a zstandard-compressed byte blob (a uint8
tensor; the header's "arrays" entry gives its dtype, shape and encoding). Floats are
byte-shuffled before compression (the exponent bytes of neighbouring values compress well
together). 0.44 MB per 1k tokens with the default model on Austen (format 1: 1.06 MB).

Exact arrays are bit for bit what the in-memory trace holds (memory_out and initial_memory
among them, so recomputed attention, attribution and interventions from a loaded trace equal
those of the original). Lossy, and by how much:
- int8 (read_hidden, write_hidden: float16 in memory): one float32 scale per vector
  (absmax / 127), so each element is off by at most absmax(vector) * (1/254 + 1/2048) (the
  quantisation step, then float16 rounding); the relative (L2) error of a vector is about
  0.8%, at most 1.2% on the default model. Logit-lens ids are computed from the exact states
  before saving (and stored exactly).
- uint8 (write_to_tokens, tokens_to_read: attention weights in [0, 1], float16 in memory):
  steps of 1/255, so each weight is off by at most 1/510 + 1/2048 (under 0.0025).
Quantised arrays are decoded per segment on first use after loading (see _StoredRecord).

Format 1 files (uncompressed arrays, the same names and layout) still load; other formats are
refused naming the version.

A trace of a memory type other than "tokens" (the header's model.rmt.memory) is written as
format 3: format 2 plus its state as named arrays, "initial_state.<name>" and
"state_out.<name>" (stacked per segment; exact), so that an older RMT Lens refuses it
instead of reading a state it does not know. A memory whose writes are stored (associative:
MemoryType.write_spec) keeps "state_write.<name>" (stacked per segment, float32, exact; the
header's settings["state_write"] names each array's axes) instead of "state_out.<name>", and
its own rows (observables.py, memory "associative"); its states are rebuilt on load with the
model (tracing/states.py). A file of a memory type that is not registered here is refused
naming the type.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from ..errors import TraceError
from ..io.atomic import written_whole
from ..token_text import token_pieces
from . import file_checks
from .observables import (EXACT, INT8_VECTOR, OBSERVABLES, ON_DEMAND, ON_USE, PER_SEGMENT, PER_TOKEN, PER_TRACE,
                          UINT8_UNIT, Observable, names)
from .records import TRACE_FORMAT, TRACE_FORMAT_VERSION, SegmentRecord

VECTOR_INT8 = names(stored=INT8_VECTOR)  # int8 + per-vector scale
UNIT_UINT8 = names(stored=UINT8_UNIT)  # values in [0, 1] in steps of 1/255
ARRAYS = tuple(o for o in OBSERVABLES if o.stored in (EXACT, INT8_VECTOR, UINT8_UNIT, ON_DEMAND, ON_USE))  # in the file
COMPUTED_LATER = (ON_DEMAND, ON_USE)  # arrays a file may lack (computed on first use)
ZSTD_LEVEL = 3
READABLE_VERSIONS = file_checks.READABLE_VERSIONS
STATE_VERSION = 3  # written for memory types other than tokens (their state arrays)


def save_trace(trace, path: Path) -> Path:
    """Write `trace` (a tracing.trace.Trace) to `path` (format TRACE_FORMAT_VERSION; see the module docstring for what is exact).

    Raises TraceError for a trace without segments, and for a full disk (the trace in memory and
    any file already at `path` are kept). Written to a temporary name, then renamed; the file
    gets the permissions of any new file (0666 less the umask, e.g. 0644)."""
    from safetensors.numpy import save_file

    if not trace.segments:
        raise TraceError("This trace has no segments to save.")
    segs = trace.segments
    missing_lens = [s.index for s in segs if s.lens_ids is None]
    if missing_lens and trace.model is not None:
        trace.compute_lens(missing_lens)
    arrays: dict[str, np.ndarray | _Parts] = {}
    for observable in ARRAYS:
        if not observable.recorded_for(trace.memory_type):
            continue
        if observable.scope == PER_TRACE:
            arrays[observable.name] = np.asarray(getattr(trace, observable.name), dtype=observable.dtype)
            continue
        parts = [getattr(s, observable.name) for s in segs]
        if any(part is None for part in parts):  # computed on demand, and not for every segment:
            continue  # without the model the rest is left to recompute later
        arrays[observable.name] = _joined(observable, parts)
    arrays["bounds"] = np.array([[s.start, s.end] for s in segs], dtype=np.int64)
    if trace.initial_state is not None:  # another memory type than tokens: its state by name
        for name, value in trace.initial_state.items():
            arrays[f"initial_state.{name}"] = np.asarray(value, dtype=np.float32)
            if not trace.stores_writes:
                arrays[f"state_out.{name}"] = np.stack([s.state_out[name] for s in segs]).astype(np.float32, copy=False)
    if trace.stores_writes:  # each segment's write (the states are rebuilt from them)
        for name in segs[0].state_write:
            arrays[f"state_write.{name}"] = np.stack([s.state_write[name] for s in segs]).astype(np.float32, copy=False)
    blobs, layout = _encode(arrays)
    header = {
        "format": TRACE_FORMAT,
        "format_version": TRACE_FORMAT_VERSION if trace.initial_state is None else STATE_VERSION,
        "rmt_lens_version": trace.version,
        "model": trace.model_info,
        "settings": trace.settings,
        "complete": trace.complete,
        "seconds": trace.seconds,
        "text": trace.text,
        **({"text_sha256": file_checks.text_digest(trace.text)} if trace.text is not None else {}),
        "tokens": None if trace.text is not None else [t for s in segs for t in s.tokens],
        "all_token_ids": None if trace.complete else trace.token_ids.tolist(),
        "meta": trace.meta,
        "arrays": layout,
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with written_whole(path, TraceError, "the trace") as tmp:  # never a half-written trace under the real name
        save_file(blobs, str(tmp), metadata={"rmt_lens_trace": json.dumps(header)})
    return path


def _joined(observable: Observable, parts: list) -> "np.ndarray | _Parts":
    """One array of every segment's value: per token concatenated along the token axis, moved
    to the front (segments differ in length), per segment stacked. Quantised ones stay parts
    (encoded block by block, never joined as floats)."""
    if observable.scope == PER_TOKEN and observable.token_axis:
        parts = [np.moveaxis(part, observable.token_axis, 0) for part in parts]  # views: (Y, H, m, L) -> (L, Y, H, m)
    stack = observable.scope == PER_SEGMENT
    if observable.stored in (INT8_VECTOR, UINT8_UNIT):
        return _Parts(parts, stack=stack)
    return (np.stack(parts) if stack else np.concatenate(parts)).astype(observable.dtype, copy=False)


def read_trace_file(path: Path) -> tuple[dict, dict[str, "np.ndarray | _Quantised"]]:
    """The JSON header and the arrays of a trace file of format 1 or 2 (quantised arrays still
    encoded: stored_records decodes them per segment on first use).  Trace.load builds the Trace.

    Everything the file declares is checked before it is allocated (see file_checks: header
    fields and types, shapes against the model's sizes, decoded sizes against the file's own
    size, each zstd frame's content size), and the decoded segment bounds, ids, spans and text
    after. Raises TraceError when the file is missing, unreadable, not an RMT Lens trace, of a
    format this version cannot read (the message names the format version), or damaged or
    altered (the message names what is wrong)."""
    from safetensors import SafetensorError, safe_open
    from zstandard import ZstdError

    if not path.is_file():
        raise TraceError(f"No trace file at {path}.")
    try:
        with safe_open(str(path), framework="numpy") as handle:
            meta = handle.metadata() or {}
            if "rmt_lens_trace" not in meta:
                raise TraceError(f"{path} is a safetensors file but not an RMT Lens trace.")
            header = file_checks.parse_header(meta["rmt_lens_trace"], path)
            _check_memory_type(path, header)
            keys = set(handle.keys())
            if header["format_version"] >= 2:
                declared = file_checks.declared_arrays(header["arrays"], keys, path)
                file_checks.check_budget({name: n for name, (_, n) in declared.items()}, path.stat().st_size, path)
                shapes = {name: shape for name, (shape, _) in declared.items()}
            else:
                shapes = {key: tuple(handle.get_slice(key).get_shape()) for key in keys}
            file_checks.check_shapes(header, shapes, path)
            stored = {key: handle.get_tensor(key) for key in (declared if header["format_version"] >= 2 else keys)}
    except (SafetensorError, OSError, ValueError) as exc:
        raise TraceError(f"{path} is not a readable trace file ({exc}). Save traces with trace.save().") from exc
    if header["format_version"] >= 2:
        file_checks.check_frames(stored, {name: n for name, (_, n) in declared.items()}, path)
    try:
        arrays = _decode(stored, header["arrays"]) if header["format_version"] >= 2 else stored
    except (KeyError, ValueError, TypeError, ZstdError) as exc:
        raise TraceError(f"{path} is a damaged trace file ({exc}): save the trace again.") from exc
    memory = file_checks.memory_type(header)
    required = [o.name for o in ARRAYS if o.stored not in COMPUTED_LATER and o.recorded_for(memory)] + ["bounds"]
    required += [f"state_write.{name}" for name in file_checks.write_axes(header)]
    missing = [name for name in required if name not in arrays]
    if missing:
        raise TraceError(f"{path} is a damaged trace file (it lacks {', '.join(missing)}): save the trace again.")
    file_checks.check_values(header, arrays, path)
    return header, arrays


# ---------------------------------------------------------------------- encoding
def _encode(arrays: dict[str, "np.ndarray | _Parts"]) -> tuple[dict[str, np.ndarray], dict[str, dict]]:
    """Compressed uint8 blobs and the layout that decodes them (dtype, shape, encoding)."""
    import zstandard

    # threads=-1: one zstd worker per CPU. The frames are standard ones and the bytes do not
    # depend on the number of workers; a 1M-token trace's save spends about 40% here.
    compressor = zstandard.ZstdCompressor(level=ZSTD_LEVEL, threads=-1)
    blobs: dict[str, np.ndarray] = {}
    layout: dict[str, dict] = {}

    def put(name: str, values: np.ndarray, encoding: str, dtype: str) -> None:
        values = np.ascontiguousarray(values).reshape(np.shape(values))  # (ascontiguousarray makes a scalar 1-D)
        raw = _shuffle(values) if values.dtype.kind == "f" else values.reshape(-1).view(np.uint8)
        blobs[name] = np.frombuffer(compressor.compress(raw), dtype=np.uint8)
        layout[name] = {"dtype": dtype, "shape": list(values.shape), "stored": values.dtype.str, "encoding": encoding}

    for name, values in arrays.items():
        if name in VECTOR_INT8:
            q, scale = _quantise_vectors(values)
            put(name, q, "int8-vector-absmax", values.dtype.str)
            put(name + ".scale", scale, "exact", "<f4")
        elif name in UNIT_UINT8:
            put(name, _quantise_unit(values), "uint8-unit", values.dtype.str)
        else:
            put(name, values, "exact", values.dtype.str)
    return blobs, layout


def _decode(blobs: dict[str, np.ndarray], layout: dict[str, dict]) -> dict[str, "np.ndarray | _Quantised"]:
    """The stored arrays; quantised ones stay codes (each record decodes its own slice on first use)."""
    import zstandard

    decompressor = zstandard.ZstdDecompressor()

    def get(name: str) -> np.ndarray:
        entry = layout[name]
        stored = np.dtype(entry["stored"])
        out = np.empty(int(np.prod(entry["shape"], dtype=np.int64)) * stored.itemsize, dtype=np.uint8)
        with decompressor.stream_reader(blobs[name]) as reader:  # straight into the array: no bytes copies
            if reader.readinto(out) != out.size or reader.read(1):
                raise ValueError(f"{name} holds another number of bytes than its shape says")
        if stored.kind == "f":
            return _unshuffle(out, stored, entry["shape"])
        return out.view(stored).reshape(entry["shape"])

    arrays: dict[str, np.ndarray | _Quantised] = {}
    for name, entry in layout.items():
        if name.endswith(".scale"):
            continue
        values = get(name)
        if entry["encoding"] == "int8-vector-absmax":
            values = _Quantised(values, get(name + ".scale"), np.dtype(entry["dtype"]))
        elif entry["encoding"] == "uint8-unit":
            values = _Quantised(values, np.float32(1 / 255), np.dtype(entry["dtype"]))
        elif entry["encoding"] != "exact":
            raise ValueError(f"unknown encoding {entry['encoding']!r} of {name}")
        arrays[name] = values
    return arrays


# Quantisation runs in torch (several times faster than numpy on float16), a block of rows at a
# time: a 1M-token trace never holds a stacked float16 or float32 copy, and each block's float32
# buffer (about 4 MB) stays below malloc's mmap threshold, so its pages are reused rather than
# faulted in afresh (page faults dominate save and load times on this machine).
BLOCK_VALUES = 1 << 20


def _rows_per_block(row_shape: tuple[int, ...]) -> int:
    return max(1, BLOCK_VALUES // max(1, int(np.prod(row_shape, dtype=np.int64))))


@dataclass
class _Parts:
    """One array per segment, to be stacked (a new segment axis) or concatenated (token axis)."""

    parts: list[np.ndarray]
    stack: bool

    @property
    def shape(self) -> tuple[int, ...]:
        first = self.parts[0].shape
        if self.stack:
            return (len(self.parts),) + first
        return (sum(p.shape[0] for p in self.parts),) + first[1:]

    @property
    def dtype(self) -> np.dtype:
        return self.parts[0].dtype

    def blocks(self) -> Iterator[torch.Tensor]:
        """float32 tensors of about BLOCK_VALUES values each, in order."""
        join = np.stack if self.stack else np.concatenate
        step = _rows_per_block(self.parts[0].shape)
        for first in range(0, len(self.parts), step):
            yield torch.from_numpy(join(self.parts[first:first + step])).float()


def _quantise_vectors(values: _Parts) -> tuple[np.ndarray, np.ndarray]:
    """int8 codes (same shape) and float32 scales (..., 1): values ~= codes * scale, scale = absmax / 127."""
    q = np.empty(values.shape, dtype=np.int8)
    scale = np.empty(values.shape[:-1] + (1,), dtype=np.float32)
    row = 0
    for block in values.blocks():
        rows = slice(row, row + block.shape[0])
        absmax = block.abs().amax(dim=-1, keepdim=True)
        block.mul_(127 / torch.where(absmax > 0, absmax, 1)).round_()
        torch.from_numpy(q[rows]).copy_(block)
        torch.from_numpy(scale[rows]).copy_(absmax.div_(127))
        row = rows.stop
    return q, scale


def _quantise_unit(values: _Parts) -> np.ndarray:
    """uint8 codes of values in [0, 1] (clipped): round(255 * value)."""
    q = np.empty(values.shape, dtype=np.uint8)
    row = 0
    for block in values.blocks():
        torch.from_numpy(q[row:row + block.shape[0]]).copy_(block.clamp_(0, 1).mul_(255).round_())
        row += block.shape[0]
    return q


@dataclass
class _Quantised:
    """Codes of a quantised array: the values are codes * scale as dtype."""

    codes: np.ndarray
    scale: np.ndarray | np.float32  # broadcasts against codes
    dtype: np.dtype

    def __getitem__(self, key) -> "_Quantised":
        scale = self.scale[key] if isinstance(self.scale, np.ndarray) else self.scale
        return _Quantised(self.codes[key], scale, self.dtype)

    def transpose(self, *axes: int) -> "_Quantised":
        scale = self.scale.transpose(*axes) if isinstance(self.scale, np.ndarray) else self.scale
        return _Quantised(self.codes.transpose(*axes), scale, self.dtype)

    def decode(self) -> np.ndarray:
        values = torch.from_numpy(self.codes).float().mul_(torch.as_tensor(self.scale))
        return values.to(getattr(torch, self.dtype.name)).numpy()


class _StoredRecord(SegmentRecord):
    """A record read from a format-2 file: its quantised arrays (slot hidden states, per-slot
    attention) are decoded on first use, so loading a 1M-token trace does not write ~0.9 GB
    of float16 that most views never read."""


def _decoded_on_first_use(name: str) -> property:
    slot = "_" + name

    def get(self: SegmentRecord) -> np.ndarray:
        value = self.__dict__[slot]
        if isinstance(value, _Quantised):
            value = self.__dict__[slot] = value.decode()
        return value

    def set(self: SegmentRecord, value: "np.ndarray | _Quantised") -> None:
        self.__dict__[slot] = value

    return property(get, set, doc=f"{name}, decoded from its stored codes on first use")


for _name in VECTOR_INT8 + UNIT_UINT8:
    setattr(_StoredRecord, _name, _decoded_on_first_use(_name))


def _shuffle(values: np.ndarray) -> bytes:
    """Bytes of `values` grouped by byte position (all first bytes, then all second bytes, ...)."""
    as_bytes = values.reshape(-1).view(np.uint8).reshape(-1, values.dtype.itemsize)
    return np.ascontiguousarray(as_bytes.T).tobytes()


def _unshuffle(raw: np.ndarray, dtype: np.dtype, shape: list[int]) -> np.ndarray:
    columns = raw.reshape(dtype.itemsize, -1)
    return np.ascontiguousarray(columns.T).view(dtype).reshape(shape)


def _check_memory_type(path: Path, header: dict) -> None:
    """TraceError unless the file's memory type (header model.rmt.memory; none: tokens) is registered."""
    from ..engine.memory import known_memories

    name = file_checks.memory_type(header)
    if name not in known_memories():
        raise TraceError(f"{path} is a trace of memory type {name!r}, which this RMT Lens does not know (known: "
                         f"{list(known_memories())}). Import the module that registers it "
                         "(rmt_core.engine.memory.register_memory) before loading the trace.")


# ---------------------------------------------------------------------- records
def initial_state(header: dict, arrays: dict) -> dict[str, np.ndarray] | None:
    """A format-3 file's initial state as named arrays; None for the tokens memory (initial_memory)."""
    names = [key.split(".", 1)[1] for key in arrays if key.startswith("initial_state.")]
    return {name: arrays[f"initial_state.{name}"] for name in names} if names else None


def all_token_ids(header: dict, arrays: dict) -> np.ndarray:
    """(T,) int32 token ids of the whole document (a partial trace stores the untraced rest too)."""
    if header.get("all_token_ids") is not None:
        return np.asarray(header["all_token_ids"], dtype=np.int32)
    return arrays["token_ids"]


def stored_records(header: dict, arrays: dict[str, "np.ndarray | _Quantised"]) -> list[SegmentRecord]:
    """The SegmentRecords of a file read by read_trace_file, in order (views of its arrays)."""
    text = header["text"]
    if text is not None:  # the same pieces as when traced: they join to the (traced part of the) text
        tokens_all = token_pieces(text, arrays["char_spans"], to_end=header["complete"])
    else:
        tokens_all = header["tokens"]
    per_token: list[tuple[str, np.ndarray | _Quantised, tuple]] = []  # name, values, index before the token axis
    per_segment: list[tuple[str, np.ndarray | _Quantised | list]] = []
    for observable in ARRAYS:
        values = arrays.get(observable.name)
        if values is None or observable.scope == PER_TRACE:  # lens_ids may be absent: recomputed on demand
            continue
        if observable.scope == PER_TOKEN:  # the token axis is stored first: back in its place, as a view
            axis = observable.token_axis  # e.g. write_to_tokens (T, Y, H, m) -> (Y, H, m, T)
            order = list(range(1, axis + 1)) + [0] + list(range(axis + 1, len(observable.axes)))
            per_token.append((observable.name, values.transpose(*order), (slice(None),) * axis))
        else:
            per_segment.append((observable.name, values.tolist() if observable.axes == () else values))
    # memory_in is not stored: the memory_out before it, or, in a trace with memory reset
    # (settings.carry_memory false; files without it carried memory), the initial memory
    carried = header["settings"].get("carry_memory", True) is not False
    memory_in = arrays["initial_memory"]
    state_names = [key.split(".", 1)[1] for key in arrays if key.startswith("state_out.")]
    write_names = [key.split(".", 1)[1] for key in arrays if key.startswith("state_write.")]
    record_type = _StoredRecord if any(isinstance(v, _Quantised) for v in arrays.values()) else SegmentRecord
    records: list[SegmentRecord] = []
    for index, (start, end) in enumerate(arrays["bounds"].tolist()):
        span = (slice(start, end),)
        fields = {name: values[before + span] for name, values, before in per_token}
        for name, values in per_segment:
            fields[name] = values[index]
        if state_names:
            fields["state_out"] = {name: arrays[f"state_out.{name}"][index] for name in state_names}
        if write_names:
            fields["state_write"] = {name: arrays[f"state_write.{name}"][index] for name in write_names}
        record = record_type(index=index, start=start, end=end, tokens=tokens_all[start:end], memory_in=memory_in,
                             **fields)
        records.append(record)
        if carried:
            memory_in = record.memory_out
    return records
