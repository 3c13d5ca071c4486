"""Attributions for memory, one verb in captum's shape:

    attribute(trace, kind, segment, position=None, *, target=None, method="ig", baseline=None, n_steps=32)

kinds (KINDS): what is explained, and by what
    read     the read slots R_k of `segment` (its memory_in, (m, d)) -> log p(target) at `position`
    write    the tokens of `segment` (their embeddings, (L, d)) -> what each write slot W_k wrote:
             its output along its own update direction (see _write_problem)
    through  the tokens of `segment` and of up to `max_segments` earlier segments -> log p(target)
             at `position`, gradients flowing through the memory chain
methods (METHODS): name -> the captum class that computes it (ig, saliency, input_x_gradient, ablation)
baselines (KINDS[kind].baselines): what an input is compared with (read: the initial memory or
    zeros; write, through: zero or mean token embeddings)

Every call re-runs the needed segments from the trace's stored memory (captum, Kokhlikyan et
al., 2020), returns an Attribution that records how it was made and turns itself into rows and
files, and never changes the shared model (no hooks, no requires_grad toggles, no .grad writes).
read_slots / write_slots / through_memory are the former three signatures, kept as thin wrappers.
"""
from __future__ import annotations

import csv
import io
import json
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from ..checks import check_choice, check_int, check_token_id
from ..errors import ArgumentError, TraceArgumentError, TraceError
from ..token_text import decode_token
from ..tracing.trace import Trace

MAX_THROUGH_SEGMENTS = 8  # through unrolls at most this many earlier segments (cost grows with each)


@dataclass(frozen=True)
class Kind:
    """One kind of attribution: what it explains, its score axes and the baselines its inputs take
    (name -> meaning; the first one is the default)."""

    summary: str
    axes: tuple[str, ...]
    needs_position: bool
    baselines: dict[str, str]


_TOKEN_BASELINES = {
    "zeros": "zero token embeddings; positions and memory unchanged",
    "mean": "the vocabulary's mean input embedding in place of every token",
}
KINDS: dict[str, Kind] = {
    "read": Kind("which read slots R_k of the segment the prediction at `position` used", ("slot",), True,
                 {"initial": "the model's learned initial memory, what the slots hold before anything is written",
                  "zeros": "zero vectors"}),
    "write": Kind("which of the segment's tokens produced what each write slot W_k wrote", ("slot", "token"), False,
                  _TOKEN_BASELINES),
    "through": Kind("which tokens of the segment and earlier segments the prediction at `position` used, "
                    "through memory", ("token",), True, _TOKEN_BASELINES),
}


@dataclass(frozen=True)
class _Problem:
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
    options: Callable[[_Problem], dict[str, Any]]  # keyword arguments of captum's attribute()
    calls: Callable[[_Problem], int]  # forward calls per target (for progress)
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


