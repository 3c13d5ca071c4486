"""Two runs side by side: `compare(trace_a, trace_b)` -> a `Comparison`, segment by segment.

The two traces may come from two checkpoints (before / after training, RMT vs another
memory), two documents (a fact present / absent), or one document with memory and with memory
reset (reset_run: the same model and document, memory reset to its initial state before every
segment, the RMT papers' "no memory" baseline). Segments are paired by index (ALIGNMENTS):

    start   segment i of A with segment i of B, from the first; the longer trace's last
            segments have no partner (reported in `unpaired_a` / `unpaired_b`)
    end     the last segments paired (A's S_a-1 with B's S_b-1, ...): documents that differ in
            length but end with the same question line up at the question

Per paired segment (arrays with one row per pair), the memory distance (MEMORY_DISTANCES: one
definition per memory type, here and nowhere else):
    cosine   (P, k)  tokens memory: cosine distance 1 - cos between the two memory states each
                     segment wrote, per slot (another vector memory: per row of its state,
                     Trace.memory_states)
    l2       (P, k)  L2 distance between them (hidden-size units of the memory vectors)
    frobenius_A / frobenius_z (P, Y)  associative memory (ARMT): relative Frobenius distance
                     ||X - X'||_F / max(||X||_F, ||X'||_F) of layer l's A_l (heads together) and of
                     its z_l between the states each segment wrote (0 where both are 0; 0..2)
    distance (P, k)  the per-part distance the divergence reads: cosine, or [A rows | z rows]
    state_norm_a / state_norm_b (P, Y)  associative memory: ||A_l||_F after each paired segment
    mass_a / mass_b (P, 6)  block attention mass (BLOCK_PAIRS), mean over layers and heads
    loss_a / loss_b (P,)    per-segment mean loss (nats/token of each trace's own tokenizer)
    p_answer_a / p_answer_b (P,)  the answer token's probability under the logit lens of the
                     memory each segment wrote (last-layer write-slot states through the LM
                     head, softmax over the vocabulary, the largest over the slots): how early
                     memory "holds" the answer (nostalgebraist's logit lens, 2020)
    diverge_at       DIVERGE_RULE: the first pair whose memory LEAVING the segment (memory_out,
                     what the segment wrote) differs, its largest per-part distance (per slot, or
                     per layer's A_l / z_l) over `threshold`; the one definition the app, the CLI,
                     the files and the figures use
    entering_at_diverge  the largest per-part distance of the memory ENTERING that pair
                     (memory_in): within the threshold when the pair's own tokens made the
                     difference, over it when the runs already read different memory (a run with
                     memory reset reads the initial memory in every segment)
    answers          each run's answer at its question (RunAnswer: the stored top prediction
                     after "Answer:", else after the document's last token)

Token-level parts (the answer token's probability in both runs) need one tokenizer: traces of
different tokenizers get them as NaN with `token_level_reason` saying why; the segment-level
parts stay where they mean something (memory distances need the same memory shape).
"""
from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..checks import check_choice, check_float
from ..errors import ArgumentError, TraceError
from ..tracing.records import BLOCK_PAIRS, TOP_K
from ..tracing.trace import Trace
from .answers import answer_site, answer_text
from .attribution.result import _plain  # one home: plain JSON / CSV values

ALIGNMENTS = ("start", "end")
DEFAULT_THRESHOLD = 0.05  # a memory distance (0..2): "the memories differ" above this, in any slot or layer
# The distance between two runs' memories, per memory type: the one definition (compare, the page, the CLI).
MEMORY_DISTANCES: dict[str, str] = {
    "tokens": "cosine distance 1 - cos between the two runs' memory vectors, per slot (0..2; L2 beside it)",
    "associative": ("relative Frobenius distance ||X - X'||_F / max(||X||_F, ||X'||_F) between the two runs' "
                    "associative state, per layer, for A_l (heads together) and for z_l (0 where both are 0; 0..2)"),
}
DIVERGE_RULE = ("the first paired segment whose memory LEAVING it (memory_out: the memory the segment wrote) "
                "differs between the runs: its largest per-part memory distance (per slot: cosine distance; "
                "associative memory, per layer: relative Frobenius distance of A_l or z_l) exceeds the threshold")


