"""Analysis over a trace: pure numpy functions (no torch), shared by the app, the CLI and figures."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..checks import check_choice, check_int
from ..errors import ArgumentError
from ..token_text import decode_distinct
from ..tracing.trace import BLOCK_PAIRS, Trace


@dataclass
class Projection:
    """Memory trajectory in PCA space: coords[s, k] is slot k after step s (s = 0: initial memory)."""

    coords: np.ndarray  # (S + 1, m, n_components)
    explained_variance_ratio: np.ndarray  # (n_components,)
    mean: np.ndarray  # (d,)
    components: np.ndarray  # (n_components, d)


def pca_trajectory(memory_states: np.ndarray, n_components: int = 2) -> Projection:
    """PCA fitted on all slots of all memory states (S + 1, m, d).

    The principal axes are the eigenvectors of the (d, d) scatter matrix of the centred states
    (the right singular vectors of an SVD, without its (N, d) left factor: about 20x quicker for
    the 21k x 128 states of an 84k-token trace); signs fixed so that the same data always gives
    the same picture."""
    states = np.asarray(memory_states, dtype=np.float64)
    n_components = check_int(n_components, "n_components", 1, fix="2 or 3 for a plot.")
    if states.ndim != 3:
        raise ArgumentError(f"memory_states must be (steps, slots, hidden), got shape {states.shape}.")
    steps, slots, dim = states.shape
    flat = states.reshape(-1, dim)
    mean = flat.mean(axis=0)
    centered = flat - mean
    eigenvalues, vectors = np.linalg.eigh(centered.T @ centered)  # ascending
    order = np.argsort(eigenvalues)[::-1]
    variance = np.clip(eigenvalues[order], 0.0, None)  # = the squared singular values of `centered`
    k = min(n_components, dim, flat.shape[0])
    total = float(variance.sum()) or 1.0
    components = vectors[:, order[:k]].T
    # Fix the sign so the same data always gives the same picture.
    signs = np.sign(components[np.arange(k), np.abs(components).argmax(axis=1)])
    components = components * signs[:, None]
    coords = (centered @ components.T).reshape(steps, slots, k)
    if k < n_components:  # fewer points than components: pad with zeros
        coords = np.concatenate([coords, np.zeros((steps, slots, n_components - k))], axis=-1)
    ratio = np.zeros(n_components)
    ratio[:k] = variance[:k] / total
    return Projection(coords, ratio, mean, components)


def slot_norms(memory_states: np.ndarray) -> np.ndarray:
    """(S + 1, m) L2 norm of each slot at each step."""
    return np.linalg.norm(np.asarray(memory_states, dtype=np.float64), axis=-1)


def _cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    denom = np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1)
    return (a * b).sum(-1) / np.where(denom == 0, 1.0, denom)


def slot_churn(memory_states: np.ndarray, reset: bool = False) -> np.ndarray:
    """(S, m) cosine distance between each slot's memory_in and memory_out per segment.

    memory_states: (S + 1, m, d) as Trace.memory_states. reset: True for a trace with memory
    reset (Trace.carries_memory False), whose every segment starts from row 0 (the initial memory)."""
    states = np.asarray(memory_states)
    inputs = np.broadcast_to(states[:1], states[1:].shape) if reset else states[:-1]
    return 1.0 - _cosine(inputs, states[1:])


def slot_similarity(memory: np.ndarray) -> np.ndarray:
    """(m, m) cosine similarity between the slots of one memory state (m, d)."""
    mem = np.asarray(memory, dtype=np.float64)
    normed = mem / np.maximum(np.linalg.norm(mem, axis=-1, keepdims=True), 1e-12)
    return normed @ normed.T


def segment_perplexity(trace: Trace) -> np.ndarray:
    """(S,) perplexity of each segment's tokens."""
    return np.exp(trace.losses())


def _pair(pair: str) -> int:
    return BLOCK_PAIRS.index(check_choice(pair, "pair", BLOCK_PAIRS))


def _layer(trace: Trace, layer: int | None) -> int | None:
    """None, or a layer index in -Y..Y-1 (negative counts from the last layer)."""
    if layer is None:
        return None
    n = int(trace.model_info["num_layers"])
    return check_int(layer, "layer", -n, n - 1, fix=f"The model has {n} layers (-1 is the last).")


def block_mass(trace: Trace, pair: str, layer: int | None = None) -> np.ndarray:
    """(S,) attention mass of a block pair per segment, averaged over heads (and layers if None)."""
    p, layer = _pair(pair), _layer(trace, layer)
    values = np.stack([s.block_attention[..., p].astype(np.float64) for s in trace.segments])  # (S, Y, H)
    values = values.mean(axis=2)
    return values.mean(axis=1) if layer is None else values[:, layer]


def block_grid(trace: Trace, segment: int, pair: str) -> np.ndarray:
    """(Y, H) attention mass of a block pair in one segment, per layer and head."""
    return trace.segments[trace.check_segment(segment)].block_attention[..., _pair(pair)].astype(np.float64)


def tokens_write_slots_attend_to(trace: Trace, segment: int, layer: int | None = None,
                                 k: int = 5) -> list[list[tuple[int, str, float]]]:
    """For each write slot W_k: the k tokens it attends to most, as (index in segment, token, weight),
    from write_to_tokens with heads (and layers if None) averaged."""
    seg = trace.segments[trace.check_segment(segment)]
    layer, k = _layer(trace, layer), check_int(k, "k", 1, fix="It is how many tokens to list per slot.")
    weights = seg.write_to_tokens.astype(np.float64).mean(axis=1)  # (Y, m, L)
    weights = weights.mean(axis=0) if layer is None else weights[layer]
    result = []
    for slot in weights:
        order = np.argsort(-slot)[:k]
        result.append([(int(j), seg.tokens[j], float(slot[j])) for j in order])
    return result


def logit_lens(trace: Trace, segment: int, tokenizer=None) -> list[list[list[str]]]:
    """[layer][slot] -> top tokens the written memory decodes to at that layer (layer 0 = embeddings)."""
    ids = trace.lens_ids(segment)
    decoded = decode_distinct(tokenizer, ids)
    return [[[decoded[int(i)] for i in slot] for slot in layer] for layer in ids]


def memory_reading(trace: Trace, segment: int, layer: int | None = None) -> np.ndarray:
    """(L, m) how much each token attends to each read slot R_k (tokens_to_read), heads (and layers
    if None) averaged."""
    layer = _layer(trace, layer)
    w = trace.segments[trace.check_segment(segment)].tokens_to_read.astype(np.float64).mean(axis=1)  # (Y, L, m)
    return w.mean(axis=0) if layer is None else w[layer]
