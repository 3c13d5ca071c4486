"""RMTModel: any Hugging Face causal LM run as a Recurrent Memory Transformer.

The model runs an unmodified backbone segment by segment and carries a memory state from
each segment to the next. What that state is, how a segment's row is built around the
tokens and how the new state is read back is the memory type's (engine/memory/: the
protocol in base.py, the RMT's [read | tokens | write] slots in tokens.py), picked by
RMTConfig.memory from the registry. This module drives it: forward (BPTT over segments),
iter_segments, generate, and the checks on inputs.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, Callable, Collection, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from . import attention as _attention  # registers the attention implementations
from .config import RMTConfig
from ..checks import check_float, check_int
from ..errors import ArgumentError, ConfigError
from .masks import additive_mask
from .padding import check_prefix_valid, roll_rows, row_spans
from .memory import MemoryType, SegmentOutput, State, memory_class, segment_keeps


@dataclass
class RMTOutput:
    """What a forward pass over a batch of long inputs returns."""

    logits: torch.Tensor  # (batch, total tokens, vocab); memory positions removed
    loss: torch.Tensor | None = None  # one shifted cross-entropy over all segments
    # Per writing segment: the state it wrote (TokenMemory: (batch, m, d)). A list, or the memory type's
    # StateHistory (MemoryType.state_history: an associative memory without grad keeps each segment's
    # write, 11x smaller than its state, and rebuilds the state bit for bit when it is read).
    memory_out: Sequence[State] = field(default_factory=list)

    @property
    def memory_states(self) -> Sequence[State]:
        """The former name of memory_out (one entry per segment; Trace.memory_states() has S + 1)."""
        return self.memory_out


class RMTModel(nn.Module):
    """A backbone plus a memory type (self.memory: a MemoryType), run segment by segment."""

    def __init__(self, backbone: nn.Module, config: RMTConfig, tokenizer: Any = None) -> None:
        super().__init__()
        config.validate()
        self.backbone = backbone
        self.config = config
        self.tokenizer = tokenizer
        self.name: str | None = None  # checkpoint name once loaded or saved
        self._weights_hash: str | None = None
        # The memory type registers its parameters on this model (TokenMemory: initial_memory).
        self.memory: MemoryType = memory_class(config.memory)(self)
        self._check_backbone_fits()
        backbone.set_attn_implementation(_attention.IMPLEMENTATIONS[config.attn_implementation])

    # ------------------------------------------------------------------ building
    @classmethod
    def from_backbone(cls, backbone: nn.Module, config: RMTConfig, tokenizer: Any = None) -> "RMTModel":
        """Wrap a Hugging Face causal LM (GPT-2, Llama family, ...) as an RMT."""
        return cls(backbone, config, tokenizer)

    def _check_backbone_fits(self) -> None:
        if not hasattr(self.backbone, "get_output_embeddings") or self.backbone.get_output_embeddings() is None:
            raise ConfigError("The backbone has no LM head: pass a causal LM (e.g. GPT2LMHeadModel, LlamaForCausalLM).")
        limit = self.max_positions
        row = self.memory.row_length(self.config.segment_size)
        if limit is not None and self.config.reset_positions and row > limit:
            raise ConfigError(
                f"A segment row needs {row} positions (segment_size {self.config.segment_size} and the "
                f"{self.config.memory} memory's rows: {self.config.num_mem_tokens} memory slots) "
                f"but the backbone holds {limit}. Use shorter segments or fewer memory slots."
            )

    # ------------------------------------------------------------------ facts
    @property
    def hidden_size(self) -> int:
        return int(self.backbone.config.hidden_size)

    @property
    def num_layers(self) -> int:
        return int(self.backbone.config.num_hidden_layers)

    @property
    def num_heads(self) -> int:
        return int(self.backbone.config.num_attention_heads)

    @property
    def vocab_size(self) -> int:
        return int(self.backbone.get_output_embeddings().weight.shape[0])

    @property
    def max_positions(self) -> int | None:
        cfg = self.backbone.config
        if getattr(cfg, "model_type", "") == "gpt2":
            return int(cfg.n_positions)
        return None  # rotary backbones have no hard position table

    @property
    def max_input_tokens(self) -> int | None:
        """Most tokens one input may hold, or None for no limit.

        Only a checkpoint with reset_positions=False on a backbone with a position table (GPT-2)
        has one: its positions grow by segment_length() per segment until the table ends."""
        limit = self.max_positions
        if limit is None or self.config.reset_positions:
            return None
        row, extra, size = self.config.segment_length(), self.memory.row_length(0), self.config.segment_size
        full, rest = divmod(limit, row)
        return full * size + max(0, min(size, rest - extra))  # extra: the rows a memory adds to a segment

    def check_input_length(self, n_tokens: int, what: str = "input") -> None:
        """Raise ArgumentError when an input of n_tokens does not fit max_input_tokens."""
        most = self.max_input_tokens
        if most is not None and n_tokens > most:
            raise ArgumentError(
                f"The {what} has {n_tokens:,} tokens but this model takes at most {most:,}: it was built with "
                f"reset_positions=False, so positions grow by {self.config.segment_length()} per segment and the "
                f"backbone holds {self.max_positions} positions. Give it at most {most:,} tokens (CLI: --max-tokens "
                f"{most}), or use a checkpoint with reset_positions=True (positions restart in every segment)."
            )

    def check_token_ids(self, input_ids: torch.Tensor, name: str = "input_ids") -> None:
        """Raise ArgumentError unless every id indexes the vocabulary."""
        if input_ids.is_floating_point() or input_ids.is_complex() or input_ids.dtype == torch.bool:
            raise ArgumentError(f"{name} must hold integer token ids, got dtype {input_ids.dtype}.")
        if input_ids.numel() and (int(input_ids.min()) < 0 or int(input_ids.max()) >= self.vocab_size):
            raise ArgumentError(
                f"{name} must be token ids in 0..{self.vocab_size - 1} (the model's vocabulary), got values "
                f"{int(input_ids.min())}..{int(input_ids.max())}. Encode text with the model's own tokenizer.")

    def _anchor(self) -> torch.Tensor:
        """The memory's first parameter (on the first device), else the input embeddings' weight."""
        for name, parameter in self.named_parameters():
            if not name.startswith("backbone."):
                return parameter
        return self.backbone.get_input_embeddings().weight

    @property
    def device(self) -> torch.device:
        return self._anchor().device

    @property
    def dtype(self) -> torch.dtype:
        return self._anchor().dtype

    def weights_hash(self) -> str:
        """SHA-256 (16 hex digits) of every parameter: the model's identity in traces and exports."""
        if self._weights_hash is None:
            digest = hashlib.sha256()
            for name, tensor in sorted(self.state_dict().items()):
                digest.update(name.encode())
                digest.update(tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
            self._weights_hash = digest.hexdigest()[:16]
        return self._weights_hash

    def invalidate_hash(self) -> None:
        """Call after changing weights (training) so the identity is recomputed."""
        self._weights_hash = None

    # ------------------------------------------------------------------ segments
    def segment_bounds(self, n_tokens: int, segment_size: int | None = None) -> list[tuple[int, int]]:
        """(start, end) token offsets of each segment of an n-token input (segment_size: see forward)."""
        size = self.check_segment_size(segment_size)
        return [(start, min(start + size, n_tokens)) for start in range(0, n_tokens, size)]

    def check_segment_size(self, segment_size: int | None) -> int:
        """The segment size a call runs with: config.segment_size, or `segment_size` when given.

        Another size than the configured one is for models whose positions restart in every
        segment (reset_positions=True; the algorithmic tasks vary it per sample count) and whose
        row [read | tokens | write] still fits the backbone's positions. Raises ArgumentError
        otherwise. The config is never changed: a model may be shared between callers."""
        if segment_size is None or segment_size == self.config.segment_size:
            return self.config.segment_size
        limit = self.max_positions
        extra = self.memory.row_length(0)  # the rows a memory adds to a segment's tokens
        size = check_int(segment_size, "segment_size", 1, None if limit is None else limit - extra,
                         fix=f"A row of segment_size + {extra} memory rows must fit the backbone's {limit} positions.")
        if not self.config.reset_positions:
            raise ArgumentError(
                f"segment_size={size} differs from the model's {self.config.segment_size}, but this model was built "
                "with reset_positions=False: its positions depend on the segment size it was trained with. "
                "Leave segment_size unset.")
        return size

    def initial_state(self, batch: int) -> State:
        """The memory type's state before the first segment, for `batch` samples."""
        return self.memory.initial_state(batch)

    def initial_memory_batch(self, batch: int) -> State:
        """The former name of initial_state (TokenMemory: (batch, m, d))."""
        return self.memory.initial_state(batch)

    def run_segment(
        self,
        memory: State | None,
        token_ids: torch.Tensor,
        token_valid: torch.Tensor | None = None,
        write: bool = True,
        segment_index: int = 0,
        attention_probe: Callable[[int, torch.Tensor], None] | None = None,
        query_key_probe: Callable[[int, _attention.QueryKey], None] | None = None,
        output_hidden_states: bool = False,
        inputs_embeds: torch.Tensor | None = None,
        compute_logits: bool = True,
        memory_probe: Callable[[str, int, dict[str, torch.Tensor]], None] | None = None,
        reuse_state: bool = False,
    ) -> SegmentOutput:
        """Run one segment through the backbone with the memory type (MemoryType.run_segment).

        memory: the state carried in (None = the initial state); TokenMemory: (batch, m, d).
        token_ids: (batch, L) ids; token_valid: (batch, L) bool, False at right padding.
        write: False runs the segment without writing a new state (memory_out None).
        inputs_embeds: optional (batch, L, d) token embeddings used instead of token_ids
            (attribution methods perturb them).
        compute_logits: False skips the LM head (forward applies it once to all segments).
        memory_probe: called by the memory type's hooks with what it reads and writes
            (engine.memory.MemoryProbe; per call, so a model shared between sessions is never modified).
        attention_probe / query_key_probe: see rmt_core.engine.attention (the attention weights
            per layer, computed eagerly; or their queries, keys and mask, SDPA left fused).
        reuse_state: True hands `memory` over: nothing reads it again, so the memory type may write
            the new state into its memory (forward does, for the states its own segments wrote).
        A re-run of a traced segment goes through Trace.replay, which calls this.
        Raises ArgumentError when token_valid is not True on a prefix of each row.
        """
        if token_valid is not None:
            check_prefix_valid(token_valid)
        return self.memory.run_segment(
            memory, token_ids, token_valid, write=write, segment_index=segment_index,
            attention_probe=attention_probe, query_key_probe=query_key_probe,
            output_hidden_states=output_hidden_states, inputs_embeds=inputs_embeds, compute_logits=compute_logits,
            memory_probe=memory_probe, reuse_state=reuse_state)

    # ------------------------------------------------------------------ forward
    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        memory: torch.Tensor | None = None,
        reset_memory: bool | Collection[int] = False,
        segment_size: int | None = None,
    ) -> RMTOutput:
        """Run a batch of long inputs segment by segment.

        input_ids: (batch, T); attention_mask: (batch, T), 0 at padding, which may be at either
            end of a row (left, right or both; engine/padding.py): each row gets its own results
            on its real tokens, memory included, as when run alone (a left-padded batch runs with
            each row's tokens moved to the front; logits come back in the row's own places, and
            memory_out[k] is each row's state after its own k-th segment). A mask with a hole
            (a 0 between real tokens) is refused with ArgumentError.
        labels: (batch, T) next-token targets aligned with input_ids (shifted inside), -100 ignored.
        memory: the state before the first segment (default: the initial state); TokenMemory: (batch, m, d).
        reset_memory: True = initial state before every segment (the no-memory baseline);
            a collection of segment indices = reset before those segments only.
        segment_size: tokens per segment for this call only (default config.segment_size; see
            check_segment_size). Raises ConfigError / ArgumentError on malformed inputs.
        """
        if not isinstance(input_ids, torch.Tensor) or input_ids.dim() != 2:
            shape = tuple(input_ids.shape) if isinstance(input_ids, torch.Tensor) else type(input_ids).__name__
            raise ConfigError(f"input_ids must be a (batch, tokens) tensor, got {shape}.")
        batch, total = input_ids.shape
        if total == 0:
            raise ConfigError("input_ids holds no tokens.")
        self.check_token_ids(input_ids)
        self.check_input_length(total)
        for other, value in (("attention_mask", attention_mask), ("labels", labels)):
            if value is not None and tuple(value.shape) != (batch, total):
                raise ArgumentError(f"{other} must have the shape of input_ids {(batch, total)}, "
                                    f"got {tuple(value.shape)}.")
        if attention_mask is not None:
            spans = row_spans(attention_mask)
            if spans.left_padded:  # each row's tokens to the front: it then segments as when run alone
                shift = spans.start
                out = self.forward(roll_rows(input_ids, shift), roll_rows(attention_mask, shift),
                                   None if labels is None else roll_rows(labels, shift), memory, reset_memory,
                                   segment_size)
                out.logits = roll_rows(out.logits, -shift)  # back into each row's own places
                return out
        valid = attention_mask.bool() if attention_mask is not None else None
        bounds = self.segment_bounds(total, segment_size)
        depth = self.config.bptt_depth
        state = memory if memory is not None else self.memory.initial_state(batch)
        history = self.memory.state_history()  # None: memory_out keeps every state itself
        written: list[State] = []
        token_hidden = []
        owned = False  # whether `state` was written by this call and is kept nowhere else (history only)
        entering = state  # the state entering a segment when it is not the previous segment's write
        for index, (start, end) in enumerate(bounds):
            if reset_memory is True or (not isinstance(reset_memory, bool) and index in reset_memory):
                state, owned = self.memory.initial_state(batch), False
                entering = state
            seg_valid = valid[:, start:end] if valid is not None else None
            out = self.run_segment(state, input_ids[:, start:end], seg_valid, segment_index=index, compute_logits=False,
                                   reuse_state=owned)
            token_hidden.append(out.token_hidden)
            if out.memory_out is not None:
                if history is None:
                    written.append(out.memory_out)
                else:
                    history.add(out, segment_keeps(seg_valid), entering)
                state, owned, entering = out.memory_out, history is not None, None
                if depth is not None and index < len(bounds) - depth:
                    state = self.memory.detach(state)  # truncated BPTT: only the last `depth` segments unroll
        # One LM-head call over the concatenated hidden states: concatenating (batch, T, d) is
        # vocab/d times cheaper than concatenating per-segment logits.
        all_logits = self.backbone.get_output_embeddings()(torch.cat(token_hidden, dim=1))  # (batch, T, vocab)
        loss = shifted_cross_entropy(all_logits, labels, attention_mask) if labels is not None else None
        return RMTOutput(logits=all_logits, loss=loss, memory_out=written if history is None else history)

    def iter_segments(
        self, input_ids: torch.Tensor, memory: torch.Tensor | None = None, segment_size: int | None = None
    ) -> Iterator[tuple[int, tuple[int, int], State, SegmentOutput]]:
        """Yield (index, (start, end), state_in, output) per segment of a (batch, T) input; no grad tricks."""
        state = memory if memory is not None else self.memory.initial_state(input_ids.shape[0])
        for index, (start, end) in enumerate(self.segment_bounds(input_ids.shape[1], segment_size)):
            out = self.run_segment(state, input_ids[:, start:end], segment_index=index)
            yield index, (start, end), state, out
            if out.memory_out is not None:
                state = out.memory_out

    # ------------------------------------------------------------------ generate
    @torch.no_grad()
    def generate(
        self,
        input_ids: torch.Tensor,
        max_new_tokens: int = 20,
        do_sample: bool = False,
        temperature: float = 1.0,
        top_k: int | None = None,
        eos_token_id: int | None = None,
        generator: torch.Generator | None = None,
        attention_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Continue each input: earlier segments write memory; the final segment is run without
        writing (TokenMemory: [read memory | prompt]) and new tokens extend it with a KV cache
        (the memory type's layer hooks stay active while they are decoded).

        input_ids: (batch, T). attention_mask: (batch, T), 0 at padding at either end of a row
            (left-padded prompts, as for Hugging Face generate); a row with padding is continued from
            its own real tokens, as when run alone (rows of different lengths run one at a time), and
            its new tokens follow the row as given. A mask with a hole is refused (ArgumentError).
        Returns (batch, T + new); rows that stop early at eos_token_id are filled with it.
        """
        if input_ids.dim() == 1:
            input_ids = input_ids.unsqueeze(0)
        if input_ids.dim() != 2:
            raise ArgumentError(f"input_ids must be (batch, tokens) or (tokens,), got shape {tuple(input_ids.shape)}.")
        if attention_mask is not None:
            if tuple(attention_mask.shape) != tuple(input_ids.shape):
                raise ArgumentError(f"attention_mask must have the shape of input_ids {tuple(input_ids.shape)}, "
                                    f"got {tuple(attention_mask.shape)}.")
            spans = row_spans(attention_mask)
            if bool((spans.length < input_ids.shape[1]).any()):
                return self._generate_rows(input_ids, spans, max_new_tokens, do_sample, temperature, top_k,
                                           eos_token_id, generator)
        batch, total = input_ids.shape
        if total == 0:
            raise ConfigError("generate needs at least one prompt token.")
        self.check_token_ids(input_ids)
        max_new_tokens = check_int(max_new_tokens, "max_new_tokens", 0, fix="It is how many tokens to add.")
        if do_sample:
            check_float(temperature, "temperature", 0.0, low_open=True, fix="Use 1.0 for the model's own distribution.")
        if top_k is not None:
            check_int(top_k, "top_k", 1, fix="Pass None to sample from the whole vocabulary.")
        if eos_token_id is not None:
            check_int(eos_token_id, "eos_token_id", 0, self.vocab_size - 1, fix="Pass None to never stop early.")
        bounds = self.segment_bounds(total)
        start, end = bounds[-1]
        limit = self.max_positions
        offset = 0 if self.config.reset_positions else (len(bounds) - 1) * self.config.segment_length()
        rows = self.memory.row_length(end - start, write=False)
        if limit is not None and offset + rows + max_new_tokens > limit:
            where = "" if not offset else f" starting at position {offset} (reset_positions=False)"
            raise ConfigError(
                f"Generating {max_new_tokens} tokens after a {end - start}-token final segment and "
                f"{rows - (end - start)} memory rows needs {rows + max_new_tokens} positions{where}; the backbone "
                f"holds {limit}. Generate fewer tokens or give a shorter prompt."
            )
        memory = self.memory.initial_state(batch)
        for index, (seg_start, seg_end) in enumerate(bounds[:-1]):
            written = self.run_segment(memory, input_ids[:, seg_start:seg_end], segment_index=index).memory_out
            memory = memory if written is None else written  # no write block (m == 0): the state stays
        prompt = input_ids[:, start:end]
        row = self.memory.build_row(memory, self.backbone.get_input_embeddings()(prompt), None, False, len(bounds) - 1)
        with self.memory.layer_hooks(memory, row):
            return self._decode(row, input_ids, max_new_tokens, do_sample, temperature, top_k, eos_token_id,
                                generator)

    def _generate_rows(self, input_ids: torch.Tensor, spans, max_new_tokens: int, do_sample: bool,
                       temperature: float, top_k: int | None, eos_token_id: int | None,
                       generator: torch.Generator | None) -> torch.Tensor:
        """generate for a padded batch: each row from its own real tokens, one at a time."""
        new_rows = []
        for b in range(input_ids.shape[0]):
            start, length = int(spans.start[b]), int(spans.length[b])
            if length == 0:
                raise ArgumentError(f"attention_mask row {b} has no real token: generate needs a prompt in every row.")
            alone = self.generate(input_ids[b:b + 1, start:start + length], max_new_tokens, do_sample, temperature,
                                  top_k, eos_token_id, generator)
            new_rows.append(alone[0, length:])
        width = max(len(r) for r in new_rows)
        fill = eos_token_id if eos_token_id is not None else 0
        new = torch.full((len(new_rows), width), fill, dtype=input_ids.dtype, device=input_ids.device)
        for b, row in enumerate(new_rows):
            new[b, :len(row)] = row
        return torch.cat([input_ids, new], dim=1) if width else input_ids

    def _decode(self, row, input_ids: torch.Tensor, max_new_tokens: int, do_sample: bool, temperature: float,
                top_k: int | None, eos_token_id: int | None, generator: torch.Generator | None) -> torch.Tensor:
        """generate's prompt pass over `row` (a SegmentRow that does not write) and its cached decoding."""
        batch, n, positions = input_ids.shape[0], row.length, row.positions
        embed = self.backbone.get_input_embeddings()
        head = self.backbone.get_output_embeddings()
        dtype, device = row.embeds.dtype, row.embeds.device
        out = self.backbone.base_model(
            inputs_embeds=row.embeds,
            attention_mask=additive_mask(row.allowed, dtype).expand(batch, -1, -1, -1),
            position_ids=positions,
            use_cache=True,
        )
        cache = out.past_key_values
        next_logits = head(out.last_hidden_state[:, -1])  # (batch, vocab)
        generated = []
        finished = torch.zeros(batch, dtype=torch.bool, device=device)
        for step in range(max_new_tokens):
            token = _pick_next(next_logits, do_sample, temperature, top_k, generator)
            if eos_token_id is not None:
                token = torch.where(finished, torch.full_like(token, eos_token_id), token)
                finished |= token == eos_token_id
            generated.append(token)
            if eos_token_id is not None and bool(finished.all()):
                break
            kv_len = n + step + 1
            out = self.backbone.base_model(
                inputs_embeds=embed(token).unsqueeze(1),
                attention_mask=torch.zeros(batch, 1, 1, kv_len, dtype=dtype, device=device),
                position_ids=positions[:, -1:] + step + 1,
                past_key_values=cache,
                use_cache=True,
            )
            cache = out.past_key_values
            next_logits = head(out.last_hidden_state[:, -1])
        if not generated:
            return input_ids
        return torch.cat([input_ids, torch.stack(generated, dim=1)], dim=1)

    # Tracing and saving live above the engine (rmt_core.tracing, rmt_core.io): say where they went.
    _MOVED = {"trace": "rmt_core.trace(model, text)", "trace_iter": "rmt_core.trace_iter(model, text)",
              "save_pretrained": "rmt_core.save(model, directory)"}

    def __getattr__(self, name: str) -> Any:
        # nn.Module resolves every submodule and parameter here (self.backbone on the hot path):
        # the moved names are looked at only once that lookup has failed.
        try:
            return super().__getattr__(name)
        except AttributeError:
            if name not in RMTModel._MOVED:
                raise
        raise AttributeError(f"RMTModel.{name} is now {RMTModel._MOVED[name]} (the engine knows nothing of "
                             "traces or files; see the package map in rmt_core/__init__.py).")


def _pick_next(
    logits: torch.Tensor, do_sample: bool, temperature: float, top_k: int | None, generator: torch.Generator | None
) -> torch.Tensor:
    if not do_sample:
        return logits.argmax(dim=-1)
    logits = logits.float() / max(temperature, 1e-6)
    if top_k is not None and top_k > 0:
        kth = torch.topk(logits, min(top_k, logits.shape[-1])).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    return torch.multinomial(torch.softmax(logits, dim=-1), 1, generator=generator).squeeze(-1)


def shifted_cross_entropy(
    logits: torch.Tensor, labels: torch.Tensor, attention_mask: torch.Tensor | None = None
) -> torch.Tensor:
    """One mean cross-entropy over all segments: position t predicts label t+1; -100 and padding ignored."""
    labels = labels.to(logits.device)
    if attention_mask is not None:
        labels = labels.masked_fill(attention_mask.to(labels.device) == 0, -100)
    shift_logits = logits[:, :-1].reshape(-1, logits.shape[-1])
    shift_labels = labels[:, 1:].reshape(-1)
    if bool((shift_labels != -100).any()):
        return F.cross_entropy(shift_logits.float(), shift_labels, ignore_index=-100)
    return shift_logits.sum() * 0.0  # nothing to predict: a zero that keeps the graph