@dataclass(frozen=True)
class RunAnswer:
    """One run's answer at its question: the stored top prediction at its answer site (after
    "Answer:", else after the document's last token: question None). segment / position: the site."""

    segment: int
    position: int
    question: str | None
    answer: str
    probability: float


@dataclass
class Comparison:
    """Two traces compared segment by segment; see the module docstring for every array.

    segments_a / segments_b: (P,) the paired segment indices. names: the two runs' labels.
    memory_reason: why memory distances are absent (None when they are present).
    token_level: whether token-level parts (answer probability) were compared, else
    token_level_reason says why not. answer: the answer token compared (A's: the token after its
    "Answer:" when the document has it, else A's top prediction there), answer_id its id.
    lens_reason: why p_answer_* are absent (no model attached, other tokenizer), else None.
    """

    names: tuple[str, str]
    align: str
    segments_a: np.ndarray
    segments_b: np.ndarray
    num_segments: tuple[int, int]
    cosine: np.ndarray | None
    l2: np.ndarray | None
    mass_a: np.ndarray
    mass_b: np.ndarray
    loss_a: np.ndarray
    loss_b: np.ndarray
    p_answer_a: np.ndarray
    p_answer_b: np.ndarray
    threshold: float
    diverge_at: int | None
    entering_at_diverge: float | None = None
    memory_reason: str | None = None
    token_level: bool = True
    token_level_reason: str | None = None
    lens_reason: str | None = None
    answer: str | None = None
    answer_id: int | None = None
    slots: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    provenance: dict[str, Any] = field(default_factory=dict)
    memory_type: str = "tokens"  # the memory both runs' distances are of (MEMORY_DISTANCES)
    frobenius_A: np.ndarray | None = None  # (P, Y) associative memory: relative Frobenius distance of A_l
    frobenius_z: np.ndarray | None = None  # (P, Y) ... of z_l
    layers: list[str] = field(default_factory=list)  # associative memory: "L0".. (the columns of frobenius_*)
    state_norm_a: np.ndarray | None = None  # (P, Y) associative memory: ||A_l||_F after each paired segment
    state_norm_b: np.ndarray | None = None
    answers: tuple[RunAnswer | None, RunAnswer | None] = (None, None)

    # ------------------------------------------------------------------ facts
    @property
    def num_pairs(self) -> int:
        return int(len(self.segments_a))

    @property
    def distance(self) -> np.ndarray | None:
        """(P, k) the per-part memory distance DIVERGE_RULE reads: tokens memory cosine (k slots);
        associative memory frobenius_A then frobenius_z (k = 2 Y); None when not compared."""
        if self.frobenius_A is not None:
            return np.concatenate([self.frobenius_A, self.frobenius_z], axis=1)
        return self.cosine

    @property
    def distance_labels(self) -> list[str]:
        """The k columns of distance: slots "M0".., or "A L0".. then "z L0"..."""
        if self.frobenius_A is not None:
            return [f"A {layer}" for layer in self.layers] + [f"z {layer}" for layer in self.layers]
        return list(self.slots)

    @property
    def distance_name(self) -> str:
        """The distance in words (MEMORY_DISTANCES' short name)."""
        return "relative Frobenius distance" if self.frobenius_A is not None else "cosine distance"

    @property
    def _per_part(self) -> str:
        return ("largest per-layer relative Frobenius distance (of A_l or z_l)" if self.frobenius_A is not None
                else "largest per-slot cosine distance")

    @property
    def unpaired_a(self) -> list[int]:
        """A's segments with no partner in B."""
        return sorted(set(range(self.num_segments[0])) - set(self.segments_a.tolist()))

    @property
    def unpaired_b(self) -> list[int]:
        return sorted(set(range(self.num_segments[1])) - set(self.segments_b.tolist()))

    @property
    def loss_diff(self) -> np.ndarray:
        """(P,) loss_b - loss_a, nats/token."""
        return self.loss_b - self.loss_a

    @property
    def mass_diff(self) -> np.ndarray:
        """(P, 6) mass_b - mass_a per block pair (BLOCK_PAIRS)."""
        return self.mass_b - self.mass_a

    @property
    def p_answer_diff(self) -> np.ndarray:
        """(P,) p_answer_b - p_answer_a (NaN where either is absent)."""
        return self.p_answer_b - self.p_answer_a

    @property
    def alignment_text(self) -> str:
        """How the segments were paired, in one sentence."""
        sa, sb = self.num_segments
        how = ("from the first segment" if self.align == "start" else "from the last segment backwards")
        text = f"Segments paired by index {how}: A has {sa}, B has {sb}, {self.num_pairs} pairs"
        extra = [f"{name}'s segments {_span(left)} have no partner" for name, left in
                 (("A", self.unpaired_a), ("B", self.unpaired_b)) if left]
        return text + ("; " + "; ".join(extra) if extra else "") + "."

    @property
    def divergence_text(self) -> str:
        """Where the memories diverge (diverge_at, DIVERGE_RULE), saying it is the memory LEAVING
        that segment, with the threshold and what the memory ENTERING it was."""
        distance = self.distance
        if distance is None:
            return f"Memory not compared: {self.memory_reason}"
        if self.diverge_at is None:
            return (f"The memories never diverge in the {self.num_pairs} paired segments: no memory LEAVING a "
                    f"segment (memory_out) has a {self._per_part} over {self.threshold:g}.")
        i = self.diverge_at
        a, b = int(self.segments_a[i]), int(self.segments_b[i])
        where = f"segment {a}" if a == b else f"A segment {a} | B segment {b}"
        text = (f"The memories first diverge LEAVING {where} (pair {i}): the memory that segment wrote "
                f"(memory_out) is the first whose {self._per_part} exceeds {self.threshold:g} "
                f"(here {float(distance[i].max()):.4g}).")
        entering = self.entering_at_diverge
        if entering is None:
            return text
        if entering <= self.threshold:
            return text + (f" The memory ENTERING it (memory_in) was still the same ({entering:.4g}): this "
                           "segment's tokens made the difference.")
        resets = [name for name, mode in zip(self.names, self.carries_memory) if not mode]
        why = (f": {' and '.join(resets)} reset{'s' if len(resets) == 1 else ''} its memory before every segment"
               if resets else "")
        return text + f" The memory ENTERING it (memory_in) already differed ({entering:.4g}){why}."

    @property
    def carries_memory(self) -> tuple[bool, bool]:
        """Whether A and B carried memory between segments (False: memory reset before every segment)."""
        return tuple(bool(self.provenance.get(k, {}).get("carry_memory", True)) for k in ("a", "b"))

    # ------------------------------------------------------------------ rows and files
    def to_rows(self) -> list[dict[str, Any]]:
        """One row per paired segment: segment_a, segment_b, loss_a, loss_b, loss_diff,
        p_answer_a, p_answer_b, p_answer_diff, cosine_mean, cosine_max, l2_mean, then per slot
        cosine_<slot> and l2_<slot> (associative memory instead: frobenius_max, then per layer
        frobenius_A_<layer>, frobenius_z_<layer>, state_norm_<layer>_a / _b), then
        mass_<pair>_a / _b / _diff per block pair (memory with slots only: without them every
        query attends to the tokens alone)."""
        rows = []
        for i in range(self.num_pairs):
            row: dict[str, Any] = {
                "segment_a": int(self.segments_a[i]), "segment_b": int(self.segments_b[i]),
                "loss_a": float(self.loss_a[i]), "loss_b": float(self.loss_b[i]), "loss_diff": float(self.loss_diff[i]),
                "p_answer_a": float(self.p_answer_a[i]), "p_answer_b": float(self.p_answer_b[i]),
                "p_answer_diff": float(self.p_answer_diff[i]),
            }
            if self.cosine is not None:
                row.update(cosine_mean=float(self.cosine[i].mean()), cosine_max=float(self.cosine[i].max()),
                           l2_mean=float(self.l2[i].mean()))
                row.update({f"cosine_{s}": float(v) for s, v in zip(self.slots, self.cosine[i])})
                row.update({f"l2_{s}": float(v) for s, v in zip(self.slots, self.l2[i])})
            if self.frobenius_A is not None:
                row["frobenius_max"] = float(self.distance[i].max())
                for y, layer in enumerate(self.layers):
                    row[f"frobenius_A_{layer}"] = float(self.frobenius_A[i, y])
                    row[f"frobenius_z_{layer}"] = float(self.frobenius_z[i, y])
                    row[f"state_norm_{layer}_a"] = float(self.state_norm_a[i, y])
                    row[f"state_norm_{layer}_b"] = float(self.state_norm_b[i, y])
            for p, pair in enumerate(BLOCK_PAIRS if self.slots else ()):  # no slots: no blocks but the tokens
                key = pair.replace("->", "_to_")
                row[f"mass_{key}_a"] = float(self.mass_a[i, p])
                row[f"mass_{key}_b"] = float(self.mass_b[i, p])
                row[f"mass_{key}_diff"] = float(self.mass_diff[i, p])
            rows.append(row)
        return rows

    def summary(self) -> dict[str, Any]:
        """How the comparison was made and its headline facts, as plain JSON values."""
        return _plain({
            "names": list(self.names), "align": self.align, "alignment": self.alignment_text,
            "num_segments": list(self.num_segments), "pairs": self.num_pairs,
            "unpaired_a": self.unpaired_a, "unpaired_b": self.unpaired_b,
            "threshold": self.threshold, "memory_type": self.memory_type,
            "threshold_meaning": f"{self.distance_name}, largest over the "
                                 + ("layers' A_l and z_l" if self.frobenius_A is not None else "slots"),
            "distance_meaning": ("frobenius_* compare" if self.frobenius_A is not None else "cosine_* / l2_* compare")
                                + " the memories LEAVING each paired segment (memory_out): "
                                + MEMORY_DISTANCES.get(self.memory_type, MEMORY_DISTANCES["tokens"]),
            "diverge_at": self.diverge_at, "diverge_meaning": DIVERGE_RULE, "divergence": self.divergence_text,
            "entering_at_diverge": self.entering_at_diverge, "carry_memory": list(self.carries_memory),
            "memory_reason": self.memory_reason, "token_level": self.token_level,
            "token_level_reason": self.token_level_reason, "lens_reason": self.lens_reason,
            "answer": self.answer, "answer_id": self.answer_id, "slots": self.slots, "layers": self.layers,
            "answers": [None if r is None else {"name": n, "segment": r.segment, "position": r.position,
                                                "question": r.question, "answer": r.answer,
                                                "probability": r.probability}
                        for n, r in zip(self.names, self.answers)],
            "p_answer_meaning": "p(answer token) under the logit lens of the memory each segment wrote "
                                "(last-layer write slots through the LM head), largest over the slots",
            "loss_meaning": "per-segment mean loss, nats/token", "notes": self.notes,
        })

    def to_csv(self) -> str:
        """to_rows() as CSV text (NaN as an empty cell)."""
        return rows_csv(self.to_rows(), empty_header="segment_a")

    def to_json(self) -> str:
        """{"comparison": summary(), "rows": to_rows(), "provenance": {"a": ..., "b": ...}} as JSON text."""
        return json.dumps({"comparison": self.summary(), "rows": _plain(self.to_rows()),
                           "provenance": _plain(self.provenance)}, indent=2, ensure_ascii=False)

    def save(self, path: str | Path) -> Path:
        """Write to_csv() (path ending in .csv) or to_json() (.json, with both traces' provenance).

        Raises ArgumentError for another suffix; OSError when the file cannot be written."""
        out = Path(path)
        if out.suffix.lower() not in (".csv", ".json"):
            raise ArgumentError(f"path must end in .csv or .json, got {str(path)!r}: .csv for the rows, "
                                ".json for the rows with how they were made.")
        if out.parent != Path(""):
            out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(self.to_csv() if out.suffix.lower() == ".csv" else self.to_json(), encoding="utf-8")
        return out


