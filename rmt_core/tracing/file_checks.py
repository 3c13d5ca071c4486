"""Checks of what a trace file declares, made before anything it declares is allocated.

A trace file (trace_file.py) is a safetensors file whose metadata holds a JSON header; in
format 2 every array is a zstandard frame whose decoded dtype and shape the header gives. A
damaged or crafted file can declare anything: a cut or non-JSON header, a format_version
"2", a shape of 10^12 elements, an 80 kB file whose frames decode to gigabytes, segments
whose `bounds` overlap, a `text` that is not the traced one. Everything here raises
TraceError naming the file and what is wrong in it, in this order:

1. parse_header: the header is JSON, an object, of a readable format, its fields of their types
   (settings.carry_memory, which says what every segment's memory_in is, true or false);
2. declared_arrays (format 2): each array's entry (dtype, shape, encoding) is well formed;
3. check_budget: the decoded size of all arrays is at most MAX_EXPANSION times the file's own
   size (or MIN_BUDGET_BYTES for small files) and each zstd frame's declared content size
   equals what its shape needs (python-zstandard's frame_content_size; no byte decoded yet);
4. check_shapes: every array has the shape the observables table and the model's sizes say,
   with T tokens (token_ids) and S segments (bounds) the same for all;
5. check_values (after decoding): bounds cover 0..T in order without gaps or overlaps, token
   ids lie in the vocabulary, character spans lie in the text, the text is the traced one
   (its sha256, for files that store it), the untraced ids of a partial trace extend the traced.

Measured on real traces (default model, Austen text, random and constant ids, a repeated
word): arrays decode to 1.4-5.4 times the file's size, so MAX_EXPANSION = 64 refuses only
files that lie. Sources of the situations: safetensors#668 (declared sizes checked against
the buffer), python-zstandard#150 (frames declaring their content size).
"""
from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import TraceError
from .observables import (AXES, INT8_VECTOR, OBSERVABLES, ON_DEMAND, ON_USE, PER_SEGMENT, PER_TOKEN, PER_TRACE,
                          UINT8_UNIT, names)
from .records import BLOCK_PAIRS, LENS_K, TRACE_FORMAT, TRACE_FORMAT_VERSION

READABLE_VERSIONS = (1, 2, 3)  # 3: format 2 plus a memory type's named state arrays
MAX_EXPANSION = 64  # decoded bytes per byte of file, at most (real traces: 1.4-5.4)
MIN_BUDGET_BYTES = 64 << 20  # what a small file may always decode to
ENCODINGS = ("exact", "int8-vector-absmax", "uint8-unit")
DTYPES = frozenset(np.dtype(name).str for name in ("float16", "float32", "float64", "int8", "uint8", "int32", "int64"))
MAX_DIMS = 6
STORED_ARRAYS = {o.name: o for o in OBSERVABLES if o.stored in ("exact", INT8_VECTOR, UINT8_UNIT, ON_DEMAND, ON_USE)}
SCALED = names(stored=INT8_VECTOR)  # arrays with a NAME.scale beside them
STATE_PREFIXES = ("initial_state.", "state_out.", "state_write.")  # format 3: a memory type's named state / writes


def damaged(path: Path, what: str) -> TraceError:
    """The one message of a file that is not what it declares."""
    return TraceError(f"{path} is a damaged trace file (or one altered after saving): {what}. Save the "
                      "trace again, or open the file it was copied from.")


def text_digest(text: str) -> str:
    """sha256 (hex) of a trace's text as the header stores it ("text_sha256")."""
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


