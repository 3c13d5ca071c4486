"""The memory-type protocol: what every kind of recurrent memory provides to the engine.

A memory type decides three things; the engine (RMTModel) and everything above it (tracing,
explain, viz, the app) reach memory only through them:

1. its STATE: what is carried from one segment to the next. Any object the type chooses
   (TokenMemory: one (batch, m, d) tensor; ARMT: per-layer associative matrices (A_l, z_l)),
   always with the batch first in every tensor it holds. The engine treats it as opaque and
   only calls this class's methods on it (initial_state, detach, keep_where, to / from arrays).
2. how ONE SEGMENT RUNS with it: build_row makes what the unmodified backbone sees (the
   input embeddings of the whole row, who may attend to whom, positions, which rows are the
   segment's tokens); layer_hooks may hook the backbone's layers while it runs (a memory that
   lives inside the layers: ARMT reads into every token's input and writes from the memory
   tokens' outputs); read_state reads the state the segment writes back out of the final
   hidden states and/or what the hooks collected. run_segment (concrete here) drives the three.
3. what is SEEN and EDITED of it: state_spec / state_to_arrays / state_from_arrays turn a
   state into named float32 numpy arrays (trace files, interventions, figures) and back;
   row_labels name the rows of one segment's attention; parts name what an intervention may
   replace; supported_edits lists the edits (reset, zero, replace a part, ...) edit_state does.
4. what a RECORDER may watch (optional): a memory probe passed to run_segment reaches the
   type's hooks through row.context[MEMORY_PROBE]; the type calls it with named tensors of
   what it reads and writes (MemoryProbe below). Without a probe the hooks do nothing extra.
   A type whose state is a sum of writes (write_spec not None) lets a trace store each
   segment's write instead of the whole state, and rebuild states with apply_write.

Register a new type with ``rmt_core.engine.memory.register_memory(name, cls)`` and select it with
``RMTConfig(memory=name)``. A subclass's __init__ receives the RMTModel (backbone attached,
config validated) and registers its learned parameters ON THE MODEL (``model.register_parameter``
/ ``model.add_module``), so checkpoints and weight hashes see them under the model's own names.
"""
from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, ContextManager, Mapping

import numpy as np
import torch

from .. import attention as _attention
from ...errors import ArgumentError, ConfigError
from ..masks import additive_mask


State = Any  # a memory type's carried state: tensors with the batch first (see the module docstring)
StateArrays = dict[str, np.ndarray]  # one sample's state as named float32 arrays (state_spec's names)

EDITS = ("reset", "zero", "replace", "shuffle")  # edit names a memory type may support (supported_edits)

MEMORY_PROBE = "memory_probe"  # the key of SegmentRow.context that holds run_segment's memory_probe
# memory_probe(event, layer, tensors): event "read" or "write" (the memory type's own words for what
# it reads into the row and writes from it), layer the backbone block, tensors named by the type
# (batch first, on the model's device; views of what the segment computes: copy before keeping).
MemoryProbe = Callable[[str, int, dict[str, torch.Tensor]], None]
REUSE_STATE = "reuse_state"  # row.context key: True when read_state may write the new state into the old one's memory


@dataclass
class SegmentOutput:
    """One segment's results (MemoryType.run_segment / RMTModel.run_segment).

    logits: (batch, L, vocab) at the segment's tokens; None when compute_logits=False.
    memory_out: the state this segment writes, in the memory type's own form (TokenMemory:
        (batch, m, d)); None when the segment does not write (write=False, or no write block).
    token_hidden: (batch, L, d) final hidden states (after the final norm) of the tokens.
    hidden_states: per layer (batch, n, d) of the whole row (Y + 1 entries), if asked.
    row: the SegmentRow the backbone saw (its parts say which rows are memory).
    """

    logits: torch.Tensor | None
    memory_out: State | None
    token_hidden: torch.Tensor | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None
    row: "SegmentRow | None" = None

    @property
    def state_out(self) -> State | None:
        """The state this segment writes (the same object as memory_out)."""
        return self.memory_out


@dataclass
class SegmentRow:
    """What the backbone sees for one segment, as build_row makes it.

    embeds: (batch, n, d) input embeddings of the whole row (memory rows included).
    allowed: (batch or 1, n, n) bool, True where query q may attend to key k.
    positions: (batch, n) int64 position ids.
    tokens: the rows of the segment's L tokens (their final hidden states give the logits).
    parts: named rows of the row, for views and recorders (TokenMemory: "read", "tokens",
        "write"); every row belongs to at most one part.
    write: whether this row writes a new state (read_state is called only then).
    context: anything build_row wants read_state or layer_hooks to see (free-form).
    """

    embeds: torch.Tensor
    allowed: torch.Tensor
    positions: torch.Tensor
    tokens: slice
    parts: dict[str, slice]
    write: bool
    context: dict[str, Any] = field(default_factory=dict)

    @property
    def length(self) -> int:
        return int(self.embeds.shape[1])