@dataclass
class Attribution:
    """One attribution: what was explained, how, and the scores with their labels.

    scores (axes named in `axes`):
        read     (m,)    one score per read slot R_k (summed over the hidden size)
        write    (m, L)  write slot W_k x token j of the segment
        through  (T,)    one score per document token; NaN outside `window` (the segments unrolled)
    Units: those of the explained value (log-probability in nats for read and through; the
    written vector's component along its update for write); positive raises it.
    delta: captum's convergence delta sum(scores) - (f_input - f_baseline), ig only (per slot for
    write); f_input / f_baseline: the explained value at the input and at the baseline.
    slots: R0.. (read) or W0.. (write); tokens: the display strings (rmt_core.token_text) of the
    scored tokens, document positions window[0]..window[1]-1, with token_segment / token_position
    (segment, index inside it) for each.
    """

    kind: str
    method: str
    segment: int
    position: int | None
    target_id: int | None  # the token id explained (read, through); None for write (each slot's update)
    target_token: str | None
    scores: np.ndarray
    baseline: str | None  # a name of KINDS[kind].baselines; None for saliency
    n_steps: int | None  # ig only
    delta: float | np.ndarray | None = None
    f_input: float | np.ndarray | None = None
    f_baseline: float | np.ndarray | None = None
    slots: list[str] = field(default_factory=list)
    tokens: list[str] = field(default_factory=list)
    window: tuple[int, int] | None = None
    token_segment: np.ndarray | None = None
    token_position: np.ndarray | None = None
    note: str | None = None

    @property
    def axes(self) -> tuple[str, ...]:
        return KINDS[self.kind].axes

    @property
    def first_segment(self) -> int | None:
        """The first segment whose tokens are scored (through, write), else None."""
        return None if self.token_segment is None or not len(self.token_segment) else int(self.token_segment[0])

    @property
    def title(self) -> str:
        """One line saying what is attributed to what (plain text)."""
        if self.kind == "write":
            return f"Write-slot attribution over segment {self.segment}'s tokens"
        what = f"log p({self.target_token!r}) at position {self.position} of segment {self.segment}"
        if self.kind == "read":
            return f"Read-slot attribution of {what}"
        return f"Attribution of {what} to the tokens of segments {self.first_segment}..{self.segment}, through memory"

    @property
    def how(self) -> str:
        """The method, its steps and the baseline, in words."""
        steps = f", {self.n_steps} steps" if self.n_steps is not None else ""
        base = (f", baseline: {self.baseline} ({KINDS[self.kind].baselines[self.baseline]})"
                if self.baseline is not None else ", no baseline")
        target = "; target: each slot's update direction" if self.kind == "write" else ""
        return f"{self.method}{steps}{base}{target}"

    def to_rows(self, top: int | None = None) -> list[dict[str, Any]]:
        """The scores as table rows (one dict per score), columns in the field's terms:

        read     slot, score, share_of_abs (|score| / sum of |scores|)
        write    slot, position (in the segment), document_position, token, score
        through  document_position, segment, position (in that segment), token, score
        top: only the `top` largest |scores| (per slot for write), most first, with a `rank`
        column (first; after `slot` for write). None: every score in axis order.
        """
        if top is not None:
            top = check_int(top, "top", 1, fix="It is how many of the largest |scores| to keep.")
        scores = np.asarray(self.scores, dtype=np.float64)
        if self.kind == "read":
            total = float(np.abs(scores).sum()) or 1.0
            rows = [{"slot": self.slots[k], "score": float(v), "share_of_abs": float(abs(v) / total)}
                    for k, v in enumerate(scores)]
            return rows if top is None else [{"rank": r, **rows[k]} for r, k in enumerate(_largest(scores, top), 1)]
        if self.kind == "write":
            out = []
            for k, slot in enumerate(scores):
                order = range(len(slot)) if top is None else _largest(slot, top)
                for rank, j in enumerate(order, 1):
                    rank_column = {} if top is None else {"rank": rank}
                    out.append({"slot": self.slots[k], **rank_column, **self._token_columns(int(j)),
                                "score": float(slot[j])})
            return out
        start, end = self.window
        scored = scores[start:end]
        if top is None:
            return [{**self._token_columns(i), "score": float(v)} for i, v in enumerate(scored)]
        return [{"rank": r, **self._token_columns(int(i)), "score": float(scored[i])}
                for r, i in enumerate(_largest(scored, top), 1)]

    def _token_columns(self, i: int) -> dict[str, Any]:
        """Columns of the i-th scored token (document position window[0] + i)."""
        if self.kind == "write":
            return {"position": i, "document_position": self.window[0] + i, "token": self.tokens[i]}
        return {"document_position": self.window[0] + i, "segment": int(self.token_segment[i]),
                "position": int(self.token_position[i]), "token": self.tokens[i]}

    def summary(self) -> dict[str, Any]:
        """How the scores were made, as plain JSON values (non-finite numbers as None)."""
        return _plain({
            "kind": self.kind, "method": self.method, "captum_class": METHODS[self.method].captum_class,
            "segment": self.segment, "position": self.position, "target_id": self.target_id,
            "target_token": self.target_token, "baseline": self.baseline,
            "baseline_meaning": KINDS[self.kind].baselines.get(self.baseline), "n_steps": self.n_steps,
            "delta": self.delta, "f_input": self.f_input, "f_baseline": self.f_baseline, "axes": list(self.axes),
            "window": self.window, "note": self.note,
        })

    def to_csv(self) -> str:
        """to_rows() as CSV text (a header line, then one line per score; floats in full precision)."""
        rows = self.to_rows()
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=list(rows[0]) if rows else ["score"], lineterminator="\n")
        writer.writeheader()
        writer.writerows(_plain(rows))
        return out.getvalue()

    def to_json(self, provenance: dict[str, Any] | None = None) -> str:
        """{"attribution": summary(), "rows": to_rows(), "provenance": provenance (when given)} as JSON text."""
        record = {"attribution": self.summary(), "rows": _plain(self.to_rows())}
        if provenance is not None:
            record["provenance"] = _plain(provenance)
        return json.dumps(record, indent=2, ensure_ascii=False)

    def save(self, path: str | Path, provenance: dict[str, Any] | None = None) -> Path:
        """Write to_csv() (path ending in .csv) or to_json(provenance) (.json); returns the path.

        provenance: what made the trace (rmt_core.viz.export.provenance(trace)), JSON only.
        Raises ArgumentError for another suffix; OSError when the file cannot be written.
        """
        out = Path(path)
        suffix = out.suffix.lower()
        if suffix not in (".csv", ".json"):
            raise ArgumentError(f"path must end in .csv or .json, got {str(path)!r}. The suffix chooses the format: "
                                ".csv for the rows, .json for the rows with how they were made.")
        if suffix == ".csv" and provenance is not None:
            raise ArgumentError("provenance is written to .json files only: save the CSV, then the same result "
                                "with provenance to a .json path beside it.")
        if out.parent != Path(""):
            out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(self.to_csv() if suffix == ".csv" else self.to_json(provenance), encoding="utf-8")
        return out