# ---------------------------------------------------------------------- 1. the header
def parse_header(raw: str, path: Path) -> dict[str, Any]:
    """The JSON header, checked: an object, format "rmt-lens-trace" of a readable version, and
    every field of its type. Raises TraceError naming the first field that is not."""
    try:
        header = json.loads(raw)
    except (json.JSONDecodeError, RecursionError) as exc:
        raise damaged(path, f"its header is not valid JSON ({exc.__class__.__name__}: {str(exc)[:120]})") from None
    if not isinstance(header, dict):
        raise damaged(path, f"its header is a JSON {type(header).__name__}, not an object")
    version = header.get("format_version", 0)
    if not _is_int(version):
        raise damaged(path, f"format_version is {version!r} ({type(version).__name__}), not an integer")
    if version not in READABLE_VERSIONS:
        newer = " (written by a newer RMT Lens: upgrade)" if version > TRACE_FORMAT_VERSION else ""
        raise TraceError(f"{path} is trace format {version}{newer}; this RMT Lens reads formats "
                         f"{', '.join(map(str, READABLE_VERSIONS))}.")
    if header.get("format", TRACE_FORMAT) != TRACE_FORMAT:
        raise damaged(path, f"its format is {header.get('format')!r}, not {TRACE_FORMAT!r}")
    fields: dict[str, tuple[type | tuple[type, ...], bool]] = {  # name: (types, may be None)
        "rmt_lens_version": (str, False), "model": (dict, False), "settings": (dict, False),
        "complete": (bool, False), "text": (str, True), "tokens": (list, True), "all_token_ids": (list, True),
        "meta": (dict, True), "seconds": ((int, float), True), "text_sha256": (str, True),
    }
    if version >= 2:
        fields["arrays"] = (dict, False)
    for name, (types, optional) in fields.items():
        if name not in header and name in ("meta", "seconds", "text_sha256", "tokens", "all_token_ids"):
            continue
        value = header.get(name)
        if value is None and optional:
            continue
        if not isinstance(value, types) or (types is not bool and isinstance(value, bool) and name != "complete"):
            raise damaged(path, f"its field {name!r} is {_short(value)}, not {_type_words(types)}")
    carry = header["settings"].get("carry_memory", True)
    if not isinstance(carry, bool):  # it decides every segment's memory_in: never guessed from another type
        raise damaged(path, f"its setting 'carry_memory' is {_short(carry)}, not true or false")
    if header.get("text") is None and header.get("tokens") is None:
        raise damaged(path, "it holds neither the text nor the tokens")
    if header.get("tokens") is not None and not all(isinstance(t, str) for t in header["tokens"]):
        raise damaged(path, "its tokens are not all strings")
    _check_model_info(header["model"], path)
    return header


def _check_model_info(info: dict[str, Any], path: Path) -> None:
    for name in ("name", "weights_hash"):
        if not isinstance(info.get(name), str):
            raise damaged(path, f"model.{name} is {_short(info.get(name))}, not a string")
    for name in ("num_layers", "num_heads", "hidden_size", "vocab_size"):
        if name in info or name in ("num_layers", "num_heads"):
            value = info.get(name)
            if not _is_int(value) or value < 1:
                raise damaged(path, f"model.{name} is {_short(value)}, not an integer >= 1")
    rmt = info.get("rmt")
    if not isinstance(rmt, dict) or not _is_int(rmt.get("num_mem_tokens")) or rmt["num_mem_tokens"] < 0:
        raise damaged(path, "model.rmt.num_mem_tokens is missing or not an integer >= 0")


def memory_type(header: dict[str, Any]) -> str:
    """The memory type a trace header names (model.rmt.memory; files written before it: "tokens")."""
    rmt = header.get("model", {}).get("rmt", {}) if isinstance(header.get("model"), dict) else {}
    name = rmt.get("memory", "tokens") if isinstance(rmt, dict) else "tokens"
    return name if isinstance(name, str) else "tokens"


def write_axes(header: dict[str, Any]) -> dict[str, tuple[str, ...]]:
    """The axes of each stored write array (settings["state_write"]: name -> axis names); {} when
    the trace stores states. TraceError (damaged) when the entry is not names of known axes."""
    spec = header.get("settings", {}).get("state_write") if isinstance(header.get("settings"), dict) else None
    if spec is None:
        return {}
    if not isinstance(spec, dict) or not all(isinstance(axes, list) and all(a in AXES for a in axes)
                                             for axes in spec.values()):
        raise TraceError(f"The trace header's settings.state_write is {_short(spec)}, not write names with known axes "
                         f"({', '.join(AXES)}): the file is damaged or altered; save the trace again.")
    return {name: tuple(axes) for name, axes in spec.items()}


