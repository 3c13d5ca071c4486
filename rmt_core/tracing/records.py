"""What a trace records for one segment (SegmentRecord) and the names a trace file carries.

The words and the table of everything recorded: observables.py.

The data classes only: recording is in recorder.py, the file format in trace_file.py,
the whole-document object in trace.py.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

BLOCK_PAIRS: tuple[str, ...] = (
    "tokens->read", "write->tokens", "write->read", "write->write", "read->read", "tokens->tokens",
)
TOP_K = 5
LENS_K = 5
TRACE_FORMAT = "rmt-lens-trace"
TRACE_FORMAT_VERSION = 2  # 2: zstandard-compressed arrays (see trace_file); 1 still loads


@dataclass
class SegmentRecord:
    """One segment of a trace. Shapes: L tokens, m slots, d hidden, Y layers, H heads.

    Every field but the segment's place (index; tokens start:end of the document) is a row of
    the observables table (observables.OBSERVABLES: axes, dtype, meaning, how a file stores it);
    tests/test_observables.py checks that the two agree on names, dtypes and axes.
    memory_in is the previous segment's memory_out (segment 0: the trace's initial_memory).
    A memory type other than "tokens" (RMTConfig.memory) keeps its state in state_out (named
    float32 arrays, MemoryType.state_spec; Trace.state_in / state_out read either kind); its
    slot fields are empty (m = 0: it adds no read or write slots).
    lens_ids is computed on first use (Trace.lens_ids), not while tracing: it is not needed to
    trace and costs an LM-head call per segment.
    An associative memory (ARMT) stores its segment's write (state_write) instead of its state
    (rebuilt on demand: Trace.state_in / state_out) and fills its own rows (state_norm ...
    read_denominator; None for other memory types); state_rank is computed on first use
    (Trace.state_ranks): it costs an SVD per layer and segment.
    """

    index: int
    start: int
    end: int
    token_ids: np.ndarray  # (L,) int32
    tokens: list[str]
    char_spans: np.ndarray  # (L, 2) int64; -1 where unknown (ids given, no text)
    memory_in: np.ndarray  # (m, d) float32: fills the read slots R_k
    memory_out: np.ndarray  # (m, d) float32: the write slots W_k's last hidden states
    read_hidden: np.ndarray  # (Y+1, m, d) float16: the read slots R_k at every layer
    write_hidden: np.ndarray  # (Y+1, m, d) float16: the write slots W_k at every layer
    token_logprob: np.ndarray  # (L,) float32
    topk_ids: np.ndarray  # (L, TOP_K) int32
    topk_logprobs: np.ndarray  # (L, TOP_K) float16
    loss: float
    block_attention: np.ndarray  # (Y, H, 6) float16
    write_to_tokens: np.ndarray  # (Y, H, m, L) float16: how much W_k attends to token j
    tokens_to_read: np.ndarray  # (Y, H, L, m) float16: how much token j attends to R_k
    lens_ids: np.ndarray | None = None  # (Y+1, m, LENS_K) int32; filled on demand by Trace.lens_ids
    state_out: dict[str, np.ndarray] | None = None  # a memory type other than tokens: the state it wrote, named
    state_write: dict[str, np.ndarray] | None = None  # a memory whose state is a sum of writes: this segment's write
    # associative memory only (Y layers, M memory tokens):
    state_norm: np.ndarray | None = None  # (Y,) float32: |A_l|_F after the write
    z_norm: np.ndarray | None = None  # (Y,) float32: |z_l| after the write
    state_rank: np.ndarray | None = None  # (Y,) float32: effective rank of A_l; on first use (Trace.state_ranks)
    write_strength: np.ndarray | None = None  # (Y, M) float32: beta_i
    novelty: np.ndarray | None = None  # (Y, M) float32: gamma_i
    overwrite: np.ndarray | None = None  # (Y, M) float32: |v_i - vbar_i|
    read_ratio: np.ndarray | None = None  # (Y, L) float32: |y_j| / |h_j|
    read_denominator: np.ndarray | None = None  # (Y, L) float32: z . phi(q_j) + 1e-5

    @property
    def num_tokens(self) -> int:
        return int(self.token_ids.shape[0])

    @property
    def surprise(self) -> np.ndarray:
        """Per-token negative log-likelihood in nats."""
        return -self.token_logprob