@dataclass(frozen=True)
class MemoryOption:
    """One setting a memory type reads from RMTConfig.memory_options (MemoryType.option_specs).

    name: the key; kind: bool or int; default: the value when it is left out; meaning: a phrase for
    help texts and app boxes; minimum: the smallest int allowed; by_weights: a checkpoint's weights fix
    it (a tensor's shape or a table's rows), so a loader reads it from them and refuses another value.
    """

    name: str
    kind: type
    default: Any
    meaning: str
    minimum: int = 1
    by_weights: bool = False

    @property
    def allowed(self) -> str:
        """What values are allowed, in words ("true or false", "an integer >= 1")."""
        return "true or false" if self.kind is bool else f"an integer >= {self.minimum}"

    def problem(self, value: Any) -> str | None:
        """Why `value` is not allowed for this option ("d_mem must be an integer >= 1, got '64'"), or None."""
        if self.kind is bool:
            ok = isinstance(value, bool)
        else:
            ok = isinstance(value, int) and not isinstance(value, bool) and value >= self.minimum
        return None if ok else f"{self.name} must be {self.allowed}, got {value!r}"


class MemoryType:
    """Base class of a memory type; see the module docstring for the protocol.

    Subclasses MUST implement: initial_state, state_spec, build_row, read_state, row_length.
    They MAY override: layer_hooks (memory inside the layers), detach / keep_where /
    state_to_arrays / state_from_arrays (when the state is not a tensor or a tuple / list /
    dict of tensors), row_labels, parts, edit_state and supported_edits, keeps_state_on_padding,
    state_history (how forward keeps its states: a large state may keep its writes and be written in place).
    Every method gets and returns tensors on the model's device in the model's dtype unless
    it says otherwise.
    """

    name: ClassVar[str] = ""  # set by register_memory
    supported_edits: ClassVar[tuple[str, ...]] = ("reset", "zero")  # names from EDITS
    # The memory_options this type reads, by name; None: not declared (check_config alone decides),
    # {}: it reads none, so any given is refused by name.
    option_specs: ClassVar[dict[str, MemoryOption] | None] = None
    # memory_options names that ask for a variant this type does not implement -> that variant, in words
    # (refused when set to anything but off: False, None, 0).
    refused_options: ClassVar[dict[str, str]] = {}

    def __init__(self, model: Any) -> None:
        # A plain attribute (no submodule): the model owns the parameters, the type only runs them.
        self.model = model

    # ------------------------------------------------------------------ the config (no model yet)
    @classmethod
    def check_config(cls, config: Any) -> None:
        """Raise ConfigError for an RMTConfig (its memory_options above all) this type cannot run;
        called by RMTConfig.validate, before any backbone exists. Default: check_options."""
        cls.check_options(config.memory_options)

    @classmethod
    def option_problem(cls, name: str, value: Any) -> str | None:
        """Why memory_options {name: value} is refused by this type, or None: a variant in refused_options
        that is switched on, a name option_specs does not declare (when it declares them), a value outside
        what the option allows (MemoryOption.problem)."""
        if name in cls.refused_options:
            if value in (False, None, 0):
                return None
            return (f"{name}={value!r} asks for {cls.refused_options[name]}, which RMT Lens's {cls.name} memory "
                    f"does not implement: remove {name!r}")
        if cls.option_specs is None:
            return None
        if name not in cls.option_specs:
            known = sorted(cls.option_specs)
            return (f"unknown option {name!r} for the {cls.name} memory; "
                    + (f"known options are {', '.join(known)}" if known else "it takes no memory_options"))
        return cls.option_specs[name].problem(value)

    @classmethod
    def check_options(cls, options: Mapping[str, Any]) -> None:
        """Raise ConfigError naming every entry of `options` (memory_options) that option_problem refuses."""
        problems = [why for name, value in options.items() if (why := cls.option_problem(name, value))]
        if problems:
            raise ConfigError(f"memory_options: {'; '.join(problems)}.")

    @classmethod
    def segment_length(cls, config: Any) -> int:
        """Rows of one full segment as the backbone sees it, from the config alone (RMTConfig.segment_length;
        positions advance by it per segment when reset_positions=False). Default: the RMT's
        [read m | tokens L | write m], L + 2m."""
        return int(config.segment_size) + 2 * int(config.num_mem_tokens)

    # ------------------------------------------------------------------ state
    def initial_state(self, batch: int) -> State:
        """The state before the first segment for `batch` samples (learned or fixed)."""
        raise NotImplementedError

    def state_spec(self) -> dict[str, tuple[str, ...]]:
        """Names of the state's arrays and their axes (one sample, no batch axis), in order.

        E.g. TokenMemory: {"memory": ("slot", "hidden")}; an associative memory:
        {"A": ("layer", "feature", "hidden"), "z": ("layer", "feature")}. Axis names are the
        observables table's words ("slot", "hidden", "layer", ...)."""
        raise NotImplementedError

    def detach(self, state: State) -> State:
        """The state cut from the autograd graph (truncated BPTT). Default: every tensor detached."""
        return map_state(lambda t: t.detach(), state)

    def keep_where(self, keep_new: torch.Tensor, new: State, old: State) -> State:
        """Per sample: `new` where keep_new (batch,) bool is True, else `old` (a sample whose
        segment is all padding keeps its state). Default: torch.where on every tensor pair."""
        return _tree_map2(lambda n, o: torch.where(keep_new.view((-1,) + (1,) * (n.dim() - 1)), n, o), new, old)

    def state_to_arrays(self, state: State, index: int = 0) -> StateArrays:
        """Sample `index` of a state as float32 numpy arrays named by state_spec (copies, on the host).

        Default: the state's tensors in state_spec order (a tensor state has one name)."""
        tensors = state_tensors(state)
        names = list(self.state_spec())
        if len(tensors) != len(names):
            raise ArgumentError(f"memory type {self.name!r}: state has {len(tensors)} tensors, state_spec names "
                                f"{len(names)}; override state_to_arrays.")
        return {n: t[index].detach().float().cpu().numpy() for n, t in zip(names, tensors)}

    def state_from_arrays(self, arrays: StateArrays, batch: int = 1) -> State:
        """A state (on the model's device and dtype, `batch` copies) from one sample's named arrays.

        Raises ArgumentError naming a missing array or a wrong shape. Default: the inverse of
        state_to_arrays for a state shaped like initial_state's."""
        template = self.initial_state(1)
        names = list(self.state_spec())
        tensors = state_tensors(template)
        values = []
        for name, like in zip(names, tensors):
            if name not in arrays:
                raise ArgumentError(f"The memory state needs array {name!r} (memory type {self.name!r} has "
                                    f"{names}).")
            value = np.asarray(arrays[name], dtype=np.float32)
            if tuple(value.shape) != tuple(like.shape[1:]):
                raise ArgumentError(f"Memory state array {name!r} must have shape {tuple(like.shape[1:])} "
                                    f"({', '.join(self.state_spec()[name])}), got {tuple(value.shape)}.")
            tensor = torch.as_tensor(value, device=like.device).to(like.dtype).unsqueeze(0)
            values.append(tensor.expand(batch, *tensor.shape[1:]))
        return _rebuild(template, values)

    # ------------------------------------------------------------------ running one segment
    def row_length(self, n_tokens: int, write: bool = True) -> int:
        """Rows the backbone sees for a segment of n_tokens (positions a row needs)."""
        raise NotImplementedError

    def build_row(self, state: State, embeds: torch.Tensor, token_valid: torch.Tensor | None, write: bool,
                  segment_index: int) -> SegmentRow:
        """The row for one segment.

        state: the state entering the segment (batch first). embeds: (batch, L, d) token
        embeddings. token_valid: (batch, L) bool, False at right padding (None: all valid).
        write: whether the segment should write a new state. segment_index: the segment's
        place in the document (positions may continue across segments)."""
        raise NotImplementedError

    def layer_hooks(self, state: State, row: SegmentRow) -> ContextManager[None]:
        """A context manager active while the backbone runs the row (and, in generate, while it
        decodes new tokens from the cache): hook the layers here (torch forward (pre-)hooks on
        the backbone's blocks) and remove the hooks on exit. Default: no hooks."""
        return contextlib.nullcontext()

    def read_state(self, state: State, row: SegmentRow, hidden: torch.Tensor,
                   token_valid: torch.Tensor | None) -> State:
        """The state the segment writes, from the row's final hidden states (batch, n, d, after
        the final norm) and/or what layer_hooks collected. Called only when row.write.
        Samples whose segment is all padding are handled by run_segment (keep_where)."""
        raise NotImplementedError

    def state_history(self) -> "StateHistory | None":
        """How RMTModel.forward keeps the states its segments write (RMTOutput.memory_out). None (the
        default): as a list of the states themselves. A type may return a StateHistory that keeps them
        another way (smaller), rebuilding each exactly when it is read; forward then hands every state
        its own segments wrote over to the next segment (run_segment(reuse_state=True))."""
        return None

    def run_segment(
        self,
        state: State | None,
        token_ids: torch.Tensor,
        token_valid: torch.Tensor | None = None,
        write: bool = True,
        segment_index: int = 0,
        attention_probe: Callable[[int, torch.Tensor], None] | None = None,
        query_key_probe: Callable[[int, "_attention.QueryKey"], None] | None = None,
        output_hidden_states: bool = False,
        inputs_embeds: torch.Tensor | None = None,
        compute_logits: bool = True,
        memory_probe: MemoryProbe | None = None,
        reuse_state: bool = False,
    ) -> SegmentOutput:
        """Run one segment through the backbone with this memory (see RMTModel.run_segment).

        memory_probe: given to the type's hooks as row.context[MEMORY_PROBE] (see MemoryProbe).
        reuse_state: the caller hands `state` over (nothing will read it again), so the type may
            write the new state into its memory (row.context[REUSE_STATE], set only when every sample
            has a token: a sample whose segment is all padding keeps its old state)."""
        model = self.model
        batch = token_ids.shape[0]
        if state is None:
            state = self.initial_state(batch)
        if inputs_embeds is None:
            inputs_embeds = model.backbone.get_input_embeddings()(token_ids)  # (batch, L, d)
        row = self.build_row(state, inputs_embeds, token_valid, write, segment_index)
        if memory_probe is not None:
            row.context[MEMORY_PROBE] = memory_probe
        keep = segment_keeps(token_valid)
        if reuse_state and keep is None:
            row.context[REUSE_STATE] = True
        mask = additive_mask(row.allowed, row.embeds.dtype).expand(batch, -1, -1, -1)  # (batch, 1, n, n)
        kwargs: dict[str, Any] = {}
        if attention_probe is not None:
            kwargs[_attention.PROBE_KWARG] = attention_probe
        if query_key_probe is not None:
            kwargs[_attention.QUERY_KEY_PROBE_KWARG] = query_key_probe
        with self.layer_hooks(state, row):
            out = model.backbone.base_model(
                inputs_embeds=row.embeds,
                attention_mask=mask,
                position_ids=row.positions,
                use_cache=False,
                output_hidden_states=output_hidden_states,
                **kwargs,
            )
        device = row.embeds.device
        hidden = out.last_hidden_state.to(device)  # (batch, n, d), after the final norm (device-mapped: moved back)
        token_hidden = hidden[:, row.tokens]  # (batch, L, d)
        logits = model.backbone.get_output_embeddings()(token_hidden) if compute_logits else None
        memory_out = self.read_state(state, row, hidden, token_valid) if row.write else None
        if memory_out is not None and keep is not None:
            # A sample whose segment is all padding keeps the state it had.
            memory_out = self.keep_where(keep, memory_out, state)
        hidden_states = tuple(h.to(device) for h in out.hidden_states) if output_hidden_states else None
        return SegmentOutput(logits=logits, memory_out=memory_out, token_hidden=token_hidden,
                             hidden_states=hidden_states, row=row)

    # ------------------------------------------------------------------ writes (compact traces)
    def write_spec(self) -> dict[str, tuple[str, ...]] | None:
        """None (the default): a trace stores each segment's whole state (state_out). Else the
        names and axes (one sample, no batch axis; the first axis "layer") of the arrays that
        one segment's write is made of: the type's hooks pass them, per layer, to a memory probe
        in each "write" event, and apply_write rebuilds the next state from them exactly."""
        return None

    def apply_write(self, state: State, arrays: StateArrays) -> State:
        """The state after a segment, from the state before it (batch 1) and the segment's write
        (named arrays of write_spec, one sample), by the same code the segment ran: equal to the
        state the segment wrote. Only for types whose write_spec is not None."""
        raise NotImplementedError(f"memory type {self.name!r} stores whole states (write_spec is None)")

    # ------------------------------------------------------------------ labels and edits
    def row_labels(self, token_labels: list[str], write: bool = True) -> list[str]:
        """Labels of a segment row's rows (attention views), given its tokens' labels.
        Default: the tokens only (a memory that adds no rows)."""
        return list(token_labels)

    def parts(self) -> list[str]:
        """Labels of the parts of the state an intervention may replace one at a time
        (TokenMemory: slots "M0".."M{m-1}"); empty when the type supports no "replace"."""
        return []

    def edit_state(self, arrays: StateArrays, edit: str, *, part: int | None = None,
                   source: StateArrays | None = None, seed: int = 0) -> StateArrays:
        """One sample's state (named arrays) after an edit; the input is not changed.

        edit: one of supported_edits. "reset": initial_state; "zero": every array zero;
        "replace": part `part` (an index into parts()) taken from `source` (another state of the
        same type); "shuffle": the parts permuted (seeded, never the identity).
        Raises ArgumentError for an edit this type does not support (naming the ones it does)."""
        if edit not in self.supported_edits:
            raise ArgumentError(f"Memory type {self.name!r} supports the edits {list(self.supported_edits)}, "
                                f"not {edit!r}.")
        if edit == "reset":
            return self.state_to_arrays(self.initial_state(1))
        if edit == "zero":
            return {name: np.zeros_like(value) for name, value in arrays.items()}
        raise NotImplementedError(f"memory type {self.name!r} lists edit {edit!r} but does not implement it")


