"""What an associative memory (ARMT) did: its recorded rows as per-trace arrays, and where a
token's read comes from.

"Retrieved from" (retrieved_from): layer l's state A_l is a sum of rank-1 writes, one per earlier
(segment s, memory token i): A_l = sum phi(k_si) (beta_si * (v_si - vbar_si))^T (per head; the state
starts at 0). A token j's read at that layer, y_j = phi(q_j)^T A_l / den_j, is therefore exactly

    y_j = sum over (s, i) of  (phi(q_j) . phi(k_si)) * beta_si * (v_si - vbar_si) / den_j

(Rodkin et al. 2024, arXiv 2407.04841, Eq. 1-2; shared/docs/armt-reference.md). Each term is
"what token j retrieves from memory token i's write in segment s". The terms are computed from
the stored writes with the engine's own write_terms (AssociativeLayer), the query side from a
replay of the token's segment; their sum equals the engine's y within float rounding
(tests/test_armt_trace.py). The share of a term is its projection on y over |y|^2: the shares
of all terms sum to 1.

The writes' side of a layer (each write's key k_si and weighted value beta_si * (v_si - vbar_si))
depends on the trace only, not on the token: it is walked once per trace and layer (LayerWrites,
kept in explain.per_trace) and every later token of any segment reuses it.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np
import torch

from ..checks import check_int
from ..engine.memory.associative import features
from ..errors import TraceArgumentError, TraceError
from .per_trace import cached
from ..tracing.capabilities import Needs
from ..tracing.trace import Trace

MEMORY = "associative"
NEEDS = Needs(memory_types=(MEMORY,))  # every function here
RETRIEVAL_NEEDS = Needs(memory_types=(MEMORY,), model=True)  # retrieved_from re-runs a segment


def _check(trace: Trace, needs: Needs = NEEDS) -> None:
    missing = needs.missing(trace)
    if missing:
        raise TraceError(f"This view is of an associative memory (ARMT). {missing}")


def _stack(trace: Trace, name: str) -> np.ndarray:
    _check(trace)
    return np.stack([getattr(s, name) for s in trace.segments]).astype(np.float64)


# ---------------------------------------------------------------------- the recorded rows, per trace
def state_norms(trace: Trace) -> np.ndarray:
    """(S, Y) |A_l|_F after each segment's write (the state_norm row)."""
    return _stack(trace, "state_norm")


def z_norms(trace: Trace) -> np.ndarray:
    """(S, Y) |z_l| after each segment's write (the z_norm row)."""
    return _stack(trace, "z_norm")


def write_strength(trace: Trace) -> np.ndarray:
    """(S, Y, M) beta of each memory token's write (the write_strength row)."""
    return _stack(trace, "write_strength")


def novelty(trace: Trace) -> np.ndarray:
    """(S, Y, M) gamma of each memory token's write (the novelty row)."""
    return _stack(trace, "novelty")


def overwrite(trace: Trace) -> np.ndarray:
    """(S, Y, M) |v - vbar| of each memory token's write (the overwrite row)."""
    return _stack(trace, "overwrite")


def segment_read_ratio(trace: Trace) -> np.ndarray:
    """(S, Y) mean over each segment's tokens of |y_j| / |h_j| (the read_ratio row); 0 where nothing is read."""
    _check(trace)
    return np.stack([s.read_ratio.astype(np.float64).mean(axis=1) for s in trace.segments])


def state_ranks(trace: Trace) -> np.ndarray:
    """(S, Y) effective rank of A_l after each segment (Trace.state_ranks: computed on first use with
    the model, one SVD per layer and segment; tracing/associative.effective_rank)."""
    _check(trace)
    return trace.state_ranks().astype(np.float64)


def rank_bound(trace: Trace) -> int:
    """The largest effective rank A can have: min(features, hidden) per head, times the heads."""
    _check(trace)
    rank = trace.initial_state["A"].shape  # (layers, heads, features / h, hidden / h)
    return int(rank[1] * min(rank[2], rank[3]))


def rank_seconds(trace: Trace) -> float:
    """Rough seconds Trace.state_ranks needs for the segments that lack it (measured here: about 5 ms
    per segment of the shipped size on one CPU core, layers together; benchmarks/bench_trace.py (d))."""
    missing = sum(s.state_rank is None for s in trace.segments)
    layers, heads, f, e = trace.initial_state["A"].shape
    return missing * 5e-3 * layers * heads * f * e / (3 * 384 * 128)


