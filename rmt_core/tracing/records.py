"""What a trace records for one segment (SegmentRecord) and the names a trace file carries.

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

    token_logprob[j]: log p(token j | everything before it), predicted at the position
        before j (for j = 0 that is the previous segment's last position); NaN for the
        document's first token.
    topk_ids / topk_logprobs[j]: the model's top predictions for the token AFTER j.
    loss: mean negative log-likelihood of this segment's tokens (NaN-free ones).
    block_attention[y, h, p]: mean over the query rows of block A of the attention mass
        on block B, for p indexing BLOCK_PAIRS ("A->B").
    write_to_tokens[y, h, k, j]: how much write slot k attends to token j.
    tokens_to_read[y, h, j, k]: how much token j attends to read slot k.
    lens_ids[y, k, :]: top token ids that write slot k's hidden state at layer y decodes
        to through the final norm and the LM head (the logit lens); layer 0 = embeddings.
        Computed on first use (Trace.lens_ids), not while tracing: it is not needed to
        trace and costs an LM-head call per segment.
    """

    index: int
    start: int
    end: int
    token_ids: np.ndarray  # (L,) int32
    tokens: list[str]
    char_spans: np.ndarray  # (L, 2) int64; -1 where unknown (ids given, no text)
    memory_in: np.ndarray  # (m, d) float32
    memory_out: np.ndarray  # (m, d) float32
    read_hidden: np.ndarray  # (Y+1, m, d) float16
    write_hidden: np.ndarray  # (Y+1, m, d) float16
    token_logprob: np.ndarray  # (L,) float32
    topk_ids: np.ndarray  # (L, TOP_K) int32
    topk_logprobs: np.ndarray  # (L, TOP_K) float16
    loss: float
    block_attention: np.ndarray  # (Y, H, 6) float16
    write_to_tokens: np.ndarray  # (Y, H, m, L) float16
    tokens_to_read: np.ndarray  # (Y, H, L, m) float16
    lens_ids: np.ndarray | None = None  # (Y+1, m, LENS_K) int32; filled on demand by Trace.lens_ids

    @property
    def num_tokens(self) -> int:
        return int(self.token_ids.shape[0])

    @property
    def surprise(self) -> np.ndarray:
        """Per-token negative log-likelihood in nats."""
        return -self.token_logprob