# ---------------------------------------------------------------------- compare
def compare(trace_a: Trace, trace_b: Trace, *, align: str = "start", threshold: float = DEFAULT_THRESHOLD,
            names: tuple[str, str] = ("A", "B"), lens: bool = True) -> Comparison:
    """Compare two traces segment by segment (see the module docstring for what is compared).

    align: "start" or "end" (ALIGNMENTS). threshold: the memory distance (MEMORY_DISTANCES: cosine
    per slot, or relative Frobenius per layer; 0..2) above which memories "differ" (diverge_at).
    names: labels of the two runs in figures and files.
    lens: False skips the answer-probability curves (they need the traces' models attached).
    Raises TraceError for a trace with no segments, ArgumentError for a bad align / threshold.
    Cost: one LM-head call per segment of each trace (for the answer curve), no model re-run; an
    associative memory's states are rebuilt from the stored writes (one state update per segment
    and trace, with the models attached; without them the distances are left out, saying why).
    """
    align = check_choice(align, "align", ALIGNMENTS)
    threshold = check_float(threshold, "threshold", 0.0, 2.0,
                            fix="It is a memory distance (0..2: cosine, or relative Frobenius for an associative memory).")
    for name, trace in zip(names, (trace_a, trace_b)):
        if not isinstance(trace, Trace):
            raise ArgumentError(f"trace {name} must be a Trace (rmt_core.trace or Trace.load), got {type(trace).__name__}.")
        if trace.num_segments == 0:
            raise TraceError(f"Trace {name} has no segments: trace a document first.")
    sa, sb = trace_a.num_segments, trace_b.num_segments
    pairs = min(sa, sb)
    seg_a = np.arange(pairs) if align == "start" else np.arange(sa - pairs, sa)
    seg_b = np.arange(pairs) if align == "start" else np.arange(sb - pairs, sb)
    notes: list[str] = []
    size_a, size_b = trace_a.settings.get("segment_size"), trace_b.settings.get("segment_size")
    if size_a != size_b:
        notes.append(f"The traces cut segments of different sizes ({size_a} and {size_b} tokens): paired "
                     "segments cover different parts of the documents.")
    same_tok, tok_reason = same_tokenizer(trace_a, trace_b)
    if not same_tok:
        notes.append(f"Token-level comparison refused: {tok_reason}")
    kind_a, kind_b = trace_a.memory_type, trace_b.memory_type
    cosine = l2 = fro = None
    if kind_a != kind_b:
        memory_reason = (f"the runs' memories are of different types ({kind_a!r} and {kind_b!r}): "
                         f"{MEMORY_DISTANCES.get(kind_a, kind_a)} has no counterpart in the other.")
    elif trace_a.stores_writes or trace_b.stores_writes:
        fro, memory_reason = _state_distances(trace_a, trace_b, seg_a, seg_b)
    else:
        cosine, l2, memory_reason = _memory_distances(trace_a, trace_b, seg_a, seg_b)
    mass_a, mass_b = _mass(trace_a)[seg_a], _mass(trace_b)[seg_b]
    loss_a, loss_b = trace_a.losses()[seg_a], trace_b.losses()[seg_b]
    answer_id, answer = _answer_token(trace_a)
    p_a = p_b = np.full(pairs, np.nan)
    lens_reason = None
    if not lens:
        lens_reason = "not computed (lens=False)."
    elif answer_id is None:
        lens_reason = "trace A has no answer token to follow."
    elif not same_tok:
        lens_reason = f"token-level comparison refused: {tok_reason}"
    elif not (trace_a.has_slots and trace_b.has_slots):
        lens_reason = ("the answer's logit lens decodes the memory's write slots, and "
                       + ("an associative memory (ARMT) has none: its memory tokens are the same learned vectors "
                          "in every segment, its state a matrix per layer (the distances above compare it)."
                          if "associative" in (kind_a, kind_b) else "a run's memory has none."))
    elif trace_a.model is None or trace_b.model is None:
        lens_reason = ("a trace has no model attached: load both with Trace.load(path, model=rmt_core.load(...)) "
                       "to follow the answer's probability.")
    else:
        p_a = answer_lens(trace_a, answer_id)[seg_a]
        p_b = answer_lens(trace_b, answer_id)[seg_b]
    diverge = entering = None
    distance = cosine if fro is None else np.concatenate([fro["A"], fro["z"]], axis=1)
    if distance is not None:
        over = np.nonzero(distance.max(axis=1) > threshold)[0]
        diverge = int(over[0]) if over.size else None
        if diverge is not None and fro is None:
            entering = _entering_distance(trace_a, trace_b, int(seg_a[diverge]), int(seg_b[diverge]))
        elif diverge is not None:
            entering = float(max(fro["A_in"][diverge].max(), fro["z_in"][diverge].max()))
    for name, trace in zip(names, (trace_a, trace_b)):
        if not trace.carries_memory:
            notes.append(f"{name} resets its memory to the initial state before every segment (the no-memory "
                         "baseline): each of its segments reads the initial memory, not the memory the segment "
                         "before wrote.")
    m = cosine.shape[1] if cosine is not None else trace_a.num_slots
    associative = {}
    if kind_a == kind_b == "associative":
        from .associative import state_norms  # the state size row (explain/associative.py)

        n_layers = int(trace_a.model_info["num_layers"])
        associative = dict(layers=[f"L{y}" for y in range(n_layers)],
                           state_norm_a=state_norms(trace_a)[seg_a], state_norm_b=state_norms(trace_b)[seg_b])
        if fro is not None:
            associative.update(frobenius_A=fro["A"], frobenius_z=fro["z"])
    return Comparison(
        names=tuple(names), align=align, segments_a=seg_a, segments_b=seg_b, num_segments=(sa, sb),
        cosine=cosine, l2=l2, mass_a=mass_a, mass_b=mass_b, loss_a=loss_a, loss_b=loss_b,
        p_answer_a=p_a, p_answer_b=p_b, threshold=threshold, diverge_at=diverge, entering_at_diverge=entering,
        memory_reason=memory_reason,
        token_level=same_tok, token_level_reason=tok_reason, lens_reason=lens_reason, answer=answer,
        answer_id=answer_id, slots=[f"M{k}" for k in range(m)], notes=notes,
        provenance={"a": _provenance(trace_a), "b": _provenance(trace_b)},
        memory_type=kind_a if kind_a == kind_b else f"{kind_a} / {kind_b}",
        answers=(run_answer(trace_a), run_answer(trace_b)), **associative)


