"""The Trace: what an RMT did on one document, segment by segment.

Recorded per segment (cheap summaries; full attention is recomputed on demand):
token ids and display strings, character offsets, memory_in / memory_out, the hidden
states of the read slots R_k and write slots W_k at every layer, per-token log-probabilities
and top-k predictions, the segment loss, block-to-block attention mass, how much each write
slot attends to each token and each token to each read slot, and a logit lens of the written
memory: one table, observables.OBSERVABLES, names them all (axes, dtypes, meanings).
Recording is recorder.trace_document; files are trace_file.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from .. import token_text
from .._version import __version__
from ..checks import check_int
from ..engine.memory import map_state, state_tensors
from ..errors import ArgumentError, TraceArgumentError, TraceError
from . import trace_file
from .losses import mean_token_loss
from .records import BLOCK_PAIRS, LENS_K, SegmentRecord

__all__ = ["Trace", "Replay", "SegmentRecord", "BLOCK_PAIRS"]

StateEdit = Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]


@dataclass
class Replay:
    """What Trace.replay returns: one segment re-run from a stored or edited state.

    logits: (batch, L', vocab) at the tokens run (L' = L, or fewer with token_ids); None with
        compute_logits=False. Tensors keep the autograd graph when the caller enables grad.
    state_out: the state the segment writes, in the memory type's own form (TokenMemory:
        (batch, m, d)); None when it does not write (write=False, or a memory without writes).
    state_in: the state the segment was run from (after the edit), in the same form.
    token_hidden: (batch, L', d) final hidden states of the tokens.
    hidden_states: per layer (batch, n, d) of the whole row (Y + 1), with output_hidden_states.
    attention: (batch, Y, H, n, n) float32 on the host (rows as Trace.attention_labels), with
        attention=True; None otherwise.
    """

    logits: torch.Tensor | None
    state_out: Any
    state_in: Any
    token_hidden: torch.Tensor | None
    hidden_states: tuple[torch.Tensor, ...] | None = None
    attention: torch.Tensor | None = None
    memory: Any = None  # the model's MemoryType (for state_arrays)

    def state_arrays(self, index: int = 0) -> dict[str, np.ndarray] | None:
        """Sample `index` of state_out as named float32 arrays (MemoryType.state_to_arrays)."""
        return None if self.state_out is None else self.memory.state_to_arrays(self.state_out, index)


class Trace:
    """A recorded run; see SegmentRecord for the per-segment fields."""

    def __init__(self, text: str | None, token_ids: np.ndarray, model_info: dict[str, Any],
                 initial_memory: np.ndarray, settings: dict[str, Any], model=None) -> None:
        self.text = text
        self.token_ids = token_ids
        self.model_info = model_info
        self.initial_memory = initial_memory
        self.settings = settings
        self.version = __version__
        self.segments: list[SegmentRecord] = []
        self.complete = False
        self.seconds = 0.0
        self._model = model
        self.meta: dict[str, Any] = {}  # free-form facts (e.g. a fact-recall sample's answer)
        # A memory type other than tokens: its initial state as named arrays (tokens: initial_memory).
        self.initial_state: dict[str, np.ndarray] | None = None
        self._rebuilder = None  # states rebuilt from stored writes (tracing/states.py), made on first use

    # ------------------------------------------------------------------ facts
    @property
    def num_segments(self) -> int:
        return len(self.segments)

    @property
    def num_tokens(self) -> int:
        return int(sum(s.num_tokens for s in self.segments))

    @property
    def num_mem_tokens(self) -> int:
        return int(self.model_info["rmt"]["num_mem_tokens"])

    @property
    def memory_type(self) -> str:
        """The model's memory type (RMTConfig.memory; traces made before it existed: "tokens")."""
        return str(self.model_info["rmt"].get("memory", "tokens"))

    @property
    def carries_memory(self) -> bool:
        """Whether each segment read the memory the one before wrote (the RMT: True), or started from
        the initial state (memory reset before every segment, the "no memory" baseline: False;
        rmt_core.trace(..., carry_memory=False)). settings["carry_memory"]; traces and files made
        before it existed carried memory."""
        return self.settings.get("carry_memory", True) is not False

    @property
    def num_slots(self) -> int:
        """m read / write slots per segment row (the tokens memory's num_mem_tokens; 0 for other types,
        e.g. an associative memory, whose num_mem_tokens are memory tokens after the segment)."""
        return self.num_mem_tokens if self.memory_type == "tokens" else 0

    @property
    def stores_writes(self) -> bool:
        """Whether each segment keeps its write (state_write) instead of its state: states are then
        rebuilt on demand with the model (state_in / state_out; the associative memory)."""
        return bool(self.segments) and self.segments[0].state_write is not None

    @property
    def has_slots(self) -> bool:
        """Whether the memory is slots in the row (tokens, m > 0): what slot views (logit lens,
        read / write attribution, slot attention) need."""
        return self.memory_type == "tokens" and self.num_mem_tokens > 0

    @property
    def model(self):
        return self._model

    def check_segment(self, index: Any, name: str = "segment") -> int:
        """`index` as an int when it is one of this trace's segments; else ArgumentError."""
        if self.num_segments == 0:
            raise TraceError("This trace has no segments yet: trace a document first.")
        return check_int(index, name, 0, self.num_segments - 1,
                         fix=f"The trace has {self.num_segments} segments, numbered from 0.", error=TraceArgumentError)

    def check_view(self, segment: Any = None, layer: Any = -1, head: Any = 0, prefix: str = "") -> tuple[int, int, int]:
        """(segment, layer, head) of one attention view, checked against this trace's model.

        segment None is the last segment; a negative layer counts from the end (-1 the last) and
        comes back as 0..layers-1. Raises TraceArgumentError naming the argument (``prefix`` +
        name, e.g. "--segment" for a command line) and its allowed range.
        """
        segment = self.check_segment(self.num_segments - 1 if segment is None and self.segments else segment,
                                     f"{prefix}segment")
        n_layers, n_heads = int(self.model_info["num_layers"]), int(self.model_info["num_heads"])
        layer = check_int(layer, f"{prefix}layer", -n_layers, n_layers - 1,
                          fix=f"The model has {n_layers} layers (-1 is the last).", error=TraceArgumentError)
        head = check_int(head, f"{prefix}head", 0, n_heads - 1,
                         fix=f"The model has {n_heads} attention heads per layer.", error=TraceArgumentError)
        return segment, layer % n_layers, head

    def memory_states(self) -> np.ndarray:
        """(S + 1, m, d) float32 memory states: memory_in of segment 0 (the initial memory), then
        every segment's memory_out (row s + 1: the memory LEAVING segment s). In a trace that
        carries memory row s is also memory_in of segment s; with memory reset every segment's
        memory_in is row 0 (memory_inputs gives each segment's own, either way).

        Another memory type: its state's vectors (every state array whose last axis is the
        hidden size, as rows of d), in state_spec order: (S + 1, k, d). Raises TraceError for a
        memory whose writes are stored (associative: its state is a matrix per layer, not vectors;
        its rows are state_norm, write_strength, ... and Trace.state_in / state_out)."""
        if self.stores_writes:
            raise TraceError(f"The {self.memory_type!r} memory's state is a matrix per layer, not slot vectors: views "
                             "of memory vectors (trajectories, slot norms, churn, memory distance) do not apply to it. "
                             "See its state size, write strength and novelty instead (Memory page; "
                             "SegmentRecord.state_norm, write_strength, novelty).")
        if self.initial_state is None:
            return np.stack([self.initial_memory] + [s.memory_out for s in self.segments])
        d = int(self.model_info["hidden_size"])
        return np.stack([_vectors(state, d) for state in [self.initial_state] + [s.state_out for s in self.segments]])

    def memory_inputs(self) -> np.ndarray:
        """(S, m, d) float32: the memory ENTERING each segment (memory_in; another memory type: its
        state's vectors as in memory_states). Carried memory: memory_states()[:-1]; with memory
        reset: the initial memory, S times."""
        states = self.memory_states()
        if self.carries_memory:
            return states[:-1]
        return np.broadcast_to(states[:1], (self.num_segments,) + states.shape[1:])

    def losses(self) -> np.ndarray:
        """(S,) per-segment mean loss (nats/token over each segment's tokens); not the document's mean:
        that is mean_loss()."""
        return np.array([s.loss for s in self.segments], dtype=np.float64)

    def mean_loss(self) -> float:
        """The document's mean loss (nats/token), token-weighted over every token with a prediction
        (tracing.losses.mean_token_loss: the one definition app, CLI, report and card share)."""
        if not self.segments:
            return float("nan")
        return mean_token_loss(np.concatenate([s.token_logprob for s in self.segments]))

    # ------------------------------------------------------------------ logit lens
    def lens_ids(self, index: int) -> np.ndarray:
        """(Y+1, m, LENS_K) logit-lens token ids of segment `index`'s write slots (computed once,
        for this segment only: a page showing one segment of a long book must not pay for all;
        compute_lens batches many)."""
        index = self.check_segment(index)
        if self.segments[index].lens_ids is None:
            self.compute_lens([index])
        return self.segments[index].lens_ids

    @torch.no_grad()
    def compute_lens(self, indices: list[int], chunk: int = 256) -> None:
        """Fill lens_ids for these segments from their stored write-slot hidden states, in batches."""
        model = self.require_model("the logit lens")
        norm, head = _final_norm(model), model.backbone.get_output_embeddings()
        for first in range(0, len(indices), chunk):
            batch = indices[first:first + chunk]
            hidden = torch.as_tensor(np.stack([self.segments[i].write_hidden for i in batch]),
                                     device=model.device).to(model.dtype)  # (B, Y+1, m, d)
            if norm is not None:  # the last layer is stored after the final norm already
                hidden[:, :-1] = norm(hidden[:, :-1])
            ids = torch.topk(head(hidden).float(), LENS_K, dim=-1).indices.cpu().numpy().astype(np.int32)
            for i, lens in zip(batch, ids):
                self.segments[i].lens_ids = lens

    # ------------------------------------------------------------------ recompute
    def attach(self, model) -> None:
        """Re-attach the model this trace was made with (checked by weight hash)."""
        if model.weights_hash() != self.model_info["weights_hash"]:
            raise TraceError(
                f"This trace was made with '{self.model_info['name']}' (weights {self.model_info['weights_hash']}), "
                f"not with '{model.name}' (weights {model.weights_hash()}). Load the checkpoint it was made with."
            )
        self._model = model

    def require_model(self, purpose: str = "recomputing attention"):
        """The attached model (an RMTModel); TraceError when none is attached.

        purpose: what needs the model, named in the message ("an intervention", "the logit lens").
        The message says how to attach it: Trace.load(path, model=...) with the checkpoint the
        trace was made with.
        """
        if self._model is None:
            raise TraceError(
                f"This trace has no model attached, and {purpose} needs it: load the trace with "
                f"Trace.load(path, model=rmt_core.load(...)) using checkpoint '{self.model_info['name']}'."
            )
        return self._model

    def state_in(self, index: int) -> dict[str, np.ndarray]:
        """The state entering segment `index` as named float32 arrays (the memory type's
        state_spec names; TokenMemory: {"memory": (m, d)}): the previous segment's state_out,
        segment 0 (and every segment of a trace with memory reset: carries_memory False) the
        initial state. The arrays are the trace's own: copy before changing them."""
        index = self.check_segment(index)
        if self.initial_state is None:
            return {"memory": self.segments[index].memory_in}
        if index == 0 or not self.carries_memory:
            return self.initial_state
        return self.rebuilder().arrays_in(index) if self.stores_writes else self.segments[index - 1].state_out

    def next_state(self, replayed: "Replay") -> Any:
        """The state the segment after a replayed one starts from, as this trace runs: the replay's
        state_out (its state_in when the segment wrote none); with memory reset (carries_memory
        False) the model's initial state, batched as the replay. What every re-run that goes on to
        later segments (interventions, patching, through-memory attribution) carries."""
        if not self.carries_memory:
            return self.require_model("re-running a segment").memory.initial_state(_batch_of(replayed.state_in))
        return replayed.state_out if replayed.state_out is not None else replayed.state_in

    def state_out(self, index: int) -> dict[str, np.ndarray]:
        """The state segment `index` wrote, as named float32 arrays (see state_in). A memory whose
        writes are stored rebuilds it with the model (TraceError without it)."""
        seg = self.segments[self.check_segment(index)]
        if self.initial_state is None:
            return {"memory": seg.memory_out}
        return self.rebuilder().arrays_out(index) if self.stores_writes else seg.state_out

    def rebuilder(self, segments: int | None = None):
        """The StateRebuilder of a trace that stores writes (tracing/states.py), made once (segments:
        the count it will have, when the recorder makes it)."""
        if self._rebuilder is None:
            from .states import StateRebuilder

            self._rebuilder = StateRebuilder(self, segments)
        return self._rebuilder

    def state_ranks(self, chunk: int = 64) -> np.ndarray:
        """(S, Y) float32 effective rank of each layer's associative matrix A after each segment
        (the state_rank row; tracing/associative.effective_rank), computed for the segments that
        lack it, from states rebuilt with the model (one SVD per layer and segment, batched).
        Raises TraceError for another memory type, or without the model when some are missing."""
        from .associative import state_ranks

        if self.memory_type != "associative":
            raise TraceError(f"The effective rank is of an associative memory's matrices; this trace's memory is "
                             f"{self.memory_type!r}.")
        missing = [s.index for s in self.segments if s.state_rank is None]
        if missing:
            pending: list[tuple[int, torch.Tensor]] = []
            for index, _, after in self.rebuilder().walk(missing[0]):
                if self.segments[index].state_rank is None:
                    pending.append((index, after["A"][0]))
                if len(pending) == chunk or (index == self.num_segments - 1 and pending):
                    ranks = state_ranks(torch.stack([a for _, a in pending]))
                    for (i, _), rank in zip(pending, ranks):
                        self.segments[i].state_rank = rank
                    pending = []
        return np.stack([s.state_rank for s in self.segments])

    def replay(self, segment: int, state: Any = None, *, edit: "str | StateEdit | None" = None,
               token_ids: Any = None, inputs_embeds: torch.Tensor | None = None, write: bool = True,
               compute_logits: bool = True, attention: bool = False, output_hidden_states: bool = False,
               query_key_probe: Callable | None = None, edit_options: dict[str, Any] | None = None,
               memory_probe: Callable | None = None) -> Replay:
        """Re-run segment `segment` from its stored state, or from a given or edited one: the one
        way every view, answer, intervention and attribution re-runs a traced segment.

        state: None = the stored state entering the segment (state_in); a dict of named arrays
            of numpy arrays (one sample, state_spec's names and shapes); or a state in the memory
            type's own form (torch tensors with the batch first, e.g. a batch of perturbed memories that needs
            gradients: it is used as given, and edit is not allowed with it).
        edit: applied to the named arrays before the run: an edit name the memory type supports
            (MemoryType.supported_edits: "reset", "zero", ...; edit_options passes part=,
            source=, seed=) or a function (named arrays -> named arrays, same names and shapes).
        token_ids: the ids to run instead of the stored ones (a prefix: the prediction at a
            site; (L',) or (batch, L')); default the segment's own. inputs_embeds: (batch, L', d)
            token embeddings instead of the ids' (attribution perturbs them).
        write: False runs without writing a new state. compute_logits: False skips the LM head.
        attention: True computes the attention weights eagerly and returns them (Replay.attention).
        query_key_probe / output_hidden_states / memory_probe: passed to RMTModel.run_segment.
        Runs under the caller's grad mode. Raises TraceError without the model attached,
        TraceArgumentError for a bad segment, ArgumentError for a bad state or edit.
        For TokenMemory, replay(s) gives bit for bit the logits and memory_out the trace recorded.
        """
        index = self.check_segment(segment)
        model = self.require_model("re-running a segment")
        memory = model.memory
        named = isinstance(state, dict) and all(isinstance(v, np.ndarray) for v in state.values())
        if state is None or named:
            arrays = self.state_in(index) if state is None else state
            if edit is not None:
                arrays = _edited(memory, arrays, edit, edit_options or {})
            state = memory.state_from_arrays(arrays)
        elif edit is not None:
            raise ArgumentError("edit applies to a stored state or named arrays, not to a state given in the memory "
                                "type's own form: edit the tensors before passing them.")
        if token_ids is None:
            token_ids = self.segments[index].token_ids
        ids = torch.as_tensor(np.asarray(token_ids) if not isinstance(token_ids, torch.Tensor) else token_ids,
                              dtype=torch.long, device=model.device)
        if ids.dim() == 1:
            ids = ids.unsqueeze(0)
        batch = max(ids.shape[0], inputs_embeds.shape[0] if inputs_embeds is not None else 1,
                    _batch_of(state))
        ids = ids.expand(batch, -1)
        captured: dict[int, torch.Tensor] = {}
        probe = (lambda layer, w: captured.__setitem__(layer, w.detach().float().cpu())) if attention else None
        state = _expanded(memory, state, batch)
        out = model.run_segment(state, ids, write=write, segment_index=index, attention_probe=probe,
                                query_key_probe=query_key_probe, output_hidden_states=output_hidden_states,
                                inputs_embeds=inputs_embeds, compute_logits=compute_logits, memory_probe=memory_probe)
        weights = torch.stack([captured[y] for y in sorted(captured)], dim=1) if attention else None
        return Replay(out.logits, out.memory_out, state, out.token_hidden, out.hidden_states, weights, memory)

    @torch.no_grad()
    def attention(self, index: int) -> np.ndarray:
        """Exact (layers, heads, q, k) attention of segment `index`, recomputed from its stored state.

        Rows and columns follow attention_labels(index) (TokenMemory: read slots, tokens, write slots).
        """
        return self.replay(index, attention=True, compute_logits=False).attention[0].numpy()

    def attention_labels(self, index: int) -> list[str]:
        """Row/column labels of attention(index): R0.., the segment's tokens, W0... (another memory
        type: its row_labels, which needs the model attached).

        Tokens are shown with token_text.token_label: visible newlines, and the continuation
        mark for a piece whose character is shown on the piece before."""
        seg = self.segments[self.check_segment(index)]
        tokens = [token_text.token_label(t) for t in seg.tokens]
        if self.memory_type != "tokens":  # another memory type lays out its own row (associative: tokens, P0..)
            return self.require_model("labelling attention rows").memory.row_labels(tokens)
        m = self.num_mem_tokens
        return [f"R{k}" for k in range(m)] + tokens + [f"W{k}" for k in range(m)]

    # ------------------------------------------------------------------ files
    def save(self, path: str | os.PathLike) -> Path:
        """One safetensors file: arrays + a JSON header (text, settings, model identity, version)."""
        return trace_file.save_trace(self, Path(path))

    @classmethod
    def load(cls, path: str | os.PathLike, model=None) -> "Trace":
        """Read a trace file; with `model`, re-attach it (refused if it is another model)."""
        header, arrays = trace_file.read_trace_file(Path(path))
        trace = cls(header["text"], trace_file.all_token_ids(header, arrays), header["model"],
                    arrays["initial_memory"], header["settings"])
        trace.version = header["rmt_lens_version"]
        trace.complete = header["complete"]
        trace.seconds = header.get("seconds", 0.0)
        trace.meta = header.get("meta", {})
        trace.initial_state = trace_file.initial_state(header, arrays)
        trace.segments = trace_file.stored_records(header, arrays)
        if model is not None:
            trace.attach(model)
        return trace

    def __repr__(self) -> str:
        state = "complete" if self.complete else "partial"
        return (f"Trace({self.num_tokens} tokens, {self.num_segments} segments, {state}, "
                f"model={self.model_info['name']!r})")


def _vectors(state: dict[str, np.ndarray], d: int) -> np.ndarray:
    """(k, d): the rows of a state's arrays whose last axis is the hidden size d."""
    rows = [np.asarray(v, dtype=np.float32).reshape(-1, d) for v in state.values() if v.ndim and v.shape[-1] == d]
    return np.concatenate(rows) if rows else np.zeros((0, d), dtype=np.float32)


def _edited(memory, arrays: dict[str, np.ndarray], edit: "str | StateEdit", options: dict[str, Any]
            ) -> dict[str, np.ndarray]:
    """Named arrays after `edit` (a supported edit's name, or a function), checked by name and shape."""
    if isinstance(edit, str):
        return memory.edit_state(arrays, edit, **options)
    if not callable(edit):
        raise ArgumentError(f"edit must be an edit name {list(memory.supported_edits)} or a function, got "
                            f"{type(edit).__name__}.")
    edited = edit({name: np.array(value, dtype=np.float32, copy=True) for name, value in arrays.items()})
    if not isinstance(edited, dict) or set(edited) != set(arrays):
        raise ArgumentError(f"An edit function must return the state's named arrays {sorted(arrays)}, got "
                            f"{sorted(edited) if isinstance(edited, dict) else type(edited).__name__}.")
    return edited


def _batch_of(state: Any) -> int:
    return max(int(t.shape[0]) for t in state_tensors(state)) if state_tensors(state) else 1


def _expanded(memory, state: Any, batch: int) -> Any:
    """A batch-1 state repeated (as a view) to `batch` samples; other states as they are."""
    return map_state(lambda t: t.expand(batch, *t.shape[1:]) if t.shape[0] == 1 and batch > 1 else t, state)


def _final_norm(model) -> torch.nn.Module | None:
    base = model.backbone.base_model
    for name in ("ln_f", "norm", "final_layernorm"):
        if hasattr(base, name):
            return getattr(base, name)
    return None
