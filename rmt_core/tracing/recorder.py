"""Recording: run an RMT over a document segment by segment and keep what the Trace holds.

trace_document / iter_trace are the entry points (rmt_core.trace and rmt_core.trace_iter).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import numpy as np
import torch

from .. import token_text
from ..checks import check_int
from ..engine.attention import QueryKey, attention_weights
from ..engine.masks import segment_layout
from ..errors import TraceArgumentError, TraceCancelled, TraceError
from .associative import AssociativeProbe, state_sizes
from .heap import release_free_memory
from .losses import mean_token_loss, segment_losses
from .records import BLOCK_PAIRS, LENS_K, TOP_K, SegmentRecord
from .topk import top_k_rows
from .trace import Trace

CHUNK_SEGMENTS = 8  # most segments whose LM head runs as one matmul (see TraceStream._run)
# Memory types whose trace keeps each segment's write (MemoryType.write_spec) and their own rows
# (observables.py), recorded by a memory probe of this class; another type keeps whole states.
PROBES = {"associative": AssociativeProbe}
Progress = Callable[[int, int], Any]


def model_identity(model) -> dict[str, Any]:
    return {
        "name": model.name or "unsaved model",
        "weights_hash": model.weights_hash(),
        "num_layers": model.num_layers,
        "num_heads": model.num_heads,
        "hidden_size": model.hidden_size,
        "vocab_size": model.vocab_size,
        "rmt": model.config.to_dict(),
    }


# ---------------------------------------------------------------------- tokenising
def tokenize_document(model, text_or_ids: Any) -> tuple[str | None, np.ndarray, np.ndarray]:
    """(text or None, token ids (T,), char spans (T, 2)).

    text_or_ids: a str, or token ids as a 1-D list, numpy array or torch tensor of integers.
    Raises TraceError on empty input, on None, bytes or other objects, on text that is not
    valid Unicode (a lone surrogate), and on ids that are not integers (no float is truncated)
    or not one-dimensional (a 2-D array is not flattened into one document)."""
    if isinstance(text_or_ids, str):
        if not text_or_ids.strip():
            raise TraceError("The document is empty (or only whitespace): give it some text to trace.")
        _check_unicode(text_or_ids)
        if model.tokenizer is None:
            raise TraceError("This model has no tokenizer: pass token ids instead of text.")
        ids, spans = token_text.encode_with_offsets(model.tokenizer, text_or_ids)
        return text_or_ids, np.asarray(ids, dtype=np.int32), np.asarray(spans, dtype=np.int64).reshape(-1, 2)
    ids = _token_id_array(text_or_ids)
    if ids.size == 0:
        raise TraceError("No tokens to trace: the input is empty.")
    if ids.min() < 0 or ids.max() >= model.vocab_size:
        raise TraceError(f"Token ids must lie in [0, {model.vocab_size}); got {ids.min()}..{ids.max()}.")
    return None, ids.astype(np.int32), np.full((ids.size, 2), -1, dtype=np.int64)


WHAT_TO_TRACE = "give the text (a str) or its token ids (a 1-D list, numpy array or torch tensor of integers)"


def _token_id_array(value: Any) -> np.ndarray:
    """Token ids as a 1-D int64 array, or TraceError naming what `value` is instead."""
    if value is None:
        raise TraceError(f"Nothing to trace (got None): {WHAT_TO_TRACE}.")
    if isinstance(value, (bytes, bytearray, memoryview)):
        raise TraceError(f"Got {type(value).__name__}, not text: decode it first (e.g. data.decode('utf-8')), or read "
                         "a file with rmt_core.io.documents.read_document; then trace the text.")
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu()
        if value.dtype.is_floating_point or value.dtype.is_complex or value.dtype == torch.bool:
            raise TraceError(f"Token ids must be integers, got a tensor of {value.dtype}: {WHAT_TO_TRACE} "
                             "(a float is never rounded to an id).")
        value = value.numpy()
    elif not isinstance(value, (np.ndarray, list, tuple, range)):
        raise TraceError(f"Cannot trace an object of type {type(value).__name__}: {WHAT_TO_TRACE}.")
    try:
        ids = np.asarray(value)
    except (ValueError, TypeError) as exc:  # ragged nested lists
        raise TraceError(f"The token ids are not one flat list of integers ({exc}): {WHAT_TO_TRACE}.") from None
    if ids.ndim != 1:
        raise TraceError(f"Token ids must be one-dimensional (one document), got shape {tuple(ids.shape)}: trace "
                         "each row on its own (e.g. ids[0]); rows are never joined into one document.")
    if ids.size and ids.dtype.kind not in "iu":
        shown = ", ".join(repr(v) for v in ids[:3].tolist())
        raise TraceError(f"Token ids must be integers, got {ids.dtype} values ({shown}{', ...' if ids.size > 3 else ''}): "
                         f"{WHAT_TO_TRACE} (a float is never rounded to an id).")
    return ids.astype(np.int64, copy=False)


def _check_unicode(text: str) -> None:
    """TraceError for text that cannot be encoded as UTF-8 (lone surrogates, e.g. from a bad decode)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise TraceError(f"The text is not valid Unicode: character {exc.start} is a lone surrogate "
                         f"(U+{ord(text[exc.start]):04X}), which no file or tokenizer can hold. Read the file with "
                         "errors='replace' (or rmt_core.io.documents.read_document) and trace that text.") from None