STEP_SECONDS = 4e-4  # one layer's write of the shipped size on one CPU core (benchmarks/bench_trace.py (d))


def _step_seconds(trace: Trace) -> float:
    """Rough seconds of one layer's write_terms + add_terms at this trace's state size."""
    layers, heads, f, e = trace.initial_state["A"].shape
    return STEP_SECONDS * heads * f * e / (384 * 128)


def retrieval_seconds(trace: Trace, segment: int, layer: int = -1) -> float:
    """Rough seconds retrieved_from needs now for a token of `segment` at `layer`: a replay of the
    segment, the writes of every layer still to be applied to rebuild the state entering it (none
    for a trace just recorded: it keeps those states as they ran), and the layer's writes not
    walked yet (none after a first token of this or a later segment; LayerWrites). About 0.4 ms a
    write of the shipped size on one CPU core (benchmarks/bench_trace.py (d))."""
    _check(trace)
    layers = int(trace.model_info["num_layers"])
    layer = int(layer) % layers
    step = _step_seconds(trace)
    rebuild = trace.rebuilder().steps_to(int(segment)) if trace.stores_writes and trace.model is not None else 0
    walked = layer_writes(trace, layer).walked if trace.model is not None else 0
    return 0.02 + rebuild * layers * step + max(0, int(segment) - walked) * step