def run_answer(trace: Trace) -> RunAnswer | None:
    """The run's answer at its question (RunAnswer: the stored top-1 at answers.answer_site, the
    document's last token when it asks nothing); None for a trace with no segments."""
    from .answers import stored_predictions

    site = answer_site(trace, fallback=True)
    if site is None:
        return None
    top = stored_predictions(trace, site, 1)[0]
    return RunAnswer(site.segment, site.position, site.question, top.text, top.probability)


def reset_run(trace: Trace, progress=None) -> Trace:
    """The "memory reset" second run of `trace`: the same model and document traced with memory
    reset to its initial state before every segment (rmt_core.trace(..., carry_memory=False); the
    RMT papers' no-memory baseline, Bulatov et al., 2022). Its Trace.carries_memory is False, and
    compare(trace, reset_run(trace)) shows what memory changes, segment by segment.

    progress: as rmt_core.trace. The document is the trace's text (its token ids when it was traced
    from ids); a partial trace's document is traced whole. Raises TraceError without the model
    attached, or for a trace that already resets its memory."""
    from ..tracing.recorder import trace_document

    model = trace.require_model("tracing the document again with memory reset")
    if not trace.carries_memory:
        raise TraceError("This trace already resets its memory before every segment: compare it with a trace "
                         "that carries memory (rmt_core.trace(model, document)).")
    other = trace_document(model, trace.text if trace.text is not None else trace.token_ids, progress=progress,
                           top_k=int(trace.settings.get("top_k", TOP_K)), carry_memory=False)
    other.meta = {**(trace.meta or {}), "memory": "reset before every segment"}
    return other