def display_tokens(model, text: str | None, ids: np.ndarray, spans: np.ndarray) -> list[str]:
    """Display strings of the tokens; with text they join to it exactly (see rmt_core.token_text)."""
    return token_text.display_tokens(model.tokenizer, text, ids, spans)


# ---------------------------------------------------------------------- recording
class _QueryKeyProbe:
    """Query-key probe (engine.attention) that keeps each layer's QueryKey of one segment row."""

    def __init__(self) -> None:
        self.layers: dict[int, QueryKey] = {}

    def __call__(self, layer: int, query_key: QueryKey) -> None:
        self.layers[layer] = query_key

    def in_order(self) -> list[QueryKey]:
        return [self.layers[y] for y in sorted(self.layers)]


def chunk_attention_summaries(segments: list[list[QueryKey]], m: int, n_tokens: int
                              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """attention_summaries (S, Y, ...) of S equal-length segment rows from their layers' QueryKeys.

    The weights of all segments and layers come from one batched attention_weights call (one
    per distinct scaling: GPT-2 can scale each layer differently), so the segment loop keeps
    the model's own fused attention. On the CPU this costs about what a per-layer eager pass
    in the loop did (measured here); what it buys is a trace that runs exactly as forward."""
    by_scaling: dict[float, list[int]] = {}
    for y, query_key in enumerate(segments[0]):
        by_scaling.setdefault(query_key.scaling, []).append(y)
    parts = []
    for scaling, layers in by_scaling.items():
        picked = [segment[y] for segment in segments for y in layers]
        query = torch.stack([qk.query[0] for qk in picked])  # (S * Y', H, n, hd)
        key = torch.stack([qk.key[0] for qk in picked])  # (S * Y', KV, n, hd)
        mask = _stacked_masks(segments, layers)
        weights = attention_weights(query.view(len(segments), len(layers), *query.shape[1:]),
                                    key.view(len(segments), len(layers), *key.shape[1:]), mask, scaling)
        parts.append((layers, attention_summaries(weights, m, n_tokens)))  # weights (S, Y', H, n, n)
    if len(parts) == 1:
        return parts[0][1]
    order = np.argsort(np.concatenate([layers for layers, _ in parts]), kind="stable")
    return tuple(np.concatenate([summary[i] for _, summary in parts], axis=1)[:, order] for i in range(3))


def _stacked_masks(segments: list[list[QueryKey]], layers: list[int]) -> torch.Tensor | None:
    """The additive masks (S, Y', 1, n, n) of these layers (a backbone may give layers masks of
    their own, e.g. sliding-window ones); None when attention is unmasked."""
    if segments[0][layers[0]].mask is None:
        return None
    masks = torch.stack([segment[y].mask[0] for segment in segments for y in layers])
    return masks.view(len(segments), len(layers), *masks.shape[1:])


def attention_summaries(weights: torch.Tensor, m: int, n_tokens: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Summaries of segment rows' attention (..., Y, H, n, n): block_attention (..., Y, H, 6) in
    BLOCK_PAIRS order, write_to_tokens (..., Y, H, m, L) and tokens_to_read (..., Y, H, L, m), float16.

    On the CPU, numpy: a few reduceat calls for a whole chunk of segments instead of dozens of
    small tensor ops per segment. On an accelerator the block masses are reduced there and only
    the summaries cross to the host (the full weights of a large model's chunk are gigabytes)."""
    r, t, wr = segment_layout(m, n_tokens, write=m > 0)
    if weights.device.type != "cpu":
        return _device_attention_summaries(weights, r, t, wr)
    weights = weights.float().cpu()
    w = weights.numpy()
    if r.stop == r.start:  # no memory: only tokens->tokens has mass
        blocks = np.zeros(w.shape[:-2] + (len(BLOCK_PAIRS),), dtype=np.float32)
        blocks[..., 5] = w[..., t, t].sum(-1).mean(-1)
    else:
        starts = [r.start, t.start, wr.start]
        sizes = np.array([r.stop - r.start, t.stop - t.start, wr.stop - wr.start], dtype=np.float32)
        to_block = np.add.reduceat(w, starts, axis=-1)  # (..., q, 3): each query's mass per key block
        mass = np.add.reduceat(to_block, starts, axis=-2) / sizes[:, None]  # (..., 3 query, 3 key) means
        blocks = mass[..., _QUERY_BLOCK, _KEY_BLOCK]
    return blocks.astype(np.float16), half(weights[..., wr, t]), half(weights[..., t, r])


_QUERY_BLOCK, _KEY_BLOCK = [1, 2, 2, 2, 0, 1], [0, 1, 0, 2, 0, 1]  # BLOCK_PAIRS as (query, key) blocks


def _device_attention_summaries(weights: torch.Tensor, r: slice, t: slice, wr: slice
                                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """attention_summaries with the reductions in torch on the weights' own device."""
    w = weights.float()
    if r.stop == r.start:
        blocks = torch.zeros(w.shape[:-2] + (len(BLOCK_PAIRS),), device=w.device)
        blocks[..., 5] = w[..., t, t].sum(-1).mean(-1)
    else:
        to_block = torch.stack([w[..., b].sum(-1) for b in (r, t, wr)], dim=-1)  # (..., q, 3)
        mass = torch.stack([to_block[..., b, :].mean(-2) for b in (r, t, wr)], dim=-2)  # (..., 3 query, 3 key)
        blocks = mass[..., _QUERY_BLOCK, _KEY_BLOCK]
    return half(blocks), half(weights[..., wr, t]), half(weights[..., t, r])


def half(x: torch.Tensor) -> np.ndarray:
    """A float16 numpy copy on the host (torch converts several times faster than numpy)."""
    return x.to(torch.float16).cpu().numpy()


def token_logprobs(logits: torch.Tensor, ids: torch.Tensor, carry: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-softmax (L, V) of a segment's logits and log p(token j | before) (L,).

    carry: the previous segment's last log-softmax row, which predicts this segment's first token
    (None at the document's start: that token gets NaN).
    """
    logprobs = torch.log_softmax(logits.float(), dim=-1)
    return logprobs, gather_token_logprobs(logprobs, ids, carry)


def gather_token_logprobs(logprobs: torch.Tensor, ids: torch.Tensor, carry: torch.Tensor | None) -> torch.Tensor:
    """(L,) log p(token j | before) from a segment's (L, V) log-softmax (see token_logprobs)."""
    token_lp = torch.full((ids.shape[0],), float("nan"), device=logprobs.device)
    if ids.shape[0] > 1:
        token_lp[1:] = logprobs[:-1].gather(1, ids[1:, None]).squeeze(1)
    if carry is not None:
        token_lp[0] = carry[ids[0]]
    return token_lp


def segment_loss(token_lp: torch.Tensor | np.ndarray) -> float:
    """Mean negative log-likelihood (nats) over the tokens that have a prediction; NaN if none
    (token-weighted: tracing.losses.mean_token_loss, the one definition)."""
    values = token_lp.detach().cpu().numpy() if isinstance(token_lp, torch.Tensor) else np.asarray(token_lp)
    return mean_token_loss(values)


def _check_finite_predictions(token_lp: np.ndarray, pending: list["_Pending"]) -> None:
    """TraceError when the model's log-probabilities (of a chunk of segments) are NaN: its weights
    or activations are not finite. The document's first token (position 0) is NaN by definition."""
    first = pending[0].start
    nan = np.isnan(token_lp)
    if first == 0:
        nan[0] = False
    if nan.any():
        position = first + int(np.flatnonzero(nan)[0])
        segment = next(p.index for p in pending if p.start <= position < p.end)
        raise TraceError(f"The model's predictions are NaN from token {position} (segment {segment}) on: its weights "
                         "or activations are not finite (a diverged training run, or float16 overflow). Nothing was "
                         "recorded from there; use a checkpoint whose weights are finite.")


class TraceStream:
    """Iterator over a document's segment records; `.trace` holds everything recorded so far."""

    def __init__(self, model, text_or_ids: Any, progress: Progress | None = None, top_k: int = TOP_K,
                 carry_memory: bool = True) -> None:
        top_k = check_int(top_k, "top_k", 1, model.vocab_size, fix="It is how many top predictions are kept per token.")
        if not isinstance(carry_memory, bool):
            raise TraceArgumentError(f"carry_memory must be True (each segment reads the memory the one before wrote) or "
                             f"False (memory reset to the initial state before every segment), got {carry_memory!r}.")
        text, ids, spans = tokenize_document(model, text_or_ids)
        model.check_input_length(len(ids))
        if not all(bool(torch.isfinite(p).all()) for name, p in model.named_parameters()
                   if not name.startswith("backbone.")):  # the memory type's own parameters
            raise TraceError("The model's initial memory holds NaN or infinite values: every segment would read "
                             "them. Use a checkpoint whose weights are finite (rmt_core.load refuses the others).")
        self.model = model
        self.progress = progress
        self.top_k = top_k
        self._buffers: tuple[torch.Tensor, ...] | None = None  # float32 log-probs [, logits in the model's dtype] (see _logprobs)
        self.spans = spans
        self.display = display_tokens(model, text, ids, spans)
        self.bounds = model.segment_bounds(len(ids))
        # TokenMemory's slots are recorded as slots; another memory type's state as named arrays
        # (state_out) and its rows as no slots (m = 0).
        self.slots = model.config.num_mem_tokens if model.config.memory == "tokens" else 0
        no_slots = np.zeros((0, model.hidden_size), dtype=np.float32)
        self.trace = Trace(
            text, ids, model_identity(model),
            model.initial_memory.detach().float().cpu().numpy().copy() if model.config.memory == "tokens" else no_slots,
            {"top_k": top_k, "lens_k": LENS_K, "segment_size": model.config.segment_size,
             "dtype": str(model.dtype).replace("torch.", ""), "device": str(model.device),
             "carry_memory": carry_memory},
            model=model,
        )
        if model.config.memory != "tokens":
            self.trace.initial_state = model.memory.state_to_arrays(model.memory.initial_state(1))
        # a memory whose writes are stored (and its own rows recorded): its probe, one per segment
        self.probe_class = PROBES.get(model.config.memory) if model.memory.write_spec() is not None else None
        if self.probe_class is not None:  # the axes of its write arrays travel with the trace (trace files)
            self.trace.settings["state_write"] = {name: list(axes) for name, axes in model.memory.write_spec().items()}
        self._iterator = self._run()

    def __iter__(self) -> "TraceStream":
        return self

    def __next__(self) -> SegmentRecord:
        return next(self._iterator)

    @torch.no_grad()
    def _run(self) -> Iterator[SegmentRecord]:
        """Run segment by segment; everything else runs on small batches of finished segments
        (1, 2, 4, then 8 at a time): the LM head, log-softmax and top-k (one larger matmul is
        much cheaper than many small ones) and the host copies and attention summaries (a few
        calls per chunk instead of a dozen per segment).  The first records still appear at once."""
        model = self.model
        started = time.perf_counter()
        self._all_ids = torch.as_tensor(self.trace.token_ids, dtype=torch.long, device=model.device)
        memory = model.memory.initial_state(1)
        carry_memory = self.trace.carries_memory
        total = len(self.bounds)
        pending: list[_Pending] = []
        carry: list[torch.Tensor | None] = [None]  # last log-softmax row of the previous segment
        chunk = 1
        for index, (start, end) in enumerate(self.bounds):
            # Only references are kept here: every copy and stack happens once per chunk (_records).
            probe = _QueryKeyProbe()
            watch = self.probe_class(model.num_layers, end - start) if self.probe_class is not None else None
            out = model.run_segment(memory, self._all_ids[start:end].unsqueeze(0), segment_index=index,
                                    query_key_probe=probe, output_hidden_states=True, compute_logits=False,
                                    memory_probe=watch)
            written = out.memory_out if out.memory_out is not None else memory
            pending.append(_Pending(index, start, end, probe.in_order(), out.hidden_states, written, out.token_hidden,
                                    watch))
            if watch is not None:  # the states a rebuild would keep: kept as they ran (tracing/states.py)
                self.trace.rebuilder(total).offer(index + 1, written)
            if carry_memory:  # else every segment starts from the initial state (the no-memory baseline)
                memory = written
            if len(pending) < chunk and index + 1 < total:
                continue
            records = self._records(pending, carry)
            chunk = min(CHUNK_SEGMENTS, chunk * 2)
            for record in records:
                self.trace.segments.append(record)
                self.trace.seconds = time.perf_counter() - started
                yield record
                if self.progress is not None:
                    try:
                        keep_going = self.progress(record.index + 1, total)
                    except TraceCancelled:
                        keep_going = False
                    if keep_going is False:
                        return
            pending = []
            if index % 512 < chunk:  # about every 512 segments
                release_free_memory()
        self.trace.complete = True

    def _records(self, pending: list["_Pending"], carry: list[torch.Tensor | None]) -> list[SegmentRecord]:
        """SegmentRecords of a chunk of finished segments; their arrays are views of chunk arrays."""
        m = self.slots
        trace = self.trace
        records: list[SegmentRecord] = []
        previous = trace.segments[-1].memory_out if trace.segments and trace.carries_memory else trace.initial_memory
        first = pending[0].start
        token_lp, top_ids, top_lp = self._predictions(torch.cat([p.token_hidden[0] for p in pending]), first, carry)
        _check_finite_predictions(token_lp, pending)
        losses = segment_losses(token_lp, [p.start - first for p in pending])
        for group in _equal_lengths(pending):  # only a document's last segment can be shorter
            n_tokens = group[0].end - group[0].start
            blocks, write_to_tokens, tokens_to_read = chunk_attention_summaries(
                [p.attention for p in group], m, n_tokens)
            hidden = torch.stack([h[0] for p in group for h in p.hidden_states])  # (S * (Y+1), n, d)
            slots = half(hidden.view(len(group), len(group[0].hidden_states), *hidden.shape[1:])
                         .index_select(2, _slot_rows(m, n_tokens, hidden.device)))  # (S, Y+1, 2m, d)
            if trace.initial_state is None:
                memory_out = torch.cat([p.memory_out for p in group]).float().cpu().numpy()  # (S, m, d)
            else:  # another memory type: no slots; its state as named arrays
                memory_out = np.zeros((len(group),) + trace.initial_memory.shape, dtype=np.float32)
            watched = [self._watched(p) for p in group] if self.probe_class is not None else None
            finite = np.isfinite(memory_out).reshape(len(group), -1).all(axis=1)
            if watched is not None:  # the writes and the state's size: NaN there means a non-finite state
                finite &= [all(np.isfinite(w[k]).all() for k in ("state_norm", "z_norm")) and
                           all(np.isfinite(v).all() for v in w["state_write"].values()) for w in watched]
            if not finite.all():
                bad = group[int(np.flatnonzero(~finite)[0])].index
                raise TraceError(f"The model wrote NaN or infinite memory in segment {bad}: its weights or its "
                                 "initial memory are not finite (a diverged training run?). Nothing was recorded "
                                 "from this segment on; use a checkpoint whose weights are finite.")
            for i, p in enumerate(group):
                rows = slice(p.start - first, p.end - first)
                records.append(SegmentRecord(
                    index=p.index, start=p.start, end=p.end,
                    token_ids=trace.token_ids[p.start:p.end],
                    tokens=self.display[p.start:p.end],
                    char_spans=self.spans[p.start:p.end],
                    memory_in=previous,  # the previous record's memory_out (or the initial memory): shared
                    memory_out=memory_out[i],
                    read_hidden=slots[i, :, :m], write_hidden=slots[i, :, m:],
                    token_logprob=token_lp[rows], topk_ids=top_ids[rows], topk_logprobs=top_lp[rows],
                    loss=float(losses[len(records)]),
                    block_attention=blocks[i], write_to_tokens=write_to_tokens[i], tokens_to_read=tokens_to_read[i],
                    state_out=None if trace.initial_state is None or watched is not None
                    else self.model.memory.state_to_arrays(p.memory_out),
                    **(watched[i] if watched is not None else {}),
                ))
                if trace.carries_memory:
                    previous = memory_out[i]
        return records

    @staticmethod
    def _watched(p: "_Pending") -> dict[str, object]:
        """A probed segment's own fields (tracing/associative.py): what its probe kept, and the size
        of the state it wrote (|A_l|_F, |z_l|)."""
        fields = p.watch.fields()
        fields["state_norm"], fields["z_norm"] = state_sizes(p.memory_out["A"][0], p.memory_out["z"][0])
        return fields

    def _logprobs(self, hidden: torch.Tensor) -> torch.Tensor:
        """(rows, V) float32 log-softmax of the LM head over hidden (rows, d).

        Written into one float32 buffer reused for the whole run, in place: a fresh 8 MB logits
        tensor every few segments fragments the heap (small records settle between the freed
        blocks), which cost a 1M-token trace about 0.3 GB of peak memory, and one buffer instead
        of a logits and a log-prob buffer stays in the cache (10% faster head here). log_softmax
        is one fused pass (a separate logsumexp costs twice as much on the CPU). A model in
        another dtype (bf16 on an accelerator) gets its logits in a buffer of its own first."""
        head = self.model.backbone.get_output_embeddings()
        rows, vocab = hidden.shape[0], head.weight.shape[0]
        if self._buffers is None or self._buffers[0].shape[0] < rows:
            capacity = max(rows, CHUNK_SEGMENTS * self.model.config.segment_size)
            self._buffers = tuple(torch.empty(capacity, vocab, dtype=dtype, device=hidden.device)
                                  for dtype in dict.fromkeys((torch.float32, hidden.dtype)))
        logprobs, logits = self._buffers[0][:rows], self._buffers[-1][:rows]
        if type(head) is torch.nn.Linear and head.weight.dtype == hidden.dtype and head.weight.device == hidden.device:
            if head.bias is None:
                torch.mm(hidden, head.weight.t(), out=logits)
            else:
                torch.addmm(head.bias, hidden, head.weight.t(), out=logits)
        else:  # another head type, or a device-mapped one (accelerate moves it): its own call, then a copy
            logits.copy_(head(hidden))
        if logits is not logprobs:
            logprobs.copy_(logits)
        return torch.log_softmax(logprobs, dim=-1, out=logprobs)  # each row is read whole before it is written

    def _predictions(self, token_hidden: torch.Tensor, first: int, carry: list[torch.Tensor | None]
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(token log-probs (rows,) float32, top-k ids (rows, K) int32, top-k log-probs (rows, K)
        float16) of a chunk of consecutive segments' tokens, with one LM-head call.

        The chunk's rows are the document positions [first, first + rows): row j predicts
        position j + 1, so one gather scores every token but the chunk's first, whose
        prediction (carry) is the previous chunk's last row."""
        logprobs = self._logprobs(token_hidden)  # (rows, V)
        top_lp, top_ids = top_k_rows(logprobs, self.top_k)
        token_lp = gather_token_logprobs(logprobs, self._all_ids[first:first + logprobs.shape[0]], carry[0])
        carry[0] = logprobs[-1].clone()  # a copy: the buffer is reused by the next chunk
        return token_lp.cpu().numpy(), top_ids.cpu().numpy().astype(np.int32), half(top_lp)


@dataclass
class _Pending:
    """A segment that has run, waiting for its chunk's LM head and host copies."""

    index: int
    start: int
    end: int
    attention: list[QueryKey]  # Y, in layer order: what the attention weights are made of
    hidden_states: tuple[torch.Tensor, ...]  # Y+1 x (1, n, d): the whole row at every layer
    memory_out: object  # the state after the segment (TokenMemory: (1, m, d))
    token_hidden: torch.Tensor  # (1, L, d), after the final norm
    watch: AssociativeProbe | None = None  # the memory probe of a memory whose writes are stored


def _slot_rows(m: int, n_tokens: int, device: torch.device) -> torch.Tensor:
    """Row positions (2m,) of the read slots, then the write slots, in a segment row."""
    read, _, write = segment_layout(m, n_tokens, write=m > 0)
    return torch.cat([torch.arange(read.start, read.stop), torch.arange(write.start, write.stop)]).to(device)


def _equal_lengths(pending: list[_Pending]) -> list[list[_Pending]]:
    """Consecutive runs of segments with the same number of tokens."""
    groups: list[list[_Pending]] = []
    for p in pending:
        if groups and groups[-1][0].end - groups[-1][0].start == p.end - p.start:
            groups[-1].append(p)
        else:
            groups.append([p])
    return groups


def iter_trace(model, text_or_ids: Any, progress: Progress | None = None, top_k: int = TOP_K,
               carry_memory: bool = True) -> TraceStream:
    """Stream segment records as they finish; the stream's `.trace` grows with them (arguments
    as trace_document)."""
    return TraceStream(model, text_or_ids, progress=progress, top_k=top_k, carry_memory=carry_memory)


def trace_document(model, text_or_ids: Any, progress: Progress | None = None, top_k: int = TOP_K,
                   carry_memory: bool = True) -> Trace:
    """Trace a whole document (text or token ids). A cancelled run returns the segments done,
    with trace.complete False.

    progress(done, total) is called after each segment (False or TraceCancelled stops the run);
    top_k: the predictions kept per token. carry_memory: True (the RMT) carries each segment's
    memory_out into the next segment; False resets the memory to the model's initial state
    before every segment, the "no memory" baseline of the RMT papers (Bulatov et al., 2022,
    "Recurrent Memory Transformer"; RMTModel.forward(reset_memory=True) runs the same). The
    trace records which (Trace.carries_memory, settings["carry_memory"], kept in its file), and
    every segment's memory_in is then the initial memory. Raises TraceError for a bad input or a
    carry_memory that is not a bool (TraceArgumentError, also an ArgumentError)."""
    stream = iter_trace(model, text_or_ids, progress=progress, top_k=top_k, carry_memory=carry_memory)
    for _ in stream:
        pass
    return stream.trace