def segment_keeps(token_valid: torch.Tensor | None) -> torch.Tensor | None:
    """(batch,) bool, the samples whose segment has a real token (token_valid (batch, L) bool), or None when
    every sample has one (no sample keeps its old state: MemoryType.run_segment skips keep_where)."""
    if token_valid is None:
        return None
    keep = token_valid.any(dim=1)
    return None if bool(keep.all()) else keep


class StateHistory(Sequence):
    """The states an RMTModel.forward's segments wrote, in order (RMTOutput.memory_out), as a memory
    type keeps them (MemoryType.state_history): a read-only sequence; history[k] is the state segment
    k wrote, equal to the one forward carried on (the type rebuilds it exactly).

    forward calls add(out, keep, entering) once per writing segment, in order: out its SegmentOutput,
    keep (batch,) bool of the samples whose segment had a token (None: all of them; the others kept the
    state they had), entering the state the segment was given when it is not the previous segment's
    write (the first segment, or after a memory reset), else None."""

    def add(self, out: SegmentOutput, keep: torch.Tensor | None, entering: State | None) -> None:
        raise NotImplementedError

    def __len__(self) -> int:
        raise NotImplementedError

    def __getitem__(self, index):  # noqa: ANN001 (int or slice, as a list)
        raise NotImplementedError