# ---------------------------------------------------------------------- 2-3. declared sizes
def declared_arrays(layout: dict[str, Any], blob_names: set[str], path: Path) -> dict[str, tuple[tuple[int, ...], int]]:
    """Format 2: name -> (shape, decoded bytes) of each array the header declares, each entry
    checked (a known name, dtypes and encoding RMT Lens writes, a shape of at most MAX_DIMS
    integers >= 0) and its blob present. Nothing is decoded."""
    known = set(STORED_ARRAYS) | {"bounds"} | {name + ".scale" for name in SCALED}
    declared: dict[str, tuple[tuple[int, ...], int]] = {}
    for name, entry in layout.items():
        if name not in known and not name.startswith(STATE_PREFIXES):
            raise damaged(path, f"it declares an array {name!r} that no trace has")
        if not isinstance(entry, dict):
            raise damaged(path, f"the entry of {name} is {_short(entry)}, not an object")
        for key in ("dtype", "stored"):
            if entry.get(key) not in DTYPES:
                raise damaged(path, f"{name} declares {key} {_short(entry.get(key))}, not one of {sorted(DTYPES)}")
        if entry.get("encoding") not in ENCODINGS:
            raise damaged(path, f"{name} declares encoding {_short(entry.get('encoding'))}, not one of {ENCODINGS}")
        shape = entry.get("shape")
        if (not isinstance(shape, list) or len(shape) > MAX_DIMS
                or not all(_is_int(n) and n >= 0 for n in shape)):
            raise damaged(path, f"{name} declares shape {_short(shape)}, not a list of at most {MAX_DIMS} "
                                "integers >= 0")
        if name not in blob_names:
            raise damaged(path, f"it declares {name} but holds no data for it")
        declared[name] = (tuple(shape), math.prod(shape) * np.dtype(entry["stored"]).itemsize)
    for name in SCALED:
        if name in declared and name + ".scale" not in declared:
            raise damaged(path, f"{name} has no {name}.scale")
    return declared


def check_budget(declared: dict[str, int], file_size: int, path: Path) -> None:
    """Refuse a file whose arrays would decode to more than MAX_EXPANSION x its own size (or
    MIN_BUDGET_BYTES): declared is name -> decoded bytes."""
    total = sum(declared.values())
    budget = max(MIN_BUDGET_BYTES, MAX_EXPANSION * file_size)
    if total > budget:
        biggest = max(declared, key=declared.get)
        raise damaged(path, f"its arrays declare {_bytes(total)} once decoded ({biggest}: {_bytes(declared[biggest])}) "
                            f"from a file of {_bytes(file_size)}; real trace files decode to a few times their "
                            f"size and this RMT Lens reads at most {MAX_EXPANSION}x (nothing was decoded)")


def check_frames(blobs: dict[str, np.ndarray], declared: dict[str, int], path: Path) -> None:
    """Each zstd frame's own declared content size equals its array's bytes (unknown sizes pass:
    decoding then stops at the array's size)."""
    import zstandard

    for name, nbytes in declared.items():
        try:
            content = zstandard.frame_content_size(blobs[name][:18].tobytes())  # a frame header is <= 18 bytes
        except zstandard.ZstdError as exc:
            raise damaged(path, f"{name} is not a zstandard frame ({exc})") from None
        if content not in (-1, nbytes):
            raise damaged(path, f"{name}'s compressed frame declares {_bytes(content)} but its shape needs "
                                f"{_bytes(nbytes)} (nothing was decoded)")


# ---------------------------------------------------------------------- 4. shapes
def check_shapes(header: dict[str, Any], shapes: dict[str, tuple[int, ...]], path: Path) -> None:
    """Every array has the shape its observable's axes and the model's sizes give, with one
    T (tokens) and one S (segments) for all; quantisation scales match their arrays."""
    for name in ("token_ids", "bounds", "initial_memory"):
        if name not in shapes:
            raise damaged(path, f"it lacks {name}")
    if len(shapes["token_ids"]) != 1:
        raise damaged(path, f"token_ids has shape {shapes['token_ids']}, not (T,)")
    if len(shapes["bounds"]) != 2 or shapes["bounds"][1] != 2 or shapes["bounds"][0] < 1:
        raise damaged(path, f"bounds has shape {shapes['bounds']}, not (S, 2) with S >= 1")
    info = header["model"]
    memory_tokens = int(info["rmt"]["num_mem_tokens"])
    m = memory_tokens if memory_type(header) == "tokens" else 0  # slots: only the tokens memory has them
    if len(shapes["initial_memory"]) != 2 or shapes["initial_memory"][0] != m:
        raise damaged(path, f"initial_memory has shape {shapes['initial_memory']}, not ({m}, d) for {m} memory slots")
    d = shapes["initial_memory"][1]
    if info.get("hidden_size", d) != d:
        raise damaged(path, f"initial_memory has hidden size {d} but the model's is {info['hidden_size']}")
    top_k = shapes.get("topk_ids", (0, 0))[-1] if len(shapes.get("topk_ids", ())) == 2 else None
    sizes = {"token": shapes["token_ids"][0], "slot": m, "hidden": d, "layer": int(info["num_layers"]),
             "layer+1": int(info["num_layers"]) + 1, "head": int(info["num_heads"]), "top_k": top_k,
             "lens_k": LENS_K, "block_pair": len(BLOCK_PAIRS), "span": 2, "memory_token": memory_tokens}
    segments, tokens = shapes["bounds"][0], sizes["token"]
    writes = write_axes(header)
    for name, shape in shapes.items():
        if name.startswith("state_write."):  # one write per segment, shaped as its axes say
            axes = writes.get(name.split(".", 1)[1])
            expected = None if axes is None or not all(a in sizes for a in axes) else \
                (segments,) + tuple(sizes[a] for a in axes)
            if expected is None or tuple(shape) != expected:
                raise damaged(path, f"{name} has shape {tuple(shape)}, not {segments} segments of the axes "
                                    f"{axes} of this model")
            continue
        if name.startswith("state_out."):  # format 3: one state per segment, shaped as the initial state
            initial = shapes.get("initial_state." + name.split(".", 1)[1])
            if initial is None or tuple(shape) != (segments,) + tuple(initial):
                raise damaged(path, f"{name} has shape {tuple(shape)}, not {segments} segments of its initial state "
                                    f"{None if initial is None else tuple(initial)}")
            continue
        base = name.removesuffix(".scale")
        if base == "bounds" or base not in STORED_ARRAYS:
            continue
        observable = STORED_ARRAYS[base]
        axes = [sizes[a] for a in observable.axes if a != "token"]
        lead = {PER_TOKEN: (tokens,), PER_SEGMENT: (segments,), PER_TRACE: ()}[observable.scope]
        expected = lead + tuple(axes)
        if name.endswith(".scale"):
            expected = expected[:-1] + (1,)
        if tuple(shape) != expected:
            words = " x ".join(f"{n}" for n in expected) or "a scalar"
            raise damaged(path, f"{name} has shape {tuple(shape)} but a trace of {tokens} tokens in {segments} "
                                f"segments of this model needs {words}")


