"""AssociativeMemory ("associative"): the Associative Recurrent Memory Transformer's memory.

Source: Rodkin, Kuratov, Bulatov, Burtsev, "Associative Recurrent Memory Transformer" (2024,
arXiv 2407.04841, Eqs. 1-4) and the authors' code (RodkinIvan/associative-recurrent-memory-
transformer, modeling_amt/language_modeling.py: branch framework_accel = "FA" maths, branch
experimental = "EXP" options); facts restated in shared/docs/armt-reference.md. Written here
from those facts, not copied.

Row per segment (the unmodified backbone sees it through ``inputs_embeds``)::

    [ segment tokens (L) | memory tokens P (M) ]      plain causal mask

P is the learned ``model.memory_tokens`` (M, d), the SAME in every segment: the memory tokens carry
no state. Tokens never see memory tokens; memory tokens see the segment's real tokens (and earlier
memory tokens). All recurrence lives in each layer l's associative state (A_l, z_l):

    read   (every row of block l's input H, once the sample has been written to):
           H <- H + y,  y = phi(W_mq h)^T A_l / (z_l^T phi(W_mq h) + 1e-5)
    write  (from block l's outputs O of the M memory tokens, all at once, against the OLD state):
           k_i = W_mk o_i, v_i = W_mv o_i, beta_i = sigmoid(W_mb o_i + b)
           first write: vbar_i = 0, gamma_i = 1; later: den_i = z^T phi(k_i) + 1e-5,
           vbar_i = phi(k_i)^T A / den_i, gamma_i = clip(1 - den_i / (|phi(k_i)|^2 + eps), 0, 1) (no grad)
           A_l += sum_i phi(k_i) (beta_i * (v_i - vbar_i))^T ;  z_l += sum_i gamma_i phi(k_i)

phi is DPFP of order nu (u = [relu(x); relu(-x)], phi = concat_j u * roll(u, j), j = 1..nu).
memory_options (all optional; ``AssociativeOptions``): d_mem (64), nu (3), correction (True: the
gamma above; False: gamma = 1), n_heads (1: q, k split into d_mem / h, values into d / h, one (A, z)
per head), use_denom (True; False: y = phi(q)^T A and vbar = phi(k)^T A, z unused), gating (False;
True: beta per channel, W_mb: d -> d), normalize_features (False = FA maths; True = EXP maths:
phi L2-normalised and no epsilon in gamma's denominator), wrap_pos (False; True, GPT-2 only: the
memory tokens take M position rows added at the end of ``wpe``, as the FA cell's default does).

State (batch first): {"A": (batch, layers, heads, F / h, d / h), "z": (batch, layers, heads, F / h),
"written": (batch, 1) segments written so far} with F = 2 nu d_mem. A sample reads only once its
"written" count is above 0 (a per-sample flag, so replay from a stored state and padded batches are
right). Parameters live ON THE MODEL: ``memory_tokens`` and ``associative_layers.{l}.W_mq / W_mk /
W_mv / W_mb``. Generate (a row that does not write) applies the reads to the prompt and to every
decoded token, and writes nothing.

Cost (the state is large: 4.7 MB per segment for the shipped ARMT at batch 8): the write hooks keep
each layer's memory-token outputs and projections, and read_state writes all layers at once (one
delta_terms and one batched add_writes over (batch, layers, heads)). Without grad, RMTModel.forward
keeps its states as each segment's write terms (AssociativeHistory, rebuilt bit for bit on reading)
and hands each state it wrote to the next segment, which adds its write into that state's own A and
z (run_segment(reuse_state=True)); a state given by a caller is never written. With grad every state
is a new tensor (autograd keeps the old ones; BPTT runs through A). benchmarks/bench_armt.py measures
it against the bare backbone.
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import operator
import threading
import weakref
from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ...errors import ArgumentError, ConfigError
from ..backbones import decoder_layers
from ..masks import allowed_attention
from .base import (MEMORY_PROBE, REUSE_STATE, MemoryOption, MemoryType, SegmentOutput, SegmentRow, StateArrays,
                   StateHistory)

READ_EPS = 1e-5  # the denominator's epsilon in reads and in vbar (both code versions)
GAMMA_EPS_FA = 1e-5  # gamma's denominator epsilon in framework_accel; experimental has none


@dataclass(frozen=True)
class AssociativeOptions:
    """An associative memory's settings (RMTConfig.memory_options, defaults filled in); see the module docstring."""

    d_mem: int = 64
    nu: int = 3
    correction: bool = True
    n_heads: int = 1
    use_denom: bool = True
    gating: bool = False
    normalize_features: bool = False
    wrap_pos: bool = False

    @property
    def feature_size(self) -> int:
        """F = 2 nu d_mem: the size of phi over all heads (384 for the paper's d_mem 64, nu 3)."""
        return 2 * self.nu * self.d_mem

    @property
    def gamma_eps(self) -> float:
        return 0.0 if self.normalize_features else GAMMA_EPS_FA