def _largest(values: np.ndarray, top: int) -> np.ndarray:
    """Indices of the `top` largest |values|, largest first (ties in index order)."""
    return np.argsort(-np.abs(values), kind="stable")[:top]


def _plain(value: Any) -> Any:
    """Plain JSON/CSV values: numpy scalars and arrays, tuples converted; non-finite floats as None."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [_plain(v) for v in (value.tolist() if isinstance(value, np.ndarray) else value)]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


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


def _require(trace: Trace):
    return trace.require_model("attribution")


def default_target(trace: Trace, segment: int, position: int) -> int:
    """The token that actually follows `position` (the answer, on fact-recall samples)."""
    seg = trace.segments[segment]
    if position + 1 < seg.num_tokens:
        return int(seg.token_ids[position + 1])
    if segment + 1 < trace.num_segments:
        return int(trace.segments[segment + 1].token_ids[0])
    raise TraceError("The last token of the document has no next token: pass target= (a token id).")


def _tensor(array: np.ndarray, model) -> torch.Tensor:
    return torch.as_tensor(np.asarray(array, dtype=np.float32), device=model.device).to(model.dtype)


def _token_baseline(name: str, embeds: torch.Tensor, model) -> torch.Tensor:
    """A baseline for token embeddings (batch, L, d): zeros, or the vocabulary's mean embedding everywhere."""
    if name == "zeros":
        return torch.zeros_like(embeds)
    mean = model.backbone.get_input_embeddings().weight.detach().mean(0).to(embeds.dtype)
    return mean.expand_as(embeds).clone()