def same_tokenizer(trace_a: Trace, trace_b: Trace) -> tuple[bool, str | None]:
    """(True, None) when both traces' token ids mean the same tokens, else (False, the reason).

    Same weights hash: one model, one tokenizer. Otherwise the attached models' tokenizers are
    compared by vocabulary; without them only a different vocabulary size can be told apart, and
    the answer is no (never a guess)."""
    ia, ib = trace_a.model_info, trace_b.model_info
    if ia.get("weights_hash") == ib.get("weights_hash"):
        return True, None
    if ia.get("vocab_size") != ib.get("vocab_size"):
        return False, (f"the traces come from models with different vocabularies ({ia.get('vocab_size')} and "
                       f"{ib.get('vocab_size')} tokens), so a token id means different text in each.")
    tok_a = getattr(trace_a.model, "tokenizer", None)
    tok_b = getattr(trace_b.model, "tokenizer", None)
    if tok_a is None or tok_b is None:
        return False, ("the traces come from different models and their tokenizers cannot be compared: load both "
                       "traces with their models attached (Trace.load(path, model=...)).")
    if tok_a.get_vocab() != tok_b.get_vocab():
        return False, f"'{ia.get('name')}' and '{ib.get('name')}' have different tokenizers (their vocabularies differ)."
    return True, None


