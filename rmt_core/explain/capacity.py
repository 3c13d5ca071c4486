"""How many key-value pairs an associative memory (ARMT) holds: the estimate of Rodkin et al. 2024
(arXiv 2407.04841, App. B, Fig. 2a), measured on a loaded model's own memory block.

The paper's estimate. A memory that holds k of n written pairs exactly and, asked for any other key,
guesses uniformly among the v possible values answers a fraction alpha = (k + (n - k) / v) / n of
the questions right; from a measured accuracy alpha, therefore,

    k = n (v alpha - 1) / (v - 1)                                   (capacity_estimate)

(k = n at alpha = 1, k = 0 at chance, alpha = 1 / v). In the paper alpha is the exact-match accuracy of
a model trained on associative retrieval: n pairs, one per segment, keys of 2 symbols, values one
symbol of v = 16, then one key asked (the authors' run_finetuning_associative_retrieval.py:
NUM_SYMBOLS 16, value_size 1, exact_match).

What is measured here (memory_capacity). The loaded model is trained on other text, so its whole
forward cannot be asked the paper's task; its memory BLOCK can. At one layer, n synthetic pairs
are written into a fresh state one pair per write (as one pair per segment), each write by the
engine's own update rule (engine.memory.associative.delta_terms: DPFP features of order nu,
vbar, the gamma correction, the denominator, feature normalisation, heads, all as the model is
configured), with write strength beta = 1. Key i is k_i = W_mk x_i with x_i standard normal in
the hidden size (keys="model": the layer's own key map) or k_i standard normal in d_mem
(keys="random": the rule and feature map alone); its value is one of v random unit vectors of the
hidden size, drawn uniformly. Each written key is then read back as the query (phi(k_i)^T A /
(z^T phi(k_i) + 1e-5), the engine's retrieve) and the read decoded to the nearest of the v values
(largest dot product; all values have norm 1); alpha is the fraction decoded right, over every
written pair and `trials` independent draws. Computed in float64. The capacity reported is the
largest estimate over the measured n: a plateau when the curve levels off (as the paper's Fig. 2a
does), a lower bound when it is still rising at the largest n (captions.capacity_caption says
which). A noisy read still decodes right when it is nearest the right value, so far past the
point where reads are exact the estimate keeps rising slowly (measured on the shipped ARMT: about
+20% per doubling of n at 1,024-2,048 pairs).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..checks import check_int
from ..engine.memory.associative import AssociativeLayer, AssociativeOptions, delta_terms, features, from_heads, retrieve, to_heads
from ..errors import ArgumentError, ConfigError

KEYS = ("model", "random")
PAPER_VALUES = 16  # v in the paper's associative-retrieval runs (16 symbols, values of one symbol)
QUERIES = 256  # pairs asked per trial and n (a uniform sample of the written ones past that)


def capacity_estimate(accuracy, pairs, n_values: int) -> np.ndarray:
    """k = n (v alpha - 1) / (v - 1) (App. B): the pairs a memory of accuracy `accuracy` (alpha, 0..1)
    over `pairs` (n) written pairs holds, when it guesses the rest uniformly among `n_values` (v >= 2).
    Arrays broadcast; float64. ArgumentError for v < 2 or an accuracy outside 0..1."""
    v = check_int(n_values, "n_values", 2, fix="A guess among v values needs at least 2 values.")
    alpha, n = np.asarray(accuracy, dtype=np.float64), np.asarray(pairs, dtype=np.float64)
    if np.any((alpha < 0) | (alpha > 1)):
        raise ArgumentError(f"accuracy must lie in 0..1, got {alpha.min():.3g}..{alpha.max():.3g}.")
    return n * (v * alpha - 1.0) / (v - 1.0)


@torch.no_grad()
def retrieval_accuracy(keys: torch.Tensor, values: torch.Tensor, choice: torch.Tensor, options: AssociativeOptions,
                       pairs, beta: float = 1.0, queries: int | None = None,
                       generator: torch.Generator | None = None) -> np.ndarray:
    """(trials, len(pairs)) fraction of the first n pairs read back right after writing them, n in `pairs`.

    keys: (trials, N, d_mem) projected keys, written in order one per write; values: (trials, v, d)
    the possible values (the decoding picks the largest dot product with them); choice: (trials, N)
    long, each pair's value index; pairs: increasing counts 1..N at which to measure; beta: the write
    strength of every write; queries: at most this many of the n written pairs are asked per trial
    (drawn uniformly without replacement with `generator`; None: all of them). Writes with the
    engine's rule (delta_terms, add_terms) into a zero state of the keys' dtype; reads with its
    retrieve."""
    trials, total, _ = keys.shape
    pairs = [int(n) for n in pairs]
    if not pairs or pairs != sorted(set(pairs)) or pairs[0] < 1 or pairs[-1] > total:
        raise ArgumentError(f"pairs must be increasing counts between 1 and {total}, got {pairs}.")
    h = options.n_heads
    phi = features(keys, options)  # (trials, h, N, f)
    chosen = torch.gather(values, 1, choice.unsqueeze(-1).expand(-1, -1, values.shape[-1]))  # (trials, N, d)
    chosen = to_heads(chosen, h)  # (trials, h, N, e)
    f, e = phi.shape[-1], chosen.shape[-1]
    A, z = keys.new_zeros(trials, h, f, e), keys.new_zeros(trials, h, f)
    strength = keys.new_full((trials, h, 1, 1), float(beta))
    written = torch.zeros(trials, dtype=torch.bool, device=keys.device)
    out = np.zeros((trials, len(pairs)))
    column = 0
    for i in range(pairs[-1]):
        terms = delta_terms(phi[:, :, i:i + 1], chosen[:, :, i:i + 1], strength, A, z, written, options)
        A, z = AssociativeLayer.add_terms(A, z, *terms)
        written = torch.ones_like(written)
        if i + 1 == pairs[column]:
            n = i + 1
            asked = torch.arange(n) if queries is None or n <= queries else torch.stack(
                [torch.randperm(n, generator=generator)[:queries] for _ in range(trials)])
            asked = asked.expand(trials, -1).to(keys.device)  # (trials, q) indices of the pairs asked
            query = torch.gather(phi, 2, asked.view(trials, 1, -1, 1).expand(-1, h, -1, f))
            read, _ = retrieve(query, A, z, options)  # (trials, h, q, e)
            decoded = torch.einsum("tnd,tvd->tnv", from_heads(read), values).argmax(dim=-1)
            out[:, column] = (decoded == torch.gather(choice, 1, asked)).double().mean(dim=1).cpu().numpy()
            column += 1
    return out


@dataclass
class CapacityResult:
    """memory_capacity's measurement at one layer (see the module docstring).

    pairs: (P,) the numbers of written pairs n; accuracy: (P,) alpha, mean over trials;
    accuracy_trials: (trials, P); estimate: (P,) k = n (v alpha - 1) / (v - 1) of the mean accuracy;
    capacity: the largest estimate, reached at n = at_pairs. feature_size: the features per head
    (2 nu d_mem / heads); keys: "model" or "random"; n_values: v; checkpoint: the model's name."""

    layer: int
    keys: str
    n_values: int
    trials: int
    pairs: np.ndarray
    accuracy: np.ndarray
    accuracy_trials: np.ndarray
    estimate: np.ndarray
    feature_size: int
    checkpoint: str = ""

    @property
    def capacity(self) -> float:
        return float(np.max(self.estimate))

    @property
    def at_pairs(self) -> int:
        return int(self.pairs[int(np.argmax(self.estimate))])

    def to_rows(self) -> list[dict]:
        """One row per n: pairs, accuracy, capacity_estimate (and the standard deviation of the
        accuracy over the trials)."""
        spread = self.accuracy_trials.std(axis=0)
        return [{"pairs": int(n), "accuracy": float(a), "accuracy_std": float(s), "capacity_estimate": float(k)}
                for n, a, s, k in zip(self.pairs, self.accuracy, spread, self.estimate)]