# What each option means (help texts, app boxes); by_weights: a checkpoint's tensors fix it.
OPTION_MEANINGS = {
    "d_mem": ("key size of the associative memory (rows of W_mq and W_mk)", True),
    "nu": ("order of the DPFP feature map (3 in the authors' code)", False),
    "correction": ("the novelty correction: z grows by gamma phi(k), what is new to the state (off: gamma = 1)", False),
    "n_heads": ("heads of the associative memory (one A and z per head; W_mb's rows unless gating)", True),
    "use_denom": ("reads divided by z·phi(q) (off: y = phi(q)^T A)", False),
    "gating": ("a write strength per channel (W_mb is d x d) instead of one per head", True),
    "normalize_features": ("L2-normalised DPFP features: the experimental branch's maths (off: framework_accel's)",
                           False),
    "wrap_pos": ("memory tokens take their own rows at the end of GPT-2's position table", True),
}
OPTIONS = {f.name: MemoryOption(f.name, bool if f.type == "bool" else int, f.default, OPTION_MEANINGS[f.name][0],
                                by_weights=OPTION_MEANINGS[f.name][1])
           for f in dataclasses.fields(AssociativeOptions)}
# The authors' variants this engine does not implement: named when asked for, never silently ignored.
NOT_IMPLEMENTED = {
    "act_on": "adaptive computation time (ACT, the experimental branch's AdaptiveAssociativeLayerWrapper)",
    "act_type": "adaptive computation time (ACT)",
    "max_hop": "adaptive computation time (ACT)",
    "time_penalty": "adaptive computation time (ACT)",
    "sliding_window": "sliding-window attention over the previous segment's keys and values",
    "sink_token": "attention sink tokens",
    "sink_tokens": "attention sink tokens",
    "num_sink_tokens": "attention sink tokens",
    "use_sink": "attention sink tokens",
}


def associative_options(config: Any) -> AssociativeOptions:
    """The AssociativeOptions of an RMTConfig's memory_options, or ConfigError naming the field and
    what is allowed (AssociativeMemory.check_options: unknown keys, wrong types, d_mem / nu / n_heads < 1,
    the variants in NOT_IMPLEMENTED; then n_heads not dividing d_mem, wrap_pos without reset_positions)."""
    AssociativeMemory.check_options(config.memory_options)
    options = AssociativeOptions(**{k: v for k, v in config.memory_options.items() if k not in NOT_IMPLEMENTED})
    if options.d_mem % options.n_heads:
        raise ConfigError(f"memory_options n_heads={options.n_heads} must divide d_mem={options.d_mem} (each head "
                          f"gets d_mem / n_heads key dimensions); pick n_heads among the divisors of {options.d_mem}.")
    if config.num_mem_tokens < 1:
        raise ConfigError(f"num_mem_tokens must be >= 1 for the associative memory (its memory tokens write the "
                          f"state), got {config.num_mem_tokens}.")
    if options.wrap_pos and not config.reset_positions:
        raise ConfigError("memory_options wrap_pos=true needs reset_positions=true: the memory tokens take fixed "
                          "position rows after the table, and the tokens' positions restart in every segment.")
    return options


# ---------------------------------------------------------------------- the maths (pure functions)
def dpfp(x: torch.Tensor, nu: int) -> torch.Tensor:
    """Deterministic parameter-free projection (Schlag et al. 2021) of order nu over the last axis:
    u = [relu(x); relu(-x)] (2n), phi = concat over j = 1..nu of u * roll(u, j): (..., n) -> (..., 2 nu n).

    Computed from [u; u]: roll(u, j) is its slice [w - j, 2w - j) (w = 2n), so the nu rolled copies are
    slices stacked once and one multiply makes all nu blocks (the same products as u * u.roll(j),
    without nu rolls and a concatenation of their products)."""
    relu, relu_neg = F.relu(x), F.relu(-x)
    doubled = torch.cat([relu, relu_neg, relu, relu_neg], dim=-1)  # [u; u]
    w = doubled.shape[-1] // 2
    u = doubled[..., :w]
    rolled = torch.stack([doubled[..., w - j % w: 2 * w - j % w] for j in range(1, nu + 1)], dim=-2)
    return (u.unsqueeze(-2) * rolled).reshape(*u.shape[:-1], nu * w)