# ---------------------------------------------------------------------- the verb
def attribute(trace: Trace, kind: str, segment: int, position: int | None = None, *, target: int | None = None,
              method: str = "ig", baseline: str | None = None, n_steps: int = 32, max_segments: int | None = None,
              progress: Callable[[int, int], Any] | None = None) -> Attribution:
    """Attribute a prediction (read, through) or what the write slots wrote (write) to its inputs.

    kind: "read", "write" or "through" (KINDS; shapes of the scores: Attribution).
    segment: the segment of the prediction (read, through) or of the writing (write).
    position: token index inside `segment` whose next-token prediction is explained (read and
        through need it; write takes none: it explains every write slot over the whole segment).
    target: token id whose log-probability is explained (default: the token that actually
        follows `position`); write takes none (each slot's target is its own update).
    method: a name of METHODS (captum: IntegratedGradients, Saliency, InputXGradient, FeatureAblation).
    baseline: a name of KINDS[kind].baselines, or None for the default (check_request).
    n_steps: integration steps (ig). max_segments: earlier segments unrolled (through only;
        default MAX_THROUGH_SEGMENTS; older ones enter through their stored memory and get no scores).
    progress(done, total): called after every forward pass (total: the passes this call makes).
    Raises ArgumentError (TraceArgumentError for a segment or position) naming the bad argument
    and the choices; TraceError without the model, or without memory slots for read and write.
    """
    baseline = check_request(kind, method, baseline)
    model = _require(trace)
    segment = trace.check_segment(segment)
    spec = KINDS[kind]
    if spec.needs_position:
        if position is None:
            raise ArgumentError(f"kind {kind!r} needs position: the token index in segment {segment} whose "
                                "next-token prediction is explained.")
        L = trace.segments[segment].num_tokens
        position = check_int(position, "position", 0, L - 1,
                             fix=f"It is a token's index inside segment {segment}, which holds {L} tokens.",
                             error=TraceArgumentError)
    elif position is not None or target is not None:
        raise ArgumentError(f"kind {kind!r} takes no {'position' if position is not None else 'target'}: it "
                            "explains every write slot over the whole segment (target: each slot's update "
                            "direction). Leave position and target out.")
    n_steps = check_int(n_steps, "n_steps", 1, fix="It is the number of integration steps (32 is a good default).")
    if max_segments is not None and kind != "through":
        raise ArgumentError(f"max_segments is for kind 'through' only (how many earlier segments are unrolled), "
                            f"got it with kind {kind!r}.")
    if target is not None:
        target = check_token_id(target, "target", int(trace.model_info["vocab_size"]))
    if spec.needs_position and target is None:
        target = default_target(trace, segment, position)
    if kind != "through" and trace.num_mem_tokens == 0:
        raise TraceError("This model has no memory slots to attribute.")
    if kind == "through":
        max_segments = check_int(MAX_THROUGH_SEGMENTS if max_segments is None else max_segments, "max_segments", 0,
                                 fix="It is how many earlier segments are unrolled (cost grows with it).")

    with torch.enable_grad():
        problem, labels = _PROBLEMS[kind](trace, model, segment, position, target, baseline, n_steps, max_segments)
        scores, delta, f_input, f_baseline = _run(METHODS[method], problem, progress)
    if kind == "through":
        start, end = labels["window"]
        full = np.full(trace.num_tokens, np.nan)
        full[start:end] = scores
        scores = full
    return Attribution(kind, method, segment, position, target,
                       None if target is None else decode_token(model.tokenizer, target), scores, baseline,
                       n_steps if method == "ig" else None, delta, f_input, f_baseline, **labels)