def default_pairs(feature_size: int) -> list[int]:
    """1, 2, 4, ... up to the first power of two at or above 4 x the feature size (past the plateau)."""
    top = 1
    while top < 4 * feature_size:
        top *= 2
    return [1 << j for j in range(top.bit_length())]


def memory_capacity(model, layer: int = -1, pairs=None, n_values: int = PAPER_VALUES, trials: int = 8,
                    keys: str = "model", seed: int = 0, queries: int = QUERIES) -> CapacityResult:
    """The App. B capacity estimate of `model`'s associative memory at `layer` (see the module docstring).

    model: an RMTModel with the associative memory; layer: negative counts from the last; pairs:
    the numbers of written pairs to measure (increasing; default default_pairs: 1, 2, 4, ... past
    4 x the features per head); n_values: v, the possible values (the paper's 16); trials: independent
    draws of keys, values and choices; keys: "model" (k = W_mk x, x standard normal) or "random"
    (k standard normal in d_mem); seed: of the draws; queries: at most this many written pairs are
    asked per trial and n (a uniform sample; all of them below that). Costs one write per pair (all trials
    together) and one read per query: 2-10 s at the shipped ARMT's size with the defaults (2,048
    pairs), measured here on one CPU core shared with other work. Raises ConfigError for another
    memory type, ArgumentError for a bad argument."""
    if getattr(model.config, "memory", "tokens") != "associative":
        raise ConfigError(f"The capacity estimate is of an associative memory (ARMT); this model's memory is "
                          f"{model.config.memory!r}.")
    options: AssociativeOptions = model.memory.options
    n_layers = len(model.associative_layers)
    layer = check_int(layer, "layer", -n_layers, n_layers - 1, fix=f"The model has {n_layers} layers (-1 is the last).") % n_layers
    if keys not in KEYS:
        raise ArgumentError(f"keys must be one of {list(KEYS)}, got {keys!r}.")
    v = check_int(n_values, "n_values", 2, fix="A guess among v values needs at least 2 values.")
    trials = check_int(trials, "trials", 1, fix="It is how many independent draws of pairs are averaged.")
    f = options.feature_size // options.n_heads
    pairs = default_pairs(f) if pairs is None else [check_int(n, "pairs", 1, fix="Each is a number of written pairs.")
                                                    for n in pairs]
    if pairs != sorted(set(pairs)):
        raise ArgumentError(f"pairs must be increasing and distinct, got {pairs}.")
    weight = model.associative_layers[layer].W_mk.weight.detach().double().cpu()  # (d_mem, d)
    d_mem, d = weight.shape
    rng = torch.Generator().manual_seed(int(seed))
    total = pairs[-1]
    if keys == "model":
        projected = torch.randn(trials, total, d, generator=rng, dtype=torch.float64) @ weight.T
    else:
        projected = torch.randn(trials, total, d_mem, generator=rng, dtype=torch.float64)
    values = torch.nn.functional.normalize(torch.randn(trials, v, d, generator=rng, dtype=torch.float64), dim=-1)
    choice = torch.randint(0, v, (trials, total), generator=rng)
    queries = check_int(queries, "queries", 1, fix="It is how many written pairs are asked per trial.")
    per_trial = retrieval_accuracy(projected, values, choice, options, pairs, queries=queries, generator=rng)
    accuracy = per_trial.mean(axis=0)
    return CapacityResult(layer, keys, v, trials, np.asarray(pairs), accuracy, per_trial,
                          capacity_estimate(accuracy, pairs, v), f, str(getattr(model, "name", None) or ""))


__all__ = ["capacity_estimate", "retrieval_accuracy", "memory_capacity", "default_pairs", "CapacityResult", "KEYS",
           "PAPER_VALUES"]