def to_heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    """(batch, n, c) -> (batch, heads, n, c / heads): channels split into consecutive groups."""
    batch, n, c = x.shape
    return x.reshape(batch, n, heads, c // heads).transpose(1, 2)


def from_heads(x: torch.Tensor) -> torch.Tensor:
    """(batch, heads, n, c) -> (batch, n, heads * c), the inverse of to_heads."""
    batch, heads, n, c = x.shape
    return x.transpose(1, 2).reshape(batch, n, heads * c)


def feature_map(x: torch.Tensor, options: AssociativeOptions) -> torch.Tensor:
    """phi over the last axis of head-split projections: (..., d_mem / h) -> (..., F / h)."""
    phi = dpfp(x, options.nu)
    return F.normalize(phi, p=2.0, dim=-1) if options.normalize_features else phi


def features(x: torch.Tensor, options: AssociativeOptions) -> torch.Tensor:
    """phi of projected queries or keys: (batch, n, d_mem) -> (batch, heads, n, F / heads)."""
    return feature_map(to_heads(x, options.n_heads), options)


def retrieve(phi: torch.Tensor, A: torch.Tensor, z: torch.Tensor, options: AssociativeOptions
             ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """phi^T A / (z^T phi + 1e-5) per head, over any leading axes: phi (..., n, f), A (..., f, e), z (..., f)
    (e.g. (batch, h, ...), or (batch, layers, h, ...)) -> (values (..., n, e), denominators (..., n, 1) or
    None without use_denom)."""
    numerator = torch.einsum("...nf,...fe->...ne", phi, A)
    if not options.use_denom:
        return numerator, None
    denominator = torch.einsum("...f,...nf->...n", z, phi).unsqueeze(-1) + READ_EPS
    return numerator / denominator, denominator


def delta_terms(phi: torch.Tensor, values: torch.Tensor, beta: torch.Tensor, A: torch.Tensor, z: torch.Tensor,
                written: torch.Tensor | bool, options: AssociativeOptions
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """The update rule itself, from M keys' features, values and write strengths (what write_terms runs
    after its projections; explain/capacity.py writes synthetic pairs with it), over any leading axes
    (batch, [layers,] h): phi (..., M, f), values (..., M, e), beta (..., M, 1 or e), the OLD state
    A (..., f, e), z (..., f).

    written: (batch,) bool, False where this is the sample's first write (then vbar = 0 and gamma = 1);
    or one Python bool for every sample (the same numbers without the per-sample selection, and no
    retrieval before a first write). Returns (phi, beta, v - vbar (..., M, e), gamma (..., M, 1), None
    without use_denom): A' = A + sum_i phi_i (beta_i * (v_i - vbar_i))^T, z' = z + sum_i gamma_i phi_i
    (add_writes). A is a sum of these rank-1 writes (explain/associative.py decomposes reads into them)."""
    if written is False:  # every sample's first write: vbar = 0, gamma = 1
        return phi, beta, values, torch.ones_like(phi[..., :1]) if options.use_denom else None
    previous, denominator = retrieve(phi, A, z, options)
    old = None if written is True else written.view((-1,) + (1,) * (phi.dim() - 1))
    if old is not None:
        previous = torch.where(old, previous, torch.zeros_like(previous))  # vbar
    if not options.use_denom:
        return phi, beta, values - previous, None
    if options.correction:
        norm2 = phi.pow(2).sum(dim=-1, keepdim=True)  # |phi(k)|^2, (..., M, 1)
        gamma = torch.clip(1 - denominator / (norm2 + options.gamma_eps), 0, 1).detach()
        if old is not None:
            gamma = torch.where(old, gamma, torch.ones_like(gamma))
    else:
        gamma = torch.ones_like(phi[..., :1])
    return phi, beta, values - previous, gamma


def add_writes(A: torch.Tensor, z: torch.Tensor, phi: torch.Tensor, beta: torch.Tensor, overwrite: torch.Tensor,
               gamma: torch.Tensor | None, in_place: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """(A', z') = (A + sum_i phi_i (beta_i * overwrite_i)^T, z + sum_i gamma_i phi_i) over any leading axes:
    A (..., f, e), z (..., f), phi (..., M, f), beta (..., M, 1 or e), overwrite (..., M, e), gamma
    (..., M, 1) or None (z unchanged). One batched matrix product that adds into A's copy, differentiable
    in every argument (BPTT through A); in_place=True adds into A and z themselves (contiguous, no
    autograd: the forward's own states without grad), the same numbers. The memory type applies every
    layer's write at once (a layer axis after the batch)."""
    f, e, m = A.shape[-2], A.shape[-1], phi.shape[-2]
    keys, values = phi.reshape(-1, m, f).transpose(1, 2), (beta * overwrite).reshape(-1, m, e)
    if in_place:
        A.view(-1, f, e).baddbmm_(keys, values)
    else:
        A = torch.baddbmm(A.reshape(-1, f, e), keys, values).view(A.shape)
    if gamma is None:
        return A, z
    added = (gamma * phi).sum(dim=-2)
    return A, z.add_(added) if in_place else z + added


class AssociativeLayer(nn.Module):
    """One backbone layer's associative projections (registered on the RMTModel as associative_layers.{l}).

    W_mq, W_mk: d -> d_mem (no bias); W_mv: d -> d (no bias, zero-initialised as the authors': every
    read is 0 until it is trained); W_mb: d -> heads (d with gating), with bias."""

    def __init__(self, d: int, options: AssociativeOptions) -> None:
        super().__init__()
        self.options = options
        self.W_mq = nn.Linear(d, options.d_mem, bias=False)
        self.W_mk = nn.Linear(d, options.d_mem, bias=False)
        self.W_mv = nn.Linear(d, d, bias=False)
        nn.init.zeros_(self.W_mv.weight)
        self.W_mb = nn.Linear(d, d if options.gating else options.n_heads)

    def read(self, hidden: torch.Tensor, A: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """y (batch, n, d) for block input rows `hidden` (batch, n, d) from one layer's A (batch, h, f, e), z."""
        return self.read_parts(hidden, A, z)[0]

    def read_parts(self, hidden: torch.Tensor, A: torch.Tensor, z: torch.Tensor
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """(y (batch, n, d), phi(q) (batch, h, n, f), denominators (batch, h, n, 1) or None without
        use_denom): the read and what it is made of (a memory probe sees them; read() keeps y)."""
        phi = features(self.W_mq(hidden), self.options)
        values, denominator = retrieve(phi, A, z, self.options)
        return from_heads(values), phi, denominator

    def write(self, memory: torch.Tensor, A: torch.Tensor, z: torch.Tensor, written: torch.Tensor | bool
              ) -> tuple[torch.Tensor, torch.Tensor]:
        """The state after the memory tokens' outputs `memory` (batch, M, d) write into (A, z), all M
        against the OLD state. written: as write_terms. Returns (A', z') shaped as A, z."""
        return self.add_terms(A, z, *self.write_terms(memory, A, z, written))

    @staticmethod
    def add_terms(A: torch.Tensor, z: torch.Tensor, phi: torch.Tensor, beta: torch.Tensor, overwrite: torch.Tensor,
                  gamma: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """(A', z') from the old A, z and write_terms' (phi, beta, v - vbar, gamma): add_writes."""
        return add_writes(A, z, phi, beta, overwrite, gamma)

    def projections(self, memory: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(W_mk o (batch, h, M, d_mem / h), W_mv o (batch, h, M, e), sigmoid(W_mb o + b) (batch, h, M, 1), or
        (batch, h, M, e) with gating) of the memory tokens' outputs `memory` (batch, M, d): what write_terms needs."""
        h = self.options.n_heads
        return (to_heads(self.W_mk(memory), h), to_heads(self.W_mv(memory), h),
                to_heads(torch.sigmoid(self.W_mb(memory)), h))

    def write_terms(self, memory: torch.Tensor, A: torch.Tensor, z: torch.Tensor, written: torch.Tensor | bool
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """What write() adds (delta_terms of this layer's projections) for the memory tokens' outputs `memory`
        (batch, M, d) into A (batch, h, f, e), z (batch, h, f): phi(k_i) (batch, h, M, f), beta_i (batch, h,
        M, 1), or (batch, h, M, e) with gating, v_i - vbar_i (batch, h, M, e), gamma_i (batch, h, M, 1) or None."""
        keys, values, beta = self.projections(memory)
        return delta_terms(feature_map(keys, self.options), values, beta, A, z, written, self.options)


def _written(state: dict[str, torch.Tensor]) -> tuple[torch.Tensor, bool | None]:
    """(written (batch,) bool: the samples written to before, uniform: True / False when every sample / no
    sample was, None when they differ), from a state's "written" count."""
    written = state["written"][:, 0] > 0
    every = bool(written.all())
    return written, True if every else (False if not bool(written.any()) else None)


# ---------------------------------------------------------------------- the memory type
_SEGMENT_LOCKS: "weakref.WeakKeyDictionary[nn.Module, threading.RLock]" = weakref.WeakKeyDictionary()
_LOCKS_LOCK = threading.Lock()


def _segment_lock(block: nn.Module) -> threading.RLock:
    """The lock of one backbone (keyed by its first block, so a copied model gets its own)."""
    with _LOCKS_LOCK:
        lock = _SEGMENT_LOCKS.get(block)
        if lock is None:
            lock = _SEGMENT_LOCKS[block] = threading.RLock()
        return lock


def _this_thread_only(hook):
    """`hook`, acting only when the block runs in the thread that registered it (None elsewhere:
    the block's inputs and outputs pass unchanged)."""
    owner = threading.get_ident()

    def guarded(*args, **kwargs):
        return hook(*args, **kwargs) if threading.get_ident() == owner else None

    return guarded


class AssociativeMemory(MemoryType):
    """ARMT: memory tokens after each segment, per-layer associative state (A_l, z_l); see the module docstring."""

    supported_edits = ("reset", "zero", "replace")
    option_specs = OPTIONS
    refused_options = NOT_IMPLEMENTED

    def __init__(self, model: Any) -> None:
        super().__init__(model)
        config = model.config
        self.options = options = associative_options(config)
        d = model.hidden_size
        if d % options.n_heads:
            raise ConfigError(f"memory_options n_heads={options.n_heads} must divide the backbone's hidden size {d} "
                              "(each head keeps d / n_heads value channels).")
        if options.wrap_pos and getattr(model.backbone.config, "model_type", "") != "gpt2":
            raise ConfigError(f"memory_options wrap_pos=true adds memory-token rows to GPT-2's position table (wpe); "
                              f"this backbone is {getattr(model.backbone.config, 'model_type', '?')!r}. Use "
                              "wrap_pos=false (positions then follow each segment's tokens).")
        self.layers_attr, self.blocks = decoder_layers(model.backbone)
        embeddings = model.backbone.get_input_embeddings().weight.detach()
        dtype = embeddings.dtype
        # The authors' memory_cell.memory: randn scaled by the word embeddings' std.
        model.memory_tokens = nn.Parameter(
            (torch.randn(config.num_mem_tokens, d) * float(embeddings.float().std())).to(dtype))
        model.associative_layers = nn.ModuleList(AssociativeLayer(d, options) for _ in self.blocks).to(dtype)
        self.position_rows = None  # wrap_pos: the first of the M rows added to wpe
        if options.wrap_pos:
            self.position_rows = self._wrap_positions(config.num_mem_tokens)

    def _wrap_positions(self, m: int) -> int:
        """Grow GPT-2's wpe by m rows (N(0, 1) as nn.Embedding's default, the authors' way); returns the
        first new row. backbone.config.n_positions stays: a saved config rebuilds the original table."""
        transformer = self.model.backbone.base_model
        old = transformer.wpe.weight.detach()
        grown = nn.Embedding(old.shape[0] + m, old.shape[1]).to(device=old.device, dtype=old.dtype)
        with torch.no_grad():
            grown.weight[: old.shape[0]] = old
        transformer.wpe = grown
        return int(old.shape[0])

    # ------------------------------------------------------------------ the config
    @classmethod
    def check_config(cls, config: Any) -> None:
        associative_options(config)

    @classmethod
    def segment_length(cls, config: Any) -> int:
        """L + M: the segment's tokens then the memory tokens."""
        return int(config.segment_size) + int(config.num_mem_tokens)

    @property
    def num_mem_tokens(self) -> int:
        return self.model.config.num_mem_tokens

    # ------------------------------------------------------------------ state
    def state_shapes(self) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """One sample's A and z shapes: (layers, heads, F / h, d / h) and (layers, heads, F / h)."""
        o, h = self.options, self.options.n_heads
        layers, f, e = len(self.blocks), o.feature_size // h, self.model.hidden_size // h
        return (layers, h, f, e), (layers, h, f)

    def initial_state(self, batch: int) -> dict[str, torch.Tensor]:
        a_shape, z_shape = self.state_shapes()
        like = self.model.memory_tokens
        return {"A": like.new_zeros(batch, *a_shape), "z": like.new_zeros(batch, *z_shape),
                "written": like.new_zeros(batch, 1)}

    def state_spec(self) -> dict[str, tuple[str, ...]]:
        return {"A": ("layer", "head", "feature", "hidden"), "z": ("layer", "head", "feature"), "written": ("one",)}

    # ------------------------------------------------------------------ one segment
    def row_length(self, n_tokens: int, write: bool = True) -> int:
        return n_tokens + (self.num_mem_tokens if write else 0)

    def build_row(self, state: dict[str, torch.Tensor], embeds: torch.Tensor, token_valid: torch.Tensor | None,
                  write: bool, segment_index: int) -> SegmentRow:
        cfg = self.model.config
        m = self.num_mem_tokens if write else 0
        batch, n_tokens = embeds.shape[:2]
        device = embeds.device
        blocks = [embeds, self.model.memory_tokens.to(device).unsqueeze(0).expand(batch, -1, -1)] if m else [embeds]
        row = torch.cat(blocks, dim=1)  # (batch, L + M, d)
        # Plain causal over the whole row; padded token keys hidden (memory rows are always real).
        valid = None if token_valid is None else torch.cat(
            [token_valid.bool().to(device), torch.ones(batch, m, dtype=torch.bool, device=device)], dim=1)
        allowed = allowed_attention(0, n_tokens + m, "causal", True, valid, device=device)
        n_valid = token_valid.sum(dim=1).to(device) if token_valid is not None else torch.full(
            (batch,), n_tokens, device=device)
        offset = 0 if cfg.reset_positions else segment_index * cfg.segment_length()
        positions = torch.arange(n_tokens, device=device).expand(batch, -1) + offset
        if m:
            steps = torch.arange(m, device=device)
            memory_pos = (self.position_rows + steps).expand(batch, -1) if self.position_rows is not None else (
                offset + n_valid.unsqueeze(1) + steps)  # after each sample's last real token, as when run alone
            positions = torch.cat([positions, memory_pos], dim=1)
        tokens = slice(0, n_tokens)
        return SegmentRow(row, allowed, positions.long(), tokens,
                          {"tokens": tokens, "memory": slice(n_tokens, n_tokens + m)}, write and m > 0)

    def layer_hooks(self, state: dict[str, torch.Tensor], row: SegmentRow) -> contextlib.AbstractContextManager[None]:
        return self._hooks(state, row)

    @contextlib.contextmanager
    def _hooks(self, state: dict[str, torch.Tensor], row: SegmentRow) -> Iterator[None]:
        # The hooks sit on the backbone's blocks, which every session sharing this model runs: one
        # segment at a time holds them (_segment_lock), and they act only in the thread that set them,
        # so two runs at once never read or write through each other's state.
        with _segment_lock(self.blocks[0]):
            with self._own_hooks(state, row):
                yield

    @contextlib.contextmanager
    def _own_hooks(self, state: dict[str, torch.Tensor], row: SegmentRow) -> Iterator[None]:
        """Block l's input gets + Read_l (samples written to); its output's last M rows (the memory tokens'
        outputs) and their projections are kept in row.context["memory_outputs"][l] / ["projected"][l] while
        the backbone runs, and read_state writes every layer from them at once (against the OLD state)."""
        written, uniform = _written(state)
        outputs: list[torch.Tensor | None] = [None] * len(self.blocks)
        projected: list[tuple | None] = [None] * len(self.blocks)
        row.context["memory_outputs"], row.context["projected"] = outputs, projected
        probe = row.context.get(MEMORY_PROBE)  # a recorder's (PROBE_EVENTS); None: nothing extra is done
        handles = []
        try:
            for layer, block in enumerate(self.blocks):
                if uniform is not False:  # some sample was written to: it reads
                    handles.append(block.register_forward_pre_hook(_this_thread_only(
                        functools.partial(self._read_hook, layer, state, written, uniform, probe)), with_kwargs=True))
                if row.write:
                    handles.append(block.register_forward_hook(_this_thread_only(
                        functools.partial(self._write_hook, layer, outputs, projected))))
            yield
        finally:
            for handle in handles:
                handle.remove()

    def _read_hook(self, layer: int, state: dict[str, torch.Tensor], written: torch.Tensor, uniform: bool | None,
                   probe: Any, module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        positional = bool(args)
        hidden = args[0] if positional else kwargs["hidden_states"]  # (batch, n, d)
        assoc = self.model.associative_layers[layer]
        here = assoc.W_mq.weight.device
        if probe is None:
            y = assoc.read(hidden.to(here), state["A"][:, layer].to(here), state["z"][:, layer].to(here))
        else:
            y, phi, denominator = assoc.read_parts(hidden.to(here), state["A"][:, layer].to(here),
                                                   state["z"][:, layer].to(here))
            probe("read", layer, {"hidden": hidden, "read": y, "features": phi, "denominator": denominator,
                                  "reads": written})
        if uniform:  # every sample reads
            hidden = hidden + y.to(hidden.device)
        else:
            hidden = torch.where(written.to(hidden.device).view(-1, 1, 1), hidden + y.to(hidden.device), hidden)
        if positional:
            return (hidden,) + tuple(args[1:]), kwargs
        return args, {**kwargs, "hidden_states": hidden}

    def _write_hook(self, layer: int, outputs: list, projected: list, module: nn.Module, args: tuple,
                    output: Any) -> None:
        out = output[0] if isinstance(output, (tuple, list)) else output  # (batch, n, d)
        memory = out[:, -self.num_mem_tokens:]  # the memory tokens' outputs (batch, M, d)
        outputs[layer] = memory
        assoc = self.model.associative_layers[layer]
        projected[layer] = assoc.projections(memory.to(assoc.W_mk.weight.device))

    def _write(self, state: dict[str, torch.Tensor], outputs: list[torch.Tensor], projected: list[tuple],
               probe: Any = None, context: dict | None = None) -> dict[str, torch.Tensor]:
        """The state after every layer writes into `state`, from each layer's memory-token outputs `outputs`
        (batch, M, d) and their AssociativeLayer.projections `projected`: one delta_terms and one add_writes
        over a (batch, layers, h) batch on the state's device (each layer's numbers as its own write's: no
        layer's write sees another's); a memory probe gets each layer's "write" event. context: the row's
        (read_state): its terms are kept there as "write_terms" (AssociativeHistory), and with REUSE_STATE
        and no grad the write goes into state's own A and z."""
        written, uniform = _written(state)
        device = state["A"].device
        keys, values, beta = (torch.stack([t.to(device) for t in parts], dim=1) for parts in zip(*projected))
        terms = delta_terms(feature_map(keys, self.options), values, beta, state["A"], state["z"],
                            written if uniform is None else uniform, self.options)  # (batch, layers, h, M, .)
        if probe is not None:
            phi, beta, overwrite, gamma = terms
            for layer, memory in enumerate(outputs):
                probe("write", layer, {"memory_outputs": memory, "features": phi[:, layer], "beta": beta[:, layer],
                                       "v_minus_vbar": overwrite[:, layer],
                                       "gamma": None if gamma is None else gamma[:, layer]})
        in_place = (context is not None and context.get(REUSE_STATE, False) and not torch.is_grad_enabled()
                    and state["A"].is_contiguous() and state["z"].is_contiguous())
        if context is not None:
            context["write_terms"] = terms
        A, z = add_writes(state["A"], state["z"], *terms, in_place=in_place)
        return {"A": A, "z": z, "written": state["written"] + 1}

    def state_history(self) -> "AssociativeHistory | None":
        """Without grad, forward's states are kept as each segment's write (AssociativeHistory); with grad,
        as the states themselves (None)."""
        return None if torch.is_grad_enabled() else AssociativeHistory(self)

    # ------------------------------------------------------------------ writes (compact traces)
    # What the hooks pass to a memory probe (MemoryType.run_segment's memory_probe), per layer:
    #   "read"   hidden (b, n, d) the block's input before the read; read (b, n, d) y; features
    #            (b, h, n, f) phi(q); denominator (b, h, n, 1) or None (use_denom false); reads (b,)
    #            bool, the samples that read (the others' y is computed but not added)
    #   "write"  memory_outputs (b, M, d); features (b, h, M, f) phi(k); beta (b, h, M, 1 or e);
    #            v_minus_vbar (b, h, M, e); gamma (b, h, M, 1) or None (use_denom false)
    PROBE_EVENTS = ("read", "write")

    def write_spec(self) -> dict[str, tuple[str, ...]]:
        """A segment's write is its memory tokens' block outputs, per layer: 30-50x smaller than (A, z)."""
        return {"memory_outputs": ("layer", "memory_token", "hidden")}

    def apply_write(self, state: dict[str, torch.Tensor], arrays: StateArrays) -> dict[str, torch.Tensor]:
        """The state after a segment whose memory tokens' block outputs were arrays["memory_outputs"]
        (layers, M, d), from the state before it (batch 1): the same write of every layer as read_state
        runs, and its count. ArgumentError for outputs of another shape."""
        outputs = np.asarray(arrays["memory_outputs"])
        expected = (len(self.blocks), self.num_mem_tokens, self.model.hidden_size)
        if outputs.shape != expected:
            raise ArgumentError(f"memory_outputs must have shape {expected} (layer, memory_token, hidden), got "
                                f"{outputs.shape}.")
        outputs = [torch.as_tensor(o, device=a.W_mk.weight.device).to(a.W_mk.weight.dtype).unsqueeze(0)
                   for o, a in zip(outputs, self.model.associative_layers)]  # (1, M, d) per layer
        return self._write(state, outputs, [a.projections(o) for o, a in zip(outputs, self.model.associative_layers)])

    def read_state(self, state: dict[str, torch.Tensor], row: SegmentRow, hidden: torch.Tensor,
                   token_valid: torch.Tensor | None) -> dict[str, torch.Tensor]:
        projected = row.context["projected"]
        if any(p is None for p in projected):
            raise RuntimeError("associative memory: a backbone block ran without its write hook")  # engine bug
        return self._write(state, row.context["memory_outputs"], projected, row.context.get(MEMORY_PROBE), row.context)

    # ------------------------------------------------------------------ labels and edits
    def row_labels(self, token_labels: list[str], write: bool = True) -> list[str]:
        memory = [f"P{i}" for i in range(self.num_mem_tokens)] if write else []
        return list(token_labels) + memory

    def parts(self) -> list[str]:
        """One part per backbone layer, "L0".."L{n-1}": that layer's (A, z)."""
        return [f"L{layer}" for layer in range(len(self.blocks))]

    def edit_state(self, arrays: StateArrays, edit: str, *, part: int | None = None,
                   source: StateArrays | None = None, seed: int = 0) -> StateArrays:
        """reset / zero as MemoryType; "replace": layer `part`'s A and z from `source`; the result counts as
        written when either state was (a layer left at zero reads exactly 0)."""
        if edit == "replace":
            out = {name: np.array(value, dtype=np.float32, copy=True) for name, value in arrays.items()}
            for name in ("A", "z"):
                out[name][part] = source[name][part]
            out["written"] = np.maximum(out["written"], np.asarray(source["written"], dtype=np.float32))
            return out
        return super().edit_state(arrays, edit, part=part, source=source, seed=seed)


class AssociativeHistory(StateHistory):
    """The states an associative memory's forward wrote without grad (MemoryType.state_history), kept as
    each segment's write terms (phi(k), beta, v - vbar, gamma of every layer: 0.4 MB a segment for the
    shipped ARMT at batch 8, against 4.7 MB of state) and rebuilt on reading by add_writes, the update
    the segment ran, in order from the nearest state held (the last segment's, the last one read, or
    the state a segment was given): bit for bit the states forward carried. So the forward keeps one
    state and writes each segment's into it (no copy of A per segment); reading states in order costs
    one add_writes each."""

    def __init__(self, memory: AssociativeMemory) -> None:
        self._memory = memory
        self._writes: list[tuple[tuple, torch.Tensor | None, dict | None]] = []  # (terms, keep, entering)
        self._last: dict[str, torch.Tensor] | None = None  # the last segment's state (forward's own)
        self._read: tuple[int, dict[str, torch.Tensor]] | None = None  # the last state rebuilt

    def add(self, out: SegmentOutput, keep: torch.Tensor | None, entering: dict | None) -> None:
        self._writes.append((out.row.context["write_terms"], keep, entering))
        self._last = out.memory_out

    def __len__(self) -> int:
        return len(self._writes)

    def __getitem__(self, index):  # noqa: ANN001 (int or slice, as a list)
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        n = len(self)
        k = operator.index(index)
        k = k + n if k < 0 else k
        if not 0 <= k < n:
            raise IndexError(f"segment {index} of {n} written")
        if k == n - 1:
            return self._last
        if self._read is not None and self._read[0] == k:
            return self._read[1]
        with torch.no_grad():  # as forward ran them
            state = self._rebuild(k)
        self._read = (k, state)
        return state

    def _rebuild(self, k: int) -> dict[str, torch.Tensor]:
        """Segment k's state, from the nearest state held at or before it."""
        start, state = 0, None
        for j in range(k, -1, -1):
            if self._read is not None and self._read[0] == j:
                start, state = j + 1, self._read[1]
                break
            if self._writes[j][2] is not None:
                start, state = j, None
                break
        for j in range(start, k + 1):
            terms, keep, entering = self._writes[j]
            before = entering if entering is not None else state
            A, z = add_writes(before["A"], before["z"], *terms)
            state = {"A": A, "z": z, "written": before["written"] + 1}
            if keep is not None:  # as run_segment: a sample whose segment is all padding keeps its state
                state = self._memory.keep_where(keep, state, before)
        return state