# ---------------------------------------------------------------------- 5. values
def check_values(header: dict[str, Any], arrays: dict[str, Any], path: Path) -> None:
    """After decoding (cheap: bounds, ids and spans only): the segments tile the traced tokens,
    ids are in the vocabulary, spans lie in the text, the text is the traced one."""
    bounds = np.asarray(arrays["bounds"])
    if bounds.dtype.kind not in "iu":
        raise damaged(path, f"bounds are {bounds.dtype}, not integers")
    starts, ends = bounds[:, 0], bounds[:, 1]
    tokens = int(np.asarray(arrays["token_ids"]).shape[0])
    gaps = np.flatnonzero(starts[1:] != ends[:-1])
    if starts[0] != 0 or np.any(ends <= starts) or gaps.size or ends[-1] != tokens:
        where = (f"segment {gaps[0] + 1} starts at {starts[gaps[0] + 1]} but segment {gaps[0]} ends at {ends[gaps[0]]}"
                 if gaps.size else f"they run from {starts[0]} to {ends[-1]}")
        raise damaged(path, f"its segment bounds do not cover the {tokens} traced tokens in order, without gaps "
                            f"or overlaps ({where})")
    vocab = header["model"].get("vocab_size")
    ids = np.asarray(arrays["token_ids"])
    if ids.size and vocab is not None and (ids.min() < 0 or ids.max() >= vocab):
        raise damaged(path, f"its token ids run {ids.min()}..{ids.max()}, outside the model's vocabulary of {vocab}")
    rest = header.get("all_token_ids")
    if rest is not None:
        if len(rest) < tokens or not all(_is_int(t) and 0 <= t < (vocab or 2**31) for t in rest):
            raise damaged(path, "its all_token_ids are not the document's token ids")
        if list(rest[:tokens]) != ids.tolist():
            raise damaged(path, "its all_token_ids do not start with the traced tokens")
    text = header.get("text")
    if text is None:
        if len(header["tokens"]) != tokens:
            raise damaged(path, f"it holds {len(header['tokens'])} token strings for {tokens} tokens")
        return
    if header.get("text_sha256") is not None and header["text_sha256"] != text_digest(text):
        raise damaged(path, "its text is not the text that was traced (the sha256 stored with it differs)")
    spans = np.asarray(arrays["char_spans"])
    if spans.size and (spans.min() < 0 or spans.max() > len(text) or np.any(spans[:, 1] < spans[:, 0])):
        raise damaged(path, f"its token character spans do not lie inside its text of {len(text)} characters")


# ---------------------------------------------------------------------- words
def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _type_words(types: type | tuple[type, ...]) -> str:
    words = {str: "a string", dict: "an object", list: "a list", bool: "true or false", int: "a number",
             float: "a number"}
    kinds = types if isinstance(types, tuple) else (types,)
    return " or ".join(dict.fromkeys(words[t] for t in kinds))


def _bytes(n: int) -> str:
    for unit, size in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= size:
            return f"{n / size:.3g} {unit}"
    return f"{n} bytes"