def answer_lens(trace: Trace, token_id: int, chunk: int = 256) -> np.ndarray:
    """(S,) p(token_id) under the logit lens of each segment's written memory: the last-layer
    write-slot states (stored after the final norm) through the LM head, softmax over the
    vocabulary, the largest over the slots. Needs the trace's model (TraceError otherwise)."""
    model = trace.require_model("the answer's logit lens")
    head = model.backbone.get_output_embeddings()
    out = []
    with torch.no_grad():
        for first in range(0, trace.num_segments, chunk):
            hidden = torch.as_tensor(np.stack([s.write_hidden[-1] for s in trace.segments[first:first + chunk]]),
                                     device=model.device).to(model.dtype)  # (B, m, d)
            probs = torch.softmax(head(hidden).float(), dim=-1)[..., int(token_id)]  # (B, m)
            out.append(probs.max(dim=-1).values.cpu().numpy())
    return np.concatenate(out).astype(np.float64)


# ---------------------------------------------------------------------- parts
def _memory_distances(a: Trace, b: Trace, seg_a: np.ndarray, seg_b: np.ndarray):
    """(cosine (P, k), l2 (P, k), None) or (None, None, the reason) for the states each paired segment wrote."""
    states_a, states_b = a.memory_states()[1:][seg_a], b.memory_states()[1:][seg_b]  # (P, k, d)
    if states_a.shape[1:] != states_b.shape[1:]:
        return None, None, (f"the memories have different shapes ({states_a.shape[1]} x {states_a.shape[2]} and "
                            f"{states_b.shape[1]} x {states_b.shape[2]} slots x hidden size).")
    x, y = states_a.astype(np.float64), states_b.astype(np.float64)
    return _cosine_distance(x, y), np.linalg.norm(x - y, axis=-1), None