def _run(method: Method, problem: _Problem, progress: Callable[[int, int], Any] | None):
    """captum over every target: (scores (F,) or (targets, F), delta, f(input), f(baseline))."""
    done = [0]
    total = len(problem.targets) * method.calls(problem) + (2 if problem.baseline is not None else 1)

    def forward(x: torch.Tensor) -> torch.Tensor:
        out = problem.forward(x)
        done[0] += 1
        if progress is not None:
            progress(min(done[0], total), total)
        return out

    explainer = method.captum(forward)
    options = method.options(problem)
    scores, deltas = [], []
    for target in problem.targets:
        with warnings.catch_warnings():  # captum sets requires_grad on its own copy of the inputs: as intended
            warnings.filterwarnings("ignore", message="Input Tensor .* did not already require gradients")
            out = explainer.attribute(problem.inputs, target=target, **options)
        attr, delta = out if method.convergence_delta else (out, None)
        values = attr[0, :, 0].float() if method.per_feature else attr[0].float().sum(-1)  # (F,)
        scores.append(values.detach().cpu().numpy())
        deltas.append(None if delta is None else float(delta))
    with torch.no_grad():
        f_input = forward(problem.inputs)[0].cpu().numpy()
        f_baseline = None if problem.baseline is None else forward(problem.baseline)[0].cpu().numpy()
    single = problem.targets == (None,)
    if single:
        return (scores[0], deltas[0], float(f_input),
                None if f_baseline is None else float(f_baseline))
    return (np.stack(scores), None if deltas[0] is None else np.array(deltas), f_input, f_baseline)


# ---------------------------------------------------------------------- kinds
# Each builds the captum problem of one kind and the labels of its scores (Attribution fields), from
# (trace, model, segment, position, target, baseline, n_steps, max_segments) checked by attribute().
def _read_problem(trace, model, segment, position, target, baseline, n_steps, max_segments):
    """Inputs: the read memory (1, m, d); output: log p(target) at `position` (batch,)."""
    seg = trace.segments[segment]
    ids = torch.as_tensor(seg.token_ids, dtype=torch.long, device=model.device).unsqueeze(0)

    def forward(memory: torch.Tensor) -> torch.Tensor:  # memory: (batch, m, d)
        out = model.run_segment(memory, ids.expand(memory.shape[0], -1), write=False, segment_index=segment)
        return torch.log_softmax(out.logits[:, position].float(), dim=-1)[:, target]  # (batch,)

    memory = _tensor(seg.memory_in, model).unsqueeze(0)
    base = None
    if baseline == "initial":
        base = model.initial_memory.detach().unsqueeze(0)
    elif baseline == "zeros":
        base = torch.zeros_like(memory)
    problem = _Problem(forward, memory, base, n_steps, batch=16)
    return problem, {"slots": [f"R{k}" for k in range(trace.num_mem_tokens)]}


def _write_problem(trace, model, segment, position, target, baseline, n_steps, max_segments):
    """Inputs: the segment's token embeddings (1, L, d); outputs, one per write slot k:

        f_k(x) = < mem_out_k(x), u_k >,  u_k = (mem_out_k - mem_in_k) / ||mem_out_k - mem_in_k||,

    with u_k fixed at the actual input. Why: a slot's output is mostly carried-over content
    (mem_in) plus what this segment adds; projecting on the update direction asks which tokens
    produced the change (what the slot WROTE here) rather than what it kept.
    """
    seg = trace.segments[segment]
    ids = torch.as_tensor(seg.token_ids, dtype=torch.long, device=model.device).unsqueeze(0)
    memory = _tensor(seg.memory_in, model).unsqueeze(0)
    update = torch.as_tensor(seg.memory_out - seg.memory_in, dtype=torch.float32, device=model.device)
    directions = update / update.norm(dim=-1, keepdim=True).clamp(min=1e-12)  # (m, d)

    def forward(embeds: torch.Tensor) -> torch.Tensor:  # embeds: (batch, L, d) -> (batch, m)
        out = model.run_segment(memory.expand(embeds.shape[0], -1, -1), ids.expand(embeds.shape[0], -1),
                                segment_index=segment, inputs_embeds=embeds)
        return (out.memory_out.float() * directions).sum(-1)

    embeds = model.backbone.get_input_embeddings()(ids).detach()
    base = None if baseline is None else _token_baseline(baseline, embeds, model)
    problem = _Problem(forward, embeds, base, n_steps, batch=16, targets=tuple(range(trace.num_mem_tokens)))
    n = seg.num_tokens
    return problem, {"slots": [f"W{k}" for k in range(trace.num_mem_tokens)], "tokens": list(seg.tokens),
                     "window": (seg.start, seg.end), "token_segment": np.full(n, segment),
                     "token_position": np.arange(n)}


