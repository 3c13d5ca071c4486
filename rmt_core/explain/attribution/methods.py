"""The attribution tables: kinds (what is explained, by what, against which baselines) and
methods (name -> the captum class that computes it), and check_request, which validates a
(kind, method, baseline) choice before anything runs."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch

from ...checks import check_choice
from ...errors import ArgumentError
from ...tracing.capabilities import Needs

# The cost bound of "through": by default it unrolls every earlier segment back to the document's
# start, up to this many (cost grows linearly with each: about 0.17 s per segment unrolled at 32
# integration steps for the default model on one CPU thread, so 64 segments ~ 11 s); older segments
# enter through their stored memory and get no scores, and the result says so. Ask for more with
# max_segments.
MAX_THROUGH_SEGMENTS = 64


@dataclass(frozen=True)
class Kind:
    """One kind of attribution: what it explains, its score axes and the baselines its inputs take
    (name -> meaning; the first one is the default)."""

    summary: str
    axes: tuple[str, ...]
    needs_position: bool
    baselines: dict[str, str]
    needs: Needs = Needs(model=True)  # what the trace must have (capabilities): read / write need slots


_TOKEN_BASELINES = {
    "zeros": "zero token embeddings; positions and memory unchanged",
    "mean": "the vocabulary's mean input embedding in place of every token",
}
KINDS: dict[str, Kind] = {
    "read": Kind("which read slots R_k of the segment the prediction at `position` used", ("slot",), True,
                 {"initial": "the model's learned initial memory, what the slots hold before anything is written",
                  "zeros": "zero vectors"}, Needs(slots=True, model=True)),
    "write": Kind("which of the segment's tokens produced what each write slot W_k wrote", ("slot", "token"), False,
                  _TOKEN_BASELINES, Needs(slots=True, model=True)),
    "through": Kind("which tokens of the segment and earlier segments the prediction at `position` used, "
                    "through memory", ("token",), True, _TOKEN_BASELINES),
}


@dataclass(frozen=True)
class Problem:
    """What one kind hands to captum: forward(inputs) -> (batch,) or (batch, outputs)."""

    forward: Callable[[torch.Tensor], torch.Tensor]
    inputs: torch.Tensor  # (1, F, d): F features (slots or tokens) of hidden size d
    baseline: torch.Tensor | None  # like inputs; None for a method that takes none
    n_steps: int
    batch: int  # integration points (ig) or perturbations (ablation) per forward call
    targets: tuple[int | None, ...] = (None,)  # captum targets: None (one output) or one per output

    @property
    def feature_mask(self) -> torch.Tensor:  # (1, F, 1): feature j = slot or token j, all its d values
        return torch.arange(self.inputs.shape[1], device=self.inputs.device).view(1, -1, 1)


@dataclass(frozen=True)
class Method:
    """One attribution method: the captum.attr class, how it is called, what it compares with.

    baseline: "chosen" (any baseline of the kind), "zeros" (compares with zero inputs by
    construction) or "none" (no comparison: a local gradient).
    """

    captum_class: str  # a class of captum.attr (imported on first use: captum is slow to import)
    summary: str
    baseline: str
    options: Callable[[Problem], dict[str, Any]]  # keyword arguments of captum's attribute()
    calls: Callable[[Problem], int]  # forward calls per target (for progress)
    convergence_delta: bool = False
    per_feature: bool = False  # one value per feature (repeated over d) instead of a value per element

    @property
    def captum(self) -> type:
        """The captum.attr class itself (imports captum)."""
        import captum.attr

        return getattr(captum.attr, self.captum_class)


METHODS: dict[str, Method] = {
    "ig": Method(
        "IntegratedGradients", "integrated gradients (Sundararajan et al., 2017): the path integral of the gradient "
        "from the baseline to the input; the scores sum to f(input) - f(baseline) up to the convergence delta",
        "chosen", lambda p: {"baselines": p.baseline, "n_steps": p.n_steps, "internal_batch_size": p.batch,
                             "return_convergence_delta": True},
        lambda p: -(-p.n_steps // p.batch) + 2, convergence_delta=True),  # + f(input), f(baseline) for the delta
    "saliency": Method(
        "Saliency", "the signed gradient at the input (Simonyan et al., 2014), summed over the hidden size",
        "none", lambda p: {"abs": False}, lambda p: 1),
    "input_x_gradient": Method(
        "InputXGradient", "input times gradient (Shrikumar et al., 2016): a first-order estimate of "
        "f(input) - f(zero inputs)", "zeros", lambda p: {}, lambda p: 1),
    "ablation": Method(
        "FeatureAblation", "each slot (read) or token (write, through) replaced by the baseline in turn: "
        "f(input) - f(input with that one replaced)", "chosen",
        lambda p: {"baselines": p.baseline, "feature_mask": p.feature_mask, "perturbations_per_eval": p.batch},
        lambda p: 1 + -(-p.inputs.shape[1] // p.batch), per_feature=True),
}
BASELINES = tuple(dict.fromkeys(name for kind in KINDS.values() for name in kind.baselines))  # every name



# ---------------------------------------------------------------------- checks
def check_request(kind: str, method: str = "ig", baseline: str | None = None) -> str | None:
    """The baseline a (kind, method, baseline) request uses, after checking the three names.

    baseline None: the kind's default for methods that compare with one ("initial" for read,
    "zeros" for write and through), "zeros" for input_x_gradient, None for saliency.
    Raises ArgumentError for an unknown kind, method or baseline (naming the choices), a baseline
    the kind's inputs cannot take, and a baseline given to a method that cannot use it.
    """
    check_choice(kind, "kind", tuple(KINDS), fix="; ".join(f"{k}: {v.summary}" for k, v in KINDS.items()) + ".")
    check_choice(method, "method", tuple(METHODS))
    choices = KINDS[kind].baselines
    if baseline is not None and baseline not in choices:
        others = [k for k, spec in KINDS.items() if baseline in spec.baselines]
        fix = (f"{baseline!r} is a baseline of kind {' and '.join(map(repr, others))}; kind {kind!r} compares "
               f"{'memory' if kind == 'read' else 'token embeddings'} with one of its own." if others else "")
        check_choice(baseline, "baseline", tuple(choices), fix=fix)
    spec = METHODS[method]
    if spec.baseline == "none":
        if baseline is not None:
            raise ArgumentError(f"method {method!r} uses no baseline (it is the gradient at the input), got "
                                f"baseline={baseline!r}. Leave baseline out, or use method 'ig' or 'ablation' to "
                                "compare with a baseline.")
        return None
    if spec.baseline == "zeros":
        if baseline not in (None, "zeros"):
            raise ArgumentError(f"method {method!r} compares with zero inputs by construction (input x gradient), "
                                f"got baseline={baseline!r}. Use baseline 'zeros', or method 'ig' or 'ablation' to "
                                f"compare with {baseline!r}.")
        return "zeros"
    return baseline if baseline is not None else next(iter(choices))