def relative_frobenius(x: torch.Tensor, y: torch.Tensor, dims: tuple[int, ...]) -> torch.Tensor:
    """||x - y||_F / max(||x||_F, ||y||_F) over `dims` (float64; 0 where both are 0), in 0..2: the
    associative memory's distance (MEMORY_DISTANCES). Shapes: x and y alike, the result without `dims`."""
    x, y = x.double(), y.double()
    size = torch.maximum(torch.linalg.vector_norm(x, dim=dims), torch.linalg.vector_norm(y, dim=dims))
    gap = torch.linalg.vector_norm(x - y, dim=dims)
    return torch.where(size > 0, gap / torch.where(size > 0, size, torch.ones_like(size)), torch.zeros_like(size))


def state_distances(trace_a: Trace, trace_b: Trace, segments_a, segments_b) -> dict[str, np.ndarray]:
    """Relative Frobenius distances (MEMORY_DISTANCES["associative"]) between two associative traces'
    states, per pair of segments and layer: {"A", "z"}: the states LEAVING the paired segments,
    {"A_in", "z_in"}: those ENTERING them, each (P, Y) float64. segments_a / segments_b: (P,) runs of
    consecutive indices (compare's pairs). The states are rebuilt from the stored writes (one update per
    segment, tracing/states.py). Raises TraceError without the models or for states of other shapes."""
    first_a, first_b = int(segments_a[0]), int(segments_b[0])
    walk_a = trace_a.rebuilder().walk(first_a, int(segments_a[-1]))
    walk_b = trace_b.rebuilder().walk(first_b, int(segments_b[-1]))
    out: dict[str, list] = {"A": [], "z": [], "A_in": [], "z_in": []}
    dims = {"A": (-3, -2, -1), "z": (-2, -1)}  # (Y, heads, features, hidden / heads), (Y, heads, features)
    for (_, in_a, after_a), (_, in_b, after_b) in zip(walk_a, walk_b):
        for name in ("A", "z"):
            if after_a[name].shape != after_b[name].shape:
                raise TraceError(f"The runs' associative states have different shapes ({tuple(after_a[name].shape[1:])} "
                                 f"and {tuple(after_b[name].shape[1:])} for {name}).")
            out[name].append(relative_frobenius(after_a[name][0], after_b[name][0].to(after_a[name].device), dims[name]))
            out[name + "_in"].append(relative_frobenius(in_a[name][0], in_b[name][0].to(in_a[name].device), dims[name]))
    return {name: torch.stack(values).cpu().numpy() for name, values in out.items()}


