"""Memory interventions: edit the memory entering a segment and re-run the rest of the document.

Each returns the per-segment loss before and after and the answer before and after:
the prediction after "Answer:" on documents that end with a question (see
rmt_core.explain.answers.answer_site), else the next token predicted after the document.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from .answers import answer_site, answer_text, probability_of, stored_predictions, top_predictions
from .compare import same_tokenizer
from ..checks import check_int
from ..errors import ArgumentError, TraceArgumentError, TraceError
from ..engine.memory import concat_states, state_sample
from ..tracing.recorder import gather_token_logprobs, segment_loss, token_logprobs
from ..tracing.capabilities import Needs
from ..tracing.trace import Trace


# What each named intervention needs (capabilities): the memory type must support its edit.
NEEDS: dict[str, Needs] = {"reset": Needs(edit="reset"), "zero": Needs(edit="zero"), "shuffle": Needs(edit="shuffle"),
                           "replace": Needs(edit="replace"),
                           "reset_layer": Needs(memory_types=("associative",), edit="replace"),  # reset_layer
                           "skip_write": Needs(model=True)}  # skip_write: any memory type


@dataclass
class InterventionResult:
    """Per-segment loss and the answer, before and after an edit of the memory entering `segment`.

    answer_*: the top prediction at the answer site (after "Answer:", else after the document's
    last token) and p_answer_*: the probability of THAT prediction. expected: the token the
    document actually has there (e.g. the demo's answer), None at the end of the document;
    p_expected_*: its probability before / after.
    """

    name: str
    segment: int
    loss_before: np.ndarray  # (S,)
    loss_after: np.ndarray  # (S,)
    answer_before: str | None
    answer_after: str | None
    p_answer_before: float | None
    p_answer_after: float | None
    expected: str | None = None
    p_expected_before: float | None = None
    p_expected_after: float | None = None
    site_logprobs: np.ndarray | None = None  # (V,) log-probs at the answer site after the edit; None: unchanged

    @property
    def loss_change(self) -> np.ndarray:
        return self.loss_after - self.loss_before

    @property
    def answer_changed(self) -> bool:
        return self.answer_before != self.answer_after


@torch.no_grad()
def intervene(trace: Trace, segment: int, edit: "Callable[[np.ndarray], np.ndarray] | str | dict[str, np.ndarray]",
              name: str, **edit_options) -> InterventionResult:
    """Replace the state entering `segment` by an edit of it and re-run to the end (Trace.replay).

    edit: a function of the memory entering the segment ((m, d) for TokenMemory, whose state has
    one array; for a memory type with several arrays, of the dict of named arrays) returning
    one of the same shape; the name of an edit the memory type supports ("reset", "zero",
    "replace", "shuffle"; edit_options: part=, source=, seed=); or the edited state itself (a
    dict of the state's named arrays, e.g. patching's). Raises ArgumentError for an edit of
    another shape or one the memory type does not support."""
    model = trace.require_model("an intervention")
    segment = trace.check_segment(segment)
    state = trace.state_in(segment)
    if isinstance(edit, dict):
        edited = {key: np.asarray(value, dtype=np.float32) for key, value in edit.items()}
    elif isinstance(edit, str):
        edited = model.memory.edit_state(state, edit, **edit_options)
    elif len(state) == 1:  # one array (TokenMemory's memory): the edit sees the array itself
        (key, value), = state.items()
        edited = {key: np.asarray(edit(value.copy()), dtype=np.float32)}
    else:
        edited = edit({key: value.copy() for key, value in state.items()})
    for key, value in state.items():
        got = np.shape(edited.get(key)) if isinstance(edited, dict) else None
        if got != value.shape:
            axes = ", ".join(model.memory.state_spec().get(key, ()))
            raise ArgumentError(f"edit must return memory of shape {value.shape} ({axes}) for {key!r}, got {got}.")
    before = trace.losses()
    after = before.copy()
    carry = None
    if segment > 0:  # the previous segment's last prediction is not affected by the edit
        out = trace.replay(segment - 1)
        carry = torch.log_softmax(out.logits[0, -1].float(), dim=-1)
    site = answer_site(trace, fallback=True)
    site_logprobs = None  # the log-probs at the answer site after the edit
    state = edited  # named arrays entering `segment`; then each segment's state in the memory type's form
    # memory reset (trace.carries_memory False): later segments start from the initial state, as traced
    rerun = trace.segments[segment:] if trace.carries_memory else trace.segments[segment:segment + 1]
    for seg in rerun:
        out = trace.replay(seg.index, state)
        ids = torch.as_tensor(seg.token_ids, dtype=torch.long, device=model.device)
        logprobs, token_lp = token_logprobs(out.logits[0], ids, carry)
        after[seg.index] = segment_loss(token_lp)
        carry = logprobs[-1]
        if site is not None and seg.index == site.segment:
            site_logprobs = logprobs[site.position]
        state = trace.next_state(out)  # memory reset: later segments start from the initial state again
    result = InterventionResult(name, segment, before, after, None, None, None, None)
    if site is not None:
        _answers(trace, site, site_logprobs, result)
    return result


def _answers(trace: Trace, site, site_logprobs: torch.Tensor | None, result: InterventionResult) -> None:
    """Fill in the answers before / after (rmt_core.explain.answers reads the predictions)."""
    tokenizer = trace.model.tokenizer
    top_before = stored_predictions(trace, site, 1)[0]
    result.answer_before, result.p_answer_before = top_before.text, top_before.probability
    seg = trace.segments[site.segment]
    following = None  # the token the document has after the site
    if site.position + 1 < seg.num_tokens:
        following = int(seg.token_ids[site.position + 1]), float(seg.token_logprob[site.position + 1])
    elif site.segment + 1 < trace.num_segments:
        nxt = trace.segments[site.segment + 1]
        following = int(nxt.token_ids[0]), float(nxt.token_logprob[0])
    if following is not None:
        result.expected = answer_text(tokenizer, following[0])
        result.p_expected_before = float(np.exp(following[1]))
    if site_logprobs is None:  # the edit comes after the answer site: nothing there changes
        result.answer_after, result.p_answer_after = result.answer_before, result.p_answer_before
        result.p_expected_after = result.p_expected_before
        return
    result.site_logprobs = site_logprobs.detach().float().cpu().numpy()
    top_after = top_predictions(site_logprobs, tokenizer, 1)[0]
    result.answer_after, result.p_answer_after = top_after.text, top_after.probability
    if following is not None:
        result.p_expected_after = probability_of(site_logprobs, following[0])


# ---------------------------------------------------------------------- patching across documents
# The parts of a memory that patching copies one at a time (MemoryType.parts), by memory type: the
# tokens memory's slots M0.., an associative memory's layers L0.. (that layer's A_l and z_l).
PART_AXES: dict[str, str] = {"tokens": "slot", "associative": "layer"}
PATCH_NEEDS = Needs(edit="replace")  # a part is copied by the memory type's "replace" edit


def patch_parts(trace: Trace) -> list[str]:
    """The parts a patch sweep patches one at a time, by name (MemoryType.parts: slots "M0".., an
    associative memory's layers "L0.."); its columns are these, then "all". Needs the model (TraceError)."""
    return list(trace.require_model("patching memory").memory.parts())


def part_axis(trace: Trace) -> str:
    """What a patched part of this trace's memory is: "slot" (tokens memory), "layer" (associative), else "part"."""
    return PART_AXES.get(trace.memory_type, "part")


@dataclass
class PatchResult(InterventionResult):
    """An InterventionResult of memory patched from another run (activation patching across
    documents), with what the source's answer became in the target.

    parts: the parts of the memory patched (all of them when the whole memory was), on `axis`:
    "slot" for the tokens memory (slots M_k), "layer" for an associative memory (layer l's A_l and
    z_l); `slots` / `layers` name them by axis. source_segment: the source's segment whose entering
    memory was taken. source_answer: the source's own top answer (its top prediction at its answer
    site); p_source_answer_before / _after: its probability at the target's answer site before /
    after the patch.
    """

    parts: tuple[int, ...] = ()
    axis: str = "slot"
    source_segment: int = 0
    source_answer: str | None = None
    p_source_answer_before: float | None = None
    p_source_answer_after: float | None = None

    @property
    def slots(self) -> tuple[int, ...]:
        """The slots patched (tokens memory); () for a memory patched by layer."""
        return self.parts if self.axis == "slot" else ()

    @property
    def layers(self) -> tuple[int, ...]:
        """The layers whose (A_l, z_l) were patched (associative memory); () for a memory of slots."""
        return self.parts if self.axis == "layer" else ()

    @property
    def became_source_answer(self) -> bool:
        """Whether the target's top answer after the patch is the source's answer."""
        return self.source_answer is not None and self.answer_after == self.source_answer


def patch_memory(target: Trace, segment: int, source: Trace, *, slots=None, layers=None,
                 source_segment: int | None = None) -> PatchResult:
    """Run `target` from `segment` on with the memory `source` had entering that segment.

    slots (tokens memory) / layers (associative memory: layer l's A_l and z_l together): None patches
    the whole memory; an int or a list of indices patches those only (the others keep the target's
    own). source_segment: the source's segment to take the memory from (default `segment`). Returns
    a PatchResult: the target's answer and its probability before and after, the per-segment loss
    before and after (loss_change), and p(source's answer) at the target's answer site before and
    after. Activation patching (Meng et al., 2022, "Locating and Editing Factual Associations in
    GPT"; Heimersheim & Nanda, 2024) applied to the recurrent memory between segments.
    Raises TraceError without the target's model (an associative source: without its model, which
    rebuilds its state), when the traces' memories or tokenizers differ, or for slots given to a
    memory of layers (and the reverse); ArgumentError (TraceArgumentError) for a segment, slot or
    layer out of range.
    """
    segment, source_segment, chosen = _check_patch(target, segment, source, _chosen(target, slots, layers),
                                                   source_segment)
    site = answer_site(target, fallback=True)
    source_token = _source_answer(source)
    before_lp = None
    if site is not None and source_token is not None:  # the target's own log-probs at its answer site
        before_lp = _site_logprobs(target, site)
    return _patched(target, segment, source, source_segment, chosen, source_token, before_lp)


def _chosen(target: Trace, slots, layers):
    """The parts asked for (slots= or layers=, by the target's memory), or None for all of them."""
    axis = part_axis(target)
    other = {"slot": layers, "layer": slots}.get(axis)
    if other is not None:
        given, wanted = ("layers", "slots") if axis == "slot" else ("slots", "layers")
        raise TraceError(f"This model's memory ({target.memory_type!r}) is patched by {axis}: give {wanted}=, "
                         f"not {given}= (a {axis} is what it has instead of {given[:-1]}s).")
    return slots if axis == "slot" else layers


def _check_patch(target: Trace, segment, source: Trace, parts, source_segment) -> tuple[int, int, tuple[int, ...]]:
    """(segment, source_segment, parts) checked; raises as patch_memory says."""
    model = target.require_model("patching memory")
    missing = PATCH_NEEDS.missing(target)
    if missing:
        raise TraceError(f"Patching copies parts of the memory from one run into another. {missing}")
    if target.memory_type != source.memory_type:
        raise TraceError(f"The source's memory is {source.memory_type!r} and the target's {target.memory_type!r}: "
                         "memory can be patched only between runs of models with the same kind of memory.")
    shapes = [{k: np.shape(v) for k, v in t.state_in(0).items()} for t in (target, source)]
    if shapes[0] != shapes[1]:
        raise TraceError("The source's memory has another shape than the target's (another number of slots or "
                         f"hidden size, layers or features: {shapes[1]} and {shapes[0]}): memory can be patched only "
                         "between runs of models with the same memory.")
    if source.stores_writes:
        source.require_model("rebuilding the source's memory state (patching memory)")
    same, reason = same_tokenizer(target, source)
    if not same:
        raise TraceError(f"Patching compares the source's answer token in the target, and {reason}")
    segment = target.check_segment(segment)
    name = "source_segment" if source_segment is not None else f"segment {segment} (of the source, by default)"
    source_segment = source.check_segment(segment if source_segment is None else source_segment, name)
    axis, count = part_axis(target), len(model.memory.parts())
    wanted = list(range(count)) if parts is None else (
        [parts] if not isinstance(parts, (list, tuple, range, np.ndarray)) else list(parts))
    if not wanted:
        raise ArgumentError(f"{axis}s must name at least one {axis} (None patches all of them).")
    fix = f"The model has {count} memory {axis}s." if axis != "layer" else \
        f"The memory has {count} layers, numbered from 0."
    chosen = tuple(check_int(k, axis, 0, count - 1, fix=fix, error=TraceArgumentError) for k in wanted)
    if len(set(chosen)) != len(chosen):
        raise ArgumentError(f"{axis}s must not repeat a {axis}, got {list(chosen)}.")
    return segment, source_segment, chosen


def _source_answer(source: Trace) -> int | None:
    """The source's top prediction at its answer site (the stored top-1), or None."""
    site = answer_site(source, fallback=True)
    return None if site is None else int(source.segments[site.segment].topk_ids[site.position][0])


def _patched_arrays(model, stored: dict[str, np.ndarray], donor: dict[str, np.ndarray],
                    parts: tuple[int, ...]) -> dict[str, np.ndarray]:
    """The target's state arrays `stored` with `parts` copied from `donor` (the memory type's "replace" edit)."""
    edited = stored
    for k in parts:
        edited = model.memory.edit_state(edited, "replace", part=k, source=donor)
    return edited


def _patched(target: Trace, segment: int, source: Trace, source_segment: int, parts: tuple[int, ...],
             source_token: int | None, before_lp: np.ndarray | None) -> PatchResult:
    """One patched run (intervene: the target re-run from `segment` to its end)."""
    edited = _patched_arrays(target.model, target.state_in(segment), source.state_in(source_segment), parts)
    base = intervene(target, segment, edited, _patch_name(target, segment, parts))
    return _patch_result(target, base, parts, source_segment, source_token, before_lp)


def _patch_name(target: Trace, segment: int, parts: tuple[int, ...]) -> str:
    axis, count = part_axis(target), len(target.model.memory.parts())
    labels = target.model.memory.parts()
    what = f"all {axis}s" if len(parts) == count else axis + ("s " if len(parts) > 1 else " ") + \
        ", ".join(labels[k] for k in parts)
    return f"{what} patched from the source before segment {segment}"


def _patch_result(target: Trace, base: InterventionResult, parts: tuple[int, ...], source_segment: int,
                  source_token: int | None, before_lp: np.ndarray | None) -> PatchResult:
    """A PatchResult from an intervention's result, with p(source's answer) before and after."""
    result = PatchResult(**{f.name: getattr(base, f.name) for f in base.__dataclass_fields__.values()},
                         parts=parts, axis=part_axis(target), source_segment=source_segment)
    if source_token is not None:
        result.source_answer = answer_text(target.model.tokenizer, source_token)
        if before_lp is not None:
            result.p_source_answer_before = float(np.exp(before_lp[source_token]))
            after = base.site_logprobs if base.site_logprobs is not None else before_lp
            result.p_source_answer_after = float(np.exp(after[source_token]))
    return result


def sweep_batch_size(target: Trace, budget_values: int = 1 << 25) -> int:
    """Patched runs per batched forward in patch_sweep: as many as keep one batch's log-probs
    (rows x segment tokens x vocabulary, float32) and states (rows x the state's values) within
    `budget_values` values (128 MB), at most 64."""
    longest = max(s.num_tokens for s in target.segments)
    state = sum(int(np.prod(np.shape(v))) for v in target.state_in(0).values())
    per_row = longest * int(target.model_info["vocab_size"]) + 2 * state
    return int(max(1, min(64, budget_values // max(1, per_row))))


@torch.no_grad()
def _patched_batched(target: Trace, source: Trace, cells: list[tuple[int, int, tuple[int, ...]]],
                     source_token: int | None, before_lp: np.ndarray | None, batch_size: int) -> list[PatchResult]:
    """_patched for many cells (segment, source_segment, parts) of one target, with the re-runs
    batched: every patched run is the target's own document, so at segment k all the runs that
    have started by then (a cell patched before segment s runs from s) go through one Trace.replay
    of k as a batch (rows of the same tokens: no padding), `batch_size` rows at a time. One
    forward per segment and batch instead of one per cell and segment; the same numbers as
    _patched cell by cell up to float rounding (tests/test_patching.py). Any memory type: the
    states are batched by the memory seam (concat_states / state_sample)."""
    model = target.require_model("patching memory")
    site = answer_site(target, fallback=True)
    before = target.losses()
    after = [before.copy() for _ in cells]
    site_logprobs: list[torch.Tensor | None] = [None] * len(cells)
    state: dict[int, object] = {}  # cell -> the state entering the current segment (memory type's form, batch 1)
    carry: dict[int, torch.Tensor | None] = {}  # cell -> (V,) the previous segment's last log-softmax row
    donors: dict[int, dict[str, np.ndarray]] = {}  # source segment -> the source's state entering it
    first = min(seg for seg, _, _ in cells)
    for k in range(first, target.num_segments):
        starting = [c for c, (seg, _, _) in enumerate(cells) if seg == k]
        if starting:
            stored = target.state_in(k)
            start_carry = None
            if k > 0:  # the segment before the patch is not affected by it (as intervene)
                start_carry = torch.log_softmax(target.replay(k - 1).logits[0, -1].float(), dim=-1)
            for c in starting:
                _, source_segment, parts = cells[c]
                if source_segment not in donors:
                    donors[source_segment] = source.state_in(source_segment)
                edited = _patched_arrays(model, stored, donors[source_segment], parts)
                state[c] = model.memory.state_from_arrays(edited)
                carry[c] = start_carry
        active = sorted(state)
        if not active:
            continue
        seg = target.segments[k]
        ids = torch.as_tensor(seg.token_ids, dtype=torch.long, device=model.device)
        for lo in range(0, len(active), batch_size):
            rows = active[lo:lo + batch_size]
            out = target.replay(k, concat_states([state[c] for c in rows]))
            logprobs = torch.log_softmax(out.logits.float(), dim=-1)  # (B, L, V)
            nxt = target.next_state(out)
            for b, c in enumerate(rows):
                after[c][k] = segment_loss(gather_token_logprobs(logprobs[b], ids, carry[c]))
                if site is not None and k == site.segment:
                    site_logprobs[c] = logprobs[b, site.position]
                state[c], carry[c] = state_sample(nxt, b), logprobs[b, -1]
        if not target.carries_memory:  # memory reset: later segments run as traced, unpatched
            state.clear()
    results = []
    for c, (segment, source_segment, parts) in enumerate(cells):
        base = InterventionResult(_patch_name(target, segment, parts), segment, before.copy(), after[c],
                                  None, None, None, None)
        if site is not None:
            _answers(target, site, site_logprobs[c], base)
        results.append(_patch_result(target, base, parts, source_segment, source_token, before_lp))
    return results


def _site_logprobs(trace: Trace, site) -> np.ndarray:
    """(V,) the trace's own log-probabilities at its answer site (one replay of that segment)."""
    with torch.no_grad():
        logits = trace.replay(site.segment).logits[0, site.position]
    return torch.log_softmax(logits.float(), dim=-1).cpu().numpy()


@dataclass
class PatchSweep:
    """A patching sweep: memory patched from `source` into `target` before each segment of
    `segments`, one part at a time (`axis`: "slot" for the tokens memory, "layer" for an
    associative memory's (A_l, z_l)) and all of them ("all"), the columns `columns`.

    Arrays (len(segments), len(columns)):
        p_source_answer         p(source's answer) at the target's answer site after the patch
        p_source_answer_change  that minus its value before (p_source_answer_before)
        p_answer_after          the probability of the target's top answer after the patch
        answer_after            the target's top answer after the patch (text)
        flipped                 whether that answer is the source's answer
        loss_change             the target's per-segment loss change (nats/token), mean over the
                                segments re-run (the patched one and every later one)
    parts: per column, the part indices patched (slots or layers).
    """

    segments: list[int]
    columns: list[str]
    parts: list[tuple[int, ...]]
    target_answer: str | None
    source_answer: str | None
    p_source_answer_before: float
    p_source_answer: np.ndarray
    p_answer_after: np.ndarray
    answer_after: list[list[str | None]]
    loss_change: np.ndarray
    names: tuple[str, str] = ("target", "source")
    axis: str = "slot"

    @property
    def slots(self) -> list[tuple[int, ...]]:
        """Per column, the slots patched (tokens memory; [] for a memory patched by layer)."""
        return self.parts if self.axis == "slot" else []

    @property
    def p_source_answer_change(self) -> np.ndarray:
        return self.p_source_answer - self.p_source_answer_before

    @property
    def flipped(self) -> np.ndarray:
        return np.array([[a is not None and a == self.source_answer for a in row] for row in self.answer_after])

    def cell(self, target: Trace, source: Trace, row: int, column: int) -> PatchResult:
        """The patched run behind one cell (re-run: patch_memory with that segment and parts)."""
        chosen = {"layers" if self.axis == "layer" else "slots": list(self.parts[column])}
        return patch_memory(target, self.segments[row], source, **chosen)

    def to_rows(self) -> list[dict]:
        """One row per cell: segment, patched (slot or layer name, or "all"), answer_after, became_source_answer,
        p_answer_after, p_source_answer_before, p_source_answer_after, p_source_answer_change, loss_change."""
        rows = []
        for i, seg in enumerate(self.segments):
            for j, col in enumerate(self.columns):
                rows.append({"segment": seg, "patched": col, "answer_after": self.answer_after[i][j],
                             "became_source_answer": bool(self.flipped[i, j]),
                             "p_answer_after": float(self.p_answer_after[i, j]),
                             "p_source_answer_before": float(self.p_source_answer_before),
                             "p_source_answer_after": float(self.p_source_answer[i, j]),
                             "p_source_answer_change": float(self.p_source_answer_change[i, j]),
                             "loss_change": float(self.loss_change[i, j])})
        return rows

    def save(self, path, provenance: dict | None = None):
        """to_rows() as .csv, or with the sweep's facts and `provenance` as .json; returns the path.
        Raises ArgumentError for another suffix."""
        import json
        from pathlib import Path

        from .attribution.result import _plain
        from .compare import rows_csv

        out = Path(path)
        suffix = out.suffix.lower()
        if suffix not in (".csv", ".json"):
            raise ArgumentError(f"path must end in .csv or .json, got {str(path)!r}.")
        rows = _plain(self.to_rows())
        if suffix == ".csv":
            text = rows_csv(rows)
        else:
            text = json.dumps(_plain({"sweep": {"names": list(self.names), "target_answer": self.target_answer,
                                                "source_answer": self.source_answer,
                                                "p_source_answer_before": self.p_source_answer_before,
                                                "segments": self.segments, "columns": self.columns,
                                                "patched_by": self.axis},
                                      "rows": rows, "provenance": provenance}), indent=2, ensure_ascii=False)
        if out.parent != Path(""):
            out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text, encoding="utf-8")
        return out


def patch_sweep(target: Trace, source: Trace, segments=None, slots=None, *, layers=None, whole: bool = True,
                names: tuple[str, str] = ("target", "source"), batched: bool = True,
                batch_size: int | None = None) -> PatchSweep:
    """patch_memory over segments x parts (one part at a time; with `whole`, also all parts at
    once, the column "all"): where in the memory does the source's fact live?

    segments: the target's segments to patch before (default every one the source also has);
    slots (tokens memory) / layers (associative memory: each layer's A_l and z_l): the parts
    (default all; the columns are their names, "M0".. or "L0..", then "all"). batched: True runs
    the patched re-runs as batches (every cell re-runs the target's own tokens from its segment on,
    so the cells go through each later segment together: one forward per segment and batch,
    `batch_size` cells a batch, default sweep_batch_size); False runs one cell after the other
    (patch_memory's path; the same numbers up to float rounding, and the reference the batched
    path is tested against). Measured in benchmarks/bench_compare.py. Raises as patch_memory does
    (ArgumentError for a segment, slot or layer out of range, or a batch_size < 1).
    """
    if segments is None:
        segments = list(range(min(target.num_segments, source.num_segments)))
    segments = [target.check_segment(s) for s in (segments if isinstance(segments, (list, tuple, range, np.ndarray))
                                                  else [segments])]
    if not segments:
        raise ArgumentError("segments must name at least one segment.")
    parts = _chosen(target, slots, layers)
    count = len(target.require_model("patching memory").memory.parts())
    part_list = list(range(count)) if parts is None else list(parts)
    checked = [_check_patch(target, segments[0], source, [k], None)[2] for k in part_list]
    labels = target.model.memory.parts()
    columns = [labels[k] for (k,) in checked] + (["all"] if whole else [])
    groups = checked + ([tuple(range(count))] if whole else [])
    site = answer_site(target, fallback=True)
    source_token = _source_answer(source)
    before_lp = _site_logprobs(target, site) if site is not None and source_token is not None else None
    cells = [(seg, _check_patch(target, seg, source, None, None)[1], group) for seg in segments for group in groups]
    if batched:
        size = sweep_batch_size(target) if batch_size is None else check_int(
            batch_size, "batch_size", 1, fix="It is how many patched runs go through one forward.")
        results = _patched_batched(target, source, cells, source_token, before_lp, size)
    else:
        results = [_patched(target, seg, source, source_segment, group, source_token, before_lp)
                   for seg, source_segment, group in cells]
    shape = (len(segments), len(groups))
    p_src, p_ans, loss = np.full(shape, np.nan), np.full(shape, np.nan), np.full(shape, np.nan)
    answers: list[list[str | None]] = [[None] * len(groups) for _ in segments]
    target_answer = None
    for (i, j), r in zip(np.ndindex(*shape), results):
        target_answer = r.answer_before
        answers[i][j] = r.answer_after
        p_src[i, j] = np.nan if r.p_source_answer_after is None else r.p_source_answer_after
        p_ans[i, j] = np.nan if r.p_answer_after is None else r.p_answer_after
        loss[i, j] = float(r.loss_change[segments[i]:].mean())
    p_before = float(np.exp(before_lp[source_token])) if before_lp is not None else float("nan")
    source_answer = answer_text(target.model.tokenizer, source_token) if source_token is not None else None
    return PatchSweep(segments, columns, groups, target_answer, source_answer, p_before, p_src, p_ans, answers,
                      loss, tuple(names), part_axis(target))


def reset_memory(trace: Trace, segment: int) -> InterventionResult:
    """State entering `segment` set to the model's initial state (TokenMemory: the learned initial memory)."""
    return intervene(trace, segment, "reset", f"reset memory before segment {segment}")


def reset_slot(trace: Trace, segment: int, slot: int) -> InterventionResult:
    """Slot `slot` of the memory entering `segment` set to the model's learned initial memory's slot
    (the other slots keep theirs). Raises TraceArgumentError for a segment or slot out of range."""
    segment = trace.check_segment(segment)
    m = trace.num_mem_tokens
    slot = check_int(slot, "slot", 0, m - 1, fix=f"The model has {m} memory slots.", error=TraceArgumentError)
    initial = trace.require_model("an intervention").initial_memory.detach().float().cpu().numpy()

    def edit(mem: np.ndarray) -> np.ndarray:
        mem[slot] = initial[slot]
        return mem

    return intervene(trace, segment, edit, f"reset slot M{slot} before segment {segment}")


def zero_memory(trace: Trace, segment: int) -> InterventionResult:
    """Every array of the state entering `segment` set to zero."""
    return intervene(trace, segment, "zero", f"zero memory before segment {segment}")


def shuffle_slots(trace: Trace, segment: int, seed: int = 0) -> InterventionResult:
    """The parts (TokenMemory: slots) of the state entering `segment` permuted (seeded; never the identity)."""
    return intervene(trace, segment, "shuffle", f"shuffle slots before segment {segment}", seed=seed)


def replace_slot(trace: Trace, segment: int, slot: int, other: Trace, other_segment: int | None = None) -> InterventionResult:
    """Slot `slot` of the memory entering `segment` replaced by the same slot from another trace."""
    if other.num_mem_tokens != trace.num_mem_tokens:
        raise TraceError("The other trace comes from a model with another number of memory slots.")
    segment = trace.check_segment(segment)
    slot = check_int(slot, "slot", 0, trace.num_mem_tokens - 1, fix=f"The model has {trace.num_mem_tokens} memory slots.",
                     error=TraceArgumentError)
    if other_segment is not None:
        other_segment = other.check_segment(other_segment, "other_segment")
    source = other.state_in(min(segment if other_segment is None else other_segment, other.num_segments - 1))
    return intervene(trace, segment, "replace", f"slot {slot} from another trace before segment {segment}",
                     part=slot, source=source)


def reset_layer(trace: Trace, segment: int, layer: int) -> InterventionResult:
    """An associative memory's layer `layer` state (A_l, z_l) set to its initial value (zero) before
    `segment`, the other layers kept (the memory type's "replace" edit of part `layer` from the
    initial state); the rest of the document re-run. That layer then reads exactly 0 until the next
    write. Raises TraceError for another memory type or without the model, TraceArgumentError for
    a segment or layer out of range."""
    missing = NEEDS["reset_layer"].missing(trace)
    if missing:
        raise TraceError(f"Resetting one layer's state is an associative-memory intervention. {missing}")
    segment = trace.check_segment(segment)
    model = trace.model
    layers = len(model.memory.parts())
    layer = check_int(layer, "layer", 0, layers - 1, fix=f"The memory has {layers} layers, numbered from 0.",
                      error=TraceArgumentError)
    initial = model.memory.state_to_arrays(model.memory.initial_state(1))
    return intervene(trace, segment, "replace", f"reset layer {layer}'s state before segment {segment}", part=layer,
                     source=initial)


def skip_write(trace: Trace, segment: int) -> InterventionResult:
    """Segment `segment`'s write dropped: the state entering segment + 1 is the one that entered
    `segment` (as if it had written nothing), and the document is re-run from segment + 1 on (later
    writes are recomputed from that state). Segment `segment` itself is unchanged (a segment reads
    the state before its own write). Any memory type. Raises TraceArgumentError for the last segment
    (no later segment reads its write) or a segment out of range, TraceError without the model."""
    segment = trace.check_segment(segment)
    trace.require_model("an intervention")
    if segment == trace.num_segments - 1:
        raise TraceArgumentError(f"Segment {segment} is the last: no later segment reads its write. Pick a segment "
                                 f"before {segment}.")
    before = trace.state_in(segment)
    return intervene(trace, segment + 1, lambda arrays: {name: np.array(before[name], copy=True) for name in arrays}
                     if isinstance(arrays, dict) else np.array(before["memory"], copy=True),
                     f"segment {segment}'s write skipped")
