"""What a trace records of an associative memory (ARMT; engine/memory/associative.py).

The rows (names, axes, meanings) are in observables.py (memory "associative"); this module
computes them. While a segment runs, AssociativeProbe receives the memory type's "read" and
"write" events (engine.memory.MemoryProbe: per layer, the tensors the hooks compute anyway) and
keeps small per-token and per-memory-token summaries plus the memory tokens' block outputs, the
segment's write (all the state is rebuilt from: tracing/states.py). The state's size comes from
the state the segment wrote (state_sizes); its effective rank (effective_rank) on first use.

Event tensors: AssociativeMemory.PROBE_EVENTS (batch first, heads split: h heads, f features and e
value channels per head).
"""
from __future__ import annotations

import numpy as np
import torch

NOT_READ = float("nan")  # read_denominator where nothing is read (the first segment)


def effective_rank(singular_values: torch.Tensor) -> torch.Tensor:
    """exp(H(p)) over the last axis, p = sigma / sum(sigma), H = -sum p log p (0 log 0 = 0);
    0 where every singular value is 0. (..., k) -> (...). Roy & Vetterli, "The effective rank:
    a measure of effective dimensionality", EUSIPCO 2007 (their Definition 1)."""
    s = singular_values.double().clamp_min(0)
    total = s.sum(dim=-1, keepdim=True)
    p = s / torch.where(total > 0, total, torch.ones_like(total))
    entropy = -(p * torch.log(torch.where(p > 0, p, torch.ones_like(p)))).sum(dim=-1)
    return torch.where(total.squeeze(-1) > 0, torch.exp(entropy), torch.zeros_like(entropy))


def state_ranks(A: torch.Tensor) -> np.ndarray:
    """(..., Y) float32 effective rank of each layer's A from A (..., Y, heads, features, hidden/heads):
    of the block-diagonal matrix of its heads (their singular values together)."""
    values = torch.linalg.svdvals(A.double())  # (..., Y, h, min(features, hidden/h))
    return effective_rank(values.flatten(-2)).float().cpu().numpy()


def state_sizes(A: torch.Tensor, z: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """(|A_l|_F, |z_l|), each (..., Y) float32, from A (..., Y, h, F, d/h) and z (..., Y, h, F)."""
    fro = torch.linalg.vector_norm(A.float(), dim=(-3, -2, -1))
    norm = torch.linalg.vector_norm(z.float(), dim=(-2, -1))
    return fro.cpu().numpy(), norm.cpu().numpy()


class AssociativeProbe:
    """A memory probe (engine.memory.MemoryProbe) for one traced segment of batch 1.

    n_layers: Y; n_tokens: L, the segment's tokens (rows 0..L-1 of its row). The callbacks only
    queue small tensor reductions (no host copy: no device synchronisation inside the layers);
    fields() turns them into the record's numpy arrays after the segment."""

    def __init__(self, n_layers: int, n_tokens: int) -> None:
        self.n_layers, self.n_tokens = n_layers, n_tokens
        self.reads: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        self.writes: dict[int, tuple[torch.Tensor, ...]] = {}

    def __call__(self, event: str, layer: int, tensors: dict[str, torch.Tensor | None]) -> None:
        L = self.n_tokens
        if event == "read":
            h, y = tensors["hidden"][0, :L].float(), tensors["read"][0, :L].float()
            ratio = torch.linalg.vector_norm(y, dim=-1) / torch.linalg.vector_norm(h, dim=-1).clamp_min(1e-30)
            den = tensors["denominator"]  # (b, h, n, 1), None without a denominator (then 1)
            den = torch.ones_like(ratio) if den is None else den[0, :, :L, 0].float().mean(dim=0)
            self.reads[layer] = (ratio, den)
        elif event == "write":
            outputs = tensors["memory_outputs"][0]  # (M, d)
            gamma = tensors["gamma"]  # (b, h, M, 1), None without a denominator (z is not kept)
            self.writes[layer] = (
                outputs.to(torch.float32, copy=True),  # the write itself (the state is rebuilt from it)
                tensors["beta"][0].float().mean(dim=(0, 2)),  # (M,): over heads (and gated channels)
                torch.ones(outputs.shape[0], device=outputs.device) if gamma is None
                else gamma[0, :, :, 0].float().mean(dim=0),  # (M,)
                torch.linalg.vector_norm(tensors["v_minus_vbar"][0].float(), dim=(0, 2)),  # (M,): |v - vbar|
            )

    def fields(self) -> dict[str, object]:
        """The segment's associative fields of SegmentRecord except the state's size (from the state)."""
        L, Y = self.n_tokens, self.n_layers
        ratio = np.zeros((Y, L), dtype=np.float32)
        denominator = np.full((Y, L), NOT_READ, dtype=np.float32)
        for layer, (r, den) in self.reads.items():
            ratio[layer], denominator[layer] = r.cpu().numpy(), den.cpu().numpy()
        if sorted(self.writes) != list(range(Y)):
            raise RuntimeError(f"the associative memory wrote layers {sorted(self.writes)} of {Y}")
        outputs, beta, gamma, over = (torch.stack([self.writes[y][i] for y in range(Y)]).cpu().numpy()
                                      for i in range(4))
        return {"state_write": {"memory_outputs": outputs}, "write_strength": beta, "novelty": gamma,
                "overwrite": over, "read_ratio": ratio, "read_denominator": denominator}