def _state_distances(a: Trace, b: Trace, seg_a: np.ndarray, seg_b: np.ndarray):
    """(state_distances' dict, None) or (None, the reason) for two runs whose memory stores its writes."""
    if a.model is None or b.model is None:
        return None, ("an associative memory's states are rebuilt from the stored writes with the model: load "
                      "both traces with their checkpoints attached (Trace.load(path, model=rmt_core.load(...))).")
    shape_a, shape_b = (tuple(t.initial_state[n].shape for n in ("A", "z")) for t in (a, b))
    if shape_a != shape_b:
        return None, (f"the associative states have different shapes (A {shape_a[0]} and {shape_b[0]}: layers x "
                      "heads x features x hidden).")
    return state_distances(a, b, seg_a, seg_b), None


def _cosine_distance(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """1 - cos between the last-axis vectors of x and y (0 where either is zero), in 0..2."""
    norms = np.linalg.norm(x, axis=-1) * np.linalg.norm(y, axis=-1)
    return np.clip(1.0 - (x * y).sum(-1) / np.where(norms == 0, 1.0, norms), 0.0, 2.0)


def _entering_distance(a: Trace, b: Trace, segment_a: int, segment_b: int) -> float:
    """The largest per-slot cosine distance between the memories ENTERING two segments (memory_in)."""
    return float(_cosine_distance(a.memory_inputs()[segment_a].astype(np.float64),
                                  b.memory_inputs()[segment_b].astype(np.float64)).max())


def _mass(trace: Trace) -> np.ndarray:
    """(S, 6) block attention mass per segment, mean over layers and heads."""
    return np.stack([s.block_attention.astype(np.float64).mean(axis=(0, 1)) for s in trace.segments])


def _answer_token(trace: Trace) -> tuple[int | None, str | None]:
    """A's answer token: the document's own token after its answer site when it has one, else its
    top prediction there (the stored top-1)."""
    site = answer_site(trace, fallback=True)
    if site is None:
        return None, None
    seg = trace.segments[site.segment]
    if site.position + 1 < seg.num_tokens:
        token = int(seg.token_ids[site.position + 1])
    elif site.segment + 1 < trace.num_segments:
        token = int(trace.segments[site.segment + 1].token_ids[0])
    else:
        token = int(seg.topk_ids[site.position][0])
    tokenizer = trace.model.tokenizer if trace.model is not None else None
    return token, answer_text(tokenizer, token)


def _provenance(trace: Trace) -> dict[str, Any]:
    """What made one trace (the fields of rmt_core.viz.export.provenance that live below viz)."""
    info = trace.model_info
    return {"checkpoint": info.get("name"), "weights_hash": info.get("weights_hash"),
            "rmt_lens_version": getattr(trace, "version", None), "settings": dict(trace.settings),
            "document": (trace.meta or {}).get("document"), "tokens": trace.num_tokens,
            "segments": trace.num_segments, "trace_complete": bool(trace.complete),
            "carry_memory": trace.carries_memory}


def rows_csv(rows: list[dict[str, Any]], empty_header: str = "segment") -> str:
    """Table rows (dicts with the same keys) as CSV text: a header line, then one line per row;
    floats in full precision, NaN / inf as empty cells."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(rows[0]) if rows else [empty_header], lineterminator="\n")
    writer.writeheader()
    writer.writerows(_plain(rows))
    return out.getvalue()


def _span(indices: list[int]) -> str:
    return f"{indices[0]}..{indices[-1]}" if len(indices) > 1 else str(indices[0])