def _through_problem(trace, model, segment, position, target, baseline, n_steps, max_segments):
    """Inputs: the token embeddings of segments first..segment (1, W, d); output: log p(target)
    at `position`, the earlier segments reaching it only through the memory they write."""
    first = max(0, segment - max_segments)
    window = trace.segments[first:segment + 1]
    lengths = [s.num_tokens for s in window]
    ids = torch.as_tensor(np.concatenate([s.token_ids for s in window]), dtype=torch.long, device=model.device)
    start_memory = _tensor(window[0].memory_in, model).unsqueeze(0)

    def forward(embeds: torch.Tensor) -> torch.Tensor:  # (batch, window tokens, d) -> (batch,)
        b = embeds.shape[0]
        memory = start_memory.expand(b, -1, -1)
        offset = 0
        for i, length in enumerate(lengths):
            piece = embeds[:, offset:offset + length]
            out = model.run_segment(memory, ids[offset:offset + length].unsqueeze(0).expand(b, -1),
                                    segment_index=first + i, inputs_embeds=piece, write=i < len(lengths) - 1)
            offset += length
            if out.memory_out is not None:
                memory = out.memory_out
        return torch.log_softmax(out.logits[:, position].float(), dim=-1)[:, target]

    embeds = model.backbone.get_input_embeddings()(ids).detach().unsqueeze(0)
    base = None if baseline is None else _token_baseline(baseline, embeds, model)
    note = None
    if first > 0:
        note = (f"Only the last {max_segments} segments before segment {segment} are unrolled; "
                f"segments 0..{first - 1} enter through their stored memory and get no scores.")
    return _Problem(forward, embeds, base, n_steps, batch=8), {
        "tokens": [t for s in window for t in s.tokens], "window": (window[0].start, window[-1].end),
        "token_segment": np.concatenate([np.full(s.num_tokens, s.index) for s in window]),
        "token_position": np.concatenate([np.arange(s.num_tokens) for s in window]), "note": note}


_PROBLEMS = {"read": _read_problem, "write": _write_problem, "through": _through_problem}


# ---------------------------------------------------------------------- the former three signatures
def read_slots(trace: Trace, segment: int, position: int, target: int | None = None, method: str = "ig",
               n_steps: int = 32, baseline: str | None = None) -> Attribution:
    """attribute(trace, "read", segment, position, ...): scores (m,), one per read slot R_k."""
    return attribute(trace, "read", segment, position, target=target, method=method, baseline=baseline,
                     n_steps=n_steps)


def write_slots(trace: Trace, segment: int, method: str = "ig", n_steps: int = 32,
                baseline: str | None = None) -> Attribution:
    """attribute(trace, "write", segment, ...): scores (m, L), write slot W_k x the segment's tokens."""
    return attribute(trace, "write", segment, method=method, baseline=baseline, n_steps=n_steps)


def through_memory(trace: Trace, segment: int, position: int, target: int | None = None, n_steps: int = 32,
                   max_segments: int = MAX_THROUGH_SEGMENTS, progress: Callable[[int, int], Any] | None = None,
                   method: str = "ig", baseline: str | None = None) -> Attribution:
    """attribute(trace, "through", segment, position, ...): scores (T,) per document token, NaN
    outside the segments unrolled."""
    return attribute(trace, "through", segment, position, target=target, method=method, baseline=baseline,
                     n_steps=n_steps, max_segments=max_segments, progress=progress)