# ---------------------------------------------------------------------- state trees
def state_tensors(state: State) -> list[torch.Tensor]:
    """The tensors of a state (a tensor, or tuples / lists / dicts of them), in order."""
    if isinstance(state, torch.Tensor):
        return [state]
    if isinstance(state, dict):
        return [t for key in state for t in state_tensors(state[key])]
    if isinstance(state, (tuple, list)):
        return [t for item in state for t in state_tensors(item)]
    raise ArgumentError(f"A memory state must be tensors (or tuples / lists / dicts of them), got "
                        f"{type(state).__name__}: override the MemoryType state methods for it.")


def _rebuild(template: State, leaves: list[torch.Tensor]) -> State:
    """`template`'s structure with its tensors replaced by `leaves`, in order."""
    it = iter(leaves)

    def build(node: State) -> State:
        if isinstance(node, torch.Tensor):
            return next(it)
        if isinstance(node, dict):
            return {key: build(value) for key, value in node.items()}
        return type(node)(build(item) for item in node)

    return build(template)


def map_state(fn: Callable[[torch.Tensor], torch.Tensor], state: State) -> State:
    """The state with fn applied to each of its tensors (the same structure)."""
    return _rebuild(state, [fn(t) for t in state_tensors(state)])


def concat_states(states: list[State]) -> State:
    """States of one structure (any memory type) joined along their batch axis: batch sum of theirs."""
    return _rebuild(states[0], [torch.cat(parts) for parts in zip(*(state_tensors(s) for s in states))])


def state_sample(state: State, index: int) -> State:
    """Sample `index` of a batched state (any memory type), as a batch of one (views)."""
    return map_state(lambda t: t[index:index + 1], state)


def _tree_map2(fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], a: State, b: State) -> State:
    return _rebuild(a, [fn(x, y) for x, y in zip(state_tensors(a), state_tensors(b))])