class LayerWrites:
    """Layer `layer`'s writes over a trace, walked from the start as far as asked (explain.per_trace
    keeps one per trace and layer: layer_writes).

    Per segment s: keys[s] = k_si = W_mk o_si (M, d_mem), the write keys before the feature map
    (features(keys) is phi(k_si): elementwise, the same numbers whatever the batch), and
    values[s] = beta_si * (v_si - vbar_si) (h, M, e), both as write_terms computes them (batch 1)
    on the layer's state before segment s, rebuilt by the same walk (write_terms, add_terms: what
    write() runs). Memory: S * M * (d_mem + d) numbers of the model's dtype (9.6 MB a layer for the
    shipped ARMT on 50k tokens)."""

    def __init__(self, trace: Trace, layer: int) -> None:
        self.trace, self.layer = trace, int(layer)
        self.walked = 0  # segments walked so far
        self._keys: torch.Tensor | None = None
        self._values: torch.Tensor | None = None
        self._state: tuple | None = None  # (A, z, written) of the layer before segment `walked`
        self._lock = threading.Lock()

    @torch.no_grad()
    def upto(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(keys (n, M, d_mem), values (n, h, M, e)) of segments 0..n-1 (walking those not walked yet)."""
        model = self.trace.require_model("walking the memory's writes")
        assoc = model.associative_layers[self.layer]
        weight = assoc.W_mk.weight
        with self._lock:
            if self._keys is None:
                S, m = self.trace.num_segments, self.trace.num_mem_tokens
                heads = assoc.options.n_heads
                self._keys = torch.empty(S, m, assoc.options.d_mem, dtype=weight.dtype, device=weight.device)
                self._values = torch.empty(S, heads, m, model.hidden_size // heads, dtype=weight.dtype,
                                           device=weight.device)
                initial = model.memory.initial_state(1)
                self._state = (initial["A"][:, self.layer].to(weight.device), initial["z"][:, self.layer].to(weight.device),
                               initial["written"][:, 0].to(weight.device) > 0)
            A, z, written = self._state
            for s in range(self.walked, n):
                outputs = self.trace.segments[s].state_write["memory_outputs"][self.layer]  # (M, d)
                memory = torch.as_tensor(outputs, device=weight.device).to(weight.dtype).unsqueeze(0)
                terms = assoc.write_terms(memory, A, z, written)
                self._keys[s] = assoc.W_mk(memory)[0]  # k_i, as write_terms projects it
                self._values[s] = (terms[1] * terms[2])[0]  # beta_i * (v_i - vbar_i)
                A, z = assoc.add_terms(A, z, *terms)
                written = torch.ones_like(written)
            if n > self.walked:
                self._state, self.walked = (A, z, written), n
            return self._keys[:n], self._values[:n]


def layer_writes(trace: Trace, layer: int) -> LayerWrites:
    """The trace's LayerWrites of `layer` (0..Y-1), one per trace and layer (explain.per_trace)."""
    return cached(trace, ("associative: layer writes", int(layer)), lambda: LayerWrites(trace, layer))


# ---------------------------------------------------------------------- the state as per-layer features
def state_summary(A: np.ndarray | torch.Tensor) -> np.ndarray:
    """(..., Y, d) float32 per-layer features of associative states A (..., Y, heads, features, d / heads):
    1^T A_l, the sum over the feature axis, heads concatenated. A_l = sum_i phi(k_i) (beta_i (v_i - vbar_i))^T
    with phi >= 0 (DPFP), so this is every value written, weighted by its key's total feature mass
    (|phi(k_i)|_1): what a probe can read of the stored values in d numbers per layer (a slot's size)."""
    A = torch.as_tensor(A).double()
    summed = A.sum(dim=-2)  # (..., Y, heads, d / heads)
    return summed.reshape(*summed.shape[:-2], -1).float().cpu().numpy()


def push_summary(arrays: dict[str, np.ndarray], layer: int, delta: np.ndarray) -> dict[str, np.ndarray]:
    """One state's named arrays (A: (Y, heads, f, d / heads)) with layer `layer`'s A moved so that its
    state_summary moves by exactly `delta` (d,): A_l += 1 delta_h^T / f per head (the same value added
    to every feature row; z untouched). A probe's direction in state_summary space as an edit of the
    state (studies.probes.causal_check). Returns new arrays; the input is not changed."""
    out = {name: np.array(value, copy=True) for name, value in arrays.items()}
    _, heads, f, e = out["A"].shape
    per_head = np.asarray(delta, dtype=np.float64).reshape(heads, e)
    out["A"][layer] += (np.ones((heads, f, 1)) * per_head[:, None, :] / f).astype(out["A"].dtype)
    return out


def state_summaries(trace: Trace, first: int, last: int) -> np.ndarray:
    """(last - first + 1, Y, d) state_summary of the states LEAVING segments first..last (rebuilt from the
    stored writes with the model; tracing/states.py). Raises TraceError for another memory type or
    without the model, TraceArgumentError for a segment out of range."""
    _check(trace, RETRIEVAL_NEEDS)
    first, last = trace.check_segment(first), trace.check_segment(last, "last")
    if last < first:
        raise TraceArgumentError(f"last ({last}) must not come before first ({first}).")
    return np.stack([state_summary(after["A"][0]) for _, _, after in trace.rebuilder().walk(first, last)])


# ---------------------------------------------------------------------- retrieved from
@dataclass
class Retrieval:
    """Where token `position` of `segment` reads from at `layer` (retrieved_from).

    read: (d,) y, the engine's read (what the layer adds to the token's block input).
    hidden_norm: |h|, the token's block input before the read (read_ratio = |y| / |h|).
    contributions: (segment, M, d) float64, row s, i: the term of memory token P_i's write in
        segment s; contributions.sum((0, 1)) equals read (float rounding).
    token: the token's display string. reads: False when the state was never written (segment 0):
        read and contributions are then zero.
    """

    segment: int
    position: int
    layer: int
    token: str
    read: np.ndarray
    hidden_norm: float
    contributions: np.ndarray
    reads: bool

    @property
    def shares(self) -> np.ndarray:
        """(segment, M): each term's projection on the read over |read|^2; they sum to 1 (all 0 when
        nothing is read)."""
        y = self.read.astype(np.float64)
        size = float(y @ y)
        if size == 0.0:
            return np.zeros(self.contributions.shape[:2])
        return self.contributions @ y / size

    @property
    def segment_shares(self) -> np.ndarray:
        """(segment,): each earlier segment's share of the read (its memory tokens together)."""
        return self.shares.sum(axis=1)

    @property
    def top(self) -> tuple[int, int] | None:
        """(segment, memory token) of the largest share; None when nothing is read."""
        if not self.reads or not self.contributions.size or not np.any(self.read):
            return None
        s, i = np.unravel_index(int(np.argmax(self.shares)), self.shares.shape)
        return int(s), int(i)

    @property
    def top_segment(self) -> int | None:
        """The earlier segment with the largest share (its memory tokens together); None when nothing is read."""
        if self.top is None:
            return None
        return int(np.argmax(self.segment_shares))

    def to_rows(self) -> list[dict]:
        """One row per (earlier segment, memory token): segment, memory_token (P_i), share, norm |c|."""
        norms = np.linalg.norm(self.contributions, axis=-1)
        shares = self.shares
        return [{"segment": s, "memory_token": f"P{i}", "share": float(shares[s, i]), "norm": float(norms[s, i])}
                for s in range(shares.shape[0]) for i in range(shares.shape[1])]


class _ReadProbe:
    """A memory probe keeping one layer's read of one row position (engine AssociativeMemory.PROBE_EVENTS)."""

    def __init__(self, layer: int, position: int) -> None:
        self.layer, self.position = layer, position
        self.got: dict[str, torch.Tensor | None] | None = None

    def __call__(self, event: str, layer: int, tensors: dict) -> None:
        if event == "read" and layer == self.layer:
            j = self.position
            den = tensors["denominator"]
            self.got = {"hidden": tensors["hidden"][0, j].double(), "read": tensors["read"][0, j].double(),
                        "features": tensors["features"][0, :, j].double(),  # (h, f)
                        "denominator": None if den is None else den[0, :, j, 0].double()}  # (h,)


@torch.no_grad()
def retrieved_from(trace: Trace, segment: int, position: int, layer: int = -1) -> Retrieval:
    """Token `position` of `segment` at `layer`: its read split exactly into the writes of every earlier
    segment and memory token (see the module docstring).

    segment: the token's segment; position: its index in the segment (0..L-1); layer: the backbone
    layer whose read is split (negative counts from the last). Costs a replay of `segment` (its state
    rebuilt from the stored writes when the trace does not keep one near it) and, for the earlier
    segments the layer's walk has not reached yet (LayerWrites: once per trace and layer), one
    write_terms each: about 0.4 s per 1,000 of the shipped size on one CPU core; retrieval_seconds
    estimates it (benchmarks/bench_browser_armt.py measures it in the app).
    Raises TraceError for another memory type or without the model, TraceArgumentError for a
    segment, position or layer out of range."""
    _check(trace, RETRIEVAL_NEEDS)
    segment = trace.check_segment(segment)
    seg = trace.segments[segment]
    n_layers = int(trace.model_info["num_layers"])
    layer = check_int(layer, "layer", -n_layers, n_layers - 1, fix=f"The model has {n_layers} layers (-1 is the last).",
                      error=TraceArgumentError) % n_layers
    position = check_int(position, "position", 0, seg.num_tokens - 1,
                         fix=f"Segment {segment} has {seg.num_tokens} tokens, numbered from 0.", error=TraceArgumentError)
    model = trace.model
    d, m = model.hidden_size, trace.num_mem_tokens
    probe = _ReadProbe(layer, position)
    trace.replay(segment, compute_logits=False, memory_probe=probe)
    if probe.got is None:  # nothing written yet: no read
        return Retrieval(segment, position, layer, seg.tokens[position], np.zeros(d), 0.0, np.zeros((segment, m, d)),
                         False)
    got = probe.got
    phi_q, den = got["features"], got["denominator"]  # (h, f), (h,) or None
    assoc = model.associative_layers[layer]
    weight = assoc.W_mk.weight
    # Layer `layer`'s state depends on that layer's writes only: its walk (the engine's own write_terms /
    # add_terms, what write() runs) is kept per trace and layer, with each write's terms.
    keys, values = layer_writes(trace, layer).upto(segment)  # (S', M, d_mem), (S', h, M, e)
    phi_k = features(keys, assoc.options)  # (S', h, M, f) phi(k_si)
    match = torch.einsum("hf,shmf->shm", phi_q.to(weight.device), phi_k.double())  # phi(q) . phi(k_si)
    if den is not None:
        match = match / den.to(weight.device).view(1, -1, 1)
    terms = match.unsqueeze(-1) * values.double()  # (S', h, M, e)
    contributions = terms.transpose(1, 2).reshape(segment, m, d).cpu().numpy()  # heads concatenated, as y
    return Retrieval(segment, position, layer, seg.tokens[position], got["read"].cpu().numpy(),
                     float(torch.linalg.vector_norm(got["hidden"])), contributions, True)
